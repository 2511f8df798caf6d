"""Benchmarks as the field writes them (issue 17): TMMLU+'s letter columns in CSV, TW-LegalBench's
`options` list with letter answers and subjects, JSON-string and letter-keyed choices, a column
mapping, and bad rows named precisely; the per-subject tally and what of it fits a termination
message."""

from __future__ import annotations

import json

import pytest

from twlegal.api.sources import BenchmarkColumns
from twlegal.contracts.evaluation import EvaluationConfig, EvaluationResult
from twlegal.contracts.termination import TERMINATION_MESSAGE_LIMIT
from twlegal.contracts.training import ModelSource, ReleaseIdentity
from twlegal_trainer.benchmark import Question, load, questions
from twlegal_trainer.data import DataError
from twlegal_trainer.evaluate import continuations, prompt, tally


def config(path: str = "", columns: BenchmarkColumns | None = None) -> EvaluationConfig:
    return EvaluationConfig(
        release=ReleaseIdentity(namespace="default", name="r", model="m", version="v1.0.0"),
        model_path="/weights",
        benchmark=ModelSource(path=path or "/bench.jsonl"),
        columns=columns or BenchmarkColumns(),
        result_path="/weights/result.json",
    )


def test_tmmlu_plus_csv_with_letter_columns_and_a_bom(tmp_path):
    csv = tmp_path / "tmmlu.csv"
    csv.write_bytes(
        "\ufeffquestion,A,B,C,D,answer,subject\n"
        '"依民法，成年為幾歲？",十六歲,十八歲,二十歲,"二十一歲, 足",B,民法\n'
        "刑法第1條？,罪刑法定,從舊從輕,屬地,屬人,A,刑法\n".encode()
    )
    got, where = load(config(str(csv)))
    assert where == str(csv)
    assert got == [
        Question(1, "依民法，成年為幾歲？", ("十六歲", "十八歲", "二十歲", "二十一歲, 足"), 1, "民法"),
        Question(2, "刑法第1條？", ("罪刑法定", "從舊從輕", "屬地", "屬人"), 0, "刑法"),
    ]


def test_tw_legalbench_options_list_with_letter_answers_in_any_spelling():
    rows = [
        {"question": "q1", "options": ["a", "b", "c", "d"], "answer": "(C)", "subject": "民法"},
        {"question": "q2", "options": json.dumps(["a", "b"]), "answer": "b.", "subject": "民法"},
        {"question": "q3", "options": {"B": "y", "A": "x"}, "answer": 1, "subject": ""},
        {"question": "q4", "options": ["a", "b", "c"], "answer": "2"},
    ]
    got = questions(rows, config(), "bench")
    assert [(q.answer, q.choices, q.subject) for q in got] == [
        (2, ("a", "b", "c", "d"), "民法"),
        (1, ("a", "b"), "民法"),
        (1, ("x", "y"), None),
        (2, ("a", "b", "c"), None),
    ]


def test_a_column_mapping_names_the_parts_of_a_benchmark_named_otherwise():
    rows = [{"題目": "q", "甲": "x", "乙": "y", "丙": "z", "答案": "C", "科目": "行政法"}]
    columns = BenchmarkColumns(question="題目", choice_columns=["甲", "乙", "丙"], answer="答案", subject="科目")
    (q,) = questions(rows, config(columns=columns), "bench")
    assert (q.text, q.choices, q.answer, q.subject) == ("q", ("x", "y", "z"), 2, "行政法")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"question": "q", "choices": ["a", "b"], "answer": "C"},
            "bench row 2: the answer 'C' is not one of its 2 choices (A-B)",
        ),
        (
            {"question": "q", "choices": ["a", "b"], "answer": 5},
            "bench row 2: the answer 5 is not one of its 2 choices",
        ),
        ({"question": "q", "choices": ["a"], "answer": 0}, "bench row 2: expected at least two choices"),
        ({"question": "q", "choices": "not json", "answer": 0}, "bench row 2: column 'choices' is text"),
        ({"choices": ["a", "b"], "answer": 0}, "bench row 2: no column 'question'"),
    ],
)
def test_a_bad_row_is_an_error_naming_the_row(row, expected):
    good = {"question": "q", "choices": ["a", "b"], "answer": 0}
    with pytest.raises(DataError) as err:
        questions([good, row], config(), "bench")
    assert expected in str(err.value)


def test_choices_that_cannot_be_found_say_how_to_name_them():
    with pytest.raises(DataError, match=r"expected a list column \(choices or options\) or letter columns.*columns"):
        questions([{"question": "q", "first": "a", "second": "b", "answer": 0}], config(), "bench")


def test_unreadable_files_are_named_with_their_line(tmp_path):
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n\n{"question": oops}\n')
    with pytest.raises(DataError, match=rf"{jsonl} line 3: not JSON"):
        load(config(str(jsonl)))
    latin = tmp_path / "c.csv"
    latin.write_bytes(b"question,A,B,answer\nq,a,b,A\nq,\xe9,b,A\n")
    with pytest.raises(DataError, match=rf"{latin} line 3: not UTF-8"):
        load(config(str(latin)))


def test_prompt_and_continuations_follow_lm_eval_multiple_choice():
    q = Question(1, " 成年幾歲？\n", ("十八歲", "二十歲"), 0)
    assert prompt(q) == "成年幾歲？\nA. 十八歲\nB. 二十歲\nAnswer:"
    assert continuations(q, "letter") == ["A", "B"]
    assert continuations(q, "choiceText") == ["十八歲", "二十歲"]


def test_tally_scores_overall_and_by_subject_weakest_first():
    qs = [Question(i, "q", ("a", "b"), 0, subject) for i, subject in enumerate(["民法", "民法", "刑法", "刑法", None])]
    result = tally(qs, [0, 1, 1, 1, 0], "letter")
    assert (result.score, result.correct, result.total) == (40.0, 2, 5)
    assert [(s.name, s.score, s.correct, s.total) for s in result.subjects] == [
        ("刑法", 0.0, 0, 2),
        ("民法", 50.0, 1, 2),
    ]
    assert result.summary() == "2 subjects; weakest: 刑法 0, 民法 50"


def test_many_subjects_fit_the_termination_message_keeping_the_weakest():
    qs = [Question(i, "q", ("a", "b"), 0, f"科目{i:03d}-行政法總論與各論") for i in range(400)]
    result = tally(qs, [0 if i % 3 else 1 for i in range(400)], "letter")
    message = result.termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    carried = EvaluationResult.model_validate_json(message)
    assert carried.subject_count == 400 and 10 < len(carried.subjects) < 400
    assert carried.subjects == result.subjects[: len(carried.subjects)]  # the weakest kept
    assert carried.score == result.score
