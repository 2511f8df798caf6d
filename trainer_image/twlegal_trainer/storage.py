"""`twlegal-train storage --task JSON`: the operator's storage Job, which prunes a release's
checkpoints or reclaims its directories.

It removes only what the task's owner owns, as the directories record it (contracts.storage): a
checkpoint directory whose owner file names the same run, weights whose manifest does. Anything
else (another release's, or a directory that records no owner) is kept and reported with why: a
mistyped path or a shared one must never cost another release its data. Pure file operations; no
torch. The result goes to the termination message (StorageResult) and a line per directory to the log.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from twlegal.contracts.manifest import MANIFEST_FILE
from twlegal.contracts.storage import OWNER_FILE, StorageOwner, StorageResult, StorageTask
from twlegal.contracts.termination import TERMINATION_MESSAGE_LIMIT, write_termination_message
from twlegal.contracts.training import PREPARED_DIR, ExitCode

from .artifacts import staging_dir
from .ownership import COMPLETE_MARK, checkpoints, is_runs_complete, publisher, read_owner, whose
from .space import human, tree_size

LOG_PREFIX = "twlegal-storage"
# Files that say a directory is some run's: a directory that records no owner at its root is
# removed only when none of these is anywhere below it (it is not a parent of other releases' data).
RECORDS = (OWNER_FILE, MANIFEST_FILE, COMPLETE_MARK)


@dataclass
class Tally:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed_bytes: int = 0

    def remove(self, directory: Path, last: str | None = None) -> None:
        """Remove `directory`: completion marks first (a checkpoint half removed must not look
        resumable), the file `last` (what records its owner) after everything else (cut short, the
        rest still says whose it is, and the next task finishes the job)."""
        size = tree_size(directory)
        for checkpoint in [directory, *(p for _, p in checkpoints(directory))]:
            (checkpoint / COMPLETE_MARK).unlink(missing_ok=True)
        for child in sorted(directory.iterdir()):
            if child.name == last:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        if last is not None:
            (directory / last).unlink(missing_ok=True)
        directory.rmdir()
        self.removed.append(str(directory))
        self.freed_bytes += size
        print(f"{LOG_PREFIX} removed {directory} ({human(size)})", flush=True)

    def keep(self, directory: Path, why: str) -> None:
        self.kept.append(f"{directory}: {why}")
        print(f"{LOG_PREFIX} kept {directory}: {why}", flush=True)

    def result(self, message: str) -> StorageResult:
        return StorageResult(removed=self.removed, kept=self.kept, freed_bytes=self.freed_bytes, message=message)


def _owned_checkpoints(directory: Path, owner: StorageOwner) -> str | None:
    """Why `directory` is not `owner`'s to prune or reclaim, or None."""
    recorded = directory / OWNER_FILE
    if not recorded.exists():
        return f"has no {OWNER_FILE}"
    found = read_owner(recorded)
    return None if found is not None and found.same_run(owner) else f"belongs to {whose(found)}"


def prune(task: StorageTask, tally: Tally) -> str:
    """Keep the owner's newest `keep_checkpoints` complete checkpoints; remove every other
    `checkpoint-N` (complete or not). The directory itself and its owner file stay."""
    directory = Path(task.checkpoint_dir)
    if not directory.is_dir():
        return f"nothing to prune: {directory} does not exist"
    if why := _owned_checkpoints(directory, task.owner):
        tally.keep(directory, f"{why}: not pruned")
        return f"{directory} not pruned: it {why}"
    newest = [path for _, path in checkpoints(directory) if is_runs_complete(path, task.owner)][: task.keep_checkpoints]
    for _, path in checkpoints(directory):
        if path in newest:
            tally.keep(path, f"one of the newest {task.keep_checkpoints} complete checkpoints")
        else:
            tally.remove(path)
    prepared = directory / PREPARED_DIR
    if not newest and prepared.exists():  # no checkpoint left to resume: the samples serve no run
        tally.remove(prepared)
    return f"pruned {directory}: kept {len(newest)} checkpoints, removed {len(tally.removed)}"


def reclaim(task: StorageTask, tally: Tally) -> str:
    """Remove the checkpoint directory and, with `artifact_dir`, the published weights (and a
    staging directory left by a publish cut short): each only when it is the owner's."""
    directory = Path(task.checkpoint_dir)
    if directory.is_dir():
        why = _owned_checkpoints(directory, task.owner)
        if why and not (directory / OWNER_FILE).exists():
            # An older trainer's directory, or one made before the claim: it goes if it holds
            # nothing of anyone (no checkpoint, nothing below recording an owner).
            records = any(p.name in RECORDS for p in directory.rglob("*"))
            why = f"{why} yet holds checkpoints or another run's files" if checkpoints(directory) or records else None
        if why:
            tally.keep(directory, f"{why}: not removed")
        else:
            tally.remove(directory, last=OWNER_FILE)
    if task.artifact_dir:
        weights = Path(task.artifact_dir)
        if weights.is_dir():
            published, found = publisher(weights)
            if found is not None and found.same_run(task.owner):
                tally.remove(weights, last=MANIFEST_FILE)
            elif published is None:
                tally.keep(weights, "holds files not published by twlegal (no manifest): not removed")
            else:
                tally.keep(weights, f"holds weights of {whose(found)}: not removed")
        staging = staging_dir(weights)
        if staging.is_dir() and _owned_checkpoints(staging, task.owner) is None:
            tally.remove(staging, last=OWNER_FILE)
    return f"reclaimed: removed {len(tally.removed)} directories, kept {len(tally.kept)}"


def termination_text(result: StorageResult) -> str:
    """The result as compact JSON within the kubelet's limit: directories beyond it are left out
    of the lists (the log names every one) and counted in the message."""
    data = result.to_wire()
    omitted = 0
    while True:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        longest = max(("removed", "kept"), key=lambda k: len(data.get(k, [])))
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT or not data.get(longest):
            return text
        data[longest] = data[longest][:-1]
        omitted += 1
        data["message"] = f"{result.message} ({omitted} more directories in the Job's log)"


def main(task_json: str) -> int:
    """Run one task; exit 0 when it is done (directories kept because they are not the owner's
    included: they are in `kept`), non-zero only when it could not be done."""
    try:
        task = StorageTask.model_validate_json(task_json)
    except ValidationError as exc:
        write_termination_message(termination_text(StorageResult(message=f"invalid storage task: {exc}")))
        print(f"{LOG_PREFIX}: invalid storage task: {exc}", flush=True)
        return int(ExitCode.INVALID_CONFIG)
    tally = Tally()
    try:
        message = (prune if task.action == "prune" else reclaim)(task, tally)
        code = ExitCode.SUCCEEDED
    except Exception as exc:  # noqa: BLE001 - reported as the Job's result, what was done so far included
        message, code = f"{task.action} failed: {exc!r}", ExitCode.FAILED
    message = f"{message}; freed {human(tally.freed_bytes)}"
    write_termination_message(termination_text(tally.result(message)), log_prefix=f"{LOG_PREFIX}-result")
    return int(code)
