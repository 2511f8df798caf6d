"""`twlegal-serve ARGS`: the serving container's entrypoint.

Parses the operator's args with the one ServingLaunch definition, refuses to start on a missing or
mismatched revision (the weights must match their checksum manifest and name the pinned version),
then replaces itself with vLLM's OpenAI-compatible server, so vLLM is the process that receives
SIGTERM and drains in-flight requests itself. Nothing vLLM does is re-implemented here.

Closed by default: the key comes only from the environment (TWLEGAL_API_KEY, from the Secret) and
is checked by twlegal_server.auth on every route but /health and /ping; without a key the server
does not start unless the release said `auth: none`. Extra args that re-point or weaken the server
are refused here as the CRD refuses them, and the launcher's own flags come after the extra args
(argparse keeps the last value), so none can win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twlegal.api.serving_flags import refused_flags
from twlegal.contracts import manifest
from twlegal.contracts.serving import API_KEY_ENV, ServingLaunch

EXIT_REFUSED = 3


AUTH_MIDDLEWARE = "twlegal_server.auth.RequireApiKey"


class Refused(Exception):
    """The launch would serve something else than asked, or serve it open."""


def refused_extra_args(args: list[str]) -> list[str]:
    """refused_flags, plus vLLM's dotted form: its parser turns `--trust-remote-code.x 1` into
    `--trust-remote-code '{"x": 1}'` (a store-true flag, and the JSON a stray positional), so the
    flag before the first `.` is what vLLM sees."""
    refused = []
    for arg in args:
        name = arg.split("=", 1)[0]
        dotted = arg.startswith("--") and "." in name and bool(refused_flags([name.split(".", 1)[0]]))
        if dotted or refused_flags([arg]):
            refused.append(arg)
    return refused


def check(launch: ServingLaunch, env: dict[str, str]) -> None:
    refused = refused_extra_args(launch.extra_args)
    if refused:
        raise Refused(
            f"spec.serving.extraArgs names {', '.join(refused)}: flags the launcher sets itself or that weaken "
            "the server are refused"
        )
    if launch.auth == "apiKey" and not env.get(API_KEY_ENV, "").strip():
        raise Refused(f"{API_KEY_ENV} is empty: the key Secret is missing (or has no such key); not serving openly")


def vllm_argv(launch: ServingLaunch, env: dict[str, str]) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *launch.extra_args,
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
    if launch.auth == "apiKey":
        argv += ["--middleware", AUTH_MIDDLEWARE]  # reads the key from the environment itself
    return argv


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
            manifest.verify(Path(launch.model), launch.revision, launch.checksum)
        except manifest.ManifestError as exc:
            print(f"twlegal-serve: refusing to start: {exc}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
    env = dict(os.environ)
    try:
        check(launch, env)
    except Refused as exc:
        print(f"twlegal-serve: refusing to start: {exc}", file=sys.stderr, flush=True)
        return EXIT_REFUSED
    command = vllm_argv(launch, env)
    print("twlegal-serve: " + " ".join(command), flush=True)  # nothing secret is on it
    os.execve(command[0], command, vllm_env(launch, env))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
