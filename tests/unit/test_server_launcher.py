"""The server launcher's mapping and its refusal to serve the wrong weights (no vLLM needed); the
manifest contract itself is tested in test_manifest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from twlegal.contracts.manifest import MANIFEST_FILE, ManifestError, verify, write
from twlegal.contracts.serving import ServingLaunch
from twlegal_server.launcher import EXIT_REFUSED, main, vllm_argv, vllm_env


def published(tmp_path: Path, version: str = "v0.1.0") -> Path:
    model = tmp_path / "releases" / "m" / version
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    write(model, "m", version)
    return model


def test_args_map_to_vllm_flags(tmp_path):
    model = published(tmp_path)
    launch = ServingLaunch(
        model=str(model),
        revision="v0.1.0",
        served_model_names=["m", "m:v0.1.0"],
        max_model_len=256,
        tensor_parallel_size=2,
        drain_seconds=90,
        extra_args=["--seed", "7"],
    )
    argv = vllm_argv(launch, {"TWLEGAL_API_KEY": "k"})
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    for part in (
        f"--model {model}",
        "--served-model-name m m:v0.1.0",
        "--max-model-len 256",
        "--tensor-parallel-size 2",
        "--port 8000",
        "--enable-prefix-caching",
        "--api-key k",
        "--shutdown-timeout 90",
    ):
        assert part in joined, part
    assert argv[-2:] == ["--seed", "7"] and "--revision" not in argv, "a path is the revision itself"
    assert vllm_env(launch, {})["HF_HUB_OFFLINE"] == "1"
    hub = ServingLaunch(model="org/model", revision="v2024.11.13", served_model_names=["a"], max_model_len=16)
    assert vllm_argv(hub, {})[-2:] == ["--revision", "v2024.11.13"] and "--api-key" not in vllm_argv(hub, {})
    assert "HF_HUB_OFFLINE" not in vllm_env(hub, {})


def test_the_published_revision_passes(tmp_path):
    verify(published(tmp_path), "v0.1.0")


def test_corrupted_weights_are_refused_naming_the_file(tmp_path):
    model = published(tmp_path)
    (model / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match=r"model\.safetensors does not match its checksum"):
        verify(model, "v0.1.0")


def test_a_wrong_or_missing_revision_is_refused_naming_it(tmp_path, capsys):
    model = published(tmp_path, "v0.1.0")
    with pytest.raises(ManifestError, match=r"holds revision 'v0\.1\.0', but 'v0\.2\.0' is pinned"):
        verify(model, "v0.2.0")
    missing = tmp_path / "releases" / "m" / "v0.3.0"
    assert (
        main(["--model", str(missing), "--revision", "v0.3.0", "--served-model-name", "m", "--max-model-len", "64"])
        == EXIT_REFUSED
    )
    assert "revision v0.3.0" in capsys.readouterr().err
    (model / MANIFEST_FILE).unlink()
    with pytest.raises(ManifestError, match=r"twlegal-manifest\.json is missing"):
        verify(model, "v0.1.0")
    assert (
        main(["--model", str(model), "--revision", "v0.1.0", "--served-model-name", "m", "--max-model-len", "64"])
        == EXIT_REFUSED
    )
    assert "refusing to start: revision v0.1.0:" in capsys.readouterr().err
