"""The weights' checksum manifest: written by the trainer, verified by the server, one definition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twlegal.contracts import manifest
from twlegal.contracts.manifest import MANIFEST_FILE, ManifestError
from twlegal_trainer.artifacts import BESIDE_WEIGHTS

# As the trainer published it before the manifest had a module of its own: its layout and checksum
# must never change, or weights already on the volume (and the checksums in releases' status and
# cards) would stop matching.
PUBLISHED = """\
{
  "files": {
    "config.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "model.safetensors": "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c",
    "sub/tokenizer.json": "1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62"
  },
  "model": "twlegal/tiny-legal",
  "version": "v0.1.0"
}
"""
PUBLISHED_CHECKSUM = "sha256:275e2be22b3ea75df33ed38d467a44f22dd2d0df1ffbb70465e3f42b0a789fac"


def weights(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(b"weights")
    (directory / "config.json").write_text("{}")
    (directory / "sub").mkdir(exist_ok=True)
    (directory / "sub" / "tokenizer.json").write_text("tok")
    return directory


def test_the_layout_and_checksum_are_those_already_published(tmp_path):
    model = weights(tmp_path / "v0.1.0")
    (model / "README.md").write_text("card")  # beside the weights, not part of them
    (model / "twlegal-result.json").write_text("{}")
    assert MANIFEST_FILE == "twlegal-manifest.json"
    assert manifest.write(model, "twlegal/tiny-legal", "v0.1.0", exclude=BESIDE_WEIGHTS) == PUBLISHED_CHECKSUM
    assert (model / MANIFEST_FILE).read_text() == PUBLISHED
    assert manifest.read(model).checksum == PUBLISHED_CHECKSUM


def test_written_then_verified(tmp_path):
    model = weights(tmp_path / "v0.1.0")
    checksum = manifest.write(model, "m", "v0.1.0")
    (model / "README.md").write_text("the card, written after the manifest")  # unlisted: not checked
    verified = manifest.verify(model, "v0.1.0")
    assert (verified.model, verified.version) == ("m", "v0.1.0")
    assert set(verified.files) == {"config.json", "model.safetensors", "sub/tokenizer.json"}
    assert verified.checksum == checksum == manifest.checksum((model / MANIFEST_FILE).read_text())


def test_a_changed_file_is_refused_naming_it(tmp_path):
    model = weights(tmp_path / "v0.1.0")
    manifest.write(model, "m", "v0.1.0")
    (model / "sub" / "tokenizer.json").write_text("replaced")
    with pytest.raises(ManifestError, match=r"^revision v0\.1\.0: sub/tokenizer\.json does not match its checksum"):
        manifest.verify(model, "v0.1.0")


def test_a_missing_file_is_refused_naming_it(tmp_path):
    model = weights(tmp_path / "v0.1.0")
    manifest.write(model, "m", "v0.1.0")
    (model / "model.safetensors").unlink()
    with pytest.raises(ManifestError, match=r"^revision v0\.1\.0: model\.safetensors is missing$"):
        manifest.verify(model, "v0.1.0")


def test_another_version_is_refused_naming_both(tmp_path):
    model = weights(tmp_path / "v0.1.0")
    manifest.write(model, "m", "v0.1.0")
    with pytest.raises(ManifestError, match=r"holds revision 'v0\.1\.0', but 'v0\.2\.0' is pinned"):
        manifest.verify(model, "v0.2.0")


def test_a_missing_directory_or_manifest_is_refused_naming_it(tmp_path):
    with pytest.raises(ManifestError, match=r"revision v9: model directory .*/absent does not exist"):
        manifest.verify(tmp_path / "absent", "v9")
    model = weights(tmp_path / "v0.1.0")
    with pytest.raises(ManifestError, match=r"^revision v0\.1\.0: .*/twlegal-manifest\.json is missing"):
        manifest.verify(model, "v0.1.0")


@pytest.mark.parametrize(
    "text", ["not json", "[]", json.dumps({"model": "m", "version": "v1"}), json.dumps({"model": "m", "files": {}})]
)
def test_a_manifest_that_is_not_one_is_refused_naming_the_file(tmp_path, text):
    model = weights(tmp_path / "v1")
    (model / MANIFEST_FILE).write_text(text)
    with pytest.raises(ManifestError, match=r"^revision v1: .*/twlegal-manifest\.json is not a readable manifest"):
        manifest.verify(model, "v1")
