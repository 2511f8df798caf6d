"""One training process (a torchrun rank): config -> tokenised data -> HF Trainer (+DeepSpeed)
-> checkpoints -> published weights -> TrainingResult. Returns the trainer's exit code.

`run` reads top to bottom: storage, data, trainer, train, publish, report; what it decides
(arguments, warnings, whether to resume, the result's figures) comes from the builders above it,
and whose directories these are and whether a disk is full from `ownership` and `space`: none of
them needs torch, and they are unit-tested.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from twlegal.contracts.training import LOSS_PLOT_FILE, ExitCode, TrainingConfig, TrainingResult
from twlegal.policies import consistency

from . import artifacts, ownership, plots, prepare, provenance, space
from .chat import IGNORE, LLAMA3_TEMPLATE
from .data import DataError, Prepared, Sample, load_conversations, prepare_samples


def deepspeed_config(config: TrainingConfig) -> dict[str, Any]:
    """ZeRO from the release; batch sizes, clipping and precision left to the HF integration ("auto")."""
    zero: dict[str, Any] = {
        "stage": config.deepspeed.zero_stage,
        "overlap_comm": not config.use_cpu,
        "contiguous_gradients": True,
    }
    if config.deepspeed.offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": not config.use_cpu}
        if config.deepspeed.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": not config.use_cpu}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
    }


def planned_steps(samples: int, config: TrainingConfig, world_size: int) -> int:
    hp = config.hyperparameters
    batches_per_rank = math.ceil(samples / (hp.per_device_batch_size * world_size))
    per_epoch = max(batches_per_rank // hp.gradient_accumulation_steps, 1)
    return math.ceil(per_epoch * hp.epochs)


class Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[Sample]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(b["input_ids"], self.pad_id) for b in batch]),
            "labels": torch.tensor([pad(b["labels"], IGNORE) for b in batch]),
            "attention_mask": torch.tensor([pad([1] * len(b["input_ids"]), 0) for b in batch]),
        }


def uses_deepspeed(config: TrainingConfig, world_size: int) -> bool:
    return world_size > 1 or not config.use_cpu


def training_arguments(config: TrainingConfig, world_size: int, checkpoint_dir: Path) -> dict[str, Any]:
    """The keyword arguments of transformers' TrainingArguments: the release's hyperparameters one
    to one, DeepSpeed when there is more than one process or a GPU, checkpoints every
    `checkpoint_every_steps` (the last two kept)."""
    hp = config.hyperparameters
    return {
        "output_dir": str(checkpoint_dir),
        "per_device_train_batch_size": hp.per_device_batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "learning_rate": hp.learning_rate,
        "num_train_epochs": hp.epochs,
        "lr_scheduler_type": hp.lr_scheduler,
        "warmup_steps": hp.warmup_steps,
        "optim": hp.optimizer,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        "seed": hp.seed,
        "bf16": hp.precision == "bf16",
        "fp16": hp.precision == "fp16",
        "use_cpu": config.use_cpu,
        "deepspeed": deepspeed_config(config) if uses_deepspeed(config, world_size) else None,
        "gradient_checkpointing": not config.use_cpu,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.checkpoint_every_steps,
        "save_total_limit": 2,
        # TensorBoard event files on the release's own volume path, beside its checkpoints: the
        # callback writes them to output_dir/runs/<time>_<host>/ (TENSORBOARD_DIR), one per attempt.
        "report_to": ["tensorboard"],
        "disable_tqdm": True,
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        "ddp_backend": "gloo" if config.use_cpu and world_size > 1 else None,  # NCCL needs GPUs
    }


def run_warnings(config: TrainingConfig, samples: int, world_size: int) -> list[str]:
    # The same checks the card makes, so the trainer's warnings and the card never disagree.
    total = planned_steps(samples, config, world_size)
    return [
        f.message
        for f in consistency.check_run(
            config.hyperparameters, total_steps=total, samples=samples, world_size=world_size
        )
    ]


def resume_refusal(
    config: TrainingConfig, world_size: int, resume: Path | None, resume_world: int | None
) -> str | None:
    """Why the newest checkpoint cannot be resumed by this run, or None. DeepSpeed's checkpoints are
    sharded per rank, so only the world size that wrote one can load it."""
    if resume is None or resume_world == world_size or not uses_deepspeed(config, world_size):
        return None
    return (
        f"{resume} was written by {resume_world} processes, this run has {world_size}: "
        "resume with the same GPU count, or convert it to a universal checkpoint first"
    )


def result_figures(state: Any, metrics: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """The TrainingResult's figures from the Trainer's state and train() metrics (`elapsed`, the
    wall time since start, stands in when the metrics carry no runtime)."""
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    runtime = metrics.get("train_runtime", elapsed)
    return {
        "final_loss": losses[-1] if losses else None,
        "global_step": state.global_step,
        "total_steps": state.max_steps,
        "epochs": state.epoch,
        "runtime_seconds": round(runtime, 3),
        "samples_per_second": metrics.get("train_samples_per_second"),
        "tokens_per_second": round(state.num_input_tokens_seen / max(runtime, 1e-9), 2),
        "total_flos": float(state.total_flos),
    }


def load_tokenizer(config: TrainingConfig) -> Any:
    from transformers import AutoTokenizer

    source = config.base_model.path or config.base_model.name
    tokenizer = AutoTokenizer.from_pretrained(source, revision=config.base_model.revision)
    if config.template == "llama3":
        tokenizer.chat_template = LLAMA3_TEMPLATE  # saved with the weights: vLLM formats prompts the same way
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_dataset(config: TrainingConfig, tokenizer: Any, checkpoint_dir: Path, rank: int) -> tuple[Any, Prepared]:
    """The samples to learn from: prepared once on the volume at the real size (prepare.py) for the
    llama3 template; the tokenizer's own template renders one conversation at a time (data.py)."""
    if config.template == "llama3":
        base = config.base_model
        tokenizer_source = base.path or f"{base.name}@{base.revision}"
        return prepare.prepare(config, tokenizer, tokenizer_source, checkpoint_dir, rank)
    prepared = prepare_samples(load_conversations(config.datasets), tokenizer, config)
    return prepared.samples, prepared


