"""`twlegal validate` accepts the examples and rejects every bad release, naming the field."""

from __future__ import annotations

import pytest

from tests.cases import REFERENCE_RELEASE, TINY_RELEASE, invalid_cases, load_example
from twlegal import yamlio
from twlegal.api.validation import validate_document
from twlegal.cli import main

CASES = invalid_cases()


def test_the_table_is_large_enough():
    assert len(CASES) >= 25
    assert len({case["id"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("path", [REFERENCE_RELEASE, TINY_RELEASE], ids=lambda p: p.name)
def test_examples_are_valid(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "is valid" in capsys.readouterr().out


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_invalid_release_is_rejected_naming_the_field(case, tmp_path, capsys):
    path = tmp_path / f"{case['id']}.yaml"
    path.write_text(yamlio.dump(case["document"]), encoding="utf-8")

    assert main(["validate", str(path)]) == 1

    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "a rejection must say why"
    assert any(f": {case['field']}: " in line or line.endswith(f": {case['field']}") for line in lines), lines


def test_every_problem_is_reported_not_just_the_first():
    doc = load_example()
    doc["spec"]["version"] = "latest"
    doc["spec"]["training"]["hyperparameters"]["learningRate"] = 0
    _, problems = validate_document(doc)
    assert {p.path for p in problems} >= {"spec.version", "spec.training.hyperparameters.learningRate"}


def test_messages_explain_the_expected_form():
    doc = load_example()
    doc["spec"]["version"] = "2024.11.13"
    _, problems = validate_document(doc)
    assert "vMAJOR.MINOR.PATCH" in str(problems[0])


def test_yaml_floats_without_a_dot_are_numbers_as_kubectl_reads_them():
    doc = yamlio.load_all("learningRate: 5e-5\nsteps: 100\n")[0]
    assert doc == {"learningRate": 5e-5, "steps": 100}


def test_wrong_kind_and_api_version_are_named():
    _, problems = validate_document({"apiVersion": "v1", "kind": "ConfigMap"})
    assert problems[0].path == "apiVersion"
    doc = load_example()
    doc["kind"] = "LegalModelReleas"
    _, problems = validate_document(doc)
    assert problems[0].path == "kind"


def test_defaults_are_applied_like_the_api_server(tmp_path):
    release, problems = validate_document(load_example())
    assert not problems
    assert release.spec.training.hyperparameters.max_grad_norm == 1.0
    assert release.spec.storage.artifact_path == "releases/{model}/{version}/{name}-{inputs}"
    assert release.spec.storage.retention.keep_checkpoints_after_failure == 1
    assert release.spec.hub.offline is True


def test_validate_reports_missing_files_and_empty_files(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["validate", str(empty)]) == 1
    with pytest.raises(SystemExit, match="cannot read"):
        main(["validate", str(tmp_path / "missing.yaml")])


def test_one_pass_reports_schema_and_rule_problems_together():
    # A schema error elsewhere (a missing required field) no longer hides what the CEL rules say.
    doc = load_example()
    doc["spec"]["baseModel"] = {}
    del doc["spec"]["training"]["hyperparameters"]["epochs"]
    doc["spec"]["storage"]["artifactPath"] = "releases/{model}"
    release, problems = validate_document(doc)
    assert release is None
    paths = {p.path for p in problems}
    assert {"spec.training.hyperparameters.epochs", "spec.baseModel", "spec.storage.artifactPath"} <= paths, problems
