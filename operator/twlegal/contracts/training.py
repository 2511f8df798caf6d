"""operator -> trainer (TrainingConfig) and trainer -> operator (TrainingResult)."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Literal

from pydantic import Field

from ..api.common import ApiModel
from ..api.spec import DatasetFormat, DeepSpeed, Hyperparameters, LossGuard

CONFIG_FILE = "training.json"
RESULT_FILE = "twlegal-result.json"
MANIFEST_FILE = "twlegal-manifest.json"
TERMINATION_MESSAGE_LIMIT = 4096


class ExitCode(IntEnum):
    """Exit codes of the trainer; the Job's podFailurePolicy is built from these."""

    SUCCEEDED = 0
    FAILED = 1  # an exception: a code or data error, retrying will not help
    INVALID_CONFIG = 2
    DIVERGED = 3  # loss became non-finite or blew up: nothing is published
    INTERRUPTED = 75  # SIGTERM (preemption): a checkpoint was saved, the retry resumes from it


# Exit codes that mean "the pod was stopped from outside"; the Job retries these.
RETRIABLE_EXIT_CODES = (int(ExitCode.INTERRUPTED), 137, 143)


class ReleaseIdentity(ApiModel):
    namespace: str = Field(description="Namespace of the release.")
    name: str = Field(description="Name of the release.")
    model: str = Field(description="spec.model")
    version: str = Field(description="spec.version")


class ModelSource(ApiModel):
    """A base model: a hub name at a revision, or an absolute path inside the trainer pod."""

    name: str | None = None
    revision: str | None = None
    path: str | None = None


class DatasetSource(ApiModel):
    name: str | None = None
    revision: str | None = None
    split: str | None = None
    path: str | None = None
    format: DatasetFormat = "auto"
    max_samples: int | None = None


class TrainingConfig(ApiModel):
    """Everything the trainer needs; rendered by the operator, validated again by the trainer."""

    release: ReleaseIdentity
    base_model: ModelSource
    datasets: list[DatasetSource] = Field(min_length=1)
    method: Literal["full"] = "full"
    template: Literal["llama3", "tokenizer"] = "llama3"
    cutoff_length: int = Field(ge=16)
    packing: bool = False
    hyperparameters: Hyperparameters
    deepspeed: DeepSpeed
    loss_guard: LossGuard
    processes: int = Field(ge=1, description="Processes (one per GPU; on CPU, as configured).")
    use_cpu: bool = False
    checkpoint_dir: str = Field(description="Absolute directory for resumable checkpoints.")
    checkpoint_every_steps: int = Field(ge=1)
    output_dir: str = Field(description="Absolute directory for the final weights.")
    hub_offline: bool = False

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class TrainingResult(ApiModel):
    """What happened; written beside the weights and, compacted, to the termination message."""

    model_config = {"strict": False}

    outcome: Literal["Succeeded", "Diverged", "Failed", "Interrupted"]
    message: str = ""
    final_loss: float | None = None
    global_step: int | None = None
    total_steps: int | None = None
    epochs: float | None = None
    runtime_seconds: float | None = None
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    total_flos: float | None = None
    resumed_from_step: int | None = None
    checkpoint: str | None = None
    artifact_path: str | None = None
    checksum: str | None = Field(None, description="sha256 of the checksum manifest of the weights.")
    warnings: list[str] = Field(default_factory=list)

    def termination_message(self) -> str:
        """Compact JSON that fits the kubelet's 4 KiB termination-message limit."""
        data = self.to_wire()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and (data.get("warnings") or data.get("message")):
            if data.get("warnings"):
                data["warnings"] = data["warnings"][:-1]
            else:
                data["message"] = data["message"][: len(data["message"]) // 2]
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return text
