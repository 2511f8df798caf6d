"""A multiple-choice benchmark as the field writes it, read into questions the scorer can use.

The shapes met in practice: choices as a list column (`choices`, TW-LegalBench's `options`, also a
JSON string of a list or a letter-keyed dict) or as letter columns (TMMLU+'s `A,B,C,D`); answers as
a letter, `(B)`, `B.` or a 0-based index; a subject column for per-subject accuracy. Names that
differ come from the release's `columns`. A row that cannot be read is an error naming the row.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import Any

from twlegal.contracts.evaluation import EvaluationConfig

from .data import DataError, read_files

LETTERS = string.ascii_uppercase[:8]
LIST_COLUMNS = ("choices", "options")


@dataclass(frozen=True)
class Question:
    row: int  # 1-based, as a spreadsheet or `sed -n` would count it
    text: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    subject: str | None = None


def load(config: EvaluationConfig) -> tuple[list[Question], str]:
    """The benchmark's questions and where they came from (for messages)."""
    bench = config.benchmark
    if bench.path:
        rows, where = read_files(bench.path), bench.path
    else:
        rows, where = _hub_rows(config), f"{bench.name} ({config.benchmark_split or 'default split'})"
    if not rows:
        raise DataError(f"benchmark {where} has no rows")
    return questions(rows, config, where), where


def _hub_rows(config: EvaluationConfig) -> list[dict[str, Any]]:
    import datasets

    bench = config.benchmark
    splits = datasets.load_dataset(bench.name, config.benchmark_subset, revision=bench.revision)
    split = config.benchmark_split or ("test" if "test" in splits else next(iter(splits)) if len(splits) == 1 else None)
    if split is None or split not in splits:
        raise DataError(
            f"benchmark {bench.name} has the splits {sorted(splits)}; set spec.evaluation.benchmark.split to one of them"
        )
    return list(splits[split])


def questions(rows: list[dict[str, Any]], config: EvaluationConfig, where: str) -> list[Question]:
    columns = config.columns
    question = columns.question or "question"
    answer = columns.answer or "answer"
    subject = columns.subject or ("subject" if "subject" in rows[0] else None)
    picked = _choice_columns(rows[0], config)
    out = []
    for number, row in enumerate(rows, start=1):
        at = f"{where} row {number}"
        for needed in (question, answer, *(picked if isinstance(picked, list) else [picked])):
            if needed not in row:
                raise DataError(
                    f"{at}: no column {needed!r} (columns: {', '.join(sorted(row))}); "
                    "name it in spec.evaluation.benchmark.columns"
                )
        choices = _choices(row, picked, at)
        out.append(
            Question(
                row=number,
                text=str(row[question]),
                choices=choices,
                answer=_answer_index(row[answer], len(choices), at),
                subject=str(row[subject]) if subject and row.get(subject) not in (None, "") else None,
            )
        )
    return out


def _choice_columns(first: dict[str, Any], config: EvaluationConfig) -> str | list[str]:
    """The list column holding the choices, or the letter columns, decided on the first row."""
    columns = config.columns
    if columns.choices:
        return columns.choices
    if columns.choice_columns:
        return list(columns.choice_columns)
    for name in LIST_COLUMNS:
        if name in first:
            return name
    letters = [c for c in LETTERS if c in first]
    if len(letters) >= 2 and letters == list(LETTERS[: len(letters)]):
        return letters
    raise DataError(
        f"cannot find the choices among the columns {', '.join(sorted(first))}: expected a list column "
        "(choices or options) or letter columns A, B, C, ...; name them in spec.evaluation.benchmark.columns"
    )


def _choices(row: dict[str, Any], picked: str | list[str], at: str) -> tuple[str, ...]:
    if isinstance(picked, list):
        values: Any = [row[c] for c in picked]
    else:
        values = row[picked]
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except json.JSONDecodeError as exc:
                raise DataError(f"{at}: column {picked!r} is text, not a list of choices") from exc
        if isinstance(values, dict):  # {"A": ..., "B": ...}
            values = [values[k] for k in sorted(values)]
    if not isinstance(values, list | tuple) or len(values) < 2:
        raise DataError(f"{at}: expected at least two choices, found {values!r:.80}")
    if len(values) > len(LETTERS):
        raise DataError(f"{at}: {len(values)} choices; at most {len(LETTERS)} are supported")
    return tuple("" if v is None else str(v) for v in values)


def _answer_index(value: Any, count: int, at: str) -> int:
    """A letter ("B", "(B)", "B."), a 0-based index, or an index as text."""
    if isinstance(value, bool) or value is None:
        index = -1
    elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        index = int(value)
    else:
        text = str(value).strip().strip("().:：） （").upper()
        index = LETTERS.index(text) if len(text) == 1 and text in LETTERS else int(text) if text.isdigit() else -1
    if not 0 <= index < count:
        raise DataError(f"{at}: the answer {value!r} is not one of its {count} choices (A-{LETTERS[count - 1]})")
    return index
