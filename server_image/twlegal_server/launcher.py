"""`twlegal-serve ARGS`: the serving container's entrypoint.

Parses the operator's args with the one ServingLaunch definition, refuses to start on a missing or
mismatched revision (the weights must match their checksum manifest and name the pinned version),
then replaces itself with vLLM's OpenAI-compatible server, so vLLM is the process that receives
SIGTERM and drains in-flight requests itself. Nothing vLLM does is re-implemented here.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from twlegal.contracts.serving import API_KEY_ENV, ServingLaunch
from twlegal.contracts.training import MANIFEST_FILE

EXIT_REFUSED = 3


class Refused(Exception):
    """The weights are not the revision the release pins."""


def verify(model_dir: Path, revision: str) -> None:
    manifest_path = model_dir / MANIFEST_FILE
    if not model_dir.is_dir():
        raise Refused(f"revision {revision}: model directory {model_dir} does not exist")
    if not manifest_path.is_file():
        raise Refused(f"revision {revision}: {manifest_path} is missing (not published by the trainer?)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("version") != revision:
        raise Refused(f"{model_dir} holds revision {manifest.get('version')!r}, but {revision!r} is pinned")
    for name, expected in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise Refused(f"revision {revision}: {name} is missing")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise Refused(f"revision {revision}: {name} does not match its checksum (corrupted or replaced)")


def vllm_argv(launch: ServingLaunch, env: dict[str, str]) -> list[str]:
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", launch.model,
            "--served-model-name", *launch.served_model_names,
            "--max-model-len", str(launch.max_model_len),
            "--tensor-parallel-size", str(launch.tensor_parallel_size),
            "--host", "0.0.0.0", "--port", str(launch.port),
            "--enable-prefix-caching",
            "--disable-uvicorn-access-log",
            # vLLM's own drain: on SIGTERM, in-flight requests finish (0 would abort them).
            "--shutdown-timeout", str(launch.drain_seconds)]
    if not Path(launch.model).is_dir():
        argv += ["--revision", launch.revision]  # a hub repository: pin the revision there
    if env.get(API_KEY_ENV):
        argv += ["--api-key", env[API_KEY_ENV]]
    return argv + launch.extra_args


def vllm_env(launch: ServingLaunch, env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    if Path(launch.model).is_dir():  # loading from the volume: never reach a hub
        out.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    return out


def main(argv: list[str] | None = None) -> int:
    launch = ServingLaunch.from_argv(list(sys.argv[1:] if argv is None else argv))
    if launch.verify_manifest and Path(launch.model).is_absolute():
        try:
            verify(Path(launch.model), launch.revision)
        except Refused as exc:
            print(f"twlegal-serve: refusing to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
    env = dict(os.environ)
    command = vllm_argv(launch, env)
    print("twlegal-serve: " + " ".join("***" if prev == "--api-key" else a
                                       for prev, a in zip([""] + command, command)), flush=True)
    os.execve(command[0], command, vllm_env(launch, env))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
