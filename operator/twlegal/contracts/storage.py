"""Who owns what on the storage volume: the one definition the operator, the trainer, the storage
Job and the server share.

A release owns two directories, its checkpoints and its published weights. Each records its owner
(`StorageOwner`): the release's namespace and name, its UID, and the digest of the inputs that
shape the run (`inputs_digest`). A directory belongs to a run when namespace, name and inputs match:
the UID is recorded but not compared, so a release deleted and re-created from the same file
(same inputs) continues where it stopped, while the same name with another learning rate, or
another release with the same model and version, is refused.

Pure: hashlib, json and pydantic only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import ConfigDict, Field

from ..api.common import ApiModel
from ..api.spec import LegalModelReleaseSpec

OWNER_FILE = "twlegal-owner.json"  # at the root of a checkpoint directory, written before training
INPUTS_TOKEN_LENGTH = 12  # hex digits of the digest in the {inputs} path token


def inputs_digest(spec: LegalModelReleaseSpec) -> str:
    """sha256 (hex) over what shapes a run: model, version, base model, datasets and the training
    method, template, cutoff, packing, hyperparameters and DeepSpeed settings. Placement (image,
    resources, retries) and checkpoint frequency are left out: changing them continues the same run."""
    training = spec.training
    shaping = {
        "model": spec.model,
        "version": spec.version,
        "baseModel": spec.base_model.to_wire(),
        "datasets": [d.to_wire() for d in spec.datasets],
        "training": {
            "method": training.method,
            "template": training.template,
            "cutoffLength": training.cutoff_length,
            "packing": training.packing,
            "hyperparameters": training.hyperparameters.to_wire(),
            "deepspeed": training.deepspeed.to_wire(),
        },
    }
    text = json.dumps(shaping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class StorageOwner(ApiModel):
    """The run a directory on the volume belongs to."""

    model_config = ConfigDict(strict=False)

    namespace: str
    name: str
    uid: str | None = Field(None, description="metadata.uid of the release that wrote it (informative).")
    inputs: str = Field(description="inputs_digest of the release's spec.")

    def same_run(self, other: StorageOwner) -> bool:
        return (self.namespace, self.name, self.inputs) == (other.namespace, other.name, other.inputs)

    def describe(self) -> str:
        uid = f", uid {self.uid}" if self.uid else ""
        return f"release {self.namespace}/{self.name} (inputs {self.inputs[:INPUTS_TOKEN_LENGTH]}{uid})"

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), sort_keys=True) + "\n"


class StorageTask(ApiModel):
    """operator -> storage Job: what to remove of one release's directories (container args, JSON).

    `prune` keeps the newest `keep_checkpoints` complete checkpoints; `reclaim` removes the
    checkpoint directory and, when `artifact_dir` is set, the published weights. Either removes only
    what `owner` owns: a directory that records another owner, or none, is left and reported."""

    model_config = ConfigDict(strict=False)

    action: Literal["prune", "reclaim"]
    owner: StorageOwner
    checkpoint_dir: str = Field(description="Absolute checkpoint directory in the Job's pod.")
    artifact_dir: str | None = Field(None, description="Absolute weights directory to remove (reclaim); None keeps it.")
    keep_checkpoints: int = Field(0, ge=0, description="Complete checkpoints to keep (prune).")

    def to_arg(self) -> str:
        return json.dumps(self.to_wire(), sort_keys=True, separators=(",", ":"))


class StorageResult(ApiModel):
    """storage Job -> operator (termination message)."""

    model_config = ConfigDict(strict=False)

    removed: list[str] = Field(default_factory=list, description="Directories removed.")
    kept: list[str] = Field(default_factory=list, description="Directories kept, each with why.")
    freed_bytes: int = 0
    message: str = ""
