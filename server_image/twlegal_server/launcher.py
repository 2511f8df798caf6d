"""`twlegal-serve ARGS`: the serving container's entrypoint.

Parses the operator's args with the one ServingLaunch definition, refuses to start on a missing or
mismatched revision (the weights must match their checksum manifest and name the pinned version),
then replaces itself with vLLM's OpenAI-compatible server, so vLLM is the process that receives
SIGTERM and drains in-flight requests itself. Nothing vLLM does is re-implemented here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twlegal.contracts import manifest
from twlegal.contracts.serving import API_KEY_ENV, ServingLaunch

EXIT_REFUSED = 3


def vllm_argv(launch: ServingLaunch, env: dict[str, str]) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        launch.model,
        "--served-model-name",
        *launch.served_model_names,
        "--max-model-len",
        str(launch.max_model_len),
        "--tensor-parallel-size",
        str(launch.tensor_parallel_size),
        "--host",
        "0.0.0.0",
        "--port",
        str(launch.port),
        "--enable-prefix-caching",
        "--disable-uvicorn-access-log",
        # vLLM's own drain: on SIGTERM, in-flight requests finish (0 would abort them).
        "--shutdown-timeout",
        str(launch.drain_seconds),
    ]
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
            manifest.verify(Path(launch.model), launch.revision)
        except manifest.ManifestError as exc:
            print(f"twlegal-serve: refusing to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
    env = dict(os.environ)
    command = vllm_argv(launch, env)
    print(
        "twlegal-serve: "
        + " ".join("***" if prev == "--api-key" else a for prev, a in zip(["", *command], command, strict=False)),
        flush=True,
    )
    os.execve(command[0], command, vllm_env(launch, env))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
