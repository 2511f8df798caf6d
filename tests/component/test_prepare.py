"""Training data prepared at the real size (issue 17): the `datasets` path gives the same samples as
the reference implementation, packs them to at least 95% non-padding tokens, is made once per
release on the volume and reused, names a bad row, and follows its inputs."""

from __future__ import annotations

import json
import random

import pytest

from tests.component.test_trainer import config_for
from twlegal_trainer import prepare as preparing
from twlegal_trainer.data import DataError, load_conversations, prepare_samples
from twlegal_trainer.prepare import best_fit_bins, prepare
from twlegal_trainer.train import load_tokenizer


def batches_share(lengths: list[int], batch_size: int) -> float:
    """Non-padding share of the batches the Trainer forms (shuffled, padded to the longest)."""
    lengths = lengths[:]
    random.Random(0).shuffle(lengths)
    real = padded = 0
    for i in range(0, len(lengths), batch_size):
        batch = lengths[i : i + batch_size]
        real, padded = real + sum(batch), padded + max(batch) * len(batch)
    return real / padded


def test_unpacked_samples_equal_the_reference_and_packed_ones_fill_95_percent(volume, tmp_path):
    config = config_for(volume).model_copy(update={"packing": False})
    tokenizer = load_tokenizer(config)
    reference = prepare_samples(load_conversations(config.datasets), tokenizer, config)
    dataset, counts = prepare(config, tokenizer, config.base_model.path, tmp_path / "ckpt")
    assert [dict(row) for row in dataset] == reference.samples
    assert (counts.conversations, counts.truncated, counts.dropped) == (
        reference.conversations,
        reference.truncated,
        reference.dropped,
    )

    packed_config = config.model_copy(update={"packing": True})
    packed, _ = prepare(packed_config, tokenizer, config.base_model.path, tmp_path / "ckpt")
    lengths = [len(ids) for ids in packed["input_ids"]]
    assert max(lengths) <= config.cutoff_length
    tokens = sorted(t for row in packed["input_ids"] for t in row)
    assert tokens == sorted(t for s in reference.samples for t in s["input_ids"]), "every token, once"
    batch = config.hyperparameters.per_device_batch_size
    share = batches_share(lengths, batch)
    old = [
        len(s["input_ids"])
        for s in prepare_samples(load_conversations(config.datasets), tokenizer, packed_config).samples
    ]
    assert share >= 0.95 > batches_share(old, batch), (share, batches_share(old, batch))


def test_prepared_once_and_reused_until_an_input_changes(volume, tmp_path, monkeypatch):
    config = config_for(volume)
    tokenizer = load_tokenizer(config)
    root = tmp_path / "ckpt"
    first, _ = prepare(config, tokenizer, config.base_model.path, root)
    (made,) = (root / "prepared").iterdir()

    def never(*args):
        raise AssertionError("prepared again")

    monkeypatch.setattr(preparing, "_make", never)
    again, _ = prepare(config, tokenizer, config.base_model.path, root, rank=1)  # a second rank reads it
    assert again["input_ids"] == first["input_ids"]
    monkeypatch.undo()

    other = config.model_copy(update={"cutoff_length": config.cutoff_length // 2})
    prepare(other, tokenizer, config.base_model.path, root)
    data = volume / "datasets" / "tw-legal-alpaca.jsonl"
    data.write_text(data.read_text(encoding="utf-8") + json.dumps({"instruction": "q", "output": "a"}) + "\n")
    _, counts = prepare(config, tokenizer, config.base_model.path, root)
    assert counts.conversations == 217
    assert made in set((root / "prepared").iterdir()) and len(list((root / "prepared").iterdir())) == 3


def test_a_bad_row_is_named_by_dataset_and_row(volume, tmp_path):
    config = config_for(volume)
    data = volume / "datasets" / "tw-legal-alpaca.jsonl"
    data.write_text(data.read_text(encoding="utf-8") + json.dumps({"instruction": "q", "response": "a"}) + "\n")
    with pytest.raises(
        DataError, match=r"dataset 1 \(.*tw-legal-alpaca.jsonl\) row 109: a alpaca sample lacks 'output'"
    ):
        prepare(config, load_tokenizer(config), config.base_model.path, tmp_path / "ckpt")


def test_best_fit_fills_each_sequence_with_the_longest_that_fits():
    assert best_fit_bins([5, 3, 8, 2, 6, 1], capacity=10) == [[2, 3], [4, 1, 5], [0]]
    lengths = [random.Random(i).randint(1, 200) for i in range(5000)]
    bins = best_fit_bins(lengths, capacity=256)
    assert sorted(i for b in bins for i in b) == list(range(5000))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    assert sum(lengths) / (256 * len(bins)) > 0.97
