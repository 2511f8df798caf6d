"""The trainer on a tiny Llama on CPU: real transformers (and DeepSpeed) training runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.cases import load_example
from twlegal.api.release import LegalModelRelease
from twlegal.contracts import EvaluationConfig, EvaluationResult, TrainingResult
from twlegal.contracts.evaluation import SUBJECTS_CHART_FILE
from twlegal.contracts.manifest import MANIFEST_FILE, sha256
from twlegal.contracts.training import (
    CARD_FILE,
    LOSS_PLOT_FILE,
    TENSORBOARD_DIR,
    ExitCode,
    ModelSource,
    ReleaseIdentity,
    TrainingConfig,
)
from twlegal.observe import read_progress
from twlegal.render import OperatorSettings
from twlegal.render.training import training_config
from twlegal_dev.controlplane import free_port
from twlegal_trainer import provenance
from twlegal_trainer.benchmark import load as load_benchmark
from twlegal_trainer.chat import IGNORE, LLAMA3_TEMPLATE, encode_llama3, pack
from twlegal_trainer.evaluate import score
from twlegal_trainer.progress import ProgressServer

TRAINER = [sys.executable, "-m", "twlegal_trainer.cli"]
FIXTURE_BENCHMARK = Path(__file__).parents[1] / "fixtures" / "legal" / "tw-legal-mc.jsonl"


def config_for(volume: Path, **hyper) -> TrainingConfig:
    """The operator's own rendering of the tiny release, pointed at this test's volume."""
    doc = load_example()
    doc["spec"]["training"]["hyperparameters"].update(hyper)
    release = LegalModelRelease.from_object(doc)
    return training_config(release, OperatorSettings(storage_mount_path=str(volume)))


def run_trainer(config: TrainingConfig, tmp: Path, *, wait: bool = True, env: dict | None = None):
    path = tmp / "training.json"
    path.write_text(config.to_json())
    termination = tmp / "termination-log"
    environ = {
        **os.environ,
        "TWLEGAL_TERMINATION_LOG": str(termination),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    with open(tmp / "trainer.log", "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [*TRAINER, "run", "--config", str(path)], env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    if not wait:
        return proc, termination
    code = proc.wait(timeout=900)
    return code, TrainingResult.model_validate_json(termination.read_text()) if termination.exists() else None


def first_and_last_loss(checkpoint_dir: Path) -> tuple[float, float]:
    newest = max(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((newest / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    return losses[0], losses[-1]


def test_single_process_run_halves_the_loss_and_publishes_checksummed_weights(volume, tmp_path):
    config = config_for(volume, epochs=10, learningRate=5e-3)
    code, result = run_trainer(config, tmp_path)
    assert code == ExitCode.SUCCEEDED, (tmp_path / "trainer.log").read_text()[-3000:]
    assert result.outcome == "Succeeded" and result.global_step == result.total_steps
    first, last = first_and_last_loss(Path(config.checkpoint_dir))
    assert last <= first / 2, (first, last)
    out = Path(config.output_dir)
    assert result.artifact_path == str(out)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["version"] == "v0.1.0" and manifest["files"]
    for name, digest in manifest["files"].items():
        assert sha256(out / name) == digest, name
    assert result.checksum == "sha256:" + hashlib.sha256((out / MANIFEST_FILE).read_bytes()).hexdigest()
    assert (
        json.loads((out / "tokenizer_config.json").read_text()).get("chat_template") == LLAMA3_TEMPLATE
        or (out / "chat_template.jinja").read_text() == LLAMA3_TEMPLATE
    )
    assert len((tmp_path / "termination-log").read_bytes()) <= 4096
    assert TrainingResult.model_validate_json((out / "twlegal-result.json").read_text()) == result
    assert result.tokens_per_second > 0 and result.total_flos > 0
    assert result.samples > 0 and result.world_size == 1

    # What was loaded, by content: the base model directory and each dataset file.
    volume_base = volume / "base" / "tiny-llama"
    assert result.inputs.base_model.path == str(volume_base)
    assert result.inputs.base_model.checksum == provenance.tree_checksum(volume_base)
    assert [d.checksum for d in result.inputs.datasets] == [
        "sha256:" + sha256(volume / "datasets" / name) for name in ("tw-legal-chat.jsonl", "tw-legal-alpaca.jsonl")
    ]

    # The card beside the weights: outside the checksummed manifest, rendered from this run.
    assert CARD_FILE not in manifest["files"]
    card = ModelCard((out / CARD_FILE).read_text())
    assert card.data.model_name == "twlegal/tiny-legal" and card.data.eval_results is None
    assert f"| Train loss (final) | {result.final_loss:.4f} |" in card.text
    assert result.checksum in card.text and result.inputs.base_model.checksum in card.text
    if os.environ.get("TWLEGAL_CAPTURE_TRAINER_RUN"):  # the unit tier's card golden test reads it
        run = {"spec": config.spec.to_wire(), "result": json.loads((out / "twlegal-result.json").read_text())}
        Path(os.environ["TWLEGAL_CAPTURE_TRAINER_RUN"]).write_text(json.dumps(run, indent=2, ensure_ascii=False) + "\n")


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_the_trainer_reports_progress_while_it_runs_and_leaves_a_loss_curve_and_tensorboard_logs(volume, tmp_path):
    port = free_port()
    config = config_for(volume, epochs=10, learningRate=5e-3).model_copy(update={"metrics_port": port})
    proc, termination = run_trainer(config, tmp_path, wait=False)
    seen = []
    while proc.poll() is None:  # what the operator reads from the pod, read the same way
        if (progress := read_progress("127.0.0.1", port)) is not None:
            seen.append(progress)
        time.sleep(0.2)
    assert proc.returncode == ExitCode.SUCCEEDED, (tmp_path / "trainer.log").read_text()[-3000:]
    result = TrainingResult.model_validate_json(termination.read_text())
    steps = [p.step for p in seen if p.step]
    assert len(set(steps)) >= 3 and steps == sorted(steps), f"progress moved while training: {steps}"
    training_ = [p for p in seen if p.total]
    assert training_ and all(p.stage == "training" and p.total == result.total_steps for p in training_)
    assert any(p.loss is not None and p.eta_seconds is not None and p.tokens_per_second for p in training_)
    assert any(p.checkpoint_step for p in training_), "the checkpoint the run saved is reported"
    out = Path(config.output_dir)
    assert result.loss_plot == LOSS_PLOT_FILE and png_size(out / LOSS_PLOT_FILE) == (800, 450)
    assert f"]({LOSS_PLOT_FILE})" in (out / CARD_FILE).read_text(), "the card shows the loss curve"
    events = list((Path(config.checkpoint_dir) / TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events), "TensorBoard event files on the volume"


def test_prompt_tokens_are_masked_and_packing_never_crosses_the_cutoff(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    messages = [
        {"role": "system", "content": "你是法律助理。"},
        {"role": "user", "content": "民法第6條？"},
        {"role": "assistant", "content": "人之權利能力，始於出生，終於死亡。"},
    ]
    example = encode_llama3(tokenizer, messages, cutoff=512)
    learned = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "人之權利能力，始於出生，終於死亡。<|eot_id|>"
    tokenizer.chat_template = LLAMA3_TEMPLATE
    assert example.input_ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False), (
        "same as serving"
    )
    packed = pack([encode_llama3(tokenizer, messages, cutoff=60) for _ in range(10)], cutoff=100)
    assert all(len(p.input_ids) <= 100 for p in packed) and sum(len(p.input_ids) for p in packed) == 10 * min(
        60, len(example.input_ids)
    )


def test_an_absurd_learning_rate_diverges_and_publishes_nothing(volume, tmp_path):
    config = config_for(volume, epochs=1, learningRate=1.0, warmupSteps=0)
    code, result = run_trainer(config, tmp_path)
    assert code == ExitCode.DIVERGED, (tmp_path / "trainer.log").read_text()[-3000:]
    assert result.outcome == "Diverged" and "loss" in result.message
    assert not Path(config.output_dir).exists()


def test_bad_data_fails_the_run_with_one_sentence_naming_the_file_and_line(volume, tmp_path):
    chat = volume / "datasets" / "tw-legal-chat.jsonl"
    lines = chat.read_text(encoding="utf-8").splitlines()
    chat.write_text("\n".join([*lines[:3], '{"messages": oops}', *lines[3:]]) + "\n", encoding="utf-8")
    code, result = run_trainer(config_for(volume, epochs=1), tmp_path)
    assert code == ExitCode.FAILED and result.outcome == "Failed"
    assert result.message == f"data: dataset 0 ({chat}): {chat} line 4: not JSON (Expecting value at column 14)"
    assert "Traceback" not in (tmp_path / "trainer.log").read_text()


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_to_the_same_step_count(volume, tmp_path):
    config = config_for(volume, epochs=4, learningRate=3e-3)
    config = config.model_copy(update={"checkpoint_every_steps": 5})
    proc, termination = run_trainer(config, tmp_path, wait=False)
    checkpoints = Path(config.checkpoint_dir)
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/twlegal-complete.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == ExitCode.INTERRUPTED, (tmp_path / "trainer.log").read_text()[-3000:]
    interrupted = TrainingResult.model_validate_json(termination.read_text())
    assert interrupted.outcome == "Interrupted" and interrupted.global_step < interrupted.total_steps
    assert not Path(config.output_dir).exists()
    code, result = run_trainer(config, tmp_path)
    assert code == ExitCode.SUCCEEDED
    assert result.resumed_from_step == interrupted.global_step
    assert result.global_step == result.total_steps == interrupted.total_steps


@pytest.mark.timeout(900)
def test_deepspeed_with_two_ranks_halves_the_loss(volume, tmp_path):
    config = config_for(volume, epochs=10, learningRate=5e-3)
    config = config.model_copy(update={"processes": 2})
    code, _ = run_trainer(config, tmp_path)
    assert code == ExitCode.SUCCEEDED, (tmp_path / "trainer.log").read_text()[-4000:]
    first, last = first_and_last_loss(Path(config.checkpoint_dir))
    assert last <= first / 2, (first, last)
    assert (
        "DeepSpeed" in (tmp_path / "trainer.log").read_text() or "deepspeed" in (tmp_path / "trainer.log").read_text()
    )


def run_evaluator(cfg: EvaluationConfig, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}-config.json"
    path.write_text(cfg.to_json())
    env = {**os.environ, "TWLEGAL_TERMINATION_LOG": str(tmp_path / f"{name}-termination")}
    return subprocess.run([*TRAINER, "evaluate", "--config", str(path)], env=env, capture_output=True, text=True)


def evaluation_config(model_path: str, benchmark: Path, result: Path, **fields) -> EvaluationConfig:
    return EvaluationConfig(
        release=ReleaseIdentity(namespace="default", name="tiny", model="twlegal/tiny-legal", version="v0.1.0"),
        model_path=model_path,
        benchmark=ModelSource(path=str(benchmark)),
        result_path=str(result),
        use_cpu=True,
        hub_offline=True,
        **fields,
    )


def test_evaluate_scores_a_model_trained_on_the_answers_above_the_untrained_one(volume, tmp_path):
    config = config_for(volume, epochs=13, learningRate=5e-3)  # 143 steps
    code, _ = run_trainer(config, tmp_path)
    assert code == ExitCode.SUCCEEDED
    bench = volume / "benchmarks" / "tw-legal-mc.jsonl"

    def evaluate(model_path: str, name: str) -> EvaluationResult:
        cfg = evaluation_config(model_path, bench, tmp_path / f"{name}.json", protocol="choiceText")
        proc = run_evaluator(cfg, tmp_path, name)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return EvaluationResult.model_validate_json((tmp_path / f"{name}.json").read_text())

    untrained = evaluate(str(volume / "base" / "tiny-llama"), "untrained")
    trained = evaluate(config.output_dir, "trained")
    assert trained.total == untrained.total == 22
    assert trained.protocol == "choiceText"
    # Measured: 50 against 27.3 (11 of 22 questions against 6) after 140 steps of in-order packing.
    assert trained.score >= untrained.score + 15, (untrained.score, trained.score)

    # While it scores, the evaluator reports questions scored of total (what `kubectl get lmr` shows).
    reported = []

    class Recording(ProgressServer):
        def update(self, **values):
            super().update(**values)
            reported.append(self.progress)

    questions, _ = load_benchmark(evaluation_config(config.output_dir, bench, tmp_path / "r.json"))
    result = score(config.output_dir, questions, "choiceText", batch_size=8, progress=Recording("evaluation", None))
    assert result.total == 22 and result.score == trained.score  # batches of 8 choices score alike
    steps = [p.step for p in reported]
    assert steps[0] == 0 and steps[-1] == 22 and steps == sorted(steps) and len(steps) > 3
    assert {p.total for p in reported} == {22}
    assert reported[-1].percent() == 100 and reported[-1].eta_seconds == 0


def subject_benchmark(path: Path) -> Path:
    """The fixture questions under three subjects, each also with its choices rotated: 88 rows."""
    rows = [json.loads(line) for line in (FIXTURE_BENCHMARK).read_text(encoding="utf-8").splitlines()]
    out = []
    for shift in range(4):
        for i, row in enumerate(rows):
            n = len(row["choices"])
            choices = row["choices"][shift:] + row["choices"][:shift]
            answer = (row["answer"] - shift) % n
            out.append({**row, "choices": choices, "answer": answer, "subject": ["民法", "刑法", "行政法"][i % 3]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    return path


def test_subjects_are_scored_and_drawn_and_a_bad_row_fails_in_one_sentence(volume, tmp_path):
    bench = subject_benchmark(tmp_path / "subjects.jsonl")
    weights = tmp_path / "weights"
    shutil.copytree(volume / "base" / "tiny-llama", weights)
    cfg = evaluation_config(str(weights), bench, weights / "twlegal-evaluation.json")
    proc = run_evaluator(cfg, tmp_path, "subjects")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = EvaluationResult.model_validate_json((weights / "twlegal-evaluation.json").read_text())
    assert result.total == 88 and result.protocol == "letter"
    assert sorted(s.name for s in result.subjects) == ["刑法", "民法", "行政法"]
    assert sum(s.total for s in result.subjects) == 88 and sum(s.correct for s in result.subjects) == result.correct
    assert result.chart == SUBJECTS_CHART_FILE
    width, height = png_size(weights / SUBJECTS_CHART_FILE)
    assert width == 800 and height >= 450

    rows = bench.read_text(encoding="utf-8").splitlines()
    rows[4] = json.dumps({"question": "q", "choices": ["a", "b"], "answer": "E"})
    bench.write_text("\n".join(rows) + "\n", encoding="utf-8")
    proc = run_evaluator(cfg, tmp_path, "bad")
    assert proc.returncode == ExitCode.FAILED
    message = (tmp_path / "bad-termination").read_text()
    assert message == f"benchmark: {bench} row 5: the answer 'E' is not one of its 2 choices (A-B)"
    assert "Traceback" not in proc.stdout + proc.stderr


def test_resuming_with_another_world_size_is_refused_with_a_clear_message(volume, tmp_path):
    config = config_for(volume, epochs=1)
    config = config.model_copy(update={"processes": 2})
    stale = Path(config.checkpoint_dir) / "checkpoint-3"
    stale.mkdir(parents=True)
    owner = config.release.owner().to_wire()
    (stale / "twlegal-complete.json").write_text(json.dumps({"worldSize": 4, "owner": owner}))
    code, result = run_trainer(config, tmp_path)
    assert code == ExitCode.FAILED
    assert result.outcome == "Failed" and "written by 4 processes, this run has 2" in result.message
