"""Datasets in the common SFT formats, normalised to chat messages, mixed in the order given, and
tokenised into the samples the Trainer learns from.

Formats: alpaca (instruction/input/output, optional system/history), messages (OpenAI-style
role/content), sharegpt (conversations of from/value, as LLaMA-Factory names them), or auto.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twlegal.contracts.training import DatasetSource, TrainingConfig

from .chat import IGNORE, encode_llama3, encode_with_tokenizer_template, pack

Message = dict[str, str]
Sample = dict[str, list[int]]  # input_ids and labels, as the Collator batches them
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "observation": "user",
    "function_call": "assistant",
}


class DataError(ValueError):
    """A dataset that cannot be read or does not match its format (not retriable)."""


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    raise DataError(f"cannot tell the format of a sample with columns {sorted(row)}")


def to_messages(row: dict[str, Any], fmt: str) -> list[Message]:
    fmt = detect_format(row) if fmt == "auto" else fmt
    try:
        if fmt == "messages":
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        elif fmt == "sharegpt":
            messages = [{"role": SHAREGPT_ROLES[m["from"]], "content": m["value"]} for m in row["conversations"]]
            if row.get("system"):
                messages.insert(0, {"role": "system", "content": row["system"]})
        elif fmt == "alpaca":
            messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
            for user, assistant in row.get("history") or []:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            prompt = row["instruction"] + (("\n" + row["input"]) if row.get("input") else "")
            messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
        else:
            raise DataError(f"unknown format {fmt}")
    except (KeyError, TypeError) as exc:
        raise DataError(f"a {fmt} sample lacks {exc}") from exc
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("a sample has no assistant turn to learn from")
    return messages


FILE_TYPES = (".json", ".jsonl", ".parquet", ".csv")


def _read_file(path: Path) -> list[dict[str, Any]]:
    """The rows of one file; a line or byte that cannot be read is named with the file and line."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix not in FILE_TYPES:
        raise DataError(f"{path}: unsupported file type (use {', '.join(FILE_TYPES)})")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM is not part of the first row
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if path.suffix == ".csv":
        import csv
        import io

        return list(csv.DictReader(io.StringIO(text, newline="")))
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {number}: not JSON ({exc.msg} at column {exc.colno})") from exc
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not JSON ({exc.msg} at column {exc.colno})") from exc
    return data if isinstance(data, list) else data.get("data", [])


def read_files(location: str) -> list[dict[str, Any]]:
    """Every row of a file, or of the data files of a folder in name order."""
    path = Path(location)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix in FILE_TYPES) if path.is_dir() else [path]
    return [row for f in files for row in _read_file(f)]


def read_rows(source: DatasetSource) -> list[dict[str, Any]]:
    if source.path:
        rows = read_files(source.path)
    else:
        import datasets  # hub datasets: revision pinned as the release asks

        rows = list(datasets.load_dataset(source.name, revision=source.revision, split=source.split or "train"))
    return rows[: source.max_samples] if source.max_samples else rows


def load_conversations(sources: Iterable[DatasetSource]) -> list[list[Message]]:
    """Every dataset's samples as chat messages, in the order the release lists them."""
    conversations = []
    for index, source in enumerate(sources):
        try:
            conversations += [to_messages(row, source.format) for row in read_rows(source)]
        except DataError as exc:
            raise DataError(f"dataset {index} ({source.name or source.path}): {exc}") from exc
    if not conversations:
        raise DataError("the datasets hold no samples")
    return conversations


def load_dataset_info(path: Path, names: list[str]) -> list[DatasetSource]:
    """LLaMA-Factory's dataset_info.json entries -> DatasetSources (a thin adapter, no dependency)."""
    info = json.loads(path.read_text(encoding="utf-8"))
    sources = []
    for name in names:
        entry = info[name]
        fmt = "sharegpt" if entry.get("formatting") == "sharegpt" else "alpaca"
        if entry.get("columns", {}).get("messages") == "messages":
            fmt = "messages"
        if "file_name" in entry:
            sources.append(DatasetSource(path=str(path.parent / entry["file_name"]), format=fmt))
        else:
            sources.append(
                DatasetSource(
                    name=entry["hf_hub_url"], revision=entry.get("revision"), split=entry.get("split"), format=fmt
                )
            )
    return sources


def training_samples(conversations: list[list[Message]], tokenizer: Any, config: TrainingConfig) -> list[Sample]:
    """The conversations tokenised in the release's template (cut to the cutoff), those left with
    nothing to learn dropped (every label masked: the cutoff fell before any reply), and packed
    when the release asks: the dataset the Trainer gets, in order."""
    encode = encode_llama3 if config.template == "llama3" else encode_with_tokenizer_template
    examples = [encode(tokenizer, messages, config.cutoff_length) for messages in conversations]
    examples = [e for e in examples if any(label != IGNORE for label in e.labels)]
    if config.packing:
        examples = pack(examples, config.cutoff_length)
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
