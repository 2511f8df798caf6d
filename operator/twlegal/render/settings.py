"""Operator-wide settings: what the renderers need (images, mount points, security defaults) and how
the operator process runs (workers, resync, metrics). Every TWLEGAL_* variable is read here, once,
through this validated model: a bad value stops the operator at start-up with the variable named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import __version__


class OperatorSettings(BaseModel):
    """Defaults a release can override, and choices that are the operator's, not the user's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer_image: str = Field(f"ghcr.io/twlegal/trainer:{__version__}", description="Default trainer image.")
    server_image: str = Field(f"ghcr.io/twlegal/server:{__version__}", description="Default vLLM server image.")
    image_pull_policy: str = "IfNotPresent"
    storage_mount_path: str = "/mnt/twlegal"
    # The PersistentVolumeClaim of releases that name none (the chart's storage.defaultClaim).
    default_storage_claim: str | None = Field(None, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    config_mount_path: str = "/etc/twlegal"
    hub_cache_subpath: str = ".cache/huggingface"
    run_as_user: int = 1000
    # Processes per training pod when it has no GPU (CPU runs in tests and demos).
    cpu_processes: int = Field(1, ge=1)
    # How long a preempted trainer may take to write its checkpoint.
    training_grace_seconds: int = Field(300, ge=30)
    evaluation_retries: int = Field(1, ge=0)
    # Serving: a pod that never becomes ready within this is a failed rollout.
    rollout_deadline_seconds: int = Field(1800, ge=5)
    startup_timeout_seconds: int = Field(3600, ge=60)
    serving_grace_seconds: int = Field(120, ge=10)
    # "name/key" of Secrets for releases that name none (the chart's `defaults`).
    default_hub_token_secret: str | None = Field(None, pattern=r"^[a-z0-9][-a-z0-9.]*/[-._a-zA-Z0-9]+$")
    default_api_key_secret: str | None = Field(None, pattern=r"^[a-z0-9][-a-z0-9.]*/[-._a-zA-Z0-9]+$")
    # The namespace whose pods (Prometheus) may reach serving pods for /metrics (with the key).
    monitoring_namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    # The operator's own namespace (the chart sets it): the one, besides monitoring_namespace, whose
    # pods may read a training or evaluation pod's progress port.
    operator_namespace: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    # The operator process itself (not rendered into any object).
    workers: int = Field(8, ge=1, description="Threads that take releases off the work queue and reconcile them.")
    resync_seconds: float = Field(60, gt=0, description="How often releases in flight are reconciled again.")
    progress_seconds: float = Field(
        15, gt=0, le=30, description="How often the progress of a training or evaluating release is read."
    )
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics port (0: off).")
    kopf_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Level of kopf's per-object log lines (one per handler run is noise at scale)."
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        """TWLEGAL_<FIELD> variables, e.g. TWLEGAL_TRAINER_IMAGE, TWLEGAL_ROLLOUT_DEADLINE_SECONDS."""
        values = {name: env[f"TWLEGAL_{name.upper()}"] for name in cls.model_fields if f"TWLEGAL_{name.upper()}" in env}
        return cls.model_validate(values)


DEFAULT_SETTINGS = OperatorSettings()
