"""Deterministic names, labels and paths of everything a release creates."""

from __future__ import annotations

import re

from ..api.release import LegalModelRelease

PART_OF = "twlegal"
MANAGED_BY = "twlegal-operator"
RELEASE_LABEL = "twlegal.io/release"
TARGET_LABEL = "twlegal.io/target"
COMPONENT_LABEL = "app.kubernetes.io/component"
ANNOTATION_PREFIX = "twlegal.io"


def training_job_name(release: LegalModelRelease) -> str:
    return f"{release.name}-train"


def evaluation_job_name(release: LegalModelRelease) -> str:
    return f"{release.name}-eval"


def serving_target(release: LegalModelRelease) -> str:
    """spec.serving.target, or a DNS label derived from spec.model."""
    return release.spec.serving.target or default_target(release.spec.model)


def default_target(model: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", model.split("/")[-1].lower()).strip("-")
    slug = slug[:52].rstrip("-")
    return slug if slug and slug[0].isalpha() else f"m-{slug}"[:52].rstrip("-")


def served_model_name(release: LegalModelRelease) -> str:
    return release.spec.serving.served_model_name or release.spec.model


def labels(release: LegalModelRelease, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"twlegal-{component}",
        "app.kubernetes.io/instance": release.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": release.spec.version,
        RELEASE_LABEL: release.name,
        TARGET_LABEL: serving_target(release),
    }


GENERATED_API_KEY = "api-key"  # the key inside a Secret the operator generates for a target


def generated_api_key_secret(target: str) -> str:
    return f"{target}-api-key"


def previous_key(key: str) -> str:
    """The Secret entry holding the key a rotation replaces (accepted until it is removed)."""
    return f"previous-{key}"


def serving_selector(target: str) -> dict[str, str]:
    """The Deployment's selector: stable across the releases that share a target."""
    return {TARGET_LABEL: target, COMPONENT_LABEL: "serving"}
