"""Tune jobs on the driver: a search (Optuna + ASHA) or a fixed list of trial configs, fresh
or resumed, run to one TrialRecord per trial."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from tune.ray_adapter.callbacks import EpochOptunaSearch, FeasibilityWatchdog, TrialStateCallback
from tune.ray_adapter.fields import TRIAL_ERROR, checkpoint_location, is_local, trial_state
from tune.spec import WRAPPER, TrialSpec, spec_of
from tune.tracking import Tracker

# ----------------------------------------------------------------------------- jobs


@dataclass
class OptunaPlan:
    """An Optuna search: a define-by-run function and a study persisted in an RDB store.

    ``record_pruned=False`` keeps Ray's stock bookkeeping (every trial COMPLETE with its last
    value, intermediate values at Tune's iteration counter); only the search benchmark uses
    it, to show what recording ASHA's stops changes.
    """

    define_by_run: Callable[[Any], dict[str, Any] | None]
    sampler: Any
    study_url: str
    study_name: str
    num_samples: int
    record_pruned: bool = True


@dataclass
class AshaPlan:
    max_t: int
    grace_period: int
    reduction_factor: float


@dataclass
class TuneJob:
    """One Tune experiment. Exactly one of ``optuna`` and ``grid`` is set."""

    name: str
    storage: str
    trainable: Callable[..., None]
    context: Any
    resources: Mapping[str, float]
    metric: str
    mode: str
    max_concurrent_trials: int
    optuna: OptunaPlan | None = None
    grid: Sequence[TrialSpec] | None = None
    asha: AshaPlan | None = None
    max_failures: int = 3
    keep_checkpoints: int = 2
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    verbose: int = 1
    check_every_s: float = 5.0
    extra_callbacks: list[Any] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


@dataclass
class TrialRecord:
    """How one trial ended, read back from Tune's results."""

    trial_id: str
    name: str
    state: str  # completed, stopped_early or errored
    spec: TrialSpec  # its overrides (and, in a fixed list, its name and tags)
    last: dict[str, Any]
    history: pd.DataFrame
    checkpoint: str | None
    error: str | None
    path: str


def can_resume(experiment_path: str) -> bool:
    """Whether Tune left a restorable experiment state at this path or URI."""
    return tune.Tuner.can_restore(experiment_path)


def run_job(
    job: TuneJob, resume: bool = False, retry_errored: bool = False
) -> tuple[list[TrialRecord], bool]:
    """Run (or resume) the job to the end. Returns the trials and whether it was interrupted
    (Ctrl-C): Tune then saves its state, and ``resume=True`` carries on."""
    trainable = tune.with_resources(
        tune.with_parameters(job.trainable, context=job.context), dict(job.resources)
    )
    if resume:
        tuner = tune.Tuner.restore(
            job.path, trainable=trainable, resume_unfinished=True, resume_errored=retry_errored
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(job),
            tune_config=_tune_config(job),
            run_config=_run_config(job),
        )
    # Keeping a few checkpoints per trial forces frequent experiment snapshots; that is the
    # intended trade-off, not a problem to warn about at every epoch.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A deterministic failure's last report holds its reason, not the metric.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    _stop_on_sigterm()
    grid = tuner.fit()
    records = [_record(result) for result in grid]
    interrupted = any(r.state == "unfinished" for r in records)
    return records, interrupted


def _stop_on_sigterm() -> None:
    """A scheduler's SIGTERM stops the search as Ctrl-C does (Tune saves its state and the
    command prints how to resume). ray.init installs a handler that aborts the process, so
    this one goes in after it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


def _param_space(job: TuneJob) -> dict[str, Any]:
    if job.grid is not None:
        return {WRAPPER: tune.grid_search([t.to_tune() for t in job.grid])}
    return {}


def _tune_config(job: TuneJob) -> tune.TuneConfig:
    searcher = None
    num_samples = 1
    if job.optuna is not None:
        import optuna

        # One study in sqlite beside the results: a resumed search keeps its sampler's
        # history, and optuna-dashboard can open it while the search runs.
        storage = optuna.storages.RDBStorage(job.optuna.study_url)
        searcher_class = EpochOptunaSearch if job.optuna.record_pruned else OptunaSearch
        searcher = searcher_class(
            space=job.optuna.define_by_run,
            metric=job.metric,
            mode=job.mode,
            sampler=job.optuna.sampler,
            study_name=job.optuna.study_name,
            storage=storage,
        )
        num_samples = job.optuna.num_samples
    if job.asha is not None:
        # time_attr is the epoch the trial reports, not Tune's own iteration counter, so a
        # repeated report (the final one) cannot move a trial up a rung.
        scheduler: Any = ASHAScheduler(
            time_attr="epoch",
            max_t=job.asha.max_t,
            grace_period=job.asha.grace_period,
            reduction_factor=job.asha.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(
        metric=job.metric,
        mode=job.mode,
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=num_samples,
        max_concurrent_trials=job.max_concurrent_trials,
        trial_name_creator=_trial_name,
        trial_dirname_creator=_trial_name,
        # A new trial reuses a finished trial's worker process: importing torch and the
        # trainer costs more than a quick trial's training.
        reuse_actors=True,
    )


def _trial_name(trial: Any) -> str:
    name = spec_of(trial.config).name if isinstance(trial.config, Mapping) else ""
    if name:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return f"{safe}_{trial.trial_id}"
    return f"trial_{trial.trial_id}"


def _run_config(job: TuneJob) -> tune.RunConfig:
    callbacks: list[Any] = [FeasibilityWatchdog(dict(job.resources), job.check_every_s)]
    if job.tracker is not None and job.parent_run_id is not None:
        callbacks.append(TrialStateCallback(job.tracker, job.parent_run_id))
    callbacks.extend(job.extra_callbacks)
    return tune.RunConfig(
        name=job.name,
        storage_path=job.storage,
        failure_config=tune.FailureConfig(max_failures=job.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=job.keep_checkpoints),
        callbacks=callbacks,
        verbose=job.verbose,
    )


def _record(result: Any) -> TrialRecord:
    last = dict(result.metrics or {})
    config = dict(result.config or {})
    history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    spec = spec_of(config)
    # A trial that never started has no config in Tune's results: its folder, named by
    # _trial_name as NAME_TRIALID (Tune's id is RUN_INDEX), still says which it was.
    folder_name, _, folder_id = Path(result.path).name.rpartition("_")
    folder_name, _, run_id = folder_name.rpartition("_")
    name = spec.name or str(last.get("trial_name") or folder_name)
    checkpoint = None if result.checkpoint is None else checkpoint_location(result.checkpoint)
    error = last.get(TRIAL_ERROR) or (None if result.error is None else _first_line(result.error))
    return TrialRecord(
        trial_id=str(last.get("trial_id") or f"{run_id}_{folder_id}"),
        name=name,
        state=trial_state(last, result.error),
        spec=spec,
        last=last,
        history=history,
        checkpoint=checkpoint,
        error=error,
        path=result.path,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray wraps the trial's exception; its own message is the last line.
    return (lines[-1] if lines else type(error).__name__)[:500]


def fetch_checkpoint(uri_or_path: str, dest: Path) -> Path:
    """A local copy of a trial checkpoint (a path, or a URI on s3:// and friends)."""
    checkpoint = tune.Checkpoint(uri_or_path)
    if is_local(checkpoint):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory(str(dest)))
