"""Checkpoints, published weights with a checksum manifest, and the result the operator reads."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from pathlib import Path

from twlegal.contracts import manifest
from twlegal.contracts.termination import write_termination_message
from twlegal.contracts.training import CARD_FILE, RESULT_FILE, TrainingConfig, TrainingResult

COMPLETE_MARK = "twlegal-complete.json"  # written after a checkpoint is fully saved
# Written beside the published weights, after their manifest: not part of them, so not listed.
BESIDE_WEIGHTS = (RESULT_FILE, CARD_FILE)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: Path, world_size: int) -> None:
    (checkpoint / COMPLETE_MARK).write_text(json.dumps({"worldSize": world_size}))


def newest_complete_checkpoint(directory: Path) -> tuple[Path | None, int | None]:
    """The newest checkpoint with its completion mark (a half-written one has none), and the
    world size that wrote it."""
    if not directory.is_dir():
        return None, None
    found = sorted(
        (
            (int(m.group(1)), p)
            for p in directory.iterdir()
            if (m := _CHECKPOINT.match(p.name)) and (p / COMPLETE_MARK).is_file()
        ),
        reverse=True,
    )
    if not found:
        return None, None
    path = found[0][1]
    return path, json.loads((path / COMPLETE_MARK).read_text())["worldSize"]


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def publish(staging: Path, final: Path, model: str, version: str) -> str:
    """Seal the staged weights with their checksum manifest, then make them visible at their final
    path in one rename (never half-published). Returns the manifest's checksum."""
    checksum = manifest.write(staging, model, version, exclude=BESIDE_WEIGHTS)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, final)
    return checksum


def report(result: TrainingResult, beside: Path | None) -> None:
    """The result beside the weights (when published) and as the termination message."""
    if beside is not None and beside.is_dir():
        (beside / RESULT_FILE).write_text(json.dumps(result.to_wire(), indent=2, ensure_ascii=False) + "\n")
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
