"""`spec` of a LegalModelRelease: what to train, on what, how, and how to serve it.

Field names are the public contract (see README "API"). Every field carries a description because
the CRD is generated from these models and `kubectl explain lmr.spec...` shows them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from .common import (
    DNS_LABEL,
    ApiModel,
    DnsLabel,
    Quantity,
    RepoId,
    Revision,
    SecretKeyRef,
    Toleration,
    cel,
    immutable,
    relative_path,
    rules,
)
from .serving_flags import REFUSED_FLAG_PATTERN
from .sources import NAME_XOR_PATH, REVISION_NEEDS_NAME, BenchmarkRef, DatasetRef

VERSION_PATTERN = r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"


class BaseModelRef(ApiModel):
    """The model to fine-tune: a hub repository pinned to a revision, or a path on the storage volume."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            NAME_XOR_PATH,
            cel(
                "!has(self.name) || has(self.revision)",
                "revision is required with name: pin the base model so the release is reproducible",
            ),
            REVISION_NEEDS_NAME,
        )
    )

    name: RepoId | None = Field(None, description="Hub repository id, e.g. lianghsun/Llama-3.2-Taiwan-3B.")
    revision: Revision | None = Field(
        None, description="Hub revision (tag, branch or commit) of name, e.g. v2024.10.27."
    )
    path: str | None = relative_path(
        "Directory of a saved model on the storage volume (relative to its root), for air-gapped clusters.",
        default=None,
    )


LrScheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "cosine_with_min_lr",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "warmup_stable_decay",
]
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_apex_fused",
    "adamw_8bit",
    "adafactor",
    "sgd",
    "lion_32bit",
]
Precision = Literal["bf16", "fp16", "fp32"]


