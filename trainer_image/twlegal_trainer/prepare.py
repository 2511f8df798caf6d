"""Training data prepared at the real size: once per release, on the volume, shared by every rank.

The reference release's datasets hold millions of rows (Belle-Taide alone 1M-10M). Read into
Python lists and tokenised one sample at a time on every rank, that is most of an hour and tens of
GB per rank before the first step. Here instead:

- rows are read by the `datasets` library into Arrow files, memory-mapped, so memory stays flat
  in the dataset's size;
- they are normalised to messages and tokenised in batches (the fast tokenizer encodes a whole
  batch of turns in one call), in worker processes;
- packing is best-fit: the longest sample left opens a sequence, then the longest that still fits
  fills it, until nothing fits (what LLaMA-Factory's knapsack packing does);
- rank 0 writes the result under the release's checkpoint directory, keyed by everything that
  shapes it (datasets and their files, tokenizer, template, cutoff, packing); other ranks, and the
  run after a resume, load it memory-mapped in a second.

Unpacked, the samples are exactly those of `data.prepare_samples` (the reference implementation,
and the path of the `tokenizer` template): a test compares the two. The prepared samples are
removed by the prune Job once no checkpoint is kept (storage.py).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from twlegal.contracts.training import PREPARED_DIR, DatasetSource, TrainingConfig

from .chat import IGNORE
from .data import DataError, Prepared, data_files, read_files, to_messages

LAYOUT = 1  # bump when what is stored changes: old caches are then never read
STATS_FILE = "twlegal-prepared.json"
MIN_ROWS_PER_WORKER = 20_000  # below this, worker processes cost more than they save
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def cache_key(config: TrainingConfig, tokenizer_dir: str) -> str:
    """What shapes the prepared samples: the sources (and each file's size and mtime), the
    tokenizer's files, template, cutoff and packing."""
    shaping: dict[str, Any] = {
        "layout": LAYOUT,
        "datasets": [_source_identity(s) for s in config.datasets],
        "tokenizer": _files_digest(Path(tokenizer_dir)) if Path(tokenizer_dir).is_dir() else tokenizer_dir,
        "template": config.template,
        "cutoff": config.cutoff_length,
        "packing": config.packing,
    }
    text = json.dumps(shaping, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source_identity(source: DatasetSource) -> dict[str, Any]:
    identity = source.to_wire()
    if source.path:
        identity["files"] = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in data_files(source.path)]
    return identity


def _files_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        if (directory / name).is_file():
            digest.update(name.encode() + (directory / name).read_bytes())
    return digest.hexdigest()


# --- reading -------------------------------------------------------------------------------------


def _rows(source: DatasetSource, scratch: Path) -> Any:
    """The source's rows as an Arrow-backed Dataset (its first max_samples)."""
    import datasets

    if source.path:
        files = data_files(source.path)
        kinds = {BUILDERS.get(f.suffix) for f in files}
        try:
            if len(kinds) != 1 or None in kinds:
                raise ValueError("mixed file types")
            rows = datasets.load_dataset(
                kinds.pop(), data_files=[str(f) for f in files], split="train", cache_dir=str(scratch / "hf")
            )
        except Exception:  # noqa: BLE001 - the plain reader names the file and line, or copes
            rows = datasets.Dataset.from_list(read_files(source.path))
    else:
        split = source.split or "train"
        rows = datasets.load_dataset(
            source.name, source.subset, revision=source.revision, split=split, cache_dir=str(scratch / "hf")
        )
    if source.max_samples and source.max_samples < len(rows):
        rows = rows.select(range(source.max_samples))
    return rows


# --- tokenising ----------------------------------------------------------------------------------


class Llama3Batch:
    """`chat.encode_llama3` for a batch of rows: every turn's text of the batch in one tokenizer
    call, the role headers encoded once. Picklable, for the worker processes."""

    def __init__(self, tokenizer: Any, source: DatasetSource, index: int, cutoff: int):
        self.tokenizer, self.source, self.index, self.cutoff = tokenizer, source, index, cutoff
        self.headers: dict[str, list[int]] = {}

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, in one call: the Rust tokenizer's own batch (threads, no offsets)
        when there is one, else the tokenizer's batch call."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return list(self.tokenizer(texts, add_special_tokens=False)["input_ids"])

    def header(self, role: str) -> list[int]:
        if role not in self.headers:
            text = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
            self.headers[role] = list(self.tokenizer.encode(text, add_special_tokens=False))
        return self.headers[role]

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        columns = list(batch)
        conversations = []
        for i, row_index in enumerate(indices):
            row = {c: batch[c][i] for c in columns}
            try:
                conversations.append(to_messages(row, self.source.format, self.source.columns, self.source.tags))
            except DataError as exc:
                name = self.source.name or self.source.path
                raise DataError(f"dataset {self.index} ({name}) row {row_index + 1}: {exc}") from exc
        texts = [m["content"] for messages in conversations for m in messages]
        encoded = self.encode(texts) if texts else []
        bos = self.tokenizer.bos_token_id
        eot = self.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "length": [], "cut": [], "learns": []}
        at = 0
        for messages in conversations:
            ids: list[int] = [bos] if bos is not None else []
            labels: list[int] = [IGNORE] * len(ids)
            for message in messages:
                header, body = self.header(message["role"]), [*encoded[at], eot]
                at += 1
                ids += header + body
                labels += [IGNORE] * len(header) + (body if message["role"] == "assistant" else [IGNORE] * len(body))
            cut = len(ids) > self.cutoff
            ids, labels = ids[: self.cutoff], labels[: self.cutoff]
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["length"].append(len(ids))
            out["cut"].append(cut)
            out["learns"].append(any(label != IGNORE for label in labels))
        return out


