"""The trainer's pure builders (what `train.run` decides, no torch or model needed) and the one
writer of termination messages."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.cases import load_example
from twlegal.api.release import LegalModelRelease
from twlegal.contracts.termination import TERMINATION_MESSAGE_LIMIT, fit, write_termination_message
from twlegal.contracts.training import ExitCode, TrainingConfig, TrainingResult
from twlegal.render import OperatorSettings
from twlegal.render.training import training_config
from twlegal_trainer.chat import IGNORE
from twlegal_trainer.data import prepare_samples, training_samples
from twlegal_trainer.train import deepspeed_config, result_figures, resume_refusal, training_arguments

CHECKPOINTS = Path("/volume/checkpoints/tiny")


@pytest.fixture
def config() -> TrainingConfig:
    """The operator's own rendering of the tiny CPU release."""
    release = LegalModelRelease.from_object(load_example())
    return training_config(release, OperatorSettings(storage_mount_path="/volume"))


def on(config: TrainingConfig, **update) -> TrainingConfig:
    return config.model_copy(update=update)


# --- training_arguments -------------------------------------------------------------------------


def test_the_hyperparameters_map_one_to_one(config):
    hp = config.hyperparameters
    args = training_arguments(config, 1, CHECKPOINTS)
    assert args["output_dir"] == str(CHECKPOINTS)
    assert (
        args["per_device_train_batch_size"],
        args["gradient_accumulation_steps"],
        args["learning_rate"],
        args["num_train_epochs"],
        args["lr_scheduler_type"],
        args["warmup_steps"],
        args["optim"],
        args["weight_decay"],
        args["max_grad_norm"],
        args["seed"],
    ) == (
        hp.per_device_batch_size,
        hp.gradient_accumulation_steps,
        hp.learning_rate,
        hp.epochs,
        hp.lr_scheduler,
        hp.warmup_steps,
        hp.optimizer,
        hp.weight_decay,
        hp.max_grad_norm,
        hp.seed,
    )
    assert args["save_strategy"] == "steps" and args["save_steps"] == config.checkpoint_every_steps
    assert args["report_to"] == ["tensorboard"] and args["output_dir"] == str(CHECKPOINTS), (
        "TensorBoard: <output_dir>/runs"
    )
    assert args["remove_unused_columns"] is False
    assert args["include_num_input_tokens_seen"] == "non_padding", "tokens/s counts real tokens"


def test_save_steps_follow_checkpoint_every_steps(config):
    assert training_arguments(on(config, checkpoint_every_steps=7), 1, CHECKPOINTS)["save_steps"] == 7


@pytest.mark.parametrize("precision,bf16,fp16", [("bf16", True, False), ("fp16", False, True), ("fp32", False, False)])
def test_precision_sets_at_most_one_flag(config, precision, bf16, fp16):
    hp = config.hyperparameters.model_copy(update={"precision": precision})
    args = training_arguments(on(config, hyperparameters=hp), 1, CHECKPOINTS)
    assert (args["bf16"], args["fp16"]) == (bf16, fp16)


def test_one_cpu_process_runs_without_deepspeed_or_a_process_group(config):
    args = training_arguments(on(config, use_cpu=True), 1, CHECKPOINTS)
    assert args["deepspeed"] is None and args["ddp_backend"] is None
    assert args["use_cpu"] is True and args["gradient_checkpointing"] is False


def test_cpu_ranks_use_deepspeed_over_gloo(config):
    cpu = on(config, use_cpu=True, processes=2)
    args = training_arguments(cpu, 2, CHECKPOINTS)
    assert args["deepspeed"] == deepspeed_config(cpu)
    assert args["ddp_backend"] == "gloo"


@pytest.mark.parametrize("world_size", [1, 4])
def test_gpus_always_use_deepspeed_and_the_default_backend(config, world_size):
    gpu = on(config, use_cpu=False, processes=world_size)
    args = training_arguments(gpu, world_size, CHECKPOINTS)
    assert args["deepspeed"] == deepspeed_config(gpu)
    assert args["ddp_backend"] is None, "NCCL, chosen by torch"
    assert args["use_cpu"] is False and args["gradient_checkpointing"] is True


# --- resume_refusal -----------------------------------------------------------------------------


def test_a_checkpoint_from_another_world_size_is_refused_under_deepspeed_only(config):
    checkpoint = CHECKPOINTS / "checkpoint-3"
    cpu = on(config, use_cpu=True)
    assert resume_refusal(cpu, 2, None, None) is None
    assert resume_refusal(cpu, 2, checkpoint, 2) is None
    assert resume_refusal(cpu, 1, checkpoint, 4) is None, "no DeepSpeed: a plain checkpoint loads anywhere"
    message = resume_refusal(cpu, 2, checkpoint, 4)
    assert message is not None and f"{checkpoint} was written by 4 processes, this run has 2" in message
    assert resume_refusal(on(config, use_cpu=False), 1, checkpoint, 2) is not None


# --- result_figures -----------------------------------------------------------------------------


def trainer_state(**values) -> SimpleNamespace:
    state = {
        "log_history": [{"loss": 2.0}, {"learning_rate": 1e-3}, {"loss": 0.5}, {"train_runtime": 4.0}],
        "global_step": 12,
        "max_steps": 12,
        "epoch": 3.0,
        "num_input_tokens_seen": 1000,
        "total_flos": 7,
    }
    return SimpleNamespace(**{**state, **values})


