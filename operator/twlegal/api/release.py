"""The LegalModelRelease resource: identity constants and the top-level model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .spec import LegalModelReleaseSpec
from .status import LegalModelReleaseStatus

GROUP = "twlegal.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LegalModelRelease"
PLURAL = "legalmodelreleases"
SINGULAR = "legalmodelrelease"
SHORT_NAMES = ["lmr"]
# Child object names append a suffix such as "-train" to the release name; keep the
# result a valid 63-character label value.
MAX_NAME_LENGTH = 52


class ObjectMeta(BaseModel):
    """The part of metadata the API reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    creation_timestamp: str | None = Field(None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(None, alias="deletionTimestamp")
    finalizers: list[str] | None = None


class LegalModelRelease(BaseModel):
    """A LegalModelRelease as stored in the cluster."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["twlegal.io/v1alpha1"] = Field("twlegal.io/v1alpha1", alias="apiVersion")
    kind: Literal["LegalModelRelease"] = "LegalModelRelease"
    metadata: ObjectMeta
    spec: LegalModelReleaseSpec
    status: LegalModelReleaseStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LegalModelRelease:
        """Parse an object as read from YAML or the API server (spec strictly, status leniently)."""
        return cls.model_validate(obj)
