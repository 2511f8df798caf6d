"""Serving is closed by default: a key always (named, the operator's default, or generated), the
key only through the environment, no service-account token and no hub token where none is needed,
and a NetworkPolicy per target and per Job."""

from __future__ import annotations

import pytest

from tests.cases import REFERENCE_RELEASE, TINY_RELEASE, load_example
from twlegal.api.release import LegalModelRelease
from twlegal.api.serving_flags import refused_flags
from twlegal.policies import Observed, ServingView, decide
from twlegal.render import OperatorSettings, render_stage
from twlegal.render import serving as render_serving

SETTINGS = OperatorSettings()
NOW = "2026-12-01T00:00:00Z"


def release(path=TINY_RELEASE, **serving) -> LegalModelRelease:
    doc = load_example(path)
    doc["metadata"]["uid"] = "uid-1"
    doc["spec"]["serving"].update(serving)
    return LegalModelRelease.from_object(doc)


def kinds(objects):
    return {obj["kind"]: obj for obj in objects}


def container(objects):
    return kinds(objects)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def test_a_release_that_names_no_key_gets_one_generated_for_its_target():
    ref = render_serving.api_key_ref(release(), SETTINGS)
    assert ref is not None and ref.generated and (ref.secret, ref.key) == ("tiny-legal-api-key", "api-key")
    env = env_of(container(render_stage(release(), "serving", SETTINGS)))
    assert env["TWLEGAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "tiny-legal-api-key", "key": "api-key"}
    previous = env["TWLEGAL_API_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"]
    assert previous == {"name": "tiny-legal-api-key", "key": "previous-api-key", "optional": True}


def test_the_release_key_then_the_operator_default_then_none_only_when_asked():
    named = release(apiKeySecret={"name": "mine", "key": "k"})
    assert str(render_serving.api_key_ref(named, SETTINGS)) == "mine/k"
    default = OperatorSettings(default_api_key_secret="team-key/api-key")
    assert str(render_serving.api_key_ref(release(), default)) == "team-key/api-key"
    opened = release(auth="none")
    assert render_serving.api_key_ref(opened, SETTINGS) is None
    c = container(render_stage(opened, "serving", SETTINGS))
    assert "TWLEGAL_API_KEY" not in env_of(c)
    assert c["args"][c["args"].index("--auth") + 1] == "none", "the launcher is told the endpoint is open"


def test_the_key_is_never_on_the_command_line_and_the_generated_value_never_in_a_render():
    c = container(render_stage(release(), "serving", SETTINGS))
    assert not any("api-key" in a and "=" in a for a in c["args"]) and "--api-key" not in c["args"]
    secret = render_serving.generated_key_secret(release(), render_serving.api_key_ref(release(), SETTINGS), "s3cr3t")
    assert secret["stringData"] == {"api-key": "s3cr3t"} and "ownerReferences" not in secret["metadata"]


@pytest.mark.parametrize("stage", ["training", "evaluation", "serving"])
def test_no_pod_gets_a_service_account_token(stage):
    for path in (TINY_RELEASE, REFERENCE_RELEASE):
        pods = [
            o["spec"]["template"]["spec"]
            for o in render_stage(release(path), stage, SETTINGS)
            if "template" in o.get("spec", {})
        ]
        assert pods and all(p["automountServiceAccountToken"] is False for p in pods)


def test_the_hub_token_only_reaches_pods_that_read_the_hub():
    reference = release(REFERENCE_RELEASE)  # base model and datasets from the hub, hub token named
    train = kinds(render_stage(reference, "training", SETTINGS))["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert "HF_TOKEN" in env_of(train)
    assert "HF_TOKEN" not in env_of(container(render_stage(reference, "serving", SETTINGS)))
    tiny = release(TINY_RELEASE)  # everything from the volume
    tiny_train = kinds(render_stage(tiny, "training", SETTINGS))["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert "HF_TOKEN" not in env_of(tiny_train)


def test_a_network_policy_per_target_admits_the_named_sources_and_the_monitoring_namespace():
    settings = OperatorSettings(monitoring_namespace="monitoring")
    default = kinds(render_stage(release(), "serving", settings))["NetworkPolicy"]["spec"]
    assert default["podSelector"]["matchLabels"] == {
        "twlegal.io/target": "tiny-legal",
        "app.kubernetes.io/component": "serving",
    }
    assert default["policyTypes"] == ["Ingress", "Egress"] and default["egress"] == []
    (rule,) = default["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    named = release(
        allowFrom=[{"namespace": "legal-apps", "podSelector": {"app": "chat"}}, {"podSelector": {"role": "gw"}}]
    )
    rule = kinds(render_stage(named, "serving", SETTINGS))["NetworkPolicy"]["spec"]["ingress"][0]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "legal-apps"}},
            "podSelector": {"matchLabels": {"app": "chat"}},
        },
        {"podSelector": {"matchLabels": {"role": "gw"}}},
    ]


