"""Checkpoints, published weights with a checksum manifest, and the result the operator reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from twlegal.contracts import manifest
from twlegal.contracts.storage import OWNER_FILE, StorageOwner
from twlegal.contracts.termination import write_termination_message
from twlegal.contracts.training import CARD_FILE, LOSS_PLOT_FILE, RESULT_FILE, TrainingConfig, TrainingResult

from .ownership import (
    COMPLETE_MARK,
    StorageConflict,
    checkpoints,
    is_complete,
    is_runs_complete,
    read_owner,
    weights_refusal,
    whose,
    write_atomically,
)

# Written beside the published weights, after their manifest: not part of them, so not listed.
BESIDE_WEIGHTS = (RESULT_FILE, CARD_FILE, LOSS_PLOT_FILE)


def mark_complete(checkpoint: Path, world_size: int, owner: StorageOwner) -> None:
    """The mark a resumed run looks for: the checkpoint is whole, which world size wrote it (a
    DeepSpeed checkpoint loads only at that size) and for which run (only that run resumes it)."""
    mark = {"worldSize": world_size, "owner": owner.to_wire()}
    write_atomically(checkpoint / COMPLETE_MARK, json.dumps(mark, sort_keys=True))


def newest_complete_checkpoint(directory: Path, owner: StorageOwner) -> tuple[Path | None, int | None]:
    """The newest checkpoint of this run that has its completion mark (a half-written one has
    none), and the world size that wrote it. A checkpoint whose mark names another run (or none)
    is never picked: the run's claim on the directory refuses such a directory anyway."""
    for _, path in checkpoints(directory):
        if is_runs_complete(path, owner):
            return path, json.loads((path / COMPLETE_MARK).read_text()).get("worldSize")
    return None, None


def remove_half_written(directory: Path) -> list[Path]:
    """Remove the checkpoints without a completion mark (a save cut short) to give back their
    space; a complete one is never touched. Returns what was removed."""
    removed = [path for _, path in checkpoints(directory) if not is_complete(path)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def staging_dir(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def prepare_staging(staging: Path, final: Path, owner: StorageOwner) -> None:
    """An empty staging directory for this run's weights, recording its owner: a stale one of this
    run (a crash mid-save) is cleared; one another release is writing (it publishes to the same
    path) is not, nor is anything done when `final` has become another release's meanwhile."""
    if refusal := weights_refusal(final, owner):
        raise StorageConflict(refusal)
    recorded = staging / OWNER_FILE
    if recorded.exists() and not ((found := read_owner(recorded)) and found.same_run(owner)):
        raise StorageConflict(
            f"staging directory {staging} is being written by {whose(found)}: not replaced; "
            "give this release its own storage.artifactPath"
        )
    if staging.exists():  # this run's, or an older trainer's leftover: never published, so safe to drop
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_atomically(recorded, owner.to_json())


def publish(staging: Path, final: Path, model: str, version: str, owner: StorageOwner) -> str:
    """Seal the staged weights with their checksum manifest (naming this run as their publisher),
    then make them visible at their final path in one rename (never half-published). Returns the
    manifest's checksum.

    Idempotent: when `final` already holds weights this run published and they verify (a retry
    after a crash between publishing and reporting), they are kept, the staging is dropped and
    their checksum returned. Weights of another release are never replaced: StorageConflict."""
    if refusal := weights_refusal(final, owner):  # again: another release may have published meanwhile
        raise StorageConflict(refusal)
    try:
        kept: manifest.Manifest | None = manifest.verify(final, version)
    except manifest.ManifestError:
        kept = None  # absent, empty, or this run's weights damaged since: published again below
    if kept is not None:
        shutil.rmtree(staging)
        return kept.checksum
    (staging / OWNER_FILE).unlink(missing_ok=True)  # the manifest records the owner of published weights
    checksum = manifest.write(staging, model, version, exclude=BESIDE_WEIGHTS, release=owner.to_wire())
    if final.exists():
        shutil.rmtree(final)  # only this run's own weights that no longer verify get here (or an empty directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A directory renames only onto an absent or empty one: should another release publish in
    # between, this fails rather than replace its weights.
    os.replace(staging, final)
    return checksum


def report(result: TrainingResult, beside: Path | None) -> None:
    """The result beside the weights (when published) and as the termination message."""
    if beside is not None and beside.is_dir():
        try:
            (beside / RESULT_FILE).write_text(json.dumps(result.to_wire(), indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:  # a volume filled by the weights: the termination message still reports
            print(f"twlegal-train: {RESULT_FILE} not written beside the weights: {exc}", flush=True)
    write_termination_message(result.termination_message(), log_prefix="twlegal-result")


def write_card(config: TrainingConfig, result: TrainingResult, beside: Path) -> None:
    """The model card beside the weights (README.md, where the hub shows it), rendered by the same
    code as `twlegal card` from the release's spec and this run's result. It is written before any
    evaluation, so it says the score is not reported; `twlegal card` later renders it complete."""
    if config.spec is None:
        return
    from twlegal.api.release import LegalModelRelease
    from twlegal.docs import card

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sections = result.status_sections()
    sections["training"]["completionTime"] = now
    ready = {
        "type": "Ready",
        "status": "False",
        "reason": "Trained",
        "lastTransitionTime": now,
        "message": "trained; not yet evaluated when the trainer wrote this card",
    }
    try:
        release = LegalModelRelease.model_validate(
            {
                "metadata": {"name": config.release.name, "namespace": config.release.namespace},
                "spec": config.spec.to_wire(),
                "status": {**sections, "conditions": [ready]},
            }
        )
        (beside / CARD_FILE).write_text(card.render(release), encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - published weights must not fail over their card
        print(f"twlegal-train: model card not written: {exc!r}", flush=True)
