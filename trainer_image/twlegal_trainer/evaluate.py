"""Score a model on a multiple-choice benchmark the way lm-evaluation-harness scores its
multiple-choice tasks with `--apply_chat_template`, so the gate's numbers compare with published ones.

Each question becomes one user turn in the model's own chat template (the one training saved with
the tokenizer): the question, its lettered choices, then "Answer:". Each choice is a continuation
of the assistant's turn: its letter (`letter`, as TMMLU+ and MMLU are scored) or its text
(`choiceText`); the prediction is the choice of highest log-likelihood (lm-eval's `acc`). Requests are tokenised as lm-eval does (the context's trailing whitespace moves into
the continuation; the pair is encoded whole, then split), batched, and run on the GPU in bf16 when
there is one, on the CPU in fp32 otherwise: one code path for both.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twlegal.contracts.evaluation import SUBJECTS_CHART_FILE, EvaluationConfig, EvaluationResult, SubjectScore
from twlegal.contracts.termination import write_termination_message
from twlegal.contracts.training import ExitCode

from .benchmark import LETTERS, Question, load
from .chat import LLAMA3_TEMPLATE
from .data import DataError
from .progress import ProgressServer


def prompt(question: Question) -> str:
    listing = "".join(f"\n{LETTERS[i]}. {choice}" for i, choice in enumerate(question.choices))
    return f"{question.text.strip()}{listing}\nAnswer:"


def continuations(question: Question, protocol: str) -> list[str]:
    return list(LETTERS[: len(question.choices)]) if protocol == "letter" else list(question.choices)


def chat_context(tokenizer: Any, text: str) -> str:
    template = None if tokenizer.chat_template else LLAMA3_TEMPLATE  # an untrained base may lack one
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], chat_template=template, tokenize=False, add_generation_prompt=True
        )
    )


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """As lm-eval's HFLM: trailing whitespace of the context belongs to the continuation; the whole
    string is encoded and split where the context's own encoding ends; no second BOS."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation

    def encode(text: str) -> list[int]:
        bos = tokenizer.bos_token
        return list(tokenizer.encode(text, add_special_tokens=not (bos and text.startswith(bos))))

    whole, head = encode(context + continuation), encode(context)
    return head, whole[len(head) :]


def loglikelihoods(model: Any, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
    """Sum of the continuation tokens' log-probabilities, for each (context, continuation) pair, in
    one right-padded forward pass (causal attention: padding after a sequence cannot change it)."""
    import torch

    inputs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    width = max(len(i) for i in inputs)
    batch = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, ids in enumerate(inputs):
        batch[row, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=batch.to(model.device)).logits.float(), dim=-1).cpu()
    sums = []
    for row, (ctx, cont) in enumerate(pairs):
        end = len(ctx) + len(cont) - 1
        positions = torch.arange(end - len(cont), end)
        sums.append(float(logprobs[row, positions, torch.tensor(cont)].sum()))
    return sums


def load_model(model_path: str, use_cpu: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gpu = torch.cuda.is_available() and not use_cpu
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if gpu else torch.float32)
    return AutoTokenizer.from_pretrained(model_path), model.to("cuda" if gpu else "cpu").eval()


def score(
    model_path: str,
    questions: Sequence[Question],
    protocol: str = "letter",
    *,
    batch_size: int = 16,
    use_cpu: bool = False,
    progress: ProgressServer | None = None,
) -> EvaluationResult:
    tokenizer, model = load_model(model_path, use_cpu)
    predictions: list[int] = []
    started = time.monotonic()
    pending: list[Question] = []

    def flush() -> None:
        pairs = []
        for q in pending:
            context = chat_context(tokenizer, prompt(q))
            pairs += [encode_pair(tokenizer, context, cont) for cont in continuations(q, protocol)]
        sums = loglikelihoods(model, pairs)
        at = 0
        for q in pending:
            chosen = sums[at : at + len(q.choices)]
            predictions.append(max(range(len(chosen)), key=chosen.__getitem__))
            at += len(chosen)
        pending.clear()

    _report(progress, 0, len(questions), started)
    for q in questions:
        pending.append(q)
        if sum(len(p.choices) for p in pending) >= batch_size:
            flush()
            _report(progress, len(predictions), len(questions), started)
    if pending:
        flush()
    _report(progress, len(questions), len(questions), started)
    return tally(questions, predictions, protocol)


def _report(progress: ProgressServer | None, scored: int, total: int, started: float) -> None:
    if progress is None:
        return
    pace = (time.monotonic() - started) / scored if scored else None
    progress.update(step=scored, total=total, eta_seconds=pace * (total - scored) if pace is not None else None)


def tally(questions: Sequence[Question], predictions: Sequence[int], protocol: str) -> EvaluationResult:
    """Accuracy overall and by subject (weakest first)."""
    by_subject: dict[str, list[bool]] = defaultdict(list)
    hits = [p == q.answer for q, p in zip(questions, predictions, strict=True)]
    for q, hit in zip(questions, hits, strict=True):
        if q.subject is not None:
            by_subject[q.subject].append(hit)
    subjects = sorted(
        (
            SubjectScore(name=name, score=_percent(sum(h), len(h)), correct=sum(h), total=len(h))
            for name, h in by_subject.items()
        ),
        key=lambda s: (s.score, s.name),
    )
    return EvaluationResult(
        benchmark="",
        score=_percent(sum(hits), len(hits)),
        correct=sum(hits),
        total=len(hits),
        protocol=protocol,  # type: ignore[arg-type]
        subjects=subjects,
        subject_count=len(subjects),
    )


def _percent(correct: int, total: int) -> float:
    return round(100.0 * correct / total, 2)


def main(config_path: str) -> int:
    config = EvaluationConfig.model_validate_json(Path(config_path).read_text(encoding="utf-8"))
    progress = ProgressServer("evaluation", config.metrics_port)
    try:
        questions, where = load(config)
    except DataError as exc:  # one sentence for the release's message, never a traceback
        write_termination_message(f"benchmark: {exc}", log_prefix="twlegal-evaluation")
        return int(ExitCode.FAILED)
    result = score(
        config.model_path,
        questions,
        config.protocol,
        batch_size=config.batch_size,
        use_cpu=config.use_cpu,
        progress=progress,
    ).model_copy(update={"benchmark": config.benchmark.name or where})
    out = Path(config.result_path)
    if len(result.subjects) > 1:
        from .plots import subject_bars

        title = f"{config.release.model} {config.release.version}: accuracy by subject ({result.protocol} protocol)"
        if subject_bars(result.subjects, out.parent / SUBJECTS_CHART_FILE, title) is not None:
            result = result.model_copy(update={"chart": SUBJECTS_CHART_FILE})
    out.write_text(json.dumps(result.to_wire(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_termination_message(result.termination_message(), log_prefix="twlegal-evaluation")
    return int(ExitCode.SUCCEEDED)
