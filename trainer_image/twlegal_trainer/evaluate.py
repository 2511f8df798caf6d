"""Score a model on a multiple-choice benchmark (JSONL of question, choices, answer) by the
log-likelihood of each choice as the assistant's reply; writes an EvaluationResult."""

from __future__ import annotations

import json
import time
from pathlib import Path

from twlegal.contracts.evaluation import EvaluationConfig, EvaluationResult
from twlegal.contracts.termination import write_termination_message
from twlegal.contracts.training import DatasetSource, ExitCode

from .chat import encode_llama3
from .data import read_rows
from .progress import ProgressServer

LETTERS = "ABCDEFGH"


def _answer_index(row: dict) -> int:
    answer = row["answer"]
    return LETTERS.index(answer.strip("() ").upper()) if isinstance(answer, str) else int(answer)


def score(model_path: str, rows: list[dict], progress: ProgressServer | None = None) -> EvaluationResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    correct = 0
    started = time.monotonic()
    for scored, row in enumerate(rows):
        if progress is not None:
            pace = (time.monotonic() - started) / scored if scored else None
            progress.update(step=scored, total=len(rows), eta_seconds=pace * (len(rows) - scored) if pace else None)
        listing = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(row["choices"]))
        prompt = f"{row['question']}\n{listing}"
        best, best_score = -1, float("-inf")
        for i, choice in enumerate(row["choices"]):
            example = encode_llama3(
                tokenizer,
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"({LETTERS[i]}) {choice}"}],
                cutoff=100_000,
            )
            ids = torch.tensor([example.input_ids])
            labels = torch.tensor([example.labels])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[:, :-1]
            target = labels[:, 1:]
            mask = target != -100
            logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, target.clamp(min=0).unsqueeze(-1))[..., 0]
            mean = (logprobs * mask).sum() / mask.sum()  # per token: no bias towards short answers
            if mean.item() > best_score:
                best, best_score = i, mean.item()
        correct += int(best == _answer_index(row))
    if progress is not None:
        progress.update(step=len(rows), total=len(rows), eta_seconds=0)
    return EvaluationResult(benchmark="", score=round(100.0 * correct / len(rows), 2), correct=correct, total=len(rows))


def main(config_path: str) -> int:
    config = EvaluationConfig.model_validate_json(Path(config_path).read_text(encoding="utf-8"))
    bench = config.benchmark
    progress = ProgressServer("evaluation", config.metrics_port)
    rows = read_rows(
        DatasetSource(name=bench.name, revision=bench.revision, path=bench.path, split=config.benchmark_split or "test")
    )
    result = score(config.model_path, rows, progress).model_copy(update={"benchmark": bench.name or bench.path or ""})
    Path(config.result_path).write_text(json.dumps(result.to_wire(), indent=2) + "\n")
    write_termination_message(result.termination_message(), log_prefix="twlegal-evaluation")
    return int(ExitCode.SUCCEEDED)
