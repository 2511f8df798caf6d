"""operator -> trainer (TrainingConfig) and trainer -> operator (TrainingResult)."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ..api.common import ApiModel
from ..api.sources import DatasetColumns, DatasetFormat, DatasetTags
from ..api.spec import DeepSpeed, Hyperparameters, LegalModelReleaseSpec, LossGuard
from ..api.status import InputsStatus
from .progress import PORT as PROGRESS_PORT
from .storage import StorageOwner
from .termination import TERMINATION_MESSAGE_LIMIT

CONFIG_FILE = "training.json"
RESULT_FILE = "twlegal-result.json"
CARD_FILE = "README.md"  # the model card, where the hub expects it
LOSS_PLOT_FILE = "training_loss.png"  # beside the weights; the card shows it
PREPARED_DIR = "prepared"  # under the checkpoint directory: the tokenised samples, by what shapes them
TENSORBOARD_DIR = "runs"  # under the checkpoint directory: TensorBoard event files, a folder per attempt


class ExitCode(IntEnum):
    """Exit codes of the trainer; the Job's podFailurePolicy is built from these."""

    SUCCEEDED = 0
    FAILED = 1  # an exception: a code or data error, retrying will not help
    INVALID_CONFIG = 2
    DIVERGED = 3  # loss became non-finite or blew up: nothing is published
    STORAGE_FULL = 4  # no space left while saving: the newest complete checkpoint stays usable
    STORAGE_CONFLICT = 5  # the checkpoint or weights directory belongs to another release
    INTERRUPTED = 75  # SIGTERM (preemption): a checkpoint was saved, the retry resumes from it


# Exit codes that mean "the pod was stopped from outside"; the Job retries these.
RETRIABLE_EXIT_CODES = (int(ExitCode.INTERRUPTED), 137, 143)


_OUTCOME_EXIT = {
    "Succeeded": ExitCode.SUCCEEDED,
    "Diverged": ExitCode.DIVERGED,
    "Interrupted": ExitCode.INTERRUPTED,
    "Failed": ExitCode.FAILED,
    "StorageFull": ExitCode.STORAGE_FULL,
    "StorageConflict": ExitCode.STORAGE_CONFLICT,
}


class ReleaseIdentity(ApiModel):
    namespace: str = Field(description="Namespace of the release.")
    name: str = Field(description="Name of the release.")
    model: str = Field(description="spec.model")
    version: str = Field(description="spec.version")
    uid: str | None = Field(None, description="metadata.uid (recorded with what the run writes).")
    inputs: str = Field("", description="contracts.storage.inputs_digest of the spec.")

    def owner(self) -> StorageOwner:
        """The owner the run records on its directories and checks on what it finds there."""
        return StorageOwner(namespace=self.namespace, name=self.name, uid=self.uid, inputs=self.inputs)


class ModelSource(ApiModel):
    """A base model: a hub name at a revision, or an absolute path inside the trainer pod."""

    name: str | None = None
    revision: str | None = None
    path: str | None = None


class DatasetSource(ApiModel):
    name: str | None = None
    revision: str | None = None
    subset: str | None = None
    split: str | None = None
    path: str | None = None
    format: DatasetFormat = "auto"
    columns: DatasetColumns = Field(default_factory=DatasetColumns)
    tags: DatasetTags = Field(default_factory=DatasetTags)
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
    max_dropped_samples_percent: float = Field(5.0, ge=0, le=100)
    hyperparameters: Hyperparameters
    deepspeed: DeepSpeed
    loss_guard: LossGuard
    processes: int = Field(ge=1, description="Processes (one per GPU; on CPU, as configured).")
    use_cpu: bool = False
    checkpoint_dir: str = Field(description="Absolute directory for resumable checkpoints.")
    checkpoint_every_steps: int = Field(ge=1)
    output_dir: str = Field(description="Absolute directory for the final weights.")
    hub_offline: bool = False
    # How long torchrun lets the ranks finish after SIGTERM before it kills them (its own default is
    # 30 s): most of the pod's grace period, so a multi-GPU checkpoint save is not cut short.
    shutdown_timeout_seconds: int = Field(30, ge=1)
    # Rank 0 serves its progress here (contracts/progress.py); None: not served.
    metrics_port: int | None = Field(PROGRESS_PORT, ge=1, le=65535)
    # The release's spec, so the card the trainer writes beside the weights is rendered from the
    # same spec as `twlegal card` (the trainer itself reads only the fields above).
    spec: LegalModelReleaseSpec | None = None

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class TrainingResult(ApiModel):
    """What happened; written beside the weights and, compacted, to the termination message."""

    model_config = ConfigDict(strict=False)

    outcome: Literal["Succeeded", "Diverged", "Failed", "Interrupted", "StorageFull", "StorageConflict"]
    message: str = ""
    final_loss: float | None = None
    global_step: int | None = None
    total_steps: int | None = None
    epochs: float | None = None
    runtime_seconds: float | None = None
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    total_flos: float | None = None
    samples: int | None = Field(None, description="Training sequences per epoch (after packing).")
    world_size: int | None = Field(None, description="Training processes (one per GPU).")
    inputs: InputsStatus | None = Field(None, description="Base model and datasets as resolved when loaded.")
    resumed_from_step: int | None = None
    checkpoint: str | None = None
    artifact_path: str | None = None
    checksum: str | None = Field(None, description="sha256 of the checksum manifest of the weights.")
    loss_plot: str | None = Field(None, description="The loss curve's file name beside the weights.")
    warnings: list[str] = Field(default_factory=list)

    def exit_code(self) -> ExitCode:
        """The trainer's exit code for this outcome (the launcher keeps it across torchrun)."""
        return _OUTCOME_EXIT[self.outcome]

    def termination_message(self) -> str:
        """Compact JSON that fits the kubelet's 4 KiB termination-message limit."""
        data = self.to_wire()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        # What goes first when it does not fit: warnings, then the message, then the dataset
        # provenance (the file beside the weights keeps all of it; the card shows it as missing).
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and (
            data.get("warnings") or data.get("message") or (data.get("inputs") or {}).get("datasets")
        ):
            if data.get("warnings"):
                data["warnings"] = data["warnings"][:-1]
            elif data.get("message"):
                data["message"] = data["message"][: len(data["message"]) // 2]
            else:
                data["inputs"].pop("datasets")
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return text

    def status_sections(self) -> dict[str, dict[str, Any]]:
        """The result as the release's status records it (camelCase sections, unset ones absent)."""
        training = {
            "finalLoss": self.final_loss,
            "globalStep": self.global_step,
            "totalSteps": self.total_steps,
            "epochs": self.epochs,
            "runtimeSeconds": self.runtime_seconds,
            "samplesPerSecond": self.samples_per_second,
            "tokensPerSecond": self.tokens_per_second,
            "totalFlos": self.total_flos,
            "samples": self.samples,
            "worldSize": self.world_size,
            "checkpoint": self.checkpoint,
            "resumedFromStep": self.resumed_from_step,
            "lossPlot": self.loss_plot,
            "warnings": self.warnings or None,
        }
        sections: dict[str, dict[str, Any]] = {"training": {k: v for k, v in training.items() if v is not None}}
        artifact = {k: v for k, v in {"path": self.artifact_path, "checksum": self.checksum}.items() if v}
        if artifact:
            sections["artifact"] = artifact
        if self.inputs is not None:
            sections["inputs"] = self.inputs.to_wire()
        return sections
