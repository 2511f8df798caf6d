"""operator -> evaluator (EvaluationConfig) and evaluator -> operator (EvaluationResult)."""

from __future__ import annotations

import json

from pydantic import ConfigDict, Field

from ..api.common import ApiModel
from .progress import PORT as PROGRESS_PORT
from .training import ModelSource, ReleaseIdentity

CONFIG_FILE = "evaluation.json"
RESULT_FILE = "twlegal-evaluation.json"


class EvaluationConfig(ApiModel):
    release: ReleaseIdentity
    model_path: str = Field(description="Absolute directory of the trained weights.")
    benchmark: ModelSource = Field(description="Benchmark: hub dataset name (+revision, split) or path.")
    benchmark_split: str | None = None
    result_path: str = Field(description="Where the EvaluationResult JSON is written.")
    use_cpu: bool = False
    hub_offline: bool = False
    # The evaluator serves its progress here (contracts/progress.py); None: not served.
    metrics_port: int | None = Field(PROGRESS_PORT, ge=1, le=65535)

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class EvaluationResult(ApiModel):
    model_config = ConfigDict(strict=False)

    benchmark: str
    score: float = Field(ge=0, le=100, description="Accuracy in percent.")
    correct: int = Field(ge=0)
    total: int = Field(ge=1)

    def termination_message(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)
