"""The server launcher's mapping and its refusal to serve the wrong weights (no vLLM needed); the
manifest contract itself is tested in test_manifest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from twlegal.contracts.manifest import MANIFEST_FILE, ManifestError, verify, write
from twlegal.contracts.serving import ServingLaunch
from twlegal_server.launcher import EXIT_REFUSED, Refused, check, main, refused_extra_args, vllm_argv, vllm_env


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
    assert argv[1:5] == ["-m", "vllm.entrypoints.openai.api_server", "--seed", "7"], "extra args first: ours win"
    joined = " ".join(argv)
    for part in (
        f"--model {model}",
        "--served-model-name m m:v0.1.0",
        "--max-model-len 256",
        "--tensor-parallel-size 2",
        "--port 8000",
        "--enable-prefix-caching",
        "--shutdown-timeout 90",
        "--middleware twlegal_server.auth.RequireApiKey",
    ):
        assert part in joined, part
    assert "k" not in argv and "--api-key" not in argv, "the key stays in the environment"
    assert "--revision" not in argv, "a path is the revision itself"
    assert vllm_env(launch, {})["HF_HUB_OFFLINE"] == "1"
    hub = ServingLaunch(model="org/model", revision="v2024.11.13", served_model_names=["a"], max_model_len=16)
    assert vllm_argv(hub, {})[-4:-2] == ["--revision", "v2024.11.13"]
    opened = hub.model_copy(update={"auth": "none"})
    assert "--middleware" not in vllm_argv(opened, {})
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


def test_another_release_s_weights_of_the_same_version_are_refused_by_their_checksum(tmp_path, capsys):
    # Two releases of one model and version: the operator pins the checksum the first one published.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.safetensors").write_bytes(b"mine")
    pinned = write(mine, "m", "v0.1.0", release={"namespace": "ns", "name": "a", "inputs": "1"})
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "model.safetensors").write_bytes(b"theirs")
    write(theirs, "m", "v0.1.0", release={"namespace": "ns", "name": "b", "inputs": "2"})
    assert verify(mine, "v0.1.0", pinned).release == {"namespace": "ns", "name": "a", "inputs": "1"}
    with pytest.raises(ManifestError, match=f"but {pinned} is pinned"):
        verify(theirs, "v0.1.0", pinned)
    argv = ["--model", str(theirs), "--revision", "v0.1.0", "--checksum", pinned]
    assert main([*argv, "--served-model-name", "m", "--max-model-len", "64"]) == EXIT_REFUSED
    assert f"but {pinned} is pinned" in capsys.readouterr().err
    # Without an owner the manifest's text (and checksum) is what it was before owners were recorded.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "w").write_bytes(b"w")
    write(legacy, "m", "v0.1.0")
    assert '"release"' not in (legacy / MANIFEST_FILE).read_text()


LAUNCH = ["--served-model-name", "m", "--max-model-len", "64", "--no-verify-manifest"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--model", "x"],
        ["--model=x"],
        ["--served_model_name", "n"],
        ["--api-key=k"],
        ["--trust-remote-code"],
        ["-tp", "2"],
        ["--port", "9"],
        ["--serv", "n"],
        ["--middleware=evil.Open"],
        ["--allowed-origins", '["*"]'],
        # vLLM's dotted form: `--flag.key value` becomes `--flag '{"key": value}'` (store-true flags
        # turn on, the JSON left as a stray positional), which the CRD's regex alone does not see.
        ["--trust-remote-code.x", "1"],
        ["--enable_log_requests.a=1"],
    ],
)
def test_refused_flags_stop_the_launch_naming_the_field(extra, capsys, monkeypatch):
    monkeypatch.setenv("TWLEGAL_API_KEY", "k")
    assert main(["--model", "org/m", "--revision", "v1.0.0", *LAUNCH, "--", *extra]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "spec.serving.extraArgs" in err and extra[0] in err


def test_no_key_means_no_server_unless_auth_is_none(capsys, monkeypatch):
    monkeypatch.delenv("TWLEGAL_API_KEY", raising=False)
    assert main(["--model", "org/m", "--revision", "v1.0.0", *LAUNCH]) == EXIT_REFUSED
    assert "TWLEGAL_API_KEY is empty" in capsys.readouterr().err
    launch = ServingLaunch.from_argv(["--model", "org/m", "--revision", "v1.0.0", *LAUNCH, "--auth", "none"])
    assert launch.auth == "none" and ServingLaunch.from_argv(launch.to_argv()) == launch


def test_ordinary_extra_args_pass_and_a_blank_key_is_no_key():
    launch = ServingLaunch(model="org/m", revision="v1", served_model_names=["m"], max_model_len=64)
    tuned = launch.model_copy(update={"extra_args": ["--dtype", "float32", "--compilation-config.level", "3"]})
    assert refused_extra_args(tuned.extra_args) == []
    check(tuned, {"TWLEGAL_API_KEY": "k"})
    with pytest.raises(Refused, match="TWLEGAL_API_KEY is empty"):
        check(launch, {"TWLEGAL_API_KEY": " \n"})
    check(launch.model_copy(update={"auth": "none"}), {})