class Hyperparameters(ApiModel):
    """Optimisation settings, mapped one to one onto the Hugging Face Trainer's arguments."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = Field(description="Peak learning rate, e.g. 5e-5.")
    per_device_batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(description="Samples per GPU per forward pass.")
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = Field(
        1, description="Forward passes accumulated per optimizer step."
    )
    epochs: Annotated[float, Field(gt=0, le=1000)] = Field(description="Passes over the training data.")
    lr_scheduler: LrScheduler = Field("cosine", description="Learning-rate schedule.")
    warmup_steps: Annotated[int, Field(ge=0)] = Field(
        0, description="Optimizer steps of linear warm-up; should be well below the total steps."
    )
    optimizer: Optimizer = Field("adamw_torch_fused", description="Optimizer, as the HF Trainer names it.")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Weight decay.")
    max_grad_norm: Annotated[float, Field(gt=0)] = Field(1.0, description="Gradient clipping norm.")
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = Field(42, description="Random seed.")
    precision: Precision = Field("bf16", description="Training precision: bf16, fp16 or fp32.")


class DeepSpeed(ApiModel):
    """DeepSpeed ZeRO settings; batch sizes and the rest are filled in by the HF integration."""

    zero_stage: Annotated[int, Field(ge=0, le=3)] = Field(2, description="ZeRO stage 0, 1, 2 or 3.")
    offload: Literal["none", "cpu"] = Field(
        "none", description="Offload optimizer state (and with stage 3, parameters) to CPU memory."
    )


class ComputeResources(ApiModel):
    """Where and with how much a pod runs."""

    gpu_resource_name: Annotated[
        str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", max_length=253)
    ] = Field("nvidia.com/gpu", description="Extended resource name of a GPU on your nodes.")
    cpu: Quantity | None = Field(None, description="CPU request and limit, e.g. 32 or 500m.")
    memory: Quantity | None = Field(None, description="Memory request and limit, e.g. 256Gi.")
    node_selector: (
        dict[Annotated[str, StringConstraints(max_length=316)], Annotated[str, StringConstraints(max_length=63)]] | None
    ) = Field(None, description="Node labels the pod must match.", max_length=32)
    tolerations: list[Toleration] | None = Field(
        None, description="Taints the pod tolerates (e.g. of a GPU node pool).", max_length=32
    )


class TrainingResources(ComputeResources):
    """Resources of the single training pod (all GPUs in one pod, one process per GPU)."""

    gpus: Annotated[int, Field(ge=0, le=64)] = Field(
        8, description="GPUs in the training pod; 0 trains on CPU (tests, demos)."
    )
    shared_memory: Quantity = Field(
        "16Gi", description="Size of the in-memory /dev/shm that NCCL and data loaders use."
    )


class Training(ApiModel):
    """How the base model is fine-tuned."""

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None, description="Trainer image; defaults to the operator's configured trainer image."
    )
    method: Literal["full"] = Field("full", description="Fine-tuning method: full-parameter SFT (lora planned).")
    template: Literal["llama3", "tokenizer"] = Field(
        "llama3",
        description="Chat template: llama3 (the Llama-3 instruct format), or tokenizer (the base "
        "tokenizer's own). The template is saved with the weights so serving uses the same one.",
    )
    cutoff_length: Annotated[int, Field(ge=16, le=131072)] = Field(
        2048, description="Tokens per sample (or packed sequence); longer samples are truncated."
    )
    packing: bool = Field(False, description="Pack several samples into each sequence.")
    max_dropped_samples_percent: Annotated[float, Field(ge=0, le=100)] = Field(
        5.0,
        description="Fail the run when more than this percent of the samples lose every reply token to "
        "cutoffLength (such samples teach nothing and are dropped; fewer are counted in the warnings).",
    )
    hyperparameters: Hyperparameters = Field(
        description="Optimisation settings (immutable).",
        json_schema_extra=rules(immutable("spec.training.hyperparameters")),
    )
    deepspeed: DeepSpeed = Field(
        default_factory=DeepSpeed, description="DeepSpeed ZeRO settings.", json_schema_extra={"default": {}}
    )
    resources: TrainingResources = Field(
        default_factory=TrainingResources,
        description="Pod resources and placement.",
        json_schema_extra={"default": {}},
    )
    checkpoint_every_steps: Annotated[int, Field(ge=1)] = Field(
        100, description="Save a resumable checkpoint every this many optimizer steps."
    )
    max_retries: Annotated[int, Field(ge=0, le=20)] = Field(
        3,
        description="Retries of a pod that was preempted, evicted, lost with its node or OOMKilled (all "
        "count); a code error is not retried.",
    )
    start_deadline_seconds: Annotated[int, Field(ge=10, le=86400)] = Field(
        600,
        description="A training or evaluation pod that cannot start for this long because of its image "
        "(ImagePullBackOff) or its config (a missing Secret or key: CreateContainerConfigError) fails the "
        "release. An unschedulable pod waits on (an autoscaler or a queue may bring the node) and says why.",
    )


class LossGuard(ApiModel):
    """When a training loss means the model diverged (a diverged model is never served)."""

    max_final_loss: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Reject the release when the final training loss is above this."
    )
    max_spike_ratio: Annotated[float, Field(gt=1, le=1000)] = Field(
        4.0,
        description="Stop training as Diverged when the loss, averaged over the last 5 logged steps, "
        "exceeds this multiple of the lowest such average (a non-finite loss always stops it).",
    )


class Evaluation(ApiModel):
    """Scoring after training; a release below minScore or with a diverged loss is Rejected."""

    benchmark: BenchmarkRef = Field(description="The benchmark to score on.")
    min_score: Annotated[float, Field(ge=0, le=100)] = Field(
        description="Minimum accuracy in percent for the release to be served."
    )
    loss_guard: LossGuard = Field(
        default_factory=LossGuard, description="Loss-divergence guard.", json_schema_extra={"default": {}}
    )
    gpus: Annotated[int, Field(ge=0, le=16)] = Field(1, description="GPUs of the evaluation pod.")


# One CEL rule per extraArgs item: the launcher refuses these flags too (api/serving_flags.py).
NO_REFUSED_FLAG = cel(
    f"!self.matches({REFUSED_FLAG_PATTERN!r})",
    "is a flag the launcher sets itself (model, revision, address, key) or one that weakens the server "
    "(remote code, local files, CORS, request logging); see the README's list of refused vLLM flags",
)


class AllowFrom(ApiModel):
    """A source allowed to reach the serving port: a namespace, pods, or pods in a namespace."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel("has(self.namespace) || has(self.podSelector)", "name a namespace, a podSelector or both")
        )
    )

    namespace: DnsLabel | None = Field(None, description="A namespace, by name; all its pods unless podSelector.")
    pod_selector: (
        dict[Annotated[str, StringConstraints(max_length=316)], Annotated[str, StringConstraints(max_length=63)]] | None
    ) = Field(
        None,
        description="Labels (matchLabels) of the pods allowed, in `namespace` or else in the release's namespace.",
        max_length=16,
    )