def run(config: TrainingConfig) -> int:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    started = time.time()
    owner = config.release.owner()
    checkpoint_dir, final = Path(config.checkpoint_dir), Path(config.output_dir)
    staging = artifacts.staging_dir(final)

    def report(result: TrainingResult, beside: Path | None = None) -> int:
        # Rank 0 reports; a full disk may strike any rank (each saves its own optimizer shards).
        if rank == 0 or result.outcome == "StorageFull":
            artifacts.report(result, beside)
            return int(result.exit_code())  # as the launcher reports the outcome across torchrun
        # Another rank reached the same outcome: it leaves the exit code to rank 0. Exiting non-zero
        # first would make torchrun stop rank 0 before it has written the result.
        return int(ExitCode.SUCCEEDED)

    # Storage: this release's own directories (or new ones), refused before torch is even imported
    try:
        refusal = ownership.storage_refusal(checkpoint_dir, final, owner, claim_it=rank == 0)
    except OSError as exc:  # not even the owner file fits: the volume is full before the first step
        if not space.is_full(exc, checkpoint_dir, 1):
            raise
        message = (
            f"no space left on {checkpoint_dir} to start the run ({space.human(space.free_bytes(checkpoint_dir))} free)"
        )
        return report(TrainingResult(outcome="StorageFull", message=message))
    if refusal:
        return report(TrainingResult(outcome="StorageConflict", message=refusal))

    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from .callbacks import DivergenceGuard, GracefulStop, MarkComplete, ProgressReporter
    from .progress import ProgressServer

    stop = GracefulStop()  # before loading: a SIGTERM during loading must not kill the pod unsaved
    # Rank 0's progress, served from the start: "starting" while the data and the model load.
    progress = ProgressServer("training", config.metrics_port if rank == 0 else None)

    # Data
    tokenizer = load_tokenizer(config)
    try:
        dataset, prepared = training_dataset(config, tokenizer, checkpoint_dir, rank)
    except DataError as exc:  # the release's message is this one sentence, not a traceback
        return report(TrainingResult(outcome="Failed", message=f"data: {exc}"))
    if refusal := prepared.refusal(config.cutoff_length, config.max_dropped_samples_percent):
        return report(TrainingResult(outcome="Failed", message=f"data: {refusal}"))
    warnings = prepared.warnings(config.cutoff_length) + run_warnings(config, len(dataset), world_size)
    inputs = provenance.resolve(config) if rank == 0 else None

    # Trainer, resuming from this run's newest complete checkpoint
    resume, resume_world = artifacts.newest_complete_checkpoint(checkpoint_dir, owner)
    if refusal := resume_refusal(config, world_size, resume, resume_world):
        return report(TrainingResult(outcome="Failed", message=refusal))
    base = config.base_model
    precision = config.hyperparameters.precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    model = AutoModelForCausalLM.from_pretrained(base.path or base.name, revision=base.revision, dtype=dtype)
    parameters = model.num_parameters()  # before DeepSpeed partitions them
    guard = DivergenceGuard(config.loss_guard.max_spike_ratio)
    resumed_from_step = artifacts.checkpoint_step(resume) if resume else None
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**training_arguments(config, world_size, checkpoint_dir)),
        train_dataset=dataset,
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=[guard, stop, MarkComplete(owner), ProgressReporter(progress, resumed_from_step)],
    )
    common: dict[str, Any] = {
        "warnings": warnings,
        "samples": len(dataset),
        "world_size": world_size,
        "inputs": inputs,
        "resumed_from_step": resumed_from_step,
    }

    # Train (a full disk while checkpointing stops it; the newest complete checkpoint stays usable)
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except Exception as exc:
        estimate = space.checkpoint_bytes(parameters, precision, uses_deepspeed(config, world_size))
        if (full := space.checkpoint_full(exc, checkpoint_dir, owner, estimate)) is None:
            raise
        state = trainer.state
        return report(TrainingResult(**full, global_step=state.global_step, total_steps=state.max_steps, **common))
    state = trainer.state
    common.update(result_figures(state, output.metrics, time.time() - started))
    newest, _ = artifacts.newest_complete_checkpoint(checkpoint_dir, owner)
    common["checkpoint"] = str(newest) if newest else None
    if guard.reason:
        return report(TrainingResult(outcome="Diverged", message=guard.reason, **common))
    if stop.requested and state.global_step < state.max_steps:
        return report(TrainingResult(outcome="Interrupted", message="stopped by SIGTERM; resumable", **common))

    # Save and publish: rank 0 writes (every rank takes part in gathering ZeRO-3's weights)
    try:
        if rank == 0:
            artifacts.prepare_staging(staging, final, owner)
        trainer.accelerator.wait_for_everyone()  # no rank saves into the staging before it is ready
        trainer.save_model(str(staging))
        if rank != 0:
            return int(ExitCode.SUCCEEDED)
        tokenizer.save_pretrained(str(staging))
        checksum = artifacts.publish(staging, final, config.release.model, config.release.version, owner)
    except ownership.StorageConflict as exc:
        return report(TrainingResult(outcome="StorageConflict", message=str(exc), **common))
    except Exception as exc:
        estimate = space.weights_bytes(parameters, precision)
        if (full := space.publish_full(exc, staging, final, estimate, newest)) is None:
            raise
        return report(TrainingResult(**{**common, **full}))
    title = f"{config.release.model} {config.release.version}: training loss and learning rate"
    plot = plots.loss_curve(state.log_history, final / LOSS_PLOT_FILE, title)
    result = TrainingResult(
        outcome="Succeeded",
        artifact_path=str(final),
        checksum=checksum,
        loss_plot=plot.name if plot else None,
        **common,
    )
    code = report(result, final)
    artifacts.write_card(config, result, final)
    return code
