"""Datasets in the common SFT formats, normalised to chat messages, mixed in the order given, and
tokenised into the samples the Trainer learns from.

Formats: alpaca (instruction/input/output, optional system/history), messages (OpenAI-style
role/content), sharegpt (conversations of from/value, as LLaMA-Factory names them), or auto.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twlegal.api.sources import DatasetColumns, DatasetTags
from twlegal.contracts.training import DatasetSource, TrainingConfig

from .chat import IGNORE, encode_llama3, encode_with_tokenizer_template, pack

Message = dict[str, str]
Sample = dict[str, list[int]]  # input_ids and labels, as the Collator batches them
# Role names as datasets write them (OpenAI, ShareGPT, LLaMA-Factory) -> the chat roles.
ROLES = {
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


def detect_format(row: dict[str, Any], columns: DatasetColumns | None = None) -> str:
    """messages first (a row may carry alpaca columns beside its messages), then sharegpt, alpaca."""
    columns = columns or DatasetColumns()
    if columns.messages and _present(row.get(columns.messages)):
        return "messages"
    if _present(row.get("messages")):
        return "messages"
    if _present(row.get("conversations")):
        return "sharegpt"
    if (columns.instruction or "instruction") in row and (columns.output or "output") in row:
        return "alpaca"
    raise DataError(f"cannot tell the format of a sample with columns {sorted(row)}")


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def to_messages(
    row: dict[str, Any], fmt: str, columns: DatasetColumns | None = None, tags: DatasetTags | None = None
) -> list[Message]:
    columns, tags = columns or DatasetColumns(), tags or DatasetTags()
    fmt = detect_format(row, columns) if fmt == "auto" else fmt
    system = row.get(columns.system or "system")
    try:
        if fmt in ("messages", "sharegpt"):
            default = "messages" if fmt == "messages" else "conversations"
            messages = _turns(row[columns.messages or default], tags)
        elif fmt == "alpaca":
            messages = []
            for user, assistant in row.get(columns.history or "history") or []:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            parts = (_required(row, columns.instruction or "instruction"), row.get(columns.input or "input"))
            prompt = "\n".join(str(p) for p in parts if p)
            messages += [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": str(_required(row, columns.output or "output"))},
            ]
        else:
            raise DataError(f"unknown format {fmt}")
    except (KeyError, TypeError) as exc:
        raise DataError(f"a {fmt} sample lacks {exc}") from exc
    if system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": str(system)})
    # An empty system turn says nothing; the chat template would still spend tokens on it.
    messages = [m for m in messages if m["role"] != "system" or m["content"].strip()]
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("a sample has no assistant turn to learn from")
    return messages


def _required(row: dict[str, Any], key: str) -> Any:
    """row[key]; a column that Arrow filled with None for this row counts as missing."""
    if row.get(key) is None:
        raise KeyError(key)
    return row[key]


def _turns(value: Any, tags: DatasetTags) -> list[Message]:
    """A list of turns, or the JSON string of one (as several hub datasets store `messages`)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"its turns are text that is not JSON ({exc.msg})") from exc
    if not isinstance(value, list):
        raise DataError(f"its turns are {type(value).__name__}, not a list")
    roles = dict(ROLES)
    for tag, role in ((tags.user_tag, "user"), (tags.assistant_tag, "assistant"), (tags.system_tag, "system")):
        if tag:
            roles[tag] = role
    messages = []
    for turn in value:
        role_key = tags.role_tag or ("role" if "role" in turn else "from")
        content_key = tags.content_tag or ("content" if "content" in turn else "value")
        name = turn[role_key]
        if name not in roles:
            raise DataError(f"a turn has the role {name!r}; name the roles in the dataset's tags")
        messages.append({"role": roles[name], "content": "" if turn[content_key] is None else str(turn[content_key])})
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


def data_files(location: str) -> list[Path]:
    """A file, or the data files of a folder in name order."""
    path = Path(location)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    return sorted(p for p in path.rglob("*") if p.suffix in FILE_TYPES) if path.is_dir() else [path]


def read_files(location: str) -> list[dict[str, Any]]:
    """Every row of a file, or of the data files of a folder in name order."""
    return [row for f in data_files(location) for row in _read_file(f)]


def read_rows(source: DatasetSource) -> list[dict[str, Any]]:
    if source.path:
        rows = read_files(source.path)
    else:
        import datasets  # hub datasets: revision pinned as the release asks

        split = source.split or "train"
        if source.max_samples and "[" not in split:
            split = f"{split}[:{source.max_samples}]"  # read no more of a large dataset than is used
        rows = list(datasets.load_dataset(source.name, source.subset, revision=source.revision, split=split))
    return rows[: source.max_samples] if source.max_samples else rows