def test_job_pods_take_no_connections_and_reach_out_only_to_the_hub_when_they_read_it():
    # (but the operator's on their progress port, when its namespace is known: tests/unit/test_progress.py)
    tiny = kinds(render_stage(release(TINY_RELEASE), "training", SETTINGS))["NetworkPolicy"]["spec"]
    assert SETTINGS.operator_namespace is None and SETTINGS.monitoring_namespace is None
    assert tiny["ingress"] == [] and tiny["egress"] == []
    hub = kinds(render_stage(release(REFERENCE_RELEASE), "training", SETTINGS))["NetworkPolicy"]["spec"]
    ports = [p for rule in hub["egress"] for p in rule["ports"]]
    assert {"protocol": "TCP", "port": 443} in ports and {"protocol": "UDP", "port": 53} in ports
    assert hub["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "training"


def test_refused_flags_cover_both_forms_spellings_and_abbreviations():
    args = [
        "--model",
        "x",
        "--model=y",
        "--served_model_name",
        "n",
        "--api-key=k",
        "--serv",
        "--trust-remote-code",
        "-tp",
        "2",
        "--dtype",
        "float32",
        "--max-num-seqs",
        "8",
        "--enable-prefix-caching",
        "--tokenizer-mode",
        "auto",
    ]
    assert refused_flags(args) == [
        "--model",
        "--model=y",
        "--served_model_name",
        "--api-key=k",
        "--serv",
        "--trust-remote-code",
        "-tp",
    ]


def _serving_decision(view: ServingView):
    obs = Observed(serving=view)
    doc = load_example(TINY_RELEASE)
    doc["metadata"]["uid"] = "uid-1"
    doc["status"] = {
        "conditions": [
            {"type": "Trained", "status": "True", "reason": "Trained", "lastTransitionTime": NOW},
            {"type": "Evaluated", "status": "True", "reason": "Passed", "lastTransitionTime": NOW},
        ],
        "evaluation": {"score": 90.0},
        "training": {"job": "tiny-legal-v0-1-0-train"},
    }
    return decide(LegalModelRelease.from_object(doc), obs, SETTINGS, NOW)


def test_the_serving_release_asks_for_its_key_before_anything_serves_then_pins_the_key_version():
    first = _serving_decision(ServingView(deployment=None, peers=()))
    assert first.generate_key is not None and first.generate_key.secret == "tiny-legal-api-key"
    assert first.apply == [], "no Deployment before its key exists"
    second = _serving_decision(ServingView(deployment=None, peers=(), key_version="4711"))
    assert second.generate_key is None
    deploy = kinds(second.apply)["Deployment"]
    assert deploy["spec"]["template"]["metadata"]["annotations"]["twlegal.io/api-key-version"] == "4711"
    assert second.status["serving"]["apiKeySecret"] == "tiny-legal-api-key/api-key"
    assert "NetworkPolicy" in kinds(second.apply)


def test_a_rotated_key_changes_the_pod_template_so_the_pods_roll():
    a = kinds(_serving_decision(ServingView(deployment=None, peers=(), key_version="1")).apply)["Deployment"]
    b = kinds(_serving_decision(ServingView(deployment=None, peers=(), key_version="2")).apply)["Deployment"]
    assert a["spec"]["template"] != b["spec"]["template"]
