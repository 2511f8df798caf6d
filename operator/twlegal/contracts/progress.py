"""trainer/evaluator -> operator (and Prometheus): live progress, as Prometheus metrics.

Rank 0 of a training run (and the evaluator) serves its progress on PORT as Prometheus metrics,
the names below. The operator reads them from the pod while the stage runs and writes them into
the release's status; Prometheus scrapes the same endpoint (the pods carry the scrape
annotations). Why this way, and not the trainer writing status itself: the pod then needs no API
permission at all (it gets no service-account token), and the operator never execs into pods;
the only new path is the operator's GET of one port, which the stage's NetworkPolicy opens to the
operator's namespace (and the monitoring namespace) alone.

Pure: the names, and the Progress they make; serving and parsing the text format is left to
prometheus_client on each side.
"""

from __future__ import annotations

import math
from typing import Literal

from ..api.common import ApiModel

PORT = 9400  # the stage container's port named "metrics"
PATH = "/metrics"

Stage = Literal["training", "evaluation"]

# Progress field -> (metric name, help). One table per stage; a metric absent means "not known yet".
METRICS: dict[Stage, dict[str, tuple[str, str]]] = {
    "training": {
        "step": ("twlegal_training_step", "Optimizer steps taken"),
        "total": ("twlegal_training_total_steps", "Optimizer steps planned"),
        "epoch": ("twlegal_training_epoch", "Epochs completed (fractional)"),
        "loss": ("twlegal_training_loss", "Training loss, averaged over the last logged steps"),
        "learning_rate": ("twlegal_training_learning_rate", "Learning rate of the last step"),
        "tokens_per_second": ("twlegal_training_tokens_per_second", "Non-padding tokens per second, this attempt"),
        "eta_seconds": ("twlegal_training_eta_seconds", "Seconds until the last planned step, at this attempt's pace"),
        "resumed_from_step": ("twlegal_training_resumed_from_step", "Step of the checkpoint this attempt resumed"),
        "checkpoint_step": ("twlegal_training_checkpoint_step", "Step of the newest complete checkpoint"),
        "gpu_memory_bytes": ("twlegal_training_gpu_memory_bytes", "Peak GPU memory allocated by rank 0"),
    },
    "evaluation": {
        "step": ("twlegal_evaluation_scored", "Questions scored"),
        "total": ("twlegal_evaluation_questions", "Questions in the benchmark"),
        "eta_seconds": ("twlegal_evaluation_eta_seconds", "Seconds until every question is scored"),
    },
}
STAGE_METRIC = {stage: fields["step"][0] for stage, fields in METRICS.items()}
COUNTS = frozenset({"step", "total", "resumed_from_step", "checkpoint_step"})  # whole numbers


class Progress(ApiModel):
    """How far a stage is, as its pod reports it."""

    stage: Stage
    step: int | None = None
    total: int | None = None
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None
    resumed_from_step: int | None = None
    checkpoint_step: int | None = None
    gpu_memory_bytes: float | None = None

    def samples(self) -> dict[str, float]:
        """Metric name -> value, for the fields that are known."""
        names = METRICS[self.stage]
        values = {field: getattr(self, field) for field in names}
        return {names[field][0]: float(value) for field, value in values.items() if value is not None}

    @classmethod
    def from_samples(cls, samples: dict[str, float]) -> Progress | None:
        """The Progress a pod's metrics tell (None: they carry no stage's step)."""
        stage = next((s for s, metric in STAGE_METRIC.items() if metric in samples), None)
        if stage is None:
            return None
        values: dict[str, float | int] = {}
        for field, (metric, _) in METRICS[stage].items():
            value = samples.get(metric)
            if value is None or not math.isfinite(value):
                continue
            values[field] = int(value) if field in COUNTS else value
        return cls.model_validate({"stage": stage, **values})

    def percent(self) -> int | None:
        if self.step is None or not self.total:
            return None
        return max(0, min(100, math.floor(100 * self.step / self.total)))

    def status(self, now: str) -> dict[str, object]:
        """The release's status.progress (camelCase, unset fields absent)."""
        percent = self.percent()
        if percent is not None:
            summary = f"{percent}% ({self.step}/{self.total})"
        else:
            summary = "starting" if self.step is None else f"{self.step} done"
        values = {
            "stage": self.stage,
            "summary": summary,
            "percent": percent,
            "step": self.step,
            "total": self.total,
            "epoch": None if self.epoch is None else round(self.epoch, 3),
            "loss": None if self.loss is None else round(self.loss, 4),
            "learningRate": self.learning_rate,
            "tokensPerSecond": None if self.tokens_per_second is None else round(self.tokens_per_second, 1),
            "etaSeconds": None if self.eta_seconds is None else round(self.eta_seconds),
            "eta": None if self.eta_seconds is None else human_duration(self.eta_seconds),
            "resumedFromStep": self.resumed_from_step,
            "checkpointStep": self.checkpoint_step,
            "gpuMemoryBytes": self.gpu_memory_bytes,
            "updated": now,
        }
        return {key: value for key, value in values.items() if value is not None}


def human_duration(seconds: float) -> str:
    """12s, 4m05s, 2h13m, 3d04h: what kubectl shows for ages."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
