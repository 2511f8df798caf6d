"""Whose directories these are: the checks a run makes before it writes anything, so a release
never resumes another's checkpoints nor replaces another's weights.

A checkpoint directory records its owner twice: `OWNER_FILE` at its root (written when a run claims
it) and in each checkpoint's completion mark. Published weights record theirs in the manifest's
`release`. Directories written before owners were recorded (by an older trainer) name no owner: they
are refused too, since nothing says they are this run's. File reads, and the writes of these owner
records; no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from pydantic import ValidationError

from twlegal.contracts import manifest
from twlegal.contracts.storage import OWNER_FILE, StorageOwner

COMPLETE_MARK = "twlegal-complete.json"  # written after a checkpoint is fully saved
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
NO_OWNER = "no recorded owner (an older trainer, or not twlegal, wrote it)"


class StorageConflict(Exception):
    """A directory this run would write belongs to another release (or to none it can tell)."""


def read_owner(path: Path) -> StorageOwner | None:
    """The owner recorded in a JSON file (an owner file, or the `owner` of a completion mark); None
    when the file is missing, unreadable or names none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if path.name != OWNER_FILE:
            data = data.get("owner") if isinstance(data, dict) else None
        return StorageOwner.model_validate(data) if data is not None else None
    except (OSError, ValueError, ValidationError):  # JSONDecodeError is a ValueError
        return None


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-N` directories under `directory`, newest (highest N) first."""
    if not directory.is_dir():
        return []
    found = ((int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir())
    return sorted(found, reverse=True)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / COMPLETE_MARK).is_file()


def is_runs_complete(checkpoint: Path, owner: StorageOwner) -> bool:
    """A complete checkpoint whose mark names this same run: the only kind it may resume or keep."""
    return (
        is_complete(checkpoint)
        and (found := read_owner(checkpoint / COMPLETE_MARK)) is not None
        and found.same_run(owner)
    )


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a mark or owner file cut short would read as "no owner"
    and refuse the run's own directory."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


def whose(owner: StorageOwner | None) -> str:
    return owner.describe() if owner is not None else NO_OWNER


def checkpoint_refusal(directory: Path, owner: StorageOwner) -> str | None:
    """Why this run must not train in `directory`, or None: its owner file names another run, or
    it holds a complete checkpoint whose mark does (or names none). Read-only, so every rank can
    ask and gets the same answer: the claim only ever adds this run's own owner file."""
    recorded = directory / OWNER_FILE
    # A half-written checkpoint (no mark) resumes nothing and is overwritten: only marks count.
    marks = [read_owner(p / COMPLETE_MARK) for _, p in checkpoints(directory) if is_complete(p)]
    for found in (read_owner(recorded) if recorded.exists() else owner, *marks):
        if found is None or not found.same_run(owner):
            return (
                f"checkpoint directory {directory} belongs to {whose(found)}: not resumed; "
                "give this release its own storage.checkpointPath"
            )
    return None


def claim(directory: Path, owner: StorageOwner) -> str | None:
    """Check `directory` and, when it is this run's (or new), record this run as its owner. Returns
    why not, having written nothing, or None. The owner file appears whole or not at all (a hard
    link of a finished file), and never replaces one: of two runs claiming at once, one wins."""
    if refusal := checkpoint_refusal(directory, owner):
        return refusal
    target = directory / OWNER_FILE
    if target.exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    scratch = directory / f".{OWNER_FILE}.{os.getpid()}"
    scratch.write_text(owner.to_json(), encoding="utf-8")
    try:
        os.link(scratch, target)
    except FileExistsError:
        pass  # another run claimed it meanwhile: the check below tells whether it was this one
    except OSError:  # a filesystem without hard links (SMB): an exclusive create, briefly empty
        with contextlib.suppress(FileExistsError), target.open("x", encoding="utf-8") as f:
            f.write(owner.to_json())
    finally:
        scratch.unlink()
    return checkpoint_refusal(directory, owner)


def publisher(directory: Path) -> tuple[manifest.Manifest | None, StorageOwner | None]:
    """The manifest published in `directory` (None when there is none) and the owner it names."""
    try:
        published = manifest.read(directory)
    except manifest.ManifestError:
        return None, None
    try:
        return published, StorageOwner.model_validate(published.release) if published.release else None
    except ValidationError:
        return published, None


def weights_refusal(directory: Path, owner: StorageOwner) -> str | None:
    """Why this run must not publish into `directory`, or None: absent (or empty), or holding
    weights this same run published. A legacy manifest (no `release`), another owner's, or files
    without a manifest are kept."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return None
    published, found = publisher(directory) if directory.is_dir() else (None, None)
    if found is not None and found.same_run(owner):
        return None
    if published is None:
        held = "files not published by twlegal (no manifest)"
    else:
        held = f"weights of {whose(found)}"
    return f"weights directory {directory} holds {held}: not replaced; give this release its own storage.artifactPath"


def storage_refusal(checkpoint_dir: Path, weights_dir: Path, owner: StorageOwner, *, claim_it: bool) -> str | None:
    """Before a run does any work: why it must stop (its checkpoint or weights directory belongs to
    another release), or None. With `claim_it` (rank 0) the checkpoint directory is then claimed,
    once both are checked: a refused run writes nothing."""
    refusal = checkpoint_refusal(checkpoint_dir, owner) or weights_refusal(weights_dir, owner)
    if refusal or not claim_it:
        return refusal
    return claim(checkpoint_dir, owner)
