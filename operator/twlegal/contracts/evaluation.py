"""operator -> evaluator (EvaluationConfig) and evaluator -> operator (EvaluationResult)."""

from __future__ import annotations

import json

from pydantic import ConfigDict, Field

from ..api.common import ApiModel
from ..api.sources import BenchmarkColumns, ScoringProtocol
from .progress import PORT as PROGRESS_PORT
from .termination import TERMINATION_MESSAGE_LIMIT
from .training import ModelSource, ReleaseIdentity

CONFIG_FILE = "evaluation.json"
RESULT_FILE = "twlegal-evaluation.json"
SUBJECTS_CHART_FILE = "twlegal-evaluation-subjects.png"  # beside RESULT_FILE, when there are subjects


class EvaluationConfig(ApiModel):
    release: ReleaseIdentity
    model_path: str = Field(description="Absolute directory of the trained weights.")
    benchmark: ModelSource = Field(description="Benchmark: hub dataset name (+revision, split) or path.")
    benchmark_split: str | None = None
    benchmark_subset: str | None = None
    columns: BenchmarkColumns = Field(default_factory=BenchmarkColumns)
    protocol: ScoringProtocol = "letter"
    batch_size: int = Field(16, ge=1, description="Choices scored per forward pass.")
    result_path: str = Field(description="Where the EvaluationResult JSON is written.")
    use_cpu: bool = False
    hub_offline: bool = False
    # The evaluator serves its progress here (contracts/progress.py); None: not served.
    metrics_port: int | None = Field(PROGRESS_PORT, ge=1, le=65535)

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class SubjectScore(ApiModel):
    """Accuracy on the questions of one subject."""

    name: str
    score: float = Field(ge=0, le=100)
    correct: int = Field(ge=0)
    total: int = Field(ge=1)


class EvaluationResult(ApiModel):
    model_config = ConfigDict(strict=False)

    benchmark: str
    score: float = Field(ge=0, le=100, description="Accuracy in percent.")
    correct: int = Field(ge=0)
    total: int = Field(ge=1)
    protocol: ScoringProtocol | None = None
    # Weakest first; the termination message may carry only the weakest (subject_count says how
    # many there are; the result file beside the weights keeps them all).
    subjects: list[SubjectScore] = Field(default_factory=list)
    subject_count: int = Field(0, ge=0)
    chart: str | None = Field(None, description="File name of the per-subject bar chart, beside the result.")

    def termination_message(self) -> str:
        """Compact JSON within the kubelet's 4 KiB limit: the strongest subjects go first."""
        data = self.to_wire()
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        while len(text.encode()) > TERMINATION_MESSAGE_LIMIT and data.get("subjects"):
            data["subjects"] = data["subjects"][: len(data["subjects"]) * 3 // 4]
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return text

    def summary(self, shown: int = 3) -> str | None:
        """The weakest subjects, for status: "12 subjects; weakest: 刑法 31.2, 民法 40.0, ..."."""
        if not self.subjects:
            return None
        weakest = ", ".join(f"{s.name} {s.score:g}" for s in self.subjects[:shown])
        return f"{self.subject_count or len(self.subjects)} subjects; weakest: {weakest}"
