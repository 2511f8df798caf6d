"""The twlegal trainer: the operator's TrainingConfig -> supervised fine-tuning with transformers
(+ DeepSpeed) -> published weights and a TrainingResult; and `evaluate` for the scoring Job."""
