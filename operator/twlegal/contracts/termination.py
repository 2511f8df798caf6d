"""trainer/evaluator -> operator: the termination message.

The kubelet copies the file at the container's terminationMessagePath into the pod's status, where
the operator reads the result without any volume. The trainer and the evaluator write it through
this one helper; `TWLEGAL_TERMINATION_LOG` moves it (the trainer's launcher points its torchrun
ranks at a file of its own, and tests at a temporary one).

Pure except for the file write.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TERMINATION_LOG_ENV = "TWLEGAL_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"  # the pod spec's default terminationMessagePath
TERMINATION_MESSAGE_LIMIT = 4096  # bytes: the kubelet keeps no more of the file


def fit(text: str, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """`text` cut to `limit` UTF-8 bytes, never inside a character. A last resort: results shrink
    themselves to fit first (TrainingResult.termination_message); the kubelet would cut it anyway."""
    return text.encode()[:limit].decode("utf-8", "ignore")


def termination_log() -> Path:
    return Path(os.environ.get(TERMINATION_LOG_ENV, DEFAULT_TERMINATION_LOG))


def write_termination_message(text: str, *, log_prefix: str | None = None) -> str:
    """Write `text` (fitted to the limit) as the termination message and, with `log_prefix`, print
    it as one log line `<log_prefix> <text>`. Returns what was written."""
    message = fit(text)
    with contextlib.suppress(OSError):  # not in a pod: there is no termination log to write
        termination_log().write_text(message, encoding="utf-8")
    if log_prefix is not None:
        print(f"{log_prefix} {text}", flush=True)
    return message
