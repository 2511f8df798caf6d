"""What the trainer records about its inputs: hub revisions resolved to commits, paths hashed."""

from __future__ import annotations

import hashlib

import huggingface_hub.constants
import pytest

from twlegal_trainer.provenance import hub_commit, tree_checksum

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A hub cache as huggingface_hub lays it out after a download of org/base at tag v1."""
    repo = tmp_path / "models--org--base"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(COMMIT)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_a_hub_revision_resolves_to_the_commit_in_the_cache(hub_cache):
    assert hub_commit("org/base", "v1", "model", offline=True) == COMMIT


def test_an_unknown_revision_offline_is_not_guessed(hub_cache):
    assert hub_commit("org/base", "v2", "model", offline=True) is None
    assert hub_commit("org/other", "v1", "dataset", offline=True) is None


def test_a_file_is_hashed_and_a_directory_by_its_files_names_and_contents(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.json").write_text("a")
    (tmp_path / "d" / "sub" / "b.json").write_text("b")
    assert tree_checksum(tmp_path / "d" / "a.json") == "sha256:" + hashlib.sha256(b"a").hexdigest()
    before = tree_checksum(tmp_path / "d")
    assert before == tree_checksum(tmp_path / "d"), "deterministic"
    (tmp_path / "d" / "sub" / "b.json").rename(tmp_path / "d" / "sub" / "c.json")
    assert tree_checksum(tmp_path / "d") != before, "a renamed file is another input"
