"""What the driver hooks into Tune: the Optuna searcher that hears every epoch, the MLflow
state of each trial, and a watchdog for requests no node can hold."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.search.optuna import OptunaSearch

from tune import outbox
from tune.ray_adapter.cluster import (
    ClusterError,
    describe_nodes,
    fits_somewhere,
    node_request,
    node_resources,
)
from tune.ray_adapter.fields import (
    FIT_FINISHED,
    TRIAL_ERROR,
    checkpoint_location,
    trial_state,
)
from tune.tracking import Tracker


class EpochOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling the study what ASHA did.

    Every epoch's value is an intermediate value at ``step = epoch`` (Ray's own class uses its
    iteration counter and skips the result on which a trial is stopped). A trial that ends
    without training to the end (stopped by ASHA) is told as PRUNED, Optuna's convention:
    TPE then ranks it below the finished ones instead of taking its 1-epoch score for a final
    one, and optuna-dashboard shows it as pruned with its curve.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reported: dict[str, set[int]] = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._report_epoch(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if result:
            self._report_epoch(trial_id, result)
        error = error or bool(result and result.get(TRIAL_ERROR))
        pruned = bool(result) and not error and not result.get(FIT_FINISHED)
        if not pruned or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        import optuna

        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _report_epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        value, epoch = result.get(self.metric), result.get("epoch")
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if value is None or epoch is None or not math.isfinite(float(value)):
            return
        seen = self._reported.setdefault(trial_id, set())
        if int(epoch) not in seen:  # the last epoch comes again with the final scores
            seen.add(int(epoch))
            self._ot_trials[trial_id].report(float(value), int(epoch))


# ----------------------------------------------------------------------------- callbacks


class TrialStateCallback(tune.Callback):
    """Ends each trial's MLflow child run with how the trial ended (driver side), sending
    first what the trial's last checkpoint holds unsent (`tune.outbox`); it waits for MLflow
    a few seconds at most, and what is not sent the search's end sends."""

    def __init__(self, tracker: Tracker, parent_run_id: str) -> None:
        self.tracker = tracker
        self.parent_run_id = parent_run_id

    def _settle(self, trial: Any, state: str, tags: Mapping[str, str]) -> None:
        if not hasattr(self, "_courier"):  # not pickled: Tune saves callbacks in tuner.pkl
            self._courier = outbox.Courier(self.tracker, self.parent_run_id)
        checkpoint = trial.checkpoint
        where = None if checkpoint is None else checkpoint_location(checkpoint)
        outbox.settle(self._courier, trial.trial_id, str(trial), where, state, tags)
        self._courier.send()

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "parent_run_id": self.parent_run_id}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {"done": True}
        state = trial_state(last, None)
        tags = {TRIAL_ERROR: last[TRIAL_ERROR]} if last.get(TRIAL_ERROR) else {}
        self._settle(trial, state if state != "unfinished" else "stopped_early", tags)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._settle(trial, "errored", {})


class FeasibilityWatchdog(tune.Callback):
    """Stops the search if no alive node can host a trial any more (a GPU node gone, say):
    pending trials would otherwise wait forever."""

    def __init__(self, request: dict[str, float], every_s: float = 5.0) -> None:
        self.request = node_request(request)
        self.every_s = every_s
        self._last = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        if not any(t.status == "PENDING" for t in trials):
            return
        nodes = node_resources()
        if not fits_somewhere(self.request, nodes):
            raise ClusterError(
                f"no node of the Ray cluster can run a trial asking for {_request_text(self.request)} "
                f"({describe_nodes(nodes)}); add such a node or lower resources in the space file"
            )


def _request_text(request: Mapping[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in request.items() if v and not math.isnan(v))