def load_conversations(sources: Iterable[DatasetSource]) -> list[list[Message]]:
    """Every dataset's samples as chat messages, in the order the release lists them; a sample that
    cannot be read is named by its dataset and row."""
    conversations = []
    for index, source in enumerate(sources):
        where = f"dataset {index} ({source.name or source.path})"
        try:
            rows = read_rows(source)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from exc
        for number, row in enumerate(rows, start=1):
            try:
                conversations.append(to_messages(row, source.format, source.columns, source.tags))
            except DataError as exc:
                raise DataError(f"{where} row {number}: {exc}") from exc
    if not conversations:
        raise DataError("the datasets hold no samples")
    return conversations


# LLaMA-Factory's names in dataset_info.json -> ours.
LF_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history",
              "system": "system", "messages": "messages"}  # fmt: skip
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag"}


def load_dataset_info(path: Path, names: list[str]) -> list[DatasetSource]:
    """LLaMA-Factory's dataset_info.json entries -> DatasetSources (a thin adapter, no dependency):
    file_name or hf_hub_url (+revision, subset, split), formatting, columns, tags, num_samples."""
    info = json.loads(path.read_text(encoding="utf-8"))
    sources = []
    for name in names:
        if name not in info:
            raise DataError(f"{path}: no dataset named {name!r} (it has {', '.join(sorted(info))})")
        entry = info[name]
        fmt = "sharegpt" if entry.get("formatting") == "sharegpt" else "alpaca"
        mapped = {LF_COLUMNS[k]: v for k, v in (entry.get("columns") or {}).items() if k in LF_COLUMNS}
        tags = {k: v for k, v in (entry.get("tags") or {}).items() if k in LF_TAGS}
        if fmt == "sharegpt" and (tags.get("role_tag"), tags.get("content_tag")) == ("role", "content"):
            fmt = "messages"  # OpenAI-style turns, as LLaMA-Factory's sharegpt with role/content tags
        common = {
            "format": fmt,
            "columns": DatasetColumns.model_validate(mapped),
            "tags": DatasetTags.model_validate(tags),
            "max_samples": entry.get("num_samples"),
        }
        if "file_name" in entry:
            sources.append(DatasetSource(path=str(path.parent / entry["file_name"]), **common))
        elif "hf_hub_url" in entry:
            sources.append(
                DatasetSource(
                    name=entry["hf_hub_url"],
                    revision=entry.get("revision"),
                    subset=entry.get("subset"),
                    split=entry.get("split"),
                    **common,
                )
            )
        else:
            raise DataError(f"{path}: dataset {name!r} has neither file_name nor hf_hub_url")
    return sources


@dataclass
class Prepared:
    """The samples the Trainer learns from, and what the cutoff did to the conversations."""

    samples: list[Sample]
    conversations: int
    truncated: int  # cut at the cutoff with some reply left: learnt in part
    dropped: int  # cut before any reply: nothing to learn, left out

    def warnings(self, cutoff: int) -> list[str]:
        said = []
        if self.truncated:
            said.append(
                f"{self.truncated} of {self.conversations} samples were cut at cutoffLength {cutoff} "
                "(their replies are learnt in part)"
            )
        if self.dropped:
            said.append(
                f"{self.dropped} of {self.conversations} samples lost every reply token to cutoffLength {cutoff} "
                "and were left out"
            )
        return said

    def refusal(self, cutoff: int, max_percent: float) -> str | None:
        """Why the run must not go on with these samples, or None."""
        percent = 100.0 * self.dropped / self.conversations if self.conversations else 0.0
        if percent <= max_percent:
            return None
        return (
            f"{self.dropped} of {self.conversations} samples ({percent:.1f}%) lose every reply token to "
            f"cutoffLength {cutoff}, more than maxDroppedSamplesPercent {max_percent:g}: raise cutoffLength "
            "or leave out the long samples"
        )


def prepare_samples(conversations: list[list[Message]], tokenizer: Any, config: TrainingConfig) -> Prepared:
    """The conversations tokenised in the release's template (cut to the cutoff), those left with
    nothing to learn dropped (every label masked: the cutoff fell before any reply), and packed
    when the release asks: the dataset the Trainer gets, in order, with the cuts counted."""
    encode = encode_llama3 if config.template == "llama3" else encode_with_tokenizer_template
    examples, truncated, dropped = [], 0, 0
    for messages in conversations:
        example = encode(tokenizer, messages, config.cutoff_length)
        if not any(label != IGNORE for label in example.labels):
            dropped += 1
            continue
        cut = len(example.input_ids) == config.cutoff_length
        if cut and len(encode(tokenizer, messages, 1 << 30).input_ids) > config.cutoff_length:
            truncated += 1
        examples.append(example)
    if config.packing:
        examples = pack(examples, config.cutoff_length)
    samples = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    return Prepared(samples, len(conversations), truncated, dropped)


def training_samples(conversations: list[list[Message]], tokenizer: Any, config: TrainingConfig) -> list[Sample]:
    return prepare_samples(conversations, tokenizer, config).samples
