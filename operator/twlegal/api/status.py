"""`status` of a LegalModelRelease: written by the operator only (status subresource)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from .common import StatusModel


class Phase(StrEnum):
    """status.phase: the lifecycle in one word, for printer columns and humans."""

    PENDING = "Pending"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    ROLLING_OUT = "RollingOut"
    SERVING = "Serving"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"
    REJECTED = "Rejected"
    ROLLED_BACK = "RolledBack"
    COMPLETED = "Completed"  # trained and passed, with spec.serving.enabled false


PHASES: tuple[str, ...] = tuple(phase.value for phase in Phase)
# A release in one of these never moves again: a new run is a new release. Each ends with a
# Warning event, and its model card says not to serve it.
TERMINAL_PHASES = frozenset({Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK})
WARNING_PHASES = TERMINAL_PHASES


class Condition(StatusModel):
    """A metav1.Condition."""

    type: str = Field(description="Trained, Evaluated, Deployed, Ready or InputsPinned.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.", max_length=1024)
    message: str = Field("", description="Human-readable details.", max_length=32768)
    observed_generation: int | None = Field(None, description="spec generation the condition reflects.", ge=0)
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")


class WrittenSection(StatusModel):
    """A status section the operator writes: read tolerantly (an older or newer operator may have
    written it), but written strictly, so a misspelt key fails instead of being dropped."""

    @classmethod
    def written(cls, values: dict[str, Any]) -> dict[str, Any]:
        known = {field.alias or name for name, field in cls.model_fields.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return cls.model_validate(values).to_wire()


class TrainingStatus(WrittenSection):
    """What the training Job did, from the trainer's result."""

    job: str | None = Field(None, description="Name of the training Job.")
    start_time: str | None = Field(None, description="When the Job started.")
    completion_time: str | None = Field(None, description="When the Job finished.")
    attempts: int | None = Field(None, description="Pods the Job ran (retries after preemption included).")
    world_size: int | None = Field(None, description="Training processes (one per GPU) of the run.")
    samples: int | None = Field(None, description="Training sequences per epoch (after packing).")
    epochs: float | None = Field(None, description="Epochs the run completed.")
    final_loss: float | None = Field(None, description="Training loss at the end of the run.")
    global_step: int | None = Field(None, description="Optimizer steps taken.")
    total_steps: int | None = Field(None, description="Optimizer steps planned.")
    runtime_seconds: float | None = Field(None, description="Training runtime in seconds.")
    samples_per_second: float | None = Field(None, description="Training samples per second.")
    tokens_per_second: float | None = Field(None, description="Training tokens per second.")
    total_flos: float | None = Field(None, description="Floating-point operations of the run.")
    checkpoint: str | None = Field(None, description="Newest checkpoint on the storage volume.")
    resumed_from_step: int | None = Field(None, description="Checkpoint step the last attempt resumed from.")
    loss_plot: str | None = Field(
        None, description="The loss curve's file name beside the weights (the card shows it)."
    )
    warnings: list[str] | None = Field(None, description="Warnings the trainer raised (e.g. warm-up >= total steps).")


class EvaluationStatus(WrittenSection):
    """The score of the release on its benchmark."""

    job: str | None = Field(None, description="Name of the evaluation Job.")
    benchmark: str | None = Field(None, description="Benchmark name or path.")
    score: float | None = Field(None, description="Accuracy in percent.")
    min_score: float | None = Field(None, description="Threshold the score was held against.")
    passed: bool | None = Field(None, description="Whether the release may be served.")
    protocol: str | None = Field(None, description="How questions were scored: letter or choiceText.")
    subjects: str | None = Field(None, description="Per-subject accuracy in brief: how many, and the weakest.")
    chart: str | None = Field(None, description="Per-subject bar chart, a file beside the weights.")


class ServingStatus(WrittenSection):
    """Where the release is (or was) served."""

    target: str | None = Field(None, description="Serving target.")
    deployment: str | None = Field(None, description="Name of the vLLM Deployment.")
    service: str | None = Field(None, description="Name of the Service.")
    endpoint: str | None = Field(None, description="In-cluster OpenAI-compatible base URL.")
    api_key_secret: str | None = Field(
        None, description="Secret/key holding the API key clients send (the name only; absent: auth is off)."
    )
    revision: str | None = Field(None, description="Revision the Deployment serves for this release.")
    ready_replicas: int | None = Field(None, description="Ready serving pods.")
    previous_revision: str | None = Field(None, description="Revision that served before this release.")
    serving_since: str | None = Field(None, description="When this release started serving.")
    superseded_by: str | None = Field(None, description="Release that replaced this one.")
    served_until: str | None = Field(None, description="When a newer release took over the target.")
    rejected_update: str | None = Field(
        None,
        description="Spec hash of an update of this release's Deployment that was rolled back; not tried again "
        "until the release's spec or the operator's settings change it.",
    )


