"""`twlegal-train run|evaluate --config FILE` and `twlegal-train storage --task JSON`: the
entrypoint of the trainer image.

`run` launches one process per GPU with torchrun (DeepSpeed) when there is more than one, keeps
the exit code contract (ExitCode) across torchrun, and forwards SIGTERM so a preempted run saves.
`storage` is the operator's storage Job: it prunes or reclaims a release's directories.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from twlegal.contracts.termination import TERMINATION_LOG_ENV, write_termination_message
from twlegal.contracts.training import ExitCode, TrainingConfig, TrainingResult


def _load(path: str) -> TrainingConfig:
    return TrainingConfig.model_validate_json(Path(path).read_text(encoding="utf-8"))


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
    except (OSError, ValidationError) as exc:
        print(f"twlegal-train: invalid training config {args.config}: {exc}", file=sys.stderr)
        return int(ExitCode.INVALID_CONFIG)
    if config.processes == 1 and config.use_cpu:
        from .train import run

        return run(config)
    # Workers report through a file; torchrun itself only says "a worker failed".
    result_file = Path(tempfile.mkdtemp(prefix="twlegal-")) / "result.json"
    env = {**os.environ, TERMINATION_LOG_ENV: str(result_file)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={config.processes}",
            *_shutdown_timeout(config.shutdown_timeout_seconds),
            "-m",
            "twlegal_trainer.worker",
            "--config",
            args.config,
        ],
        env=env,
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    code = proc.wait()
    if result_file.exists():
        text = result_file.read_text(encoding="utf-8")
        write_termination_message(text)  # rank 0 has logged it already
        return int(TrainingResult.model_validate_json(text).exit_code())
    return int(ExitCode.FAILED) if code else 0


def _shutdown_timeout(seconds: int) -> list[str]:
    """torchrun's --shutdown-timeout where this torch has it (older builds, as in some CUDA base
    images, kill the ranks 30 s after SIGTERM and have no flag to say otherwise)."""
    from torch.distributed.run import get_args_parser

    flags = get_args_parser()._option_string_actions  # argparse keeps no public list of flags
    return [f"--shutdown-timeout={seconds}"] if "--shutdown-timeout" in flags else []


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import main as evaluate

    return evaluate(args.config)


def cmd_storage(args: argparse.Namespace) -> int:
    from .storage import main as storage

    return storage(args.task)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twlegal-train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("run", cmd_run), ("evaluate", cmd_evaluate)):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True)
        p.set_defaults(func=func)
    p = sub.add_parser("storage")
    p.add_argument("--task", required=True, help="a contracts.storage.StorageTask as JSON")
    p.set_defaults(func=cmd_storage)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
