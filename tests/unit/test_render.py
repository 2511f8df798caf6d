"""Pure renderers: every object is valid Kubernetes, and says what the release asks for."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from tests.cases import REFERENCE_RELEASE, TINY_RELEASE, load_example
from twlegal import yamlio
from twlegal.api.release import LegalModelRelease
from twlegal.cli import main
from twlegal.contracts import EvaluationConfig, ServingLaunch, TrainingConfig
from twlegal.contracts.storage import inputs_digest
from twlegal.contracts.training import ExitCode
from twlegal.render import STAGES, OperatorSettings, render_stage

K8S_VERSION = "1.36.0"
SETTINGS = OperatorSettings()


def release(path=REFERENCE_RELEASE, uid=None) -> LegalModelRelease:
    doc = load_example(path)
    if uid:
        doc["metadata"]["uid"] = uid
    return LegalModelRelease.from_object(doc)


def by_kind(objects):
    return {obj["kind"]: obj for obj in objects}


@pytest.mark.parametrize("path", [REFERENCE_RELEASE, TINY_RELEASE], ids=lambda p: p.name)
@pytest.mark.parametrize("stage", STAGES)
def test_every_rendered_object_is_valid_kubernetes(path, stage):
    objects = render_stage(release(path, uid="0b0e3c9e-5d0c-4f0b-9d55-1f2b3c4d5e6f"), stage, SETTINGS)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_training_job_runs_the_reference_hyperparameters_on_8_gpus():
    rel = release()
    objects = by_kind(render_stage(rel, "training", SETTINGS))
    job, config_map = objects["Job"], objects["ConfigMap"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["command"] == ["twlegal-train"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    pvc = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert pvc["persistentVolumeClaim"]["claimName"] == "twlegal-models"
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    config = TrainingConfig.model_validate_json(config_map["data"]["training.json"])
    hp = config.hyperparameters
    assert (hp.learning_rate, hp.per_device_batch_size, hp.gradient_accumulation_steps) == (5e-5, 20, 16)
    assert (hp.epochs, hp.lr_scheduler, hp.warmup_steps, hp.optimizer, hp.seed) == (
        3,
        "cosine",
        100,
        "adamw_torch_fused",
        42,
    )
    assert config.processes == 8 and not config.use_cpu
    assert len(config.datasets) == 14
    assert config.base_model.name == "lianghsun/Llama-3.2-Taiwan-3B" and config.base_model.revision == "v2024.10.27"
    # Each release its own directories: model and version to find them, name and inputs to keep them apart.
    run = f"{rel.name}-{inputs_digest(rel.spec)[:12]}"
    assert config.output_dir == f"/mnt/twlegal/releases/lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct/v2024.11.13/{run}"
    assert (
        config.checkpoint_dir
        == f"/mnt/twlegal/checkpoints/lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct/v2024.11.13/{run}"
    )
    assert config.release.inputs == inputs_digest(rel.spec)


def test_job_retries_preemption_but_not_code_errors():
    job = by_kind(render_stage(release(), "training", SETTINGS))["Job"]
    assert job["spec"]["backoffLimit"] == 3
    rules = job["spec"]["podFailurePolicy"]["rules"]
    # A disruption is retried but counted against maxRetries (an Ignore would retry it forever).
    assert rules[0] == {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    fail = rules[1]["onExitCodes"]
    assert rules[1]["action"] == "FailJob" and fail["operator"] == "NotIn"
    assert ExitCode.INTERRUPTED in fail["values"] and ExitCode.SUCCEEDED in fail["values"]
    assert ExitCode.DIVERGED not in fail["values"] and ExitCode.FAILED not in fail["values"]


def test_cpu_release_trains_without_gpus():
    objects = by_kind(render_stage(release(TINY_RELEASE), "training", SETTINGS))
    container = objects["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert {"name": "DS_ACCELERATOR", "value": "cpu"} in container["env"]
    config = TrainingConfig.model_validate_json(objects["ConfigMap"]["data"]["training.json"])
    assert config.use_cpu and config.base_model.path == "/mnt/twlegal/base/tiny-llama"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_serving_deployment_pins_the_revision():
    objects = by_kind(render_stage(release(), "serving", SETTINGS))
    deploy, service = objects["Deployment"], objects["Service"]
    assert deploy["metadata"]["name"] == service["metadata"]["name"] == "taiwan-legal-3b"
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert spec["selector"]["matchLabels"] == service["spec"]["selector"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = spec["template"]["spec"]["containers"]
    launch = ServingLaunch.from_argv(container["args"])
    assert launch.revision == "v2024.11.13"
    assert "/releases/lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct/v2024.11.13/" in launch.model
    assert launch.served_model_names == [
        "lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct",
        "lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct:v2024.11.13",
    ]
    assert launch.max_model_len == 8192 and launch.tensor_parallel_size == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800, "a slow load must not be killed"
    env = {e["name"]: e for e in container["env"]}
    assert env["TWLEGAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "taiwan-legal-api-key", "key": "api-key"}
    assert spec["template"]["metadata"]["labels"]["twlegal.io/release"] == "taiwan-legal-3b-v2024-11-13"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True


def test_evaluation_job_scores_the_trained_weights():
    objects = by_kind(render_stage(release(), "evaluation", SETTINGS))
    config = EvaluationConfig.model_validate_json(objects["ConfigMap"]["data"]["evaluation.json"])
    assert config.benchmark.name == "lianghsun/tw-legal-benchmark-v1"
    assert "/v2024.11.13/" in config.model_path
    assert objects["Job"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "evaluate"


def test_no_evaluation_and_disabled_serving_render_nothing():
    doc = load_example()
    del doc["spec"]["evaluation"]
    doc["spec"]["serving"]["enabled"] = False
    rel = LegalModelRelease.from_object(doc)
    assert render_stage(rel, "evaluation") == [] and render_stage(rel, "serving") == []


def test_rendering_is_deterministic_and_owned_when_the_release_exists():
    first = render_stage(release(uid="u-1"), "training", SETTINGS)
    assert first == render_stage(release(uid="u-1"), "training", SETTINGS)
    for obj in first:
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == "u-1" and owner["controller"] is True and owner["kind"] == "LegalModelRelease"
        assert obj["metadata"]["labels"]["twlegal.io/release"] == "taiwan-legal-3b-v2024-11-13"
        assert "generateName" not in obj["metadata"]
    assert all("ownerReferences" not in o["metadata"] for o in render_stage(release(), "training", SETTINGS))


def test_settings_choose_default_images_and_the_release_overrides_them():
    settings = OperatorSettings(trainer_image="registry.local/trainer:1", server_image="registry.local/server:1")
    job = by_kind(render_stage(release(), "training", settings))["Job"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/trainer:1"
    doc = load_example(REFERENCE_RELEASE)
    doc["spec"]["serving"]["image"] = "mine/vllm:0.11"
    deploy = by_kind(render_stage(LegalModelRelease.from_object(doc), "serving", settings))["Deployment"]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "mine/vllm:0.11"


def test_serving_launch_argv_round_trips_with_extra_args():
    launch = ServingLaunch(
        model="/m",
        revision="v1.0.0",
        served_model_names=["a", "a:v1.0.0"],
        max_model_len=256,
        extra_args=["--enable-prefix-caching", "--seed", "1"],
    )
    assert ServingLaunch.from_argv(launch.to_argv()) == launch


@pytest.mark.parametrize("stage", STAGES)
def test_cli_render_prints_the_stage_as_a_yaml_stream(stage, capsys):
    assert main(["render", str(REFERENCE_RELEASE), "--stage", stage]) == 0
    out = capsys.readouterr().out
    kinds = [doc["kind"] for doc in yamlio.load_all(out)]
    expected = {
        "training": ["ConfigMap", "NetworkPolicy", "Job"],
        "evaluation": ["ConfigMap", "NetworkPolicy", "Job"],
        "serving": ["Deployment", "Service", "NetworkPolicy"],
    }[stage]
    assert kinds == expected
    assert out.startswith("---\n")


def test_cli_render_refuses_an_invalid_release(tmp_path, capsys):
    doc = load_example()
    doc["spec"]["training"]["deepspeed"]["zeroStage"] = 4
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(doc))
    assert main(["render", str(path)]) == 1
    assert "spec.training.deepspeed.zeroStage" in capsys.readouterr().err
