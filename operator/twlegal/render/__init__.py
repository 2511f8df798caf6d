"""Pure renderers: (release, operator settings) -> the Kubernetes objects of a stage, as dicts.

No Kubernetes client and no kopf here: the operator's kube module applies what these return,
and `twlegal render` prints the very same objects for review.
"""

from __future__ import annotations

from typing import Any, Literal

from ..api.release import LegalModelRelease
from . import evaluation, serving, training
from .settings import DEFAULT_SETTINGS, OperatorSettings

Stage = Literal["training", "evaluation", "serving"]
STAGES: tuple[str, ...] = ("training", "evaluation", "serving")
_RENDERERS = {"training": training.render, "evaluation": evaluation.render, "serving": serving.render}


def render_stage(
    release: LegalModelRelease, stage: Stage, settings: OperatorSettings = DEFAULT_SETTINGS
) -> list[dict[str, Any]]:
    """The objects the operator applies for one stage of a release."""
    return _RENDERERS[stage](release, settings)


__all__ = ["DEFAULT_SETTINGS", "STAGES", "OperatorSettings", "Stage", "render_stage"]
