"""The trainer's dataset formats and LLaMA-Factory adapter (no model needed)."""

from __future__ import annotations

import json

import pytest

from twlegal.api.sources import DatasetColumns, DatasetTags
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


# --- The formats as the reference release's datasets really are (issue 17) ----------------------

CHAT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_messages_stored_as_a_json_string_beside_alpaca_columns_are_read_as_messages():
    # tw-legal-qa-chat, tw-judgment-gist-chat: `messages` is a JSON string; the same row carries
    # alpaca columns with an empty instruction.
    row = {"messages": json.dumps(CHAT, ensure_ascii=False), "instruction": "", "input": "q", "output": "a"}
    assert to_messages(row, "auto") == CHAT
    assert to_messages(row, "messages") == CHAT
    assert to_messages(row, "alpaca") == CHAT  # the declared format picks: the empty instruction is left out


def test_empty_system_turns_are_dropped_and_a_system_column_is_kept():
    row = {"messages": [{"role": "system", "content": " "}, *CHAT]}
    assert to_messages(row, "auto") == CHAT
    sharegpt = {"system": "s", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert to_messages(sharegpt, "auto") == [{"role": "system", "content": "s"}, *CHAT]
    assert to_messages({"system": "", "instruction": "q", "output": "a"}, "auto") == CHAT


def test_column_mapping_and_tags_read_datasets_named_otherwise():
    row = {"dialog": [{"speaker": "客戶", "text": "q"}, {"speaker": "律師", "text": "a"}], "sys": "s"}
    columns = DatasetColumns(messages="dialog", system="sys")
    tags = DatasetTags(role_tag="speaker", content_tag="text", user_tag="客戶", assistant_tag="律師")
    assert to_messages(row, "sharegpt", columns, tags) == [{"role": "system", "content": "s"}, *CHAT]
    alpaca = {"問": "q", "答": "a"}
    assert to_messages(alpaca, "auto", DatasetColumns(instruction="問", output="答")) == CHAT
    with pytest.raises(DataError, match="the role '法官'; name the roles in the dataset's tags"):
        to_messages({"messages": [{"role": "法官", "content": "x"}]}, "messages")


def test_a_bad_sample_is_named_by_dataset_and_row(tmp_path):
    rows = [{"messages": CHAT}, {"messages": "[{not json"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"dataset 0 \(.*d.jsonl\) row 2: its turns are text that is not JSON"):
        load_conversations([DatasetSource(path=str(tmp_path / "d.jsonl"))])


def test_csv_datasets_are_read_and_max_samples_takes_the_first(tmp_path):
    (tmp_path / "d.csv").write_text("instruction,input,output\nq1,,a1\nq2,ctx,a2\nq3,,a3\n", encoding="utf-8")
    convs = load_conversations([DatasetSource(path=str(tmp_path / "d.csv"), max_samples=2)])
    assert [c[0]["content"] for c in convs] == ["q1", "q2\nctx"]


def test_llama_factory_columns_tags_subset_and_num_samples_are_adapted(tmp_path):
    (tmp_path / "dataset_info.json").write_text(
        json.dumps(
            {
                "qa": {
                    "hf_hub_url": "lianghsun/tw-legal-qa-chat",
                    "revision": "abc123",
                    "subset": "default",
                    "split": "train",
                    "formatting": "sharegpt",
                    "columns": {"messages": "messages", "system": "system_prompt"},
                    "tags": {
                        "role_tag": "role",
                        "content_tag": "content",
                        "user_tag": "user",
                        "assistant_tag": "assistant",
                    },
                    "num_samples": 1000,
                },
                "local": {"file_name": "x.json", "columns": {"prompt": "q", "query": "ctx", "response": "a"}},
            }
        )
    )
    qa, local = load_dataset_info(tmp_path / "dataset_info.json", ["qa", "local"])
    assert (qa.format, qa.subset, qa.split, qa.max_samples) == ("messages", "default", "train", 1000)
    assert (qa.columns.messages, qa.columns.system, qa.tags.role_tag) == ("messages", "system_prompt", "role")
    assert (local.format, local.columns.instruction, local.columns.input, local.columns.output) == (
        "alpaca",
        "q",
        "ctx",
        "a",
    )
    with pytest.raises(DataError, match="no dataset named 'missing'"):
        load_dataset_info(tmp_path / "dataset_info.json", ["missing"])
