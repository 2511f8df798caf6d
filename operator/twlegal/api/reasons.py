"""The condition types and reasons the operator writes, named once (as cert-manager keeps its
reasons in one file): a reason typed as a bare string in three places drifts, and users match
on these in alerts, Argo CD health checks and scripts.

Reasons are CamelCase, as metav1.Condition requires; an Event's reason uses the same words.
"""

from __future__ import annotations

# --- condition types ---------------------------------------------------------------------------
TRAINED = "Trained"
EVALUATED = "Evaluated"
DEPLOYED = "Deployed"
READY = "Ready"
INPUTS_PINNED = "InputsPinned"  # not a stage: whether the release says exactly what it trains on
CONDITION_TYPES = (TRAINED, EVALUATED, DEPLOYED, READY, INPUTS_PINNED)

# --- inputs ------------------------------------------------------------------------------------
PINNED = "Pinned"
UNPINNED_DATASET = "UnpinnedDataset"

# --- training ----------------------------------------------------------------------------------
JOB_CREATED = "JobCreated"
TRAINING_JOB_CREATED = "TrainingJobCreated"
SCHEDULING = "Scheduling"
TRAINING_PENDING = "TrainingPending"
TRAINING = "Training"
TRAINING_STARTED = "TrainingStarted"
CHECKPOINT_SAVED = "CheckpointSaved"  # the run's first complete checkpoint: resumable from here on
RESUMED = "Resumed"  # an attempt resumed from a checkpoint (after a preemption, an OOM, a restart)
TRAINED_OK = "Trained"
LOSS_DIVERGED = "LossDiverged"
JOB_FAILED = "JobFailed"
OOM_KILLED = "OOMKilled"
# A stage pod that cannot start: the kubelet's or the scheduler's own reason is the condition's.
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
START_DEADLINE_EXCEEDED = "StartDeadlineExceeded"
STALE_CHILDREN = "StaleChildren"  # an earlier release of this name still has objects here
FINAL_LOSS_TOO_HIGH = "FinalLossTooHigh"

# --- evaluation --------------------------------------------------------------------------------
NOT_CONFIGURED = "NotConfigured"
EVALUATING = "Evaluating"
EVALUATION_STARTED = "EvaluationStarted"
EVALUATION_FAILED = "EvaluationFailed"
SCORE_BELOW_THRESHOLD = "ScoreBelowThreshold"
PASSED = "Passed"

# --- serving -----------------------------------------------------------------------------------
SERVING_DISABLED = "ServingDisabled"
TRAINED_ONLY = "TrainedOnly"
COMPLETED = "Completed"
ROLLING_OUT = "RollingOut"
ROLLOUT_STARTED = "RolloutStarted"
ROLLOUT_COMPLETE = "RolloutComplete"
SERVING = "Serving"
SUPERSEDED = "Superseded"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
ROLLED_BACK = "RolledBack"
# A serving release's own Deployment changing (an edit, an operator upgrade, a rotated key).
UPDATING = "Updating"
UPDATE_STARTED = "UpdateStarted"
UPDATE_ROLLED_BACK = "UpdateRolledBack"
UPDATE_FAILED = "UpdateFailed"

# --- storage -----------------------------------------------------------------------------------
STORAGE_UNSET = "StorageUnset"
STORAGE_CONFLICT = "StorageConflict"
STORAGE_FULL = "StorageFull"
CHECKPOINTS_PRUNED = "CheckpointsPruned"
PRUNE_FAILED = "PruneFailed"
RECLAIMING = "Reclaiming"
STORAGE_RECLAIMED = "StorageReclaimed"
RECLAIM_FAILED = "ReclaimFailed"
WEIGHTS_KEPT = "WeightsKept"

# --- outcomes on the Ready condition -----------------------------------------------------------
FAILED = "Failed"
REJECTED = "Rejected"

# --- findings about a release's own inputs (policies/consistency.py) ----------------------------
WARMUP_NOT_BELOW_TOTAL_STEPS = "WarmupNotBelowTotalSteps"
BATCH_LARGER_THAN_EPOCH = "BatchLargerThanEpoch"
LAST_BATCH_NEARLY_EMPTY = "LastBatchNearlyEmpty"
