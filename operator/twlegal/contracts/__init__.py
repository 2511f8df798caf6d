"""Typed contracts between the operator and its images; each has exactly one definition, here.

- operator -> trainer: TrainingConfig / EvaluationConfig (JSON mounted from a ConfigMap)
- trainer -> operator: TrainingResult / EvaluationResult (termination message + a file)
- operator -> server:  ServingLaunch (container args)
- trainer -> server:   the weights' checksum manifest (manifest: build, write, read, verify)
- trainer -> operator: the termination message, through one writer (termination)
"""

from .evaluation import EvaluationConfig, EvaluationResult
from .serving import ServingLaunch
from .training import ExitCode, ReleaseIdentity, TrainingConfig, TrainingResult

__all__ = [
    "EvaluationConfig",
    "EvaluationResult",
    "ExitCode",
    "ReleaseIdentity",
    "ServingLaunch",
    "TrainingConfig",
    "TrainingResult",
]
