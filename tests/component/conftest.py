"""Fixtures of the component tier: a tiny Llama and its tokenizer built from the fixture text,
and a storage volume laid out as the tiny release expects. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cluster import in_ci
from twlegal_dev.tiny_model import build_tiny_model, make_volume

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as exc:  # the trainer extra is not installed
    if in_ci():
        raise
    pytest.skip(f"trainer dependencies missing: {exc}", allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama")


@pytest.fixture
def volume(tmp_path: Path, tiny_model: Path) -> Path:
    return make_volume(tmp_path / "volume", tiny_model)
