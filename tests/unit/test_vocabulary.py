"""One vocabulary: phases, condition reasons, status sections and settings are defined once and
checked where they are written."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from twlegal.api import reasons
from twlegal.api.crd import custom_resource_definition
from twlegal.api.status import PHASES, SECTIONS, TERMINAL_PHASES, Phase, TrainingStatus
from twlegal.render.settings import OperatorSettings


def test_the_crd_enumerates_exactly_the_phase_enum():
    schema = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    phase = schema["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == list(PHASES) == [p.value for p in Phase]


def test_terminal_phases_are_phases_and_never_serve():
    assert {Phase.FAILED, Phase.REJECTED, Phase.ROLLED_BACK} == TERMINAL_PHASES
    assert Phase.SERVING not in TERMINAL_PHASES and "Failed" in TERMINAL_PHASES  # StrEnum: plain strings match


def test_every_reason_is_camel_case_and_condition_types_are_distinct():
    values = {name: value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", v) for v in values.values()), values
    assert len(set(reasons.CONDITION_TYPES)) == len(reasons.CONDITION_TYPES)


def test_a_misspelt_status_key_fails_instead_of_being_dropped():
    assert TrainingStatus.written({"job": "x-train", "globalStep": 3}) == {"job": "x-train", "globalStep": 3}
    with pytest.raises(ValueError, match="TrainingStatus has no field globalSteps"):
        TrainingStatus.written({"job": "x-train", "globalSteps": 3})
    assert set(SECTIONS) == {"training", "evaluation", "serving", "artifact", "inputs", "storage", "progress"}


def test_a_wrongly_typed_status_value_fails_too():
    with pytest.raises(ValidationError):
        SECTIONS["serving"].written({"readyReplicas": "several"})


def test_every_operator_variable_is_read_and_validated_by_the_settings_model():
    env = {
        "TWLEGAL_WORKERS": "3",
        "TWLEGAL_RESYNC_SECONDS": "7.5",
        "TWLEGAL_METRICS_PORT": "0",
        "TWLEGAL_KOPF_LOG_LEVEL": "INFO",
        "TWLEGAL_ROLLOUT_DEADLINE_SECONDS": "90",
        "UNRELATED": "x",
    }
    settings = OperatorSettings.from_env(env)
    assert (
        settings.workers,
        settings.resync_seconds,
        settings.metrics_port,
        settings.kopf_log_level,
        settings.rollout_deadline_seconds,
    ) == (3, 7.5, 0, "INFO", 90)
    with pytest.raises(ValidationError, match="workers"):
        OperatorSettings.from_env({"TWLEGAL_WORKERS": "eight"})
    with pytest.raises(ValidationError, match="metrics_port"):
        OperatorSettings.from_env({"TWLEGAL_METRICS_PORT": "70000"})