def test_the_result_figures_come_from_the_state_and_the_metrics():
    figures = result_figures(trainer_state(), {"train_runtime": 4.0, "train_samples_per_second": 9.5}, elapsed=60)
    assert figures == {
        "final_loss": 0.5,
        "global_step": 12,
        "total_steps": 12,
        "epochs": 3.0,
        "runtime_seconds": 4.0,
        "samples_per_second": 9.5,
        "tokens_per_second": 250.0,
        "total_flos": 7.0,
    }
    TrainingResult(outcome="Succeeded", **figures)  # the result takes them as they are


def test_without_a_runtime_metric_the_wall_time_stands_in_and_no_loss_is_none():
    figures = result_figures(trainer_state(log_history=[]), {}, elapsed=8.0004)
    assert figures["final_loss"] is None and figures["samples_per_second"] is None
    assert figures["runtime_seconds"] == 8.0 and figures["tokens_per_second"] == 124.99


# --- the data pipeline ----------------------------------------------------------------------------


class CharTokenizer:
    """One token per character; enough of a tokenizer for the Llama-3 encoding."""

    bos_token_id = 1

    def convert_tokens_to_ids(self, token: str) -> int:
        return 2

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def test_samples_are_encoded_with_only_the_replies_learned(config):
    [sample] = training_samples([chat("q", "ab")], CharTokenizer(), on(config, cutoff_length=512, packing=False))
    assert set(sample) == {"input_ids", "labels"} and len(sample["input_ids"]) == len(sample["labels"])
    learned = [t for t, label in zip(sample["input_ids"], sample["labels"], strict=True) if label != IGNORE]
    assert learned == [ord("a"), ord("b"), 2], "the reply and its <|eot_id|>"


def test_samples_with_nothing_to_learn_are_dropped_and_the_rest_packed_in_order(config):
    long_question = chat("x" * 300, "never seen")  # the cutoff falls before the reply
    conversations = [chat("q1", "a1"), long_question, chat("q2", "a2"), chat("q3", "a3")]
    tokenizer = CharTokenizer()
    unpacked = training_samples(conversations, tokenizer, on(config, cutoff_length=256, packing=False))
    assert len(unpacked) == 3
    packed = training_samples(conversations, tokenizer, on(config, cutoff_length=256, packing=True))
    assert len(packed) < 3 and all(len(s["input_ids"]) <= 256 for s in packed)
    assert [t for s in packed for t in s["input_ids"]] == [t for s in unpacked for t in s["input_ids"]]


def test_cut_and_dropped_samples_are_counted_and_too_many_dropped_refuse_the_run(config):
    conversations = [chat("q1", "a1"), chat("x" * 300, "never seen"), chat("q2", "y" * 300), chat("q3", "a3")]
    prepared = prepare_samples(conversations, CharTokenizer(), on(config, cutoff_length=256, packing=False))
    assert (prepared.conversations, prepared.truncated, prepared.dropped, len(prepared.samples)) == (4, 1, 1, 3)
    assert prepared.warnings(256) == [
        "1 of 4 samples were cut at cutoffLength 256 (their replies are learnt in part)",
        "1 of 4 samples lost every reply token to cutoffLength 256 and were left out",
    ]
    assert prepared.refusal(256, max_percent=25) is None  # 25% dropped: not more than allowed
    assert prepared.refusal(256, max_percent=5) == (
        "1 of 4 samples (25.0%) lose every reply token to cutoffLength 256, more than "
        "maxDroppedSamplesPercent 5: raise cutoffLength or leave out the long samples"
    )


# --- termination messages and exit codes ------------------------------------------------------------


def test_the_termination_message_is_written_where_the_environment_says_and_logged(tmp_path, monkeypatch, capsys):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("TWLEGAL_TERMINATION_LOG", str(log))
    text = json.dumps({"outcome": "Succeeded", "message": "法律"}, ensure_ascii=False)
    assert write_termination_message(text, log_prefix="twlegal-result") == text
    assert log.read_text(encoding="utf-8") == text
    assert capsys.readouterr().out == f"twlegal-result {text}\n"
    write_termination_message("again")
    assert log.read_text() == "again" and capsys.readouterr().out == "", "no prefix: not logged"


def test_a_termination_message_is_cut_to_the_limit_never_inside_a_character(tmp_path, monkeypatch):
    log = tmp_path / "termination-log"
    monkeypatch.setenv("TWLEGAL_TERMINATION_LOG", str(log))
    text = "a" + "法" * TERMINATION_MESSAGE_LIMIT  # 3 bytes a character: the limit falls mid-character
    written = write_termination_message(text)
    assert len(log.read_bytes()) <= TERMINATION_MESSAGE_LIMIT and written == log.read_text(encoding="utf-8")
    assert written == "a" + "法" * ((TERMINATION_MESSAGE_LIMIT - 1) // 3)
    assert fit("short") == "short"


def test_outside_a_pod_the_termination_message_is_only_logged(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWLEGAL_TERMINATION_LOG", str(tmp_path / "no" / "such" / "dir" / "log"))
    write_termination_message("{}", log_prefix="twlegal-evaluation")
    assert capsys.readouterr().out == "twlegal-evaluation {}\n"


@pytest.mark.parametrize(
    "outcome,code",
    [
        ("Succeeded", ExitCode.SUCCEEDED),
        ("Diverged", ExitCode.DIVERGED),
        ("Interrupted", ExitCode.INTERRUPTED),
        ("Failed", ExitCode.FAILED),
        ("StorageFull", ExitCode.STORAGE_FULL),
        ("StorageConflict", ExitCode.STORAGE_CONFLICT),
    ],
)
def test_each_outcome_has_its_exit_code(outcome, code):
    assert TrainingResult(outcome=outcome).exit_code() == code
