"""Trainer callbacks: divergence guard, graceful stop on SIGTERM, and checkpoint completion marks."""

from __future__ import annotations

import math
import signal
from pathlib import Path

from transformers import TrainerCallback

from .artifacts import mark_complete


class DivergenceGuard(TrainerCallback):
    """Stops training when the loss is not finite, or exceeds `spike_ratio` x its running minimum."""

    def __init__(self, spike_ratio: float, grace_logs: int = 3):
        self.spike_ratio = spike_ratio
        self.grace_logs = grace_logs
        self.best = math.inf
        self.seen = 0
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        self.seen += 1
        if not math.isfinite(loss):
            self.reason = f"loss became {loss} at step {state.global_step}"
        elif self.seen > self.grace_logs and loss > self.spike_ratio * self.best:
            self.reason = (f"loss {loss:.4g} at step {state.global_step} exceeds {self.spike_ratio:g} x "
                           f"its minimum {self.best:.4g}")
        self.best = min(self.best, loss) if math.isfinite(loss) else self.best
        if self.reason:
            control.should_training_stop = True
            control.should_save = False


class GracefulStop(TrainerCallback):
    """On SIGTERM (preemption), finish the step, save a checkpoint, stop."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        self.requested = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


class MarkComplete(TrainerCallback):
    """After each save, mark the checkpoint complete (a resumed run ignores unmarked ones)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}", args.world_size)