class ResolvedInput(StatusModel):
    """One input as the trainer actually loaded it: what was asked for, and what it resolved to."""

    name: str | None = Field(None, description="Hub repository id, as given in spec.")
    path: str | None = Field(None, description="Path the trainer loaded it from (inside its pod).")
    revision: str | None = Field(None, description="Revision asked for in spec (none: unpinned).")
    commit: str | None = Field(None, description="Hub commit id the revision resolved to when loaded.")
    checksum: str | None = Field(None, description="sha256 over the files loaded from a path.")


class InputsStatus(WrittenSection):
    """The base model and datasets the run loaded, resolved by the trainer (model card provenance)."""

    base_model: ResolvedInput | None = Field(None, description="The base model.")
    datasets: list[ResolvedInput] | None = Field(None, description="The datasets, in spec order.")


class ArtifactStatus(WrittenSection):
    """The release's final weights."""

    path: str | None = Field(None, description="Directory of the weights on the storage volume.")
    checksum: str | None = Field(None, description="sha256 of the weights' checksum manifest.")


class StorageStatus(WrittenSection):
    """The release's directories on the volume, resolved (and fixed) when its training Job is created."""

    claim_name: str | None = Field(None, description="PersistentVolumeClaim that holds them.")
    checkpoint_path: str | None = Field(None, description="Checkpoint directory (relative to the volume).")
    artifact_path: str | None = Field(None, description="Weights directory (relative to the volume).")
    checkpoints_pruned: bool | None = Field(None, description="Whether retention has pruned the checkpoints.")
    message: str | None = Field(None, description="What the last storage Job did (pruned, reclaimed, kept and why).")


class ProgressStatus(WrittenSection):
    """How far the running stage is, as its pod reports it (contracts/progress.py); refreshed while
    the release trains or evaluates, absent otherwise."""

    stage: Literal["training", "evaluation"] | None = Field(None, description="The stage that reports.")
    summary: str | None = Field(None, description="e.g. '42% (420/1000)': the Progress column.")
    percent: int | None = Field(None, description="Steps (or questions) done, in percent of those planned.")
    step: int | None = Field(None, description="Optimizer steps taken (evaluation: questions scored).")
    total: int | None = Field(None, description="Optimizer steps planned (evaluation: questions).")
    epoch: float | None = Field(None, description="Epochs completed (fractional).")
    loss: float | None = Field(None, description="Training loss averaged over the last logged steps.")
    learning_rate: float | None = Field(None, description="Learning rate of the last step.")
    tokens_per_second: float | None = Field(None, description="Non-padding tokens per second of this attempt.")
    eta_seconds: int | None = Field(None, description="Seconds until the stage ends, at this attempt's pace.")
    eta: str | None = Field(None, description="The same, for humans (4m05s): the ETA column.")
    resumed_from_step: int | None = Field(None, description="Checkpoint step this attempt resumed from.")
    checkpoint_step: int | None = Field(None, description="Step of the newest complete checkpoint.")
    gpu_memory_bytes: float | None = Field(None, description="Peak GPU memory allocated by rank 0.")
    updated: str | None = Field(None, description="When the operator last read it from the pod (RFC 3339).")


class LegalModelReleaseStatus(StatusModel):
    """Observed state of the release."""

    observed_generation: int | None = Field(None, description="Generation of spec this status reflects.")
    phase: Phase | None = Field(None, description="Summary of the lifecycle for humans and printer columns.")
    conditions: list[Condition] | None = Field(
        None,
        description="Trained, Evaluated, Deployed and Ready conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    training: TrainingStatus | None = Field(None, description="Training run.")
    evaluation: EvaluationStatus | None = Field(None, description="Evaluation result.")
    serving: ServingStatus | None = Field(None, description="Serving state.")
    artifact: ArtifactStatus | None = Field(None, description="Final weights.")
    inputs: InputsStatus | None = Field(None, description="Resolved base model and dataset revisions.")
    storage: StorageStatus | None = Field(None, description="The release's directories on the storage volume.")
    progress: ProgressStatus | None = Field(None, description="Live progress of the running stage.")


# The sections of status the operator writes, by their key in status.
SECTIONS: dict[str, type[WrittenSection]] = {
    "training": TrainingStatus,
    "evaluation": EvaluationStatus,
    "serving": ServingStatus,
    "artifact": ArtifactStatus,
    "inputs": InputsStatus,
    "storage": StorageStatus,
    "progress": ProgressStatus,
}
