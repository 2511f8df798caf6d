"""What the run actually loaded: hub inputs resolved to commit ids, path inputs to checksums.

A hub revision such as `v2024.10.27` or `main` is a name that can move; the commit it pointed at
when this run loaded it is what the card and the release's status must record. A path on the
volume has no revision at all, so its content is hashed instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from twlegal.api.status import InputsStatus, ResolvedInput
from twlegal.contracts.manifest import sha256
from twlegal.contracts.training import TrainingConfig


def tree_checksum(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """sha256 of a file, or of the sorted "sha256  relative/path" lines of a directory's files."""
    if path.is_file():
        return "sha256:" + sha256(path)
    lines = "".join(
        f"{sha256(p)}  {p.relative_to(path)}\n"
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in exclude
    )
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def hub_commit(repo_id: str, revision: str | None, repo_type: str, offline: bool) -> str | None:
    """The commit `revision` resolved to: from the local hub cache the loader just filled, else
    (online) from the hub's API. None when neither can tell."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True)).name
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if offline:
        return None
    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
    except (HfHubHTTPError, OSError, ValueError):
        return None


def resolve(config: TrainingConfig) -> InputsStatus:
    def one(name: str | None, revision: str | None, path: str | None, repo_type: str) -> ResolvedInput:
        if path:
            return ResolvedInput(path=path, checksum=tree_checksum(Path(path)))
        assert name is not None
        return ResolvedInput(
            name=name, revision=revision, commit=hub_commit(name, revision, repo_type, config.hub_offline)
        )

    base = config.base_model
    return InputsStatus(
        base_model=one(base.name, base.revision, base.path, "model"),
        datasets=[one(d.name, d.revision, d.path, "dataset") for d in config.datasets],
    )
