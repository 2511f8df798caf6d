"""`twlegal history` and `twlegal card` on releases captured from the real control plane
(tests/fixtures/releases/captured/, written by tests/integration/test_history.py), on the seed
card's five versions (tests/fixtures/releases/seed/) and on the real trainer's result
(tests/fixtures/releases/trainer-run.json: the spec and result of a run of
tests/component/test_trainer.py with TWLEGAL_CAPTURE_TRAINER_RUN set).

Golden outputs live in tests/golden/; TWLEGAL_UPDATE_GOLDEN=1 rewrites them (review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from tests.cases import REFERENCE_RELEASE, TINY_RELEASE, load_example
from twlegal.api.release import LegalModelRelease
from twlegal.api.spec import Hyperparameters
from twlegal.cli import main
from twlegal.contracts import TrainingResult
from twlegal.docs import card, history
from twlegal.policies import consistency

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "releases"
CAPTURED, SEED = FIXTURES / "captured", FIXTURES / "seed"
GOLDEN = ROOT / "tests" / "golden"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TWLEGAL_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with TWLEGAL_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def cli(capsys, *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def releases(folder: Path) -> list[LegalModelRelease]:
    return [LegalModelRelease.from_object(yaml.safe_load(p.read_text())) for p in sorted(folder.glob("*.yaml"))]


def phase_of(folder: Path, phase: str) -> str:
    return next(r.name for r in releases(folder) if r.status and r.status.phase == phase)


# --- history ------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["table", "markdown", "json"])
def test_history_of_captured_releases(capsys, output):
    assert {r.status.phase for r in releases(CAPTURED)} >= {"Serving", "Superseded", "Rejected", "Failed"}
    golden(
        f"history-captured.{'md' if output == 'markdown' else output}",
        cli(capsys, "history", "tiny-legal", "--from", str(CAPTURED), "-o", output),
    )


@pytest.mark.parametrize("output", ["table", "markdown", "json"])
def test_history_reproduces_the_seed_cards_five_versions(capsys, output):
    text = cli(capsys, "history", "taiwan-legal-3b", "--from", str(SEED), "-o", output)
    golden(f"history-seed.{'md' if output == 'markdown' else output}", text)


def test_the_seed_history_has_the_cards_versions_dates_and_outcomes(capsys):
    data = json.loads(
        cli(capsys, "history", "lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct", "--from", str(SEED), "-o", "json")
    )
    assert [(r["date"], r["version"], r["phase"]) for r in data["releases"]] == [
        ("2024-11-13", "v2024.11.13", "Serving"),
        ("2024-11-06", "v2024.11.6", "Superseded"),
        ("2024-10-17", "v1.1.0", "Rejected"),  # "model collapsed"
        ("2024-10-10", "v1.0.0", "Superseded"),
        ("2024-09-27", "v0.1.0", "Failed"),  # "training was interrupted"
    ]
    assert data["releases"][0]["score"] == 22.01


def test_history_of_an_unknown_target_says_so(capsys):
    assert main(["history", "no-such-target", "--from", str(SEED)]) == 1
    assert "no releases of no-such-target" in capsys.readouterr().err


def test_history_reads_a_kubectl_list_export(tmp_path, capsys):
    items = [yaml.safe_load(p.read_text()) for p in sorted(CAPTURED.glob("*.yaml"))]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert cli(capsys, "history", "tiny-legal", "--from", str(tmp_path / "all.yaml")) == cli(
        capsys, "history", "tiny-legal", "--from", str(CAPTURED)
    )


def test_one_line_keeps_the_exception_of_a_traceback():
    message = "training failed: exit code 1; Traceback (most recent call last):\n  File x\nKeyError: 'messages'"
    assert history.one_line(message) == "training failed: exit code 1; KeyError: 'messages'"


# --- card ---------------------------------------------------------------------------------------

CARDS = [
    ("captured", "Serving"),
    ("captured", "Superseded"),
    ("captured", "Rejected"),
    ("captured", "Failed"),
    ("seed", "Serving"),
]


@pytest.mark.parametrize("folder,phase", CARDS, ids=[f"{f}-{p}" for f, p in CARDS])
def test_card_golden(capsys, folder, phase):
    where = FIXTURES / folder
    text = cli(capsys, "card", phase_of(where, phase), "--from", str(where))
    golden(f"card-{folder}-{phase.lower()}.md", text)
    assert ("vllm serve" in text) == (phase in ("Serving", "Superseded")), "never how to serve a rejected model"


@pytest.mark.parametrize("folder,phase", CARDS, ids=[f"{f}-{p}" for f, p in CARDS])
def test_card_front_matter_parses_and_its_model_index_validates(capsys, folder, phase):
    where = FIXTURES / folder
    release = next(r for r in releases(where) if r.name == phase_of(where, phase))
    model_card = ModelCard(card.render(release, releases(where)), ignore_metadata_errors=False)
    data = model_card.data
    assert data.model_name == release.spec.model and data.library_name == "transformers"
    assert data.datasets == ([d.name for d in release.spec.datasets if d.name] or None)
    assert data.base_model == release.spec.base_model.name
    score = release.status.evaluation.score if release.status.evaluation else None
    if score is None:
        assert data.eval_results is None and "model-index" not in data.to_dict()
        return
    # What the hub does with model-index: parse it back into results, each with a task, a
    # dataset and a numeric metric.
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == release.spec.model
    assert [(r.task_type, r.metric_type, r.metric_value) for r in results] == [("text-generation", "accuracy", score)]
    assert results[0].dataset_name == release.status.evaluation.benchmark


def test_the_seed_card_states_the_runs_figures_and_flags_its_inputs():
    rels = releases(SEED)
    latest = next(r for r in rels if r.spec.version == "v2024.11.13")
    text = card.render(latest, rels)
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "llama3.2" and front["base_model"] == "lianghsun/Llama-3.2-Taiwan-3B"
    assert len(front["datasets"]) == 14 and "lianghsun/tw-legal-qa-chat" in front["datasets"]
    assert "total_train_batch_size:** 2560 (" in text, "20 x 16 x 8, computed, not typed"
    assert "| Train samples per second | *not reported* |" in text, "the seed card's figure was wrong: not invented"
    assert "| Total training FLOPs | 89,423,735,685,120" in text
    assert "**WarmupNotBelowTotalSteps:** warmupSteps 100 is not below the 65 optimizer steps" in text
    assert "**UnpinnedDataset:** 14 of 14 datasets have no revision" in text
    for version in ("v0.1.0", "v1.0.0", "v1.1.0", "v2024.11.6", "v2024.11.13"):
        assert f"| {version} |" in text
    assert "vllm serve lianghsun/Llama-3.2-Taiwan-Legal-3B-Instruct --revision v2024.11.13" in text


def test_a_release_with_no_status_shows_every_figure_as_missing():
    text = card.render(LegalModelRelease.from_object(load_example(REFERENCE_RELEASE)))
    assert text.count("*not reported*") >= 10 and "model-index" not in text
    assert "22.01" not in text and "0.7657" not in text


def test_an_unpinned_dataset_is_flagged_in_the_card():
    doc = load_example(TINY_RELEASE)
    doc["spec"]["hub"] = {"offline": False}
    doc["spec"]["datasets"].append({"name": "lianghsun/tw-legal-nlp"})
    text = card.render(LegalModelRelease.from_object(doc))
    assert "**UnpinnedDataset:** 1 of 3 datasets have no revision (lianghsun/tw-legal-nlp)" in text
    assert "| [lianghsun/tw-legal-nlp](https://huggingface.co/datasets/lianghsun/tw-legal-nlp) | **unpinned** |" in text


def test_the_card_shows_the_protocol_the_weakest_subjects_and_their_chart():
    doc = load_example(TINY_RELEASE)
    doc["status"] = {
        "phase": "Serving",
        "evaluation": {
            "score": 40,
            "passed": True,
            "protocol": "choiceText",
            "subjects": "2 subjects; weakest: 刑法 20, 民法 60",
            "chart": "twlegal-evaluation-subjects.png",
        },
    }
    text = card.render(LegalModelRelease.from_object(doc))
    assert "`choiceText` protocol of lm-evaluation-harness" in text
    assert "- **by subject:** 2 subjects; weakest: 刑法 20, 民法 60" in text
    assert "![Accuracy by subject](twlegal-evaluation-subjects.png)" in text


def test_card_of_the_real_trainers_result(capsys):
    """The card `twlegal card` writes for the tiny release once its status holds what the real
    trainer reported (the trainer writes the same card beside the weights)."""
    run = json.loads((FIXTURES / "trainer-run.json").read_text())
    result = TrainingResult.model_validate(run["result"])
    doc = {**load_example(TINY_RELEASE), "spec": run["spec"]}
    doc["status"] = {"phase": "Evaluating", **result.status_sections()}
    text = card.render(LegalModelRelease.from_object(doc))
    golden("card-trainer-result.md", text)
    assert f"| Train loss (final) | {result.final_loss:.4f} |" in text
    assert result.inputs.base_model.checksum in text
    assert all(d.checksum in text for d in result.inputs.datasets)


def test_card_write_option(tmp_path, capsys):
    target = tmp_path / "README.md"
    assert main(["card", phase_of(CAPTURED, "Serving"), "--from", str(CAPTURED), "--write", str(target)]) == 0
    assert ModelCard(target.read_text()).data.model_name == "twlegal/tiny-legal"


# --- consistency --------------------------------------------------------------------------------


def hp(**values) -> Hyperparameters:
    return Hyperparameters.model_validate(
        {"learningRate": 5e-5, "perDeviceBatchSize": 20, "gradientAccumulationSteps": 16, "epochs": 3, **values}
    )


def test_warmup_not_below_the_total_steps_is_found():
    [finding] = consistency.warmup_not_below_total(hp(warmupSteps=100), 65)
    assert finding.reason == "WarmupNotBelowTotalSteps" and "never reaches its peak 5e-05" in finding.message
    assert consistency.warmup_not_below_total(hp(warmupSteps=10), 65) == []
    assert consistency.warmup_not_below_total(hp(warmupSteps=100), None) == [], "unknown: nothing claimed"


def test_a_nearly_empty_last_batch_and_a_batch_larger_than_the_epoch_are_found():
    [sliver] = consistency.nearly_empty_last_batch(hp(), samples=2560 * 21 + 100, world_size=8)
    assert sliver.reason == "LastBatchNearlyEmpty" and "leave 100 samples (3.9% of a batch)" in sliver.message
    assert consistency.nearly_empty_last_batch(hp(), samples=2560 * 21 + 1280, world_size=8) == []
    assert consistency.nearly_empty_last_batch(hp(), samples=2560 * 21, world_size=8) == []
    [whole] = consistency.nearly_empty_last_batch(hp(), samples=1000, world_size=8)
    assert whole.reason == "BatchLargerThanEpoch"


def test_the_reference_release_is_flagged_for_its_unpinned_datasets():
    spec = LegalModelRelease.from_object(load_example(REFERENCE_RELEASE)).spec
    assert [f.reason for f in consistency.check_release(spec)] == ["UnpinnedDataset"]
    assert [f.reason for f in consistency.check_release(spec, {"totalSteps": 65})] == [
        "UnpinnedDataset",
        "WarmupNotBelowTotalSteps",
    ]
