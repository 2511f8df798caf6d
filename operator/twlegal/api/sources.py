"""Where a release's data comes from: training datasets and the evaluation benchmark, each a hub
dataset (pinned) or files on the storage volume, with the column names of the shapes the field
publishes. Part of `spec` (api/spec.py); the trainer and the evaluator read the same models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from .common import ApiModel, RepoId, Revision, cel, relative_path, rules

NAME_XOR_PATH = cel("has(self.name) != has(self.path)", "exactly one of name or path must be set")
REVISION_NEEDS_NAME = cel("!has(self.revision) || has(self.name)", "revision only applies to a hub name, not to a path")
SUBSET_NEEDS_NAME = cel("!has(self.subset) || has(self.name)", "subset only applies to a hub name, not to a path")
SPLIT_NEEDS_NAME = cel("!has(self.split) || has(self.name)", "split only applies to a hub name, not to a path")
HUB_OR_PATH = (NAME_XOR_PATH, REVISION_NEEDS_NAME, SPLIT_NEEDS_NAME, SUBSET_NEEDS_NAME)  # a dataset or benchmark


HubSubset = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)]  # a config name
DatasetFormat = Literal["auto", "alpaca", "messages", "sharegpt"]
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DatasetColumns(ApiModel):
    """Where a dataset keeps its parts, for datasets whose columns are named otherwise (LLaMA-Factory's
    `columns`). Unset fields keep the format's own names."""

    messages: ColumnName | None = Field(
        None, description="Column of the turns, a list or a JSON string of one (default: messages, or conversations)."
    )
    instruction: ColumnName | None = Field(
        None, description="Alpaca: column of the instruction (default: instruction)."
    )
    input: ColumnName | None = Field(None, description="Alpaca: column of the input (default: input).")
    output: ColumnName | None = Field(None, description="Alpaca: column of the reply (default: output).")
    system: ColumnName | None = Field(None, description="Column of the system prompt (default: system).")
    history: ColumnName | None = Field(
        None, description="Alpaca: column of earlier [prompt, reply] pairs (default: history)."
    )


class DatasetTags(ApiModel):
    """How the turns of a messages or sharegpt dataset name their parts (LLaMA-Factory's `tags`)."""

    role_tag: ColumnName | None = Field(None, description="Key of a turn's role (default: role, or from).")
    content_tag: ColumnName | None = Field(None, description="Key of a turn's text (default: content, or value).")
    user_tag: ColumnName | None = Field(None, description="Role value of the user (default: user or human).")
    assistant_tag: ColumnName | None = Field(
        None, description="Role value of the assistant (default: assistant or gpt)."
    )
    system_tag: ColumnName | None = Field(None, description="Role value of a system turn (default: system).")


class DatasetRef(ApiModel):
    """One training dataset: a hub dataset (optionally pinned) or a file/directory on the storage volume."""

    model_config = ConfigDict(json_schema_extra=rules(*HUB_OR_PATH))

    name: RepoId | None = Field(None, description="Hub dataset id, e.g. lianghsun/tw-legal-nlp.")
    revision: Revision | None = Field(
        None, description="Hub revision of the dataset. Unpinned datasets are flagged in the model card."
    )
    subset: HubSubset | None = Field(None, description="Hub configuration (subset) name.")
    split: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\[\]:%+-]+$", max_length=64)] | None = Field(
        None, description="Split to train on (default: train)."
    )
    path: str | None = relative_path(
        "CSV, JSON, JSONL or Parquet file (or a directory of them) on the storage volume.", default=None
    )
    format: DatasetFormat = Field(
        "auto",
        description="Sample format: alpaca (instruction/input/output), messages (chat role/content), "
        "sharegpt (conversations from/value), or auto (from the columns; a row with messages and alpaca "
        "columns is read as messages).",
    )
    columns: DatasetColumns | None = Field(None, description="Column names, where they differ from the format's.")
    tags: DatasetTags | None = Field(None, description="Keys and role values of the turns, where they differ.")
    max_samples: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Use at most this many samples of the dataset (the first ones)."
    )


# How a question is scored (README "Evaluation"): `letter` is lm-evaluation-harness's protocol for
# exam-style tasks such as TMMLU+ and MMLU (the question and its lettered choices, then "Answer:",
# scored on the answer letter); `choiceText` scores each choice's own text instead, for models too
# small to map letters. Either way the most likely choice is the answer (lm-eval's `acc`).
ScoringProtocol = Literal["letter", "choiceText"]


class BenchmarkColumns(ApiModel):
    """Where a benchmark keeps its parts, for benchmarks whose columns are named otherwise. Unset
    fields are found by the names the field uses: question; choices or options (a list), else the
    letter columns A, B, C, ...; answer (a letter, "(B)", or a 0-based index); subject."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!(has(self.choices) && has(self.choiceColumns))",
                "set choices (a list column) or choiceColumns, not both",
            )
        )
    )

    question: ColumnName | None = Field(None, description="Column of the question text (default: question).")
    choices: ColumnName | None = Field(
        None, description="Column holding the choices as a list (default: choices or options)."
    )
    choice_columns: list[ColumnName] | None = Field(
        None,
        min_length=2,
        max_length=8,
        description="Columns holding one choice each, in letter order, e.g. [A, B, C, D].",
    )
    answer: ColumnName | None = Field(None, description="Column of the correct answer (default: answer).")
    subject: ColumnName | None = Field(
        None,
        description="Column naming each question's subject, for per-subject accuracy (default: subject, if present).",
    )


class BenchmarkRef(ApiModel):
    """A multiple-choice benchmark (CSV, JSON, JSONL or Parquet), from the hub or the volume."""

    model_config = ConfigDict(json_schema_extra=rules(*HUB_OR_PATH))

    name: RepoId | None = Field(None, description="Hub dataset id, e.g. lianghsun/tw-legal-benchmark-v1.")
    revision: Revision | None = Field(None, description="Hub revision of the benchmark (pin it: a commit or tag).")
    subset: HubSubset | None = Field(None, description="Hub configuration (subset) name, e.g. a TMMLU+ subject.")
    split: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)] | None = Field(
        None, description="Split to score on (default: test if the dataset has one, else its only split)."
    )
    path: str | None = relative_path(
        "CSV, JSON, JSONL or Parquet file (or a folder of them) on the storage volume.", default=None
    )
    columns: BenchmarkColumns | None = Field(None, description="Column names, where they differ from the usual ones.")
    protocol: ScoringProtocol = Field(
        "letter", description="How a question is scored: letter (lm-eval's) or choiceText."
    )
