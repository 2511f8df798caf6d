"""Trainer callbacks: divergence guard, graceful stop on SIGTERM, checkpoint completion marks, and
live progress."""

from __future__ import annotations

import math
import signal
import time
from collections import deque
from pathlib import Path

from transformers import TrainerCallback

from twlegal.contracts.storage import StorageOwner

from .artifacts import mark_complete
from .progress import ProgressServer

LOSS_WINDOW = 10  # logged steps the reported loss is averaged over


class DivergenceGuard(TrainerCallback):
    """Stops training when the loss is not finite, or when its average over the last `window` logs
    exceeds `spike_ratio` x the lowest such average so far (or x the first loss, so a run that blows
    up from its first steps is caught before any average is low).

    Averaging is what tells a collapse (the loss climbing and staying up, as in the seed model's
    v1.1.0) from one hard batch: late in a run a single batch at 4x a near-zero minimum is noise,
    and an unsmoothed guard rejected healthy runs on a real node."""

    def __init__(self, spike_ratio: float, window: int = 5):
        self.spike_ratio = spike_ratio
        self.window = window
        self.recent: list[float] = []
        self.best = math.inf  # the lowest windowed average; the first loss until a window is full
        self.reason: str | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        if not math.isfinite(loss):
            self.reason = f"loss became {loss} at step {state.global_step}"
        else:
            if not self.recent:
                self.best = loss  # the baseline until the first window is full
            self.recent = [*self.recent, loss][-self.window :]
            if len(self.recent) == self.window:
                average = sum(self.recent) / self.window
                if average > self.spike_ratio * self.best:
                    self.reason = (
                        f"loss averaged {average:.4g} over the {self.window} logs to step "
                        f"{state.global_step}, above {self.spike_ratio:g} x its minimum {self.best:.4g}"
                    )
                self.best = min(self.best, average)
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
    """After each save, mark the checkpoint complete and this run's (a resumed run ignores
    unmarked ones, and those of another run)."""

    def __init__(self, owner: StorageOwner):
        self.owner = owner

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}", args.world_size, self.owner)


class ProgressReporter(TrainerCallback):
    """Feeds a ProgressServer from the HF Trainer: steps, epoch, the loss averaged over the last
    LOSS_WINDOW logs, the learning rate, this attempt's tokens/s and the ETA at its pace, the newest
    checkpoint, the step it resumed from, and rank 0's peak GPU memory."""

    def __init__(self, server: ProgressServer, resumed_from_step: int | None):
        self.server = server
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.started = time.monotonic()
        self.first_step = 0
        self.first_tokens = 0
        # Until this attempt saves, the newest complete checkpoint is the one it resumed from.
        server.update(resumed_from_step=resumed_from_step, checkpoint_step=resumed_from_step)

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume the state holds the steps and tokens of the attempts before this one.
        self.started = time.monotonic()
        self.first_step = state.global_step
        self.first_tokens = int(state.num_input_tokens_seen or 0)
        self.server.update(step=state.global_step, total=state.max_steps, epoch=state.epoch or 0.0)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if isinstance(logs.get("loss"), int | float) and math.isfinite(logs["loss"]):
            self.losses.append(float(logs["loss"]))
            self.server.update(loss=sum(self.losses) / len(self.losses))
        if isinstance(logs.get("learning_rate"), int | float):
            self.server.update(learning_rate=float(logs["learning_rate"]))

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = state.global_step - self.first_step
        remaining = max(state.max_steps - state.global_step, 0)
        self.server.update(
            step=state.global_step,
            total=state.max_steps,
            epoch=state.epoch,
            tokens_per_second=(int(state.num_input_tokens_seen or 0) - self.first_tokens) / elapsed,
            eta_seconds=elapsed / done * remaining if done > 0 else None,
            gpu_memory_bytes=_gpu_memory(),
        )

    def on_save(self, args, state, control, **kwargs):
        self.server.update(checkpoint_step=state.global_step)


def _gpu_memory() -> float | None:
    import torch

    return float(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
