"""operator -> server launcher: container args, parsed by the launcher with the same definition."""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import Field

from ..api.common import ApiModel

# The key reaches the server only through its environment (from the key Secret), never argv.
API_KEY_ENV = "TWLEGAL_API_KEY"
# During a rotation the Secret also holds the previous key; pods accept both until it is removed.
PREVIOUS_API_KEY_ENV = "TWLEGAL_API_KEY_PREVIOUS"
PORT = 8000
# Routes answered without the key: kubelet probes carry no credentials.
UNAUTHENTICATED_PATHS = ("/health", "/ping")


class ServingLaunch(ApiModel):
    """How the launcher starts vLLM for one pinned revision."""

    model: str = Field(description="Directory of the revision's weights, or a hub repository id.")
    revision: str = Field(description="The release version that must be served.")
    served_model_names: list[str] = Field(min_length=1, description="Stable alias first, then name:revision.")
    max_model_len: int = Field(ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    port: int = Field(PORT, ge=1, le=65535)
    verify_manifest: bool = Field(True, description="Check the weights against the checksum manifest first.")
    checksum: str | None = Field(
        None, description="The manifest checksum the operator recorded at publish (status.artifact.checksum)."
    )
    drain_seconds: int = Field(0, ge=0, description="On SIGTERM, let in-flight requests finish for up to this.")
    extra_args: list[str] = Field(default_factory=list)
    auth: Literal["apiKey", "none"] = Field("apiKey", description="apiKey: every route but health needs the key.")

    def to_argv(self) -> list[str]:
        argv = ["--model", self.model, "--revision", self.revision]
        for name in self.served_model_names:
            argv += ["--served-model-name", name]
        argv += [
            "--max-model-len",
            str(self.max_model_len),
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
            "--port",
            str(self.port),
        ]
        if not self.verify_manifest:
            argv.append("--no-verify-manifest")
        if self.checksum:
            argv += ["--checksum", self.checksum]
        if self.drain_seconds:
            argv += ["--drain-seconds", str(self.drain_seconds)]
        if self.auth == "none":
            argv += ["--auth", "none"]
        if self.extra_args:
            argv += ["--", *self.extra_args]
        return argv

    @classmethod
    def from_argv(cls, argv: list[str]) -> ServingLaunch:
        extra: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, extra = argv[:cut], argv[cut + 1 :]
        parser = argparse.ArgumentParser(prog="twlegal-serve", exit_on_error=False)
        parser.add_argument("--model", required=True)
        parser.add_argument("--revision", required=True)
        parser.add_argument("--served-model-name", action="append", required=True, dest="names")
        parser.add_argument("--max-model-len", type=int, required=True)
        parser.add_argument("--tensor-parallel-size", type=int, default=1)
        parser.add_argument("--port", type=int, default=PORT)
        parser.add_argument("--no-verify-manifest", action="store_true")
        parser.add_argument("--checksum")
        parser.add_argument("--drain-seconds", type=int, default=0)
        parser.add_argument("--auth", choices=("apiKey", "none"), default="apiKey")
        ns = parser.parse_args(argv)
        return cls(
            model=ns.model,
            revision=ns.revision,
            served_model_names=ns.names,
            max_model_len=ns.max_model_len,
            tensor_parallel_size=ns.tensor_parallel_size,
            port=ns.port,
            verify_manifest=not ns.no_verify_manifest,
            checksum=ns.checksum,
            drain_seconds=ns.drain_seconds,
            extra_args=extra,
            auth=ns.auth,
        )
