"""The model card of a release, in the Hugging Face format, from its spec and status only.

The front matter is built with huggingface_hub's ModelCardData/EvalResult (so the hub parses what
it wrote); the body states every figure the run reported and marks the ones it did not as
"not reported" rather than filling them in. Hand-written words come only from spec.card.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..api.release import LegalModelRelease
from ..api.status import TERMINAL_PHASES
from ..policies import consistency
from ..render import names
from ..render import serving as render_serving
from . import history

NOT_REPORTED = "*not reported*"
HUB = "https://huggingface.co"


def _hub_link(repo: str, kind: str = "model") -> str:
    return f"[{repo}]({HUB}/{'datasets/' if kind == 'dataset' else ''}{repo})"


def _or_missing(value: Any, fmt: str = "{}") -> str:
    return NOT_REPORTED if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_REPORTED
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h " if h else "") + (f"{m}m " if h or m else "") + f"{s}s"
    return f"{text} ({seconds:g} s)"


def card_data(release: LegalModelRelease) -> ModelCardData:
    spec = release.spec
    status = release.status.to_wire() if release.status else {}
    extra = spec.card
    evaluation = status.get("evaluation") or {}
    eval_results = None
    bench = spec.evaluation.benchmark if spec.evaluation else None
    if bench is not None and evaluation.get("score") is not None:
        bench_id = bench.name or bench.path or ""  # the API requires one of the two
        eval_results = [
            EvalResult(
                task_type="text-generation",
                dataset_type=bench_id,
                dataset_name=bench_id,
                dataset_split=bench.split,
                dataset_revision=bench.revision,
                metric_type="accuracy",
                metric_name=f"accuracy on {bench_id}",
                metric_value=evaluation["score"],
            )
        ]
    return ModelCardData(
        model_name=spec.model,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=extra.license if extra else None,
        language=list(extra.language) if extra and extra.language else None,
        tags=[*(extra.tags or [] if extra else []), "twlegal"],
        base_model=spec.base_model.name,  # a path on a volume is not a hub id: named in the body
        base_model_relation="finetune" if spec.base_model.name else None,
        datasets=[d.name for d in spec.datasets if d.name] or None,
        metrics=["accuracy"] if eval_results else None,
        eval_results=eval_results,
    )


def _input_row(label: str, asked: dict[str, Any], resolved: dict[str, Any] | None) -> str:
    source = _hub_link(asked["name"], label) if asked.get("name") else f"`{asked.get('path')}` (storage volume)"
    revision = f"`{asked['revision']}`" if asked.get("revision") else ("**unpinned**" if asked.get("name") else "—")
    if resolved is None:
        got = NOT_REPORTED
    elif resolved.get("commit"):
        got = f"commit `{resolved['commit']}`"
    elif resolved.get("checksum"):
        got = f"`{resolved['checksum']}`"
    else:
        got = NOT_REPORTED
    return f"| {source} | {revision} | {got} |"


def _inputs(release: LegalModelRelease, status: dict[str, Any]) -> list[str]:
    spec = release.spec
    inputs = status.get("inputs") or {}
    resolved = inputs.get("datasets") or []
    out = [
        "### Base model",
        "",
        "| model | revision asked for | loaded |",
        "|---|---|---|",
        _input_row("model", spec.base_model.model_dump(exclude_none=True), inputs.get("baseModel")),
        "",
        f"### Training data ({len(spec.datasets)} datasets, mixed in this order)",
        "",
        "| dataset | revision asked for | loaded |",
        "|---|---|---|",
    ]
    for index, dataset in enumerate(spec.datasets):
        asked = dataset.model_dump(exclude_none=True)
        got = resolved[index] if index < len(resolved) else None
        out.append(_input_row("dataset", asked, got))
    return out


def _hyperparameters(release: LegalModelRelease, training: dict[str, Any]) -> list[str]:
    spec = release.spec.training
    hp = spec.hyperparameters
    # One process per GPU; on CPU only the trainer knows how many it ran.
    devices = training.get("worldSize") or spec.resources.gpus or None
    total = (
        f"{consistency.global_batch(hp, devices)} (train_batch_size x gradient_accumulation_steps x "
        f"num_devices = {hp.per_device_batch_size} x {hp.gradient_accumulation_steps} x {devices})"
        if devices
        else NOT_REPORTED
    )
    processes = training.get("worldSize")
    hardware = (
        f"{spec.resources.gpus} x `{spec.resources.gpu_resource_name}`"
        if spec.resources.gpus
        else f"CPU ({_or_missing(processes)} training process{'' if processes == 1 else 'es'})"
    )
    if spec.resources.node_selector:
        hardware += " on nodes " + ", ".join(f"`{k}={v}`" for k, v in sorted(spec.resources.node_selector.items()))
    return [
        f"- **method:** {spec.method} fine-tuning (SFT), chat template `{spec.template}`, "
        f"cutoff length {spec.cutoff_length} tokens, packing {'on' if spec.packing else 'off'}",
        f"- **learning_rate:** {hp.learning_rate:g} (peak)",
        f"- **train_batch_size:** {hp.per_device_batch_size} (per device)",
        f"- **gradient_accumulation_steps:** {hp.gradient_accumulation_steps}",
        f"- **num_devices:** {_or_missing(devices)}",
        f"- **total_train_batch_size:** {total}",
        f"- **optimizer:** {hp.optimizer} (weight decay {hp.weight_decay:g}, max grad norm {hp.max_grad_norm:g})",
        f"- **lr_scheduler_type:** {hp.lr_scheduler}",
        f"- **lr_scheduler_warmup_steps:** {hp.warmup_steps}",
        f"- **num_epochs:** {hp.epochs:g}",
        f"- **seed:** {hp.seed}",
        f"- **precision:** {hp.precision}",
        f"- **distributed:** DeepSpeed ZeRO stage {spec.deepspeed.zero_stage}"
        + (f", {spec.deepspeed.offload} offload" if spec.deepspeed.offload != "none" else ""),
        f"- **hardware:** {hardware}",
    ]


def _results(training: dict[str, Any]) -> list[str]:
    steps = training.get("globalStep")
    total = training.get("totalSteps")
    step_text = NOT_REPORTED if steps is None else f"{steps}" + (f" of {total} planned" if total is not None else "")
    flos = training.get("totalFlos")
    rows = [
        ("Train loss (final)", _or_missing(training.get("finalLoss"), "{:.4f}")),
        ("Optimizer steps", step_text),
        ("Epochs", _or_missing(training.get("epochs"), "{:g}")),
        ("Training sequences per epoch", _or_missing(training.get("samples"))),
        ("Train runtime", _duration(training.get("runtimeSeconds"))),
        ("Train samples per second", _or_missing(training.get("samplesPerSecond"), "{:,}")),
        ("Train tokens per second", _or_missing(training.get("tokensPerSecond"), "{:,}")),
        ("Total training FLOPs", NOT_REPORTED if flos is None else f"{int(flos):,} ({flos:.3g})"),
        ("Training attempts (pods)", _or_missing(training.get("attempts"))),
    ]
    out = ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    if training.get("resumedFromStep") is not None:
        out.append(f"\nThe last attempt resumed from the checkpoint at step {training['resumedFromStep']}.")
    for warning in training.get("warnings") or []:
        out.append(f"\nThe trainer warned: {warning}")
    if training.get("lossPlot"):
        # A file the trainer wrote beside the weights and this card: the hub shows it in place.
        out.append(f"\n![Training loss and learning rate by optimizer step]({training['lossPlot']})")
    return out


def _evaluation(release: LegalModelRelease, status: dict[str, Any]) -> list[str]:
    spec = release.spec.evaluation
    if spec is None:
        return ["This release has no evaluation gate (spec.evaluation is not set)."]
    evaluation = status.get("evaluation") or {}
    bench = spec.benchmark
    where = _hub_link(bench.name, "dataset") if bench.name else f"`{bench.path}` (storage volume)"
    if bench.revision:
        where += f" at `{bench.revision}`"
    passed = evaluation.get("passed")
    verdict = NOT_REPORTED if passed is None else ("passed: may be served" if passed else "failed: never served")
    protocol = evaluation.get("protocol") or bench.protocol
    out = [
        f"- **benchmark:** {where} (multiple choice, accuracy in percent, `{protocol}` protocol"
        " of lm-evaluation-harness, in the model's chat template)",
        f"- **score:** {_or_missing(evaluation.get('score'), '{:g}')}",
        f"- **minimum score to serve:** {spec.min_score:g}",
        f"- **gate:** {verdict}",
    ]
    if evaluation.get("subjects"):
        out.append(f"- **by subject:** {evaluation['subjects']}")
    if evaluation.get("chart"):
        out.append(f"\n![Accuracy by subject]({evaluation['chart']})")
    return out


def _serve(release: LegalModelRelease, status: dict[str, Any]) -> list[str]:
    spec = release.spec
    artifact = status.get("artifact") or {}
    name = spec.serving.served_model_name or spec.model
    if status.get("phase") in TERMINAL_PHASES:
        # The gate's verdict outranks instructions: a card must not tell anyone to serve this.
        return [
            f"Do not serve this revision: the release is {status['phase']} and twlegal never served it "
            f"(or took it back). The target `{names.serving_target(release)}` serves the newest passing "
            "release; see the update history above."
        ]
    return [
        "The revision to serve is this release's version; it names the weights that were evaluated above. "
        "Pin it, and check the weights against their manifest checksum:",
        "",
        "```",
        f"vllm serve {spec.model} --revision {spec.version} --served-model-name {name} "
        f"--max-model-len {spec.serving.max_model_len}",
        "```",
        "",
        f"- **weights checksum** (sha256 of `twlegal-manifest.json`): {_or_missing(artifact.get('checksum'), '`{}`')}",
        f"- **in the cluster:** `{render_serving.endpoint(release)}` (target `{names.serving_target(release)}`, "
        f"model names `{name}` and `{name}:{spec.version}`)",
    ]


def render(release: LegalModelRelease, releases: list[LegalModelRelease] | None = None) -> str:
    """The card as Markdown with YAML front matter. `releases`: the target's releases for the update
    history (this release is always in it)."""
    spec = release.spec
    status = release.status.to_wire() if release.status else {}
    training = status.get("training") or {}
    peers = [r for r in releases or [] if r.name != release.name or r.namespace != release.namespace]
    rows = history.rows([release, *history.of_target(peers, names.serving_target(release))])
    me = next(r for r in rows if r.name == release.name)
    base = spec.base_model
    base_text = (_hub_link(base.name) + f" at revision `{base.revision}`") if base.name else f"`{base.path}`"
    findings = consistency.check_release(spec, training)
    body = [
        f"# {spec.model} {spec.version}",
        "",
        f"A full-parameter fine-tune of {base_text} on {len(spec.datasets)} datasets, made by the twlegal "
        f"release `{release.namespace}/{release.name}`. Every figure below is read from that release's spec "
        f"and status; a figure the run did not report is shown as {NOT_REPORTED}.",
        "",
        f"**Phase:** {me.phase or NOT_REPORTED} — {me.reason}",
        "",
        *(["**Changes:** " + spec.card.summary, ""] if spec.card and spec.card.summary else []),
        "## Inconsistencies in this release's inputs",
        "",
        *([f"- **{f.reason}:** {f.message}" for f in findings] or ["None found."]),
        "",
        "## Training procedure",
        "",
        *_inputs(release, status),
        "",
        "### Training hyperparameters",
        "",
        *_hyperparameters(release, training),
        "",
        "### Training results",
        "",
        *_results(training),
        "",
        "## Evaluation",
        "",
        *_evaluation(release, status),
        "",
        "## Model update history",
        "",
        history.markdown(rows).rstrip("\n"),
        "",
        "## How to serve this revision",
        "",
        *_serve(release, status),
        "",
    ]
    content = f"---\n{card_data(release).to_yaml()}\n---\n\n" + "\n".join(body)
    return str(ModelCard(content, ignore_metadata_errors=False))
