"""Storage safety on the trainer side, without torch: whose directories these are (ownership), the
publish that never replaces another release's weights (artifacts), a full disk told from other
errors (space), and the storage Job's prune and reclaim (storage)."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest

from twlegal.contracts import manifest
from twlegal.contracts.storage import OWNER_FILE, StorageOwner, StorageResult, StorageTask
from twlegal.contracts.termination import TERMINATION_MESSAGE_LIMIT
from twlegal_trainer import artifacts, ownership, space, storage
from twlegal_trainer.cli import main as cli

A = StorageOwner(namespace="default", name="a", uid="uid-a1", inputs="a" * 64)
A_RECREATED = A.model_copy(update={"uid": "uid-a2"})  # deleted and applied again from the same file
A_OTHER_INPUTS = A.model_copy(update={"inputs": "c" * 64})  # same name, another learning rate
B = StorageOwner(namespace="default", name="b", uid="uid-b", inputs="b" * 64)


def checkpoint(directory: Path, step: int, owner: StorageOwner | None, *, complete: bool = True) -> Path:
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"x" * 1000)
    if complete and owner is not None:
        artifacts.mark_complete(path, 1, owner)
    elif complete:  # an older trainer's mark: no owner
        (path / ownership.COMPLETE_MARK).write_text(json.dumps({"worldSize": 1}))
    return path


def owned(directory: Path, owner: StorageOwner) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OWNER_FILE).write_text(owner.to_json())
    return directory


def weights(directory: Path, owner: StorageOwner | None, *, version: str = "v1") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.safetensors").write_bytes(b"w" * 500)
    return manifest.write(directory, "m", version, release=owner.to_wire() if owner else None)


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- the checkpoint directory's owner --------------------------------------------------------------


def test_a_new_or_own_checkpoint_directory_is_this_runs(tmp_path):
    assert ownership.checkpoint_refusal(tmp_path / "absent", A) is None
    own = owned(tmp_path / "own", A)
    checkpoint(own, 5, A)
    checkpoint(own, 10, None, complete=False)  # half-written: resumes nothing, overwritten
    assert ownership.checkpoint_refusal(own, A) is None
    assert ownership.checkpoint_refusal(own, A_RECREATED) is None, "the uid is recorded, not compared"


@pytest.mark.parametrize(
    "layout,names",
    [
        ("owner file of another release", "release default/b (inputs bbbbbbbbbbbb, uid uid-b)"),
        ("owner file of the same name with other inputs", "release default/a (inputs cccccccccccc, uid uid-a1)"),
        ("checkpoints of an older trainer", "no recorded owner"),
        ("own owner file, another release's checkpoint", "release default/b"),
        ("unreadable owner file", "no recorded owner"),
    ],
)
def test_a_checkpoint_directory_of_another_run_is_refused_naming_it_and_its_owner(tmp_path, layout, names):
    directory = tmp_path / "checkpoints" / "x"
    if layout == "owner file of another release":
        owned(directory, B)
    elif layout == "owner file of the same name with other inputs":
        owned(directory, A_OTHER_INPUTS)
    elif layout == "checkpoints of an older trainer":
        checkpoint(directory, 5, None)
    elif layout == "own owner file, another release's checkpoint":
        checkpoint(owned(directory, A), 5, B)
    else:
        owned(directory, A)
        (directory / OWNER_FILE).write_text("{not json")
    before = listing(tmp_path)
    message = ownership.claim(directory, A)
    assert message is not None and message.startswith(f"checkpoint directory {directory} belongs to {names}")
    assert message.endswith(": not resumed; give this release its own storage.checkpointPath")
    assert listing(tmp_path) == before, "a refused claim writes nothing"


def test_a_claim_records_the_owner_once_and_keeps_the_first_uid(tmp_path):
    directory = tmp_path / "checkpoints" / "x"
    assert ownership.claim(directory, A) is None
    assert StorageOwner.model_validate_json((directory / OWNER_FILE).read_text()) == A
    assert ownership.claim(directory, A_RECREATED) is None
    assert StorageOwner.model_validate_json((directory / OWNER_FILE).read_text()).uid == "uid-a1"
    assert sorted(p.name for p in directory.iterdir()) == [OWNER_FILE], "no scratch file left"
    assert ownership.claim(directory, B) is not None


def test_resume_picks_the_newest_complete_checkpoint_of_this_run_only(tmp_path):
    directory = owned(tmp_path / "x", A)
    checkpoint(directory, 5, A)
    ten = checkpoint(directory, 10, A_RECREATED)
    checkpoint(directory, 15, None, complete=False)
    checkpoint(directory, 20, B)
    assert artifacts.newest_complete_checkpoint(directory, A) == (ten, 1)
    assert artifacts.newest_complete_checkpoint(directory, A_OTHER_INPUTS) == (None, None)
    assert artifacts.newest_complete_checkpoint(tmp_path / "absent", A) == (None, None)
    mark = json.loads((ten / ownership.COMPLETE_MARK).read_text())
    assert mark == {"worldSize": 1, "owner": A_RECREATED.to_wire()}


# --- the weights directory's owner, and publishing -------------------------------------------------


def test_weights_are_this_runs_when_absent_empty_or_published_by_it(tmp_path):
    assert ownership.weights_refusal(tmp_path / "absent", A) is None
    (tmp_path / "empty").mkdir()
    assert ownership.weights_refusal(tmp_path / "empty", A) is None
    weights(tmp_path / "own", A)
    assert ownership.weights_refusal(tmp_path / "own", A_RECREATED) is None


@pytest.mark.parametrize(
    "owner,held",
    [
        (B, "weights of release default/b (inputs bbbbbbbbbbbb, uid uid-b)"),
        (A_OTHER_INPUTS, "weights of release default/a (inputs cccccccccccc"),
        (None, "weights of no recorded owner"),  # a manifest from before owners were recorded
        ("files", "files not published by twlegal (no manifest)"),
    ],
)
def test_weights_of_another_run_are_refused_naming_the_directory_and_owner(tmp_path, owner, held):
    final = tmp_path / "releases" / "m" / "v1"
    if owner == "files":
        final.mkdir(parents=True)
        (final / "model.safetensors").write_bytes(b"mine")
    else:
        weights(final, owner)
    message = ownership.weights_refusal(final, A)
    assert message is not None and message.startswith(f"weights directory {final} holds {held}")
    assert message.endswith(": not replaced; give this release its own storage.artifactPath")
    staging = artifacts.staging_dir(final)
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"new")
    before = listing(tmp_path)
    with pytest.raises(artifacts.StorageConflict, match="not replaced"):
        artifacts.publish(staging, final, "m", "v1", A)
    with pytest.raises(artifacts.StorageConflict):
        artifacts.prepare_staging(staging, final, A)
    assert listing(tmp_path) == before


def staged(final: Path, owner: StorageOwner, content: bytes = b"trained") -> Path:
    staging = artifacts.staging_dir(final)
    artifacts.prepare_staging(staging, final, owner)
    (staging / "model.safetensors").write_bytes(content)
    return staging


def test_publishing_names_the_owner_and_publishing_again_keeps_the_weights(tmp_path):
    final = tmp_path / "releases" / "v1"
    checksum = artifacts.publish(staged(final, A), final, "m", "v1", A)
    published = manifest.verify(final, "v1")
    assert published.release == A.to_wire() and published.checksum == checksum
    assert sorted(published.files) == ["model.safetensors"], "the staging's owner file is not published"
    (final / "twlegal-result.json").write_text("{}")  # beside the weights, not part of them

    again = staged(final, A_RECREATED, b"trained again")  # a retry after a crash before reporting
    assert artifacts.publish(again, final, "m", "v1", A_RECREATED) == checksum
    assert not again.exists() and (final / "model.safetensors").read_bytes() == b"trained"


def test_own_weights_that_no_longer_verify_are_replaced(tmp_path):
    final = tmp_path / "releases" / "v1"
    artifacts.publish(staged(final, A), final, "m", "v1", A)
    (final / "model.safetensors").write_bytes(b"damaged")
    checksum = artifacts.publish(staged(final, A, b"fresh"), final, "m", "v1", A)
    assert manifest.verify(final, "v1").checksum == checksum
    assert (final / "model.safetensors").read_bytes() == b"fresh"


def test_a_stale_staging_of_this_run_is_cleared_and_one_of_another_release_is_refused(tmp_path):
    final = tmp_path / "releases" / "v1"
    staging = staged(final, A, b"half")
    artifacts.prepare_staging(staging, final, A_RECREATED)
    assert [p.name for p in staging.iterdir()] == [OWNER_FILE]
    (staging / "model.safetensors").write_bytes(b"a's")
    with pytest.raises(artifacts.StorageConflict, match=r"v1.partial is being written by release default/a \(inputs"):
        artifacts.prepare_staging(staging, final, B)  # B publishes to the same path while A is saving
    assert (staging / "model.safetensors").read_bytes() == b"a's"


# --- a full disk -----------------------------------------------------------------------------------


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def wrapped(inner: BaseException) -> RuntimeError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("saving failed") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "exc",
    [
        enospc(),
        wrapped(enospc()),
        Exception("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
    ],
    ids=["OSError", "wrapped", "message"],
)
def test_enospc_is_a_full_disk_however_wrapped(tmp_path, exc):
    assert space.is_full(exc, tmp_path, needed=1)


def test_torchs_errnoless_write_failure_is_a_full_disk_only_when_space_is_short(tmp_path):
    torch_write = wrapped(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"))
    free = space.free_bytes(tmp_path)
    assert space.is_full(torch_write, tmp_path, needed=free + 1)
    assert not space.is_full(torch_write, tmp_path, needed=1)
    assert not space.is_full(ValueError("shapes do not match"), tmp_path, needed=free + 1)
    assert not space.is_full(OSError(errno.EACCES, "Permission denied"), tmp_path, needed=free + 1)


def test_a_full_disk_while_checkpointing_keeps_the_complete_checkpoints_only(tmp_path):
    directory = owned(tmp_path / "x", A)
    five = checkpoint(directory, 5, A)
    checkpoint(directory, 10, A, complete=False)
    assert space.checkpoint_full(ValueError("a code error"), directory, A, estimate=1) is None
    assert (directory / "checkpoint-10").exists(), "not a full disk: nothing removed"
    full = space.checkpoint_full(wrapped(enospc()), directory, A, estimate=1)
    assert full is not None and full["outcome"] == "StorageFull" and full["checkpoint"] == str(five)
    size = space.human(space.tree_size(five))
    assert re.fullmatch(
        f"no space left on device saving a checkpoint in {re.escape(str(directory))}: a checkpoint needs about "
        f"{size}, [0-9.]+ [KMGT]?i?B is free; the newest complete checkpoint {re.escape(str(five))} is kept, "
        "and the next run resumes from it once there is space",
        full["message"],
    ), full["message"]
    assert [p.name for _, p in ownership.checkpoints(directory)] == ["checkpoint-5"]


def test_before_the_first_checkpoint_the_estimate_is_what_a_checkpoint_needs(tmp_path):
    full = space.checkpoint_full(enospc(), tmp_path / "x", A, estimate=space.checkpoint_bytes(1 << 20, "bf16", True))
    assert full is not None and full["checkpoint"] is None
    assert "a checkpoint needs about 14.0 MiB" in full["message"] and "no complete checkpoint yet" in full["message"]
    assert space.checkpoint_bytes(100, "fp32", False) == 1200 and space.checkpoint_bytes(100, "fp32", True) == 1200
    assert space.weights_bytes(100, "bf16") == 200


def test_a_full_disk_while_publishing_leaves_no_staging(tmp_path):
    final = tmp_path / "releases" / "v1"
    staging = staged(final, A, b"half")
    full = space.publish_full(enospc(), staging, final, estimate=3 << 20, newest=None)
    assert full is not None and not staging.exists() and not final.exists()
    assert full["message"].startswith(
        f"no space left on device publishing the weights to {final}: they need about 3.0 MiB"
    )
    assert "nothing was published" in full["message"]


def test_sizes_read_as_people_write_them():
    assert [space.human(n) for n in (0, 1023, 1024, 4_383_476, 3 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "4.2 MiB",
        "3.0 TiB",
    ]


# --- the storage Job: prune and reclaim ------------------------------------------------------------


def task(action: str, checkpoints: Path, owner: StorageOwner = A, **fields) -> StorageTask:
    return StorageTask(action=action, owner=owner, checkpoint_dir=str(checkpoints), **fields)


def run_task(t: StorageTask, tmp_path: Path, monkeypatch) -> tuple[int, StorageResult]:
    log = tmp_path / "termination-log"
    monkeypatch.setenv("TWLEGAL_TERMINATION_LOG", str(log))
    code = cli(["storage", "--task", t.to_arg()])
    return code, StorageResult.model_validate_json(log.read_text())


def test_prune_keeps_the_newest_complete_checkpoints_of_the_owner(tmp_path, monkeypatch, capsys):
    directory = owned(tmp_path / "x", A)
    for step in (5, 10):
        checkpoint(directory, step, A)
    checkpoint(directory, 15, A_RECREATED)
    checkpoint(directory, 20, A, complete=False)
    freed = space.tree_size(directory / "checkpoint-5") + space.tree_size(directory / "checkpoint-20")
    code, result = run_task(task("prune", directory, A_RECREATED, keep_checkpoints=2), tmp_path, monkeypatch)
    assert code == 0
    assert sorted(p.name for p in directory.iterdir()) == ["checkpoint-10", "checkpoint-15", OWNER_FILE]
    assert result.removed == [str(directory / "checkpoint-20"), str(directory / "checkpoint-5")]
    assert [k.split(":")[0] for k in result.kept] == [
        str(directory / "checkpoint-15"),
        str(directory / "checkpoint-10"),
    ]
    assert result.freed_bytes == freed
    out = capsys.readouterr().out
    assert f"twlegal-storage removed {directory / 'checkpoint-5'}" in out
    assert f"twlegal-storage kept {directory / 'checkpoint-10'}" in out


@pytest.mark.parametrize("layout", ["another release's", "an older trainer's"])
def test_prune_of_a_directory_not_the_owners_removes_nothing(tmp_path, monkeypatch, layout):
    directory = tmp_path / "x"
    if layout == "another release's":
        checkpoint(owned(directory, B), 5, B)
    else:
        checkpoint(directory, 5, None)
    before = listing(tmp_path)
    code, result = run_task(task("prune", directory, keep_checkpoints=0), tmp_path, monkeypatch)
    assert code == 0 and result.removed == [] and result.freed_bytes == 0
    why = "belongs to release default/b" if layout == "another release's" else f"has no {OWNER_FILE}"
    [kept] = result.kept
    assert kept.startswith(f"{directory}: {why}") and kept.endswith(": not pruned")
    assert listing(tmp_path) == {**before, "termination-log": (tmp_path / "termination-log").read_bytes()}


def test_reclaim_removes_the_owners_directories_and_keeps_anyone_elses(tmp_path, monkeypatch):
    mine = checkpoint(owned(tmp_path / "checkpoints" / "a", A), 5, A).parent
    theirs = checkpoint(owned(tmp_path / "checkpoints" / "b", B), 5, B).parent
    weights(tmp_path / "releases" / "a", A_RECREATED)
    staging = staged(tmp_path / "releases" / "a", A, b"half")
    weights(tmp_path / "releases" / "b", B)
    weights(tmp_path / "releases" / "legacy", None)
    freed = space.tree_size(mine) + space.tree_size(tmp_path / "releases" / "a") + space.tree_size(staging)

    code, result = run_task(task("reclaim", mine, artifact_dir=str(tmp_path / "releases" / "a")), tmp_path, monkeypatch)
    assert code == 0 and result.kept == []
    assert result.removed == [str(mine), str(tmp_path / "releases" / "a"), str(staging)]
    assert result.freed_bytes == freed and not mine.exists() and not staging.exists()
    for path in (theirs, tmp_path / "releases" / "b", tmp_path / "releases" / "legacy"):
        assert path.exists()

    for other, why in [
        (tmp_path / "releases" / "b", "holds weights of release default/b"),
        (tmp_path / "releases" / "legacy", "holds weights of no recorded owner"),
    ]:
        code, result = run_task(task("reclaim", theirs, artifact_dir=str(other)), tmp_path, monkeypatch)
        assert code == 0 and result.removed == []
        assert result.kept[0].startswith(f"{theirs}: belongs to release default/b")
        assert result.kept[1].startswith(f"{other}: {why}")
    assert theirs.exists() and (tmp_path / "releases" / "legacy").exists()


def test_reclaim_of_a_directory_without_an_owner_file_removes_it_only_when_it_holds_nothing(tmp_path, monkeypatch):
    empty = tmp_path / "never-claimed"
    (empty / "logs").mkdir(parents=True)
    code, result = run_task(task("reclaim", empty), tmp_path, monkeypatch)
    assert code == 0 and result.removed == [str(empty)] and not empty.exists()

    legacy = tmp_path / "legacy"
    checkpoint(legacy, 5, None)
    parent = tmp_path / "parent"  # holds another release's claimed directory below it
    owned(parent / "b", B)
    for directory in (legacy, parent):
        code, result = run_task(task("reclaim", directory), tmp_path, monkeypatch)
        assert code == 0 and result.removed == [] and directory.exists()
        assert result.kept == [
            f"{directory}: has no {OWNER_FILE} yet holds checkpoints or another run's files: not removed"
        ]


def test_missing_directories_are_nothing_to_do(tmp_path, monkeypatch):
    for t in (
        task("prune", tmp_path / "absent", keep_checkpoints=1),
        task("reclaim", tmp_path / "absent", artifact_dir=str(tmp_path / "gone")),
    ):
        code, result = run_task(t, tmp_path, monkeypatch)
        assert code == 0 and result.removed == result.kept == [] and result.freed_bytes == 0


def test_an_invalid_task_or_an_unexpected_error_exits_non_zero(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("TWLEGAL_TERMINATION_LOG", str(log))
    assert cli(["storage", "--task", '{"action": "format"}']) == 2
    assert StorageResult.model_validate_json(log.read_text()).message.startswith("invalid storage task")
    directory = owned(tmp_path / "x", A)
    checkpoint(directory, 5, A)

    def refused(self, directory, last=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(directory))

    monkeypatch.setattr(storage.Tally, "remove", refused)
    code, result = run_task(task("prune", directory, keep_checkpoints=0), tmp_path, monkeypatch)
    assert code == 1 and result.message.startswith("prune failed: PermissionError")


def test_a_long_result_fits_the_termination_message():
    result = StorageResult(removed=[f"/volume/checkpoints/m/v/checkpoint-{n}" for n in range(400)], message="pruned")
    text = storage.termination_text(result)
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    fitted = StorageResult.model_validate_json(text)
    left_out = 400 - len(fitted.removed)
    assert left_out > 0 and fitted.message == f"pruned ({left_out} more directories in the Job's log)"