# --- packing -------------------------------------------------------------------------------------


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into sequences of at most `capacity` tokens: the longest item left opens a
    sequence, then the longest item that fits the room left joins it, until none fits. Items of
    equal length are taken in their order. O(n log k) for k distinct lengths."""
    buckets: dict[int, list[int]] = defaultdict(list)
    for index in range(len(lengths) - 1, -1, -1):  # reversed, so pop() yields the first
        buckets[lengths[index]].append(index)
    present = sorted(buckets)
    bins = []

    def take(position: int) -> int:
        length = present[position]
        index = buckets[length].pop()
        if not buckets[length]:
            del present[position]
        return index

    while present:
        first = take(len(present) - 1)
        group, room = [first], capacity - lengths[first]
        while room > 0:
            position = bisect.bisect_right(present, room) - 1
            if position < 0:
                break
            index = take(position)
            group.append(index)
            room -= lengths[index]
        bins.append(group)
    return bins


def _packed(samples: Any, cutoff: int, scratch: Path) -> Any:
    """The samples concatenated bin by bin, a thousand bins at a time, in Arrow (no Python lists of
    tokens), written to disk as they go (flat memory)."""
    import datasets
    import numpy as np
    import pyarrow as pa

    lengths = samples.select_columns(["length"]).with_format("numpy")[:]["length"].tolist()
    bins = best_fit_bins(lengths, cutoff)
    ordered = samples.select([i for group in bins for i in group]).with_format("arrow")
    sizes = np.array([len(group) for group in bins], dtype=np.int64)
    ends = np.cumsum(sizes)
    groups = datasets.Dataset.from_dict({"end": ends}).with_format("arrow")

    def concat(batch: pa.Table, indices: list[int]) -> pa.Table:
        batch_ends = batch.column("end").to_numpy()
        first = int(ends[indices[0]] - sizes[indices[0]])  # the first item of the batch's first bin
        part = ordered[first : int(batch_ends[-1])]
        item_tokens = np.asarray(part.column("length").to_numpy(), dtype=np.int64)
        token_ends = np.cumsum(item_tokens)[batch_ends - first - 1]  # tokens up to each bin's last item
        offsets = pa.array(np.concatenate([[0], token_ends]).astype(np.int32))
        return pa.table(
            {
                name: pa.ListArray.from_arrays(offsets, part.column(name).combine_chunks().flatten())
                for name in ("input_ids", "labels")
            }
        )

    return groups.map(
        concat,
        with_indices=True,
        batched=True,
        batch_size=1000,
        remove_columns=["end"],
        cache_file_name=str(scratch / "packed.arrow"),
        desc="packing",
    ).with_format(None)


# --- the whole preparation ----------------------------------------------------------------------


def prepare(
    config: TrainingConfig, tokenizer: Any, tokenizer_dir: str, root: Path, rank: int = 0
) -> tuple[Any, Prepared]:
    """The prepared samples (a memory-mapped Dataset of input_ids and labels) and their counts:
    read from `root/prepared/<key>` when there, else made by rank 0 (other ranks wait for it)."""
    import datasets

    final = root / PREPARED_DIR / cache_key(config, tokenizer_dir)
    if not (final / STATS_FILE).exists():
        if rank == 0:
            _make(config, tokenizer, final)
        else:
            while not (final / STATS_FILE).exists():
                time.sleep(1)
    stats = json.loads((final / STATS_FILE).read_text(encoding="utf-8"))
    prepared = Prepared([], stats["conversations"], stats["truncated"], stats["dropped"])
    return datasets.load_from_disk(str(final / "samples")), prepared


def _make(config: TrainingConfig, tokenizer: Any, final: Path) -> None:
    import datasets

    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    scratch = partial / "scratch"
    scratch.mkdir(parents=True)
    parts = []
    for index, source in enumerate(config.datasets):
        try:
            rows = _rows(source, scratch)
        except DataError as exc:
            raise DataError(f"dataset {index} ({source.name or source.path}): {exc}") from exc
        workers = min(os.cpu_count() or 1, 8, max(1, len(rows) // MIN_ROWS_PER_WORKER))
        parts.append(
            rows.map(
                Llama3Batch(tokenizer, source, index, config.cutoff_length),
                with_indices=True,
                batched=True,
                batch_size=1000,
                num_proc=workers if workers > 1 else None,
                remove_columns=rows.column_names,
                cache_file_name=str(scratch / f"tokens-{index}.arrow"),
                desc=f"tokenising dataset {index}",
            )
        )
    samples = datasets.concatenate_datasets(parts)
    if len(samples) == 0:
        raise DataError("the datasets hold no samples")
    flags = samples.select_columns(["cut", "learns"]).with_format("numpy")[:]
    conversations = len(samples)
    dropped = int((~flags["learns"]).sum())
    truncated = int((flags["cut"] & flags["learns"]).sum())
    kept = samples.filter(
        lambda learns: learns, input_columns="learns", batched=True, cache_file_name=str(scratch / "kept.arrow")
    )
    out = (
        _packed(kept, config.cutoff_length, scratch) if config.packing else kept.select_columns(["input_ids", "labels"])
    )
    out.save_to_disk(str(partial / "samples"))
    stats = {"conversations": conversations, "truncated": truncated, "dropped": dropped, "samples": len(out)}
    (partial / STATS_FILE).write_text(json.dumps(stats) + "\n", encoding="utf-8")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
