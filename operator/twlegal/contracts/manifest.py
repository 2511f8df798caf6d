"""trainer -> server: the checksum manifest published with the weights (twlegal-manifest.json).

The trainer writes it into the staged weights just before the one rename that publishes them; the
server launcher verifies the weights against it before it starts vLLM. The sha256 of the file is
the checksum the release's status and model card record as the weights' identity, so the layout
below (keys, indentation, sorted keys, trailing newline) is part of the contract: weights published
before any change to this module must still verify and keep their checksum.

Pure: hashlib, json and pathlib only (the server image imports it without the trainer's stack).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "twlegal-manifest.json"
_BLOCK = 1 << 20  # weights are GiBs: hash them in blocks, never read whole


class ManifestError(Exception):
    """The weights are not the revision asked for: missing, mislabelled, or changed since publishing."""


def sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum(text: str) -> str:
    """The checksum of a manifest's text, as the release records it: "sha256:<hex>"."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    model: str
    version: str
    files: dict[str, str]  # path relative to the weights' directory -> hex sha256 of its bytes
    # The run that published them (contracts.storage.StorageOwner on the wire); absent in weights
    # published before owners were recorded, whose text (and so checksum) stays as it was.
    release: dict[str, Any] | None = None

    def to_text(self) -> str:
        data: dict[str, Any] = {"model": self.model, "version": self.version, "files": self.files}
        if self.release is not None:
            data["release"] = self.release
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @property
    def checksum(self) -> str:
        return checksum(self.to_text())


def build(
    directory: Path,
    model: str,
    version: str,
    *,
    exclude: Collection[str] = (),
    release: dict[str, Any] | None = None,
) -> Manifest:
    """Every file under `directory` with its sha256, except the manifest itself and files named in
    `exclude` (at any depth): files written beside the weights that are not part of them."""
    skip = {MANIFEST_FILE, *exclude}
    files = {
        str(p.relative_to(directory)): sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in skip
    }
    return Manifest(model=model, version=version, files=files, release=release)


def write(
    directory: Path,
    model: str,
    version: str,
    *,
    exclude: Collection[str] = (),
    release: dict[str, Any] | None = None,
) -> str:
    """Write the manifest of `directory` into it; returns the manifest's checksum."""
    manifest = build(directory, model, version, exclude=exclude, release=release)
    (directory / MANIFEST_FILE).write_text(manifest.to_text(), encoding="utf-8")
    return manifest.checksum


def _parse(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    files = data.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ValueError("no 'files' mapping of names to sha256")
    model, version = data.get("model"), data.get("version")
    if not isinstance(model, str) or not isinstance(version, str):
        raise ValueError("no 'model' and 'version' strings")
    release = data.get("release")
    if release is not None and not isinstance(release, dict):
        raise ValueError("'release' is not an object")
    return Manifest(model=model, version=version, files={str(k): v for k, v in files.items()}, release=release)


def read(directory: Path) -> Manifest:
    """The manifest published in `directory`; ManifestError, naming the file, when it is missing or
    not a manifest."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path} is missing (not published by the trainer?)")
    try:
        return _parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ManifestError(f"{path} is not a readable manifest: {exc}") from exc


def verify(directory: Path, version: str, checksum: str | None = None) -> Manifest:
    """The manifest of `directory` when it names `version`, has `checksum` (when given: the one the
    operator recorded when the weights were published, so another release's weights of the same
    version are refused) and every file it lists is there with its sha256; otherwise ManifestError
    naming the revision and the file. Files it does not list (the result and the card beside the
    weights) are not checked."""
    if not directory.is_dir():
        raise ManifestError(f"revision {version}: model directory {directory} does not exist")
    try:
        manifest = read(directory)
    except ManifestError as exc:
        raise ManifestError(f"revision {version}: {exc}") from exc
    if manifest.version != version:
        raise ManifestError(f"{directory} holds revision {manifest.version!r}, but {version!r} is pinned")
    if checksum is not None and manifest.checksum != checksum:
        raise ManifestError(
            f"revision {version}: {directory} holds weights with manifest {manifest.checksum}, but {checksum} is "
            "pinned (another publish replaced them)"
        )
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise ManifestError(f"revision {version}: {name} is missing")
        if sha256(path) != expected:
            raise ManifestError(f"revision {version}: {name} does not match its checksum (corrupted or replaced)")
    return manifest