class Serving(ApiModel):
    """The vLLM Deployment that serves the newest passing release of a target."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.auth != 'none' || !has(self.apiKeySecret)",
                "auth none serves without a key: do not also name apiKeySecret",
                field_path=".auth",
            )
        )
    )

    target: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=52)] | None = Field(
        None,
        description="Serving name shared by successive releases (the Deployment and Service name); "
        "defaults to a name derived from spec.model.",
    )
    enabled: bool = Field(True, description="Roll the release out after it passes; false only trains.")
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None, description="Server image; defaults to the operator's configured vLLM server image."
    )
    replicas: Annotated[int, Field(ge=1, le=100)] = Field(1, description="Serving pods.")
    gpus: Annotated[int, Field(ge=0, le=16)] = Field(
        1, description="GPUs per serving pod (the tensor-parallel size); 0 serves on CPU."
    )
    max_model_len: Annotated[int, Field(ge=16, le=1048576)] = Field(
        4096, description="Longest context (prompt + completion) in tokens."
    )
    served_model_name: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", max_length=128)] | None
    ) = Field(
        None,
        description="Stable name clients request; defaults to spec.model. The revision-qualified "
        "name <servedModelName>:<version> is served too.",
    )
    auth: Literal["apiKey", "none"] = Field(
        "apiKey",
        description="apiKey (default): every route but /health and /ping needs `Authorization: Bearer <key>`, "
        "the key from apiKeySecret, else the operator's default Secret, else a Secret the operator generates for "
        "the target (<target>-api-key, named in status.serving.apiKeySecret). none: an open endpoint, only when "
        "asked for.",
    )
    api_key_secret: SecretKeyRef | None = Field(
        None,
        description="Secret holding the API key clients must send (its `previous-<key>` entry, if present, is "
        "accepted too, for a rotation without failed requests).",
    )
    allow_from: list[AllowFrom] | None = Field(
        None,
        description="Who may reach the serving port (a NetworkPolicy per target); default: pods of the "
        "release's namespace. The operator's monitoring namespace may always scrape (with the key).",
        max_length=32,
    )
    extra_args: (
        list[Annotated[str, StringConstraints(max_length=256), Field(json_schema_extra=rules(NO_REFUSED_FLAG))]] | None
    ) = Field(
        None,
        description="Extra vLLM arguments, passed after validation; flags the launcher sets or that weaken the "
        "server are refused.",
        max_length=64,
    )
    resources: ComputeResources = Field(
        default_factory=ComputeResources,
        description="Pod resources and placement.",
        json_schema_extra={"default": {}},
    )


class PvcStorage(ApiModel):
    """A PersistentVolumeClaim in the release's namespace."""

    claim_name: DnsLabel = Field(description="Name of the PersistentVolumeClaim.")


# {name} is unique among a namespace's releases, {uid} among every release ever created; one of
# them in each path keeps two releases' directories apart. {inputs} (a digest of what shapes the
# run) keeps a release re-created under the same name with other inputs apart from the first.
UNIQUE_TOKENS = ("{name}", "{uid}")
PATH_TOKENS = ("{model}", "{version}", "{namespace}", "{name}", "{uid}", "{inputs}")
PATH_TEMPLATE_DESCRIPTION = (
    "Path on the storage volume, a template: {model}, {version}, {namespace}, {name}, {uid} (metadata.uid) and "
    "{inputs} (12 hex digits of a digest of model, version, baseModel, datasets and the training settings that "
    "shape the run) are replaced. It must contain {name} or {uid}, so no two releases share a directory."
)
DEFAULT_ARTIFACT_PATH = "releases/{model}/{version}/{name}-{inputs}"
DEFAULT_CHECKPOINT_PATH = "checkpoints/{model}/{version}/{name}-{inputs}"


def _has_unique_token(field: str) -> dict[str, Any]:
    test = " || ".join(f"self.{field}.contains('{token}')" for token in UNIQUE_TOKENS)
    return cel(
        test,
        f"{field} must contain {{name}} or {{uid}}: without one, two releases would share (and overwrite) it",
        field_path=f".{field}",
    )


class Retention(ApiModel):
    """Which checkpoints stay once training has settled. The final weights are never pruned."""

    keep_checkpoints_after_success: Annotated[int, Field(ge=0, le=100)] = Field(
        0, description="Complete checkpoints kept once the release is trained (the weights are published)."
    )
    keep_checkpoints_after_failure: Annotated[int, Field(ge=0, le=100)] = Field(
        1, description="Complete checkpoints kept when training fails or diverges, for inspection or a resume."
    )


