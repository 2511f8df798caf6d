"""Storage safety in real tiny-model training runs: a release never resumes another's checkpoints
nor replaces another's weights, publishing twice is idempotent, and a full disk (a small tmpfs) is
the recoverable outcome StorageFull."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.component.test_trainer import config_for, run_trainer
from tests.support.cluster import in_ci
from twlegal.contracts import TrainingResult
from twlegal.contracts.manifest import MANIFEST_FILE, verify
from twlegal.contracts.storage import OWNER_FILE, StorageOwner, inputs_digest
from twlegal.contracts.training import ExitCode, TrainingConfig
from twlegal_dev.tiny_model import make_volume
from twlegal_trainer.artifacts import COMPLETE_MARK

STEPS = 11  # one epoch of the tiny data, packed best-fit; checkpoints at 5, 10 and 11 (the last two kept)


def release(
    volume: Path,
    name: str = "tiny-a",
    uid: str = "uid-a1",
    *,
    checkpoints="checkpoints/shared",
    weights="releases/shared",
    **hyper,
) -> TrainingConfig:
    """The tiny release as the operator renders it, under another name and uid, with its
    directories where the test says (by default the ones an older operator gave every release of
    the same model and version)."""
    config = config_for(volume, epochs=1, **hyper)
    identity = config.release.model_copy(update={"name": name, "uid": uid, "inputs": inputs_digest(config.spec)})
    return config.model_copy(
        update={
            "release": identity,
            "checkpoint_dir": str(volume / checkpoints),
            "output_dir": str(volume / weights),
            "checkpoint_every_steps": 5,
        }
    )


def train(config: TrainingConfig, where: Path) -> tuple[int, TrainingResult]:
    where.mkdir(parents=True)
    code, result = run_trainer(config, where)
    assert result is not None, (where / "trainer.log").read_text()[-3000:]
    return code, result


def listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def owner_of(config: TrainingConfig) -> StorageOwner:
    return config.release.owner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model) -> tuple[Path, TrainingConfig, TrainingResult]:
    """Release A, trained and published into the shared directories."""
    root = tmp_path_factory.mktemp("storage")
    volume = make_volume(root / "volume", tiny_model)
    config = release(volume)
    code, result = train(config, root / "a")
    assert code == ExitCode.SUCCEEDED, (root / "a" / "trainer.log").read_text()[-3000:]
    return volume, config, result


def test_a_retry_release_is_refused_the_first_releases_checkpoints(trained, tmp_path):
    volume, a, _ = trained
    before = listing(volume)
    retry = release(volume, name="tiny-b", uid="uid-b", learningRate=3e-3)  # same model and version
    code, result = train(retry, tmp_path / "b")
    assert code == ExitCode.STORAGE_CONFLICT and result.outcome == "StorageConflict"
    assert result.message == (
        f"checkpoint directory {a.checkpoint_dir} belongs to {owner_of(a).describe()}: not resumed; "
        "give this release its own storage.checkpointPath"
    )
    assert "release default/tiny-a (inputs" in result.message and "uid uid-a1" in result.message
    assert listing(volume) == before, "A's checkpoints and weights untouched, nothing written"


def test_the_same_name_resumes_only_with_the_same_inputs(trained, tmp_path):
    volume, a, published = trained
    before = listing(volume)
    other_inputs = release(volume, uid="uid-a2", learningRate=3e-3)  # re-created with another learning rate
    code, result = train(other_inputs, tmp_path / "other-inputs")
    assert code == ExitCode.STORAGE_CONFLICT
    assert result.message.startswith(f"checkpoint directory {a.checkpoint_dir} belongs to {owner_of(a).describe()}")
    assert listing(volume) == before

    # Re-created from the same file (another uid): the same run, resumed from its last checkpoint,
    # and published once: the weights published before are kept, with their checksum.
    manifest_text = (Path(a.output_dir) / MANIFEST_FILE).read_text()
    code, again = train(release(volume, uid="uid-a2"), tmp_path / "same-inputs")
    assert code == ExitCode.SUCCEEDED, (tmp_path / "same-inputs" / "trainer.log").read_text()[-3000:]
    assert again.resumed_from_step == STEPS == again.global_step
    assert again.checksum == published.checksum and again.artifact_path == a.output_dir
    assert (Path(a.output_dir) / MANIFEST_FILE).read_text() == manifest_text
    assert verify(Path(a.output_dir), "v0.1.0", published.checksum).release == owner_of(a).to_wire()
    assert not Path(a.output_dir + ".partial").exists()


def test_two_releases_with_their_own_directories_on_one_volume_keep_apart(trained, tmp_path):
    volume, a, _ = trained
    b = release(
        volume, name="tiny-b", uid="uid-b", checkpoints="checkpoints/b", weights="releases/b", learningRate=3e-3
    )
    code, result = train(b, tmp_path / "b")
    assert code == ExitCode.SUCCEEDED, (tmp_path / "b" / "trainer.log").read_text()[-3000:]
    for config in (a, b):
        owner = owner_of(config)
        assert verify(Path(config.output_dir), "v0.1.0").release == owner.to_wire()
        assert StorageOwner.model_validate_json((Path(config.checkpoint_dir) / OWNER_FILE).read_text()) == owner
        marks = list(Path(config.checkpoint_dir).glob(f"checkpoint-*/{COMPLETE_MARK}"))
        assert marks and all(f'"name": "{config.release.name}"' in m.read_text() for m in marks)
    assert result.checkpoint.startswith(b.checkpoint_dir)


def test_publishing_over_another_releases_weights_is_refused_before_training(trained, tmp_path):
    volume, a, _ = trained
    before = listing(volume)
    c = release(volume, name="tiny-c", uid="uid-c", checkpoints="checkpoints/c", weights="releases/shared")
    code, result = train(c, tmp_path / "c")
    assert code == ExitCode.STORAGE_CONFLICT and result.outcome == "StorageConflict"
    assert result.message == (
        f"weights directory {a.output_dir} holds weights of {owner_of(a).describe()}: not replaced; "
        "give this release its own storage.artifactPath"
    )
    assert result.global_step is None, "refused before training"
    assert not (volume / "checkpoints" / "c").exists() and listing(volume) == before


# --- a full disk -------------------------------------------------------------------------------------


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only); in CI a missing permission fails the test."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        why = "no mount command"
    else:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        why = proc.stderr.decode(errors="replace").strip() if proc.returncode else ""
    if why:
        if in_ci():
            pytest.fail(f"cannot mount a small tmpfs to fill: {why}")
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {why}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def test_a_full_disk_while_checkpointing_keeps_the_newest_complete_checkpoint_to_resume(volume, tmp_path):
    # A checkpoint of the tiny model takes 4.2 MiB: the first fits in 6 MiB, the second does not.
    with small_disk(volume / "small", "6m") as disk:
        config = release(volume, checkpoints=str(disk / "checkpoints"), weights="releases/a")
        code, result = train(config, tmp_path / "full")
        assert code == ExitCode.STORAGE_FULL, (tmp_path / "full" / "trainer.log").read_text()[-3000:]
        first = Path(config.checkpoint_dir) / "checkpoint-5"
        assert result.outcome == "StorageFull" and result.checkpoint == str(first)
        assert result.message.startswith(
            f"no space left on device saving a checkpoint in {config.checkpoint_dir}: a checkpoint needs about 4.2 MiB, "
        )
        assert " is free; the newest complete checkpoint " in result.message
        assert (first / COMPLETE_MARK).exists() and not (first.parent / "checkpoint-10").exists()
        assert not Path(config.output_dir).exists() and not Path(config.output_dir + ".partial").exists()

        grow(disk, "32m")
        code, resumed = train(config, tmp_path / "resumed")
        assert code == ExitCode.SUCCEEDED, (tmp_path / "resumed" / "trainer.log").read_text()[-3000:]
        assert resumed.resumed_from_step == 5 and resumed.global_step == STEPS


def test_a_full_disk_while_publishing_publishes_nothing_and_the_next_run_does(volume, tmp_path):
    # The weights take 1.4 MiB: they do not fit in 512 KiB, staging included.
    with small_disk(volume / "small", "512k") as disk:
        config = release(volume, checkpoints="checkpoints/a", weights=str(disk / "v0.1.0"))
        code, result = train(config, tmp_path / "full")
        assert code == ExitCode.STORAGE_FULL, (tmp_path / "full" / "trainer.log").read_text()[-3000:]
        newest = Path(config.checkpoint_dir) / f"checkpoint-{STEPS}"
        assert result.outcome == "StorageFull" and result.checkpoint == str(newest)
        assert result.message.startswith(
            f"no space left on device publishing the weights to {config.output_dir}: they need about 1.4 MiB, "
        )
        assert "is free, and nothing was published" in result.message
        assert list(disk.iterdir()) == [], "no weights, no staging"
        assert (newest / COMPLETE_MARK).exists()

        grow(disk, "8m")
        code, published = train(config, tmp_path / "published")
        assert code == ExitCode.SUCCEEDED, (tmp_path / "published" / "trainer.log").read_text()[-3000:]
        assert published.resumed_from_step == STEPS
        assert verify(Path(config.output_dir), "v0.1.0", published.checksum).release == owner_of(config).to_wire()


def test_a_volume_too_full_to_start_is_a_full_disk_not_a_crash(volume, tmp_path):
    with small_disk(volume / "small", "64k") as disk:
        (disk / "filler").write_bytes(b"\0" * 64 * 1024)  # tmpfs counts pages: this fills it
        config = release(volume, checkpoints=str(disk / "checkpoints"), weights="releases/full-start")
        code, result = train(config, tmp_path / "start")
        assert code == ExitCode.STORAGE_FULL, (tmp_path / "start" / "trainer.log").read_text()[-3000:]
        assert result.outcome == "StorageFull" and f"no space left on {config.checkpoint_dir}" in result.message
