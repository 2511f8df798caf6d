"""Inconsistencies in a release's own inputs, found before anyone types them into a card.

Each check is pure and returns Findings; the same checks feed the trainer's warnings, the
operator's InputsPinned condition and the model card, so the three never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import reasons
from ..api.spec import Hyperparameters, LegalModelReleaseSpec

# A last batch holding less than this share of a full batch is "nearly empty": one optimizer step
# of the epoch averages a handful of samples, and its gradient is mostly noise.
NEARLY_EMPTY_SHARE = 0.1


@dataclass(frozen=True)
class Finding:
    reason: str  # CamelCase, as a condition or event reason
    message: str


def unpinned_datasets(spec: LegalModelReleaseSpec) -> list[Finding]:
    """Hub datasets without a revision: the next run may train on different data."""
    names = [d.name for d in spec.datasets if d.name and not d.revision]
    if not names:
        return []
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return [
        Finding(
            reasons.UNPINNED_DATASET,
            f"{len(names)} of {len(spec.datasets)} datasets have no revision ({shown}): "
            "the same release may train on different data; pin spec.datasets[].revision",
        )
    ]


def warmup_not_below_total(hp: Hyperparameters, total_steps: int | None) -> list[Finding]:
    if total_steps is None or hp.warmup_steps < total_steps:
        return []
    return [
        Finding(
            reasons.WARMUP_NOT_BELOW_TOTAL_STEPS,
            f"warmupSteps {hp.warmup_steps} is not below the {total_steps} optimizer steps of this run: "
            f"the learning rate never reaches its peak {hp.learning_rate:g}",
        )
    ]


def global_batch(hp: Hyperparameters, world_size: int) -> int:
    return hp.per_device_batch_size * hp.gradient_accumulation_steps * world_size


def nearly_empty_last_batch(hp: Hyperparameters, samples: int | None, world_size: int | None) -> list[Finding]:
    """The batch size against the number of samples: the last batch of each epoch should not be
    a sliver of a full one (nor should one batch be larger than the whole epoch)."""
    if not samples or not world_size:
        return []
    batch = global_batch(hp, world_size)
    if samples < batch:
        return [
            Finding(
                reasons.BATCH_LARGER_THAN_EPOCH,
                f"a global batch of {batch} samples ({hp.per_device_batch_size} per device x "
                f"{hp.gradient_accumulation_steps} accumulation x {world_size} devices) is larger than "
                f"the {samples} samples of an epoch: each epoch is a single, partial optimizer step",
            )
        ]
    rest = samples % batch
    if 0 < rest < NEARLY_EMPTY_SHARE * batch:
        return [
            Finding(
                reasons.LAST_BATCH_NEARLY_EMPTY,
                f"{samples} samples in global batches of {batch} leave {rest} samples "
                f"({100 * rest / batch:.1f}% of a batch) for the last optimizer step of each epoch",
            )
        ]
    return []


def check_run(
    hp: Hyperparameters, *, total_steps: int | None, samples: int | None, world_size: int | None
) -> list[Finding]:
    """What the trainer knows once its data is loaded (and the card knows from status)."""
    return [*warmup_not_below_total(hp, total_steps), *nearly_empty_last_batch(hp, samples, world_size)]


def check_release(spec: LegalModelReleaseSpec, training: dict[str, Any] | None = None) -> list[Finding]:
    """Every finding about a release: its spec, and the run's figures from status.training."""
    training = training or {}
    hp = spec.training.hyperparameters
    return [
        *unpinned_datasets(spec),
        *check_run(
            hp,
            total_steps=training.get("totalSteps"),
            samples=training.get("samples"),
            world_size=training.get("worldSize"),
        ),
    ]
