"""The trainer's dataset formats and LLaMA-Factory adapter (no model needed)."""

from __future__ import annotations

import json

import pytest

from twlegal.contracts.training import DatasetSource
from twlegal_trainer.chat import Example, pack
from twlegal_trainer.data import DataError, load_conversations, load_dataset_info, to_messages


def test_the_three_formats_become_the_same_messages():
    want = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q\nctx"},
        {"role": "assistant", "content": "a"},
    ]
    assert to_messages({"system": "s", "instruction": "q", "input": "ctx", "output": "a"}, "auto") == want
    assert to_messages({"messages": want}, "auto") == want
    assert (
        to_messages(
            {"system": "s", "conversations": [{"from": "human", "value": "q\nctx"}, {"from": "gpt", "value": "a"}]},
            "sharegpt",
        )
        == want
    )


def test_alpaca_history_becomes_earlier_turns():
    messages = to_messages({"instruction": "q2", "output": "a2", "history": [["q1", "a1"]]}, "alpaca")
    assert [m["content"] for m in messages] == ["q1", "a1", "q2", "a2"]


@pytest.mark.parametrize(
    "row,fmt,message",
    [
        ({"text": "x"}, "auto", "cannot tell the format"),
        ({"instruction": "q"}, "alpaca", "lacks"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages", "no assistant turn"),
    ],
)
def test_bad_samples_are_reported(row, fmt, message):
    with pytest.raises(DataError, match=message):
        to_messages(row, fmt)


def test_datasets_are_mixed_in_the_order_given_and_errors_name_the_dataset(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "1", "output": "A"}) + "\n")
    (tmp_path / "b.json").write_text(
        json.dumps([{"messages": [{"role": "user", "content": "2"}, {"role": "assistant", "content": "B"}]}])
    )
    convs = load_conversations(
        [DatasetSource(path=str(tmp_path / "a.jsonl")), DatasetSource(path=str(tmp_path / "b.json"))]
    )
    assert [c[-1]["content"] for c in convs] == ["A", "B"]
    with pytest.raises(DataError, match=r"dataset 1 .*does not exist"):
        load_conversations(
            [DatasetSource(path=str(tmp_path / "a.jsonl")), DatasetSource(path=str(tmp_path / "none.jsonl"))]
        )


def test_llama_factory_dataset_info_is_adapted(tmp_path):
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "judgments": {"file_name": "judgments.json", "formatting": "sharegpt"},
                "laws": {"hf_hub_url": "lianghsun/tw-law-article-qa", "revision": "abc123", "split": "train"},
            }
        )
    )
    sources = load_dataset_info(tmp_path / "dataset_info.json", ["judgments", "laws"])
    assert sources[0] == DatasetSource(path=str(tmp_path / "judgments.json"), format="sharegpt")
    assert (sources[1].name, sources[1].revision, sources[1].format) == (
        "lianghsun/tw-law-article-qa",
        "abc123",
        "alpaca",
    )


def test_packing_keeps_whole_examples_in_order():
    examples = [Example([i] * n, [i] * n) for i, n in enumerate([40, 50, 30, 90, 10])]
    packed = pack(examples, cutoff=100)
    assert [len(p.input_ids) for p in packed] == [90, 30, 100]
    assert [x for p in packed for x in p.input_ids] == [x for e in examples for x in e.input_ids]
