"""Storage decisions (pure): whose directories overlap, when checkpoints are pruned, and what
deleting a release removes.

- Before its training Job exists, a release's placement must be a claim and two directories that
  overlap neither each other nor any directory of another release on the same claim in the
  namespace. Of two releases that overlap, the one that already holds its placement (recorded in
  status) keeps it; between two that hold none, the older one (then the smaller name) does.
- Once training has settled, retention prunes the checkpoints (a storage Job), once.
- Deleting a release with reclaimPolicy Delete runs a reclaim Job behind a finalizer; weights that
  the target's Deployment still serves are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import reasons as R
from ..api.release import LegalModelRelease
from ..api.status import Phase
from ..render import names
from ..render import storage as render_storage
from ..render.settings import OperatorSettings
from . import children
from . import conditions as cond

RECLAIM_FINALIZER = f"{names.ANNOTATION_PREFIX}/reclaim-storage"


def prune_job_name(release: LegalModelRelease) -> str:
    return f"{release.name}-prune"


def reclaim_job_name(release: LegalModelRelease) -> str:
    return f"{release.name}-reclaim"


def overlapping(a: str, b: str) -> bool:
    """Whether two volume paths are the same directory or one lies inside the other."""
    a_parts, b_parts = a.strip("/").split("/"), b.strip("/").split("/")
    shorter = min(len(a_parts), len(b_parts))
    return a_parts[:shorter] == b_parts[:shorter]


@dataclass(frozen=True)
class StoragePeer:
    """Another release of the namespace, as far as its directories are concerned."""

    name: str
    created: str
    holds: bool  # its placement is recorded in status (its training Job exists or existed)
    placement: render_storage.Placement

    @classmethod
    def of(cls, release: LegalModelRelease, settings: OperatorSettings) -> StoragePeer:
        recorded = release.status.storage if release.status else None
        return cls(
            release.name,
            release.metadata.creation_timestamp or "",
            bool(recorded and recorded.artifact_path),
            render_storage.placement(release, settings),
        )


@dataclass(frozen=True)
class Finding:
    reason: str
    message: str


def placement_problem(
    release: LegalModelRelease, settings: OperatorSettings, peers: tuple[StoragePeer, ...]
) -> Finding | None:
    """Why the release may not start writing to its placement, or None."""
    mine = render_storage.placement(release, settings)
    if mine.claim is None:
        return Finding(R.STORAGE_UNSET, render_storage.NO_CLAIM)
    if overlapping(mine.checkpoint_path, mine.artifact_path):
        return Finding(
            R.STORAGE_CONFLICT,
            f"checkpoint directory {mine.checkpoint_path} and weights directory {mine.artifact_path} overlap",
        )
    me = (release.metadata.creation_timestamp or "", release.name)
    for peer in sorted(peers, key=lambda p: p.name):
        if peer.name == release.name or peer.placement.claim != mine.claim:
            continue
        if not peer.holds and (peer.created, peer.name) > me:
            continue  # the younger of two new releases yields
        for path in mine.paths():
            for theirs in peer.placement.paths():
                if overlapping(path, theirs):
                    return Finding(
                        R.STORAGE_CONFLICT,
                        f"{path} on claim {mine.claim} overlaps {theirs} of release {peer.name}: give this release "
                        "its own spec.storage paths (the defaults contain {name})",
                    )
    return None


# --- retention ----------------------------------------------------------------------------------


def retention_keep(release: LegalModelRelease) -> int | None:
    """How many complete checkpoints retention keeps, once training has settled and they have not
    been pruned yet; None when there is nothing (more) to prune."""
    status = release.status.to_wire() if release.status else {}
    recorded = status.get("storage") or {}
    if not recorded.get("checkpointPath") or recorded.get("checkpointsPruned"):
        return None
    trained = cond.get(status.get("conditions") or [], R.TRAINED)
    if trained is None or trained.get("status") == "Unknown":
        return None  # training has not settled
    if trained.get("reason") in (R.STORAGE_CONFLICT, R.STORAGE_UNSET):
        return None  # the directory is not this release's
    retention = release.spec.storage.retention
    if trained.get("status") == "True":
        return retention.keep_checkpoints_after_success
    if status.get("phase") in (Phase.FAILED, Phase.REJECTED):
        return retention.keep_checkpoints_after_failure
    return None


# --- reclaim ------------------------------------------------------------------------------------


def wants_finalizer(release: LegalModelRelease) -> bool:
    return release.spec.storage.reclaim_policy == "Delete"


def is_deleting(release: LegalModelRelease) -> bool:
    return release.metadata.deletion_timestamp is not None


def serves_weights(release: LegalModelRelease, deployment: dict[str, Any] | None) -> bool:
    """Whether the target's Deployment runs (or rolls to) this release's weights."""
    return children.template_label(deployment, names.RELEASE_LABEL) == release.name
