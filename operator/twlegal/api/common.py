"""Building blocks shared by the LegalModelRelease API models.

Every model here is strict (a string is never silently turned into a number) and forbids unknown
fields, so `twlegal validate` catches a misspelt field just as `kubectl apply` does. Python
attributes are snake_case; the wire format (and the CRD) is camelCase.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# x-kubernetes-validations entries. Cross-field rules live once, as CEL, in the schema: the API
# server enforces them at admission and `twlegal validate` evaluates the same expressions.
CEL_KEY = "x-kubernetes-validations"
# Marks a field the CRD generator renders as a Kubernetes resource.Quantity (int-or-string).
QUANTITY_MARK = "x-twlegal-quantity"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One x-kubernetes-validations rule (a CEL expression that must hold)."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def immutable(what: str) -> dict[str, Any]:
    """A transition rule: the field may not change once the release exists."""
    return cel("self == oldSelf", f"{what} is immutable: create a new release instead")


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    return {CEL_KEY: list(entries)}


class ApiModel(BaseModel):
    """Base of every spec model: strict, closed, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        populate_by_name=True,
        protected_namespaces=(),
        validate_default=True,  # a default must pass its own field's rules (the API server checks)
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Status models are written by the operator; tolerate fields a newer operator added."""

    model_config = ConfigDict(extra="ignore", strict=False)


# --- reusable field types ----------------------------------------------------------------------

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Kubernetes' own resource.Quantity pattern (as controller-gen emits it).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A hub repository id: `owner/name` (or a bare name).
REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$"
REVISION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"
# Paths are relative to the release's storage volume, so a release cannot reach outside it.
RELATIVE_PATH_PATTERN = r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$"
PATH_TEMPLATE_PATTERN = r"^[A-Za-z0-9._{}-][A-Za-z0-9._{}/-]*$"
NO_PARENT_DIR = cel("!self.contains('..')", "must not contain '..'")

RepoId = Annotated[str, StringConstraints(pattern=REPO_ID_PATTERN, max_length=128)]
Revision = Annotated[str, StringConstraints(pattern=REVISION_PATTERN, max_length=128)]
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(json_schema_extra={QUANTITY_MARK: True}),
]


def relative_path(description: str, *, template: bool = False, **kwargs: Any) -> Any:
    return Field(
        description=description,
        pattern=PATH_TEMPLATE_PATTERN if template else RELATIVE_PATH_PATTERN,
        max_length=512,
        json_schema_extra=rules(NO_PARENT_DIR),
        **kwargs,
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the release's namespace."""

    name: DnsLabel = Field(description="Name of the Secret (in the release's namespace).")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        "token", description="Key inside the Secret."
    )


class Toleration(ApiModel):
    """A pod toleration, as in core/v1 Toleration."""

    key: Annotated[str, StringConstraints(max_length=316)] | None = Field(
        None, description="Taint key the toleration applies to; empty with operator Exists matches all."
    )
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Exists or Equal.")
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="Taint value to match when operator is Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: Annotated[int, Field(ge=0)] | None = Field(
        None, description="For NoExecute: how long the pod stays bound after the taint appears."
    )