class Storage(ApiModel):
    """Where checkpoints and final weights live, and what happens to them afterwards."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            _has_unique_token("artifactPath"),
            _has_unique_token("checkpointPath"),
            cel(
                "self.checkpointPath != self.artifactPath"
                " && !self.checkpointPath.startsWith(self.artifactPath + '/')"
                " && !self.artifactPath.startsWith(self.checkpointPath + '/')",
                "checkpointPath and artifactPath must not be the same directory or one inside the other",
                field_path=".checkpointPath",
            ),
        )
    )

    pvc: PvcStorage | None = Field(
        None,
        description="The volume that holds base models, datasets, checkpoints and weights; default: the "
        "operator's default claim (the chart's storage.defaultClaim).",
    )
    artifact_path: str = relative_path(
        PATH_TEMPLATE_DESCRIPTION + " Final weights of the release.", template=True, default=DEFAULT_ARTIFACT_PATH
    )
    checkpoint_path: str = relative_path(
        PATH_TEMPLATE_DESCRIPTION + " Resumable checkpoints.", template=True, default=DEFAULT_CHECKPOINT_PATH
    )
    retention: Retention = Field(
        default_factory=Retention, description="Checkpoints kept after training.", json_schema_extra={"default": {}}
    )
    reclaim_policy: Literal["Retain", "Delete"] = Field(
        "Retain",
        description="What deleting the release does to its directories, as a PersistentVolume's policy: Retain "
        "keeps them; Delete removes its checkpoints and weights (never weights a target still serves) before the "
        "release is gone.",
    )


class Hub(ApiModel):
    """Access to a model hub for base models and datasets given by name."""

    token_secret: SecretKeyRef | None = Field(
        None, description="Secret with a hub token (for gated or private repositories)."
    )
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=512)] | None = Field(
        None, description="Hub endpoint (HF_ENDPOINT), for a mirror."
    )
    offline: bool = Field(False, description="Never reach the hub: every input must be a path.")


class Card(ApiModel):
    """What the model card states that no run can measure. Every figure in the card comes from
    status; only these words are written by hand."""

    license: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)] | None = Field(
        None, description="License id as the Hugging Face hub names it, e.g. llama3.2 or apache-2.0."
    )
    language: list[Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)*$", max_length=16)]] | None = (
        Field(None, description="Languages (ISO 639), e.g. [zh].", max_length=16)
    )
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(
        None, description="Hub tags, e.g. [legal, Taiwan].", max_length=32
    )
    summary: Annotated[str, StringConstraints(max_length=300)] | None = Field(
        None, description="What this release changes, in one line: the update history's key change."
    )


class LegalModelReleaseSpec(ApiModel):
    """One versioned release of a fine-tuned Taiwan-legal model."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!self.hub.offline || (!has(self.baseModel.name) && self.datasets.all(d, !has(d.name)))",
                "hub.offline requires baseModel.path and a path for every dataset",
                field_path=".hub.offline",
            ),
            cel(
                "!has(self.evaluation) || !has(self.evaluation.benchmark.name) || !self.hub.offline",
                "hub.offline requires evaluation.benchmark.path",
                field_path=".evaluation.benchmark",
            ),
        )
    )

    model: RepoId = Field(
        description="Repository id of the released model, e.g. lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct."
    )
    version: Annotated[str, StringConstraints(pattern=VERSION_PATTERN, max_length=64)] = Field(
        description="Release version vMAJOR.MINOR.PATCH (v1.0.0 or v2024.11.13); the revision serving pins.",
        json_schema_extra=rules(immutable("spec.version")),
    )
    base_model: BaseModelRef = Field(
        description="The model to fine-tune (immutable).", json_schema_extra=rules(immutable("spec.baseModel"))
    )
    datasets: list[DatasetRef] = Field(
        description="Training datasets, mixed in this order (immutable).",
        min_length=1,
        max_length=64,
        json_schema_extra=rules(immutable("spec.datasets")),
    )
    training: Training = Field(description="How to fine-tune.")
    evaluation: Evaluation | None = Field(None, description="Optional scoring gate between training and serving.")
    serving: Serving = Field(
        default_factory=Serving, description="How to serve the release.", json_schema_extra={"default": {}}
    )
    storage: Storage = Field(
        default_factory=Storage,
        description="Where checkpoints and weights live, and for how long.",
        # Spelled out: the API server checks a default against its rules without nested defaults.
        json_schema_extra={"default": Storage().to_wire()},
    )
    hub: Hub = Field(default_factory=Hub, description="Model hub access.", json_schema_extra={"default": {}})
    card: Card | None = Field(None, description="Model card text that is not a measurement (license, tags, summary).")
