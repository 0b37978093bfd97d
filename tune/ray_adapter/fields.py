"""What a trial's reports mean: the bookkeeping fields, the marker of a trial trained to the
end, the one-line reason of a trial that failed for good, the state they add up to, and
where its checkpoint is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Trial result fields that are bookkeeping, not metrics.
INFO_FIELDS = (
    "node_id",
    "gpu_ids",
    "cuda_visible_devices",
    "mlflow_run_id",
    "restored_from_epoch",
    "trial_name",
)
# Set in a trial's last report once `fit` has returned: the trial trained to the end.
FIT_FINISHED = "fit_finished"
# A trial's last report when it failed in a way a retry would repeat (a bad config, a NaN
# loss, a missing metric, device or weights): its one-line reason. Such a trial ends errored
# at once instead of costing max_failures retries.
TRIAL_ERROR = "trial_error"


def trial_state(last: Mapping[str, Any], error: Any) -> str:
    """completed (trained to the end), stopped_early (by ASHA), errored, or unfinished (the
    search was interrupted before the trial ended)."""
    if error is not None or last.get(TRIAL_ERROR):
        return "errored"
    if last.get(FIT_FINISHED):
        return "completed"
    if last.get("done"):
        return "stopped_early"
    return "unfinished"


def is_local(checkpoint: Any) -> bool:
    return checkpoint.filesystem.type_name == "local"


def checkpoint_location(checkpoint: Any) -> str:
    """A checkpoint's path, or its URI when it lives on remote storage (s3://...)."""
    if is_local(checkpoint):
        return checkpoint.path
    return f"{checkpoint.filesystem.type_name}://{checkpoint.path}"
