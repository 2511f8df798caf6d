"""A full disk: telling it from other errors, and saying in one sentence what the save needed, what
is free and what is left to resume from. A full volume is recoverable (free space or grow the
claim, and the next run continues from the newest complete checkpoint), so it gets its own outcome,
StorageFull, rather than "Failed". No torch: the sizes come in as numbers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twlegal.contracts.storage import StorageOwner

from .artifacts import newest_complete_checkpoint, remove_half_written

NO_SPACE = "no space left on device"  # strerror(ENOSPC), as Rust (safetensors) and C++ report it too
# torch.save loses the errno of a failed write ("unexpected pos 576 vs 534", "basic_ios::clear:
# iostream error", "PytorchStreamWriter failed writing file"): such an error counts as a full disk
# when the free space is below what the save needed.
TORCH_WRITE_FAILURES = ("pytorchstreamwriter", "inline_container.cc", "iostream error", "file write failed")
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (__cause__, __context__), each once."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def is_full(exc: BaseException, directory: Path, needed: int) -> bool:
    """Whether `exc`, raised while saving `needed` bytes into `directory`, is a full disk (logged
    when it is: the result says what happened, the log what raised it)."""
    chain = list(causes(exc))
    full = any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or NO_SPACE in str(e).lower() for e in chain)
    if not full and any(marker in str(e).lower() for e in chain for marker in TORCH_WRITE_FAILURES):
        full = free_bytes(directory) < needed
    if full:
        print(f"twlegal-train: disk full under {directory}: {' <- '.join(repr(e)[:300] for e in chain)}", flush=True)
    return full


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or would, once created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def tree_size(path: Path | None) -> int:
    """Bytes of the files under `path` (0 when it is missing)."""
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def weights_bytes(parameters: int, precision: str) -> int:
    """The published weights: one value per parameter in the training precision."""
    return parameters * PRECISION_BYTES[precision]


def checkpoint_bytes(parameters: int, precision: str, deepspeed: bool) -> int:
    """A checkpoint before the first one exists to measure: the weights, Adam's two fp32 moments
    and, under DeepSpeed in half precision, its fp32 master copy of the weights."""
    master = 4 if deepspeed and PRECISION_BYTES[precision] < 4 else 0
    return parameters * (PRECISION_BYTES[precision] + 8 + master)


def _then(newest: Path | None) -> str:
    if newest is None:
        return "there is no complete checkpoint yet: free space or grow the volume, and the release trains again"
    return f"the newest complete checkpoint {newest} is kept, and the next run resumes from it once there is space"


def checkpoint_full(exc: BaseException, directory: Path, owner: StorageOwner, estimate: int) -> dict[str, Any] | None:
    """When `exc` is a full disk while checkpointing into `directory`: remove the half-written
    checkpoint (never a complete one) and return the StorageFull result's fields; else None.
    A checkpoint needs about as much as the last one took, or `estimate` before the first."""
    newest, _ = newest_complete_checkpoint(directory, owner)
    needed = tree_size(newest) if newest else estimate
    if not is_full(exc, directory, needed):
        return None
    remove_half_written(directory)
    message = (
        f"no space left on device saving a checkpoint in {directory}: a checkpoint needs about {human(needed)}, "
        f"{human(free_bytes(directory))} is free; {_then(newest)}"
    )
    return {"outcome": "StorageFull", "message": message, "checkpoint": str(newest) if newest else None}


def publish_full(
    exc: BaseException, staging: Path, final: Path, estimate: int, newest: Path | None
) -> dict[str, Any] | None:
    """When `exc` is a full disk while saving the final weights into `staging`: remove the staging
    (nothing half-written is published) and return the StorageFull result's fields; else None."""
    needed = max(estimate, tree_size(staging))
    if not is_full(exc, staging, needed):
        return None
    shutil.rmtree(staging, ignore_errors=True)
    message = (
        f"no space left on device publishing the weights to {final}: they need about {human(needed)}, "
        f"{human(free_bytes(final.parent))} is free, and nothing was published; {_then(newest)}"
    )
    return {"outcome": "StorageFull", "message": message, "checkpoint": str(newest) if newest else None}
