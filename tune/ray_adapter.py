"""Every Ray call of the project, in one place, so a Ray API change touches one file.

Uses the current ``ray.tune`` API only: ``tune.report``, ``tune.get_checkpoint``,
``tune.get_context``, ``tune.Tuner``/``Tuner.restore``, ``tune.RunConfig``,
``tune.FailureConfig``, ``tune.CheckpointConfig``; Optuna through ``OptunaSearch`` with an
RDB storage, ASHA through ``ASHAScheduler``.

Inside a trial (worker side): :func:`report`, :func:`restore_checkpoint`, :func:`trial_dir`,
:func:`trial_id`, :func:`trial_name`, :func:`placement`.

On the driver: :func:`connect` / :func:`disconnect`, :func:`node_resources`,
:func:`run_job` (a :class:`TuneJob`: an Optuna+ASHA search or a fixed list of trial configs,
fresh or resumed) returning one :class:`TrialRecord` per trial, and :func:`fetch_checkpoint`.
`tune.search` builds jobs; the ablation suite should go through `tune.search.run_trials`
rather than through this module.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from tune import outbox
from tune.spec import WRAPPER, TrialSpec, spec_of
from tune.tracking import Tracker

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


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the search; the message says what to change."""


# ----------------------------------------------------------------------------- cluster


def connect(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> bool:
    """Join the cluster at ``address`` ('auto' or host:port), else start Ray locally.

    Returns whether this call started Ray (and so should stop it). An already initialised
    Ray session (tests share one per module) is reused as it is.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        # "local" always starts a fresh instance: a bare ray.init() would join whatever
        # cluster last ran on this machine, or hang on one that died.
        address = "local"
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise ClusterError(
            f"cannot join the Ray cluster at {address} ({err}); start it with "
            "'ray start --head' or drop --address to run locally"
        ) from None
    return True


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def node_resources() -> list[dict[str, float]]:
    """Total resources of every alive node (CPU, GPU, memory, custom)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def fits_somewhere(request: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Whether one node alone can host a trial asking for ``request`` (Ray places a trial's
    resources on a single node)."""
    return any(
        all(node.get(key, 0.0) + 1e-9 >= amount for key, amount in request.items() if amount > 0)
        for node in nodes
    )


def node_request(resources: Mapping[str, float]) -> dict[str, float]:
    """A trial's ``{"cpu": 1, "gpu": 0.5}`` in the node resource names (``CPU``, ``GPU``)."""
    return {key.upper() if key in ("cpu", "gpu") else key: v for key, v in resources.items()}


def describe_nodes(nodes: Sequence[Mapping[str, float]]) -> str:
    def one(n: Mapping[str, float]) -> str:
        return f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU"

    return f"{len(nodes)} node(s): " + "; ".join(one(n) for n in nodes)


# ----------------------------------------------------------------------------- in a trial


def report(metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
    """Report one epoch to Tune; the checkpoint directory is copied to the run's storage."""
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    tune.report(dict(metrics), checkpoint=checkpoint)


def restore_checkpoint(dest: Path, usable: Callable[[Path], bool] = lambda _: True) -> Path | None:
    """Copy the trial's newest Tune checkpoint that ``usable`` accepts (a retry or a resume)
    to ``dest``: the latest first, then the older ones Tune kept, so a checkpoint damaged in
    the crash that caused the retry is passed over. None on a fresh start, or when none is
    usable."""
    latest = tune.get_checkpoint()
    if latest is None:
        return None
    for checkpoint in [latest, *_older_checkpoints(latest)]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            checkpoint.to_directory(str(dest))
        except Exception:  # noqa: BLE001 - an unreadable copy is as unusable as a bad file
            continue
        if usable(dest):
            return dest
        logging.getLogger(__name__).warning(
            "checkpoint %s is damaged; trying an older one", checkpoint.path
        )
    shutil.rmtree(dest, ignore_errors=True)
    return None


def _older_checkpoints(latest: Any) -> list[Any]:
    """The trial's other kept checkpoints (``checkpoint_NNNNNN`` beside the latest), newest
    first."""
    import pyarrow.fs

    parent = str(Path(latest.path).parent)
    try:
        infos = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return []
    names = sorted(
        (
            i.path
            for i in infos
            if Path(i.path).name.startswith("checkpoint_") and i.path != latest.path
        ),
        reverse=True,
    )
    return [tune.Checkpoint(p, filesystem=latest.filesystem) for p in names]


def quiet_trial_logs() -> None:
    """Ray logs every persisted checkpoint at INFO; the trial table says enough."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def trial_dir() -> Path:
    path = Path(tune.get_context().get_trial_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def trial_id() -> str:
    return tune.get_context().get_trial_id()


def trial_name() -> str:
    return tune.get_context().get_trial_name()


def placement() -> dict[str, str]:
    """Where this trial runs: the Ray node id, the GPU ids Ray assigned to it, and the
    CUDA_VISIBLE_DEVICES its CUDA calls see (which Ray sets from those ids)."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }


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


def _record(result: Any) -> TrialRecord:
    last = dict(result.metrics or {})
    config = dict(result.config or {})
    history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    spec = spec_of(config)
    name = spec.name or str(last.get("trial_name") or Path(result.path).name)
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    if result.checkpoint is not None and not _is_local(result.checkpoint):
        checkpoint = f"{result.checkpoint.filesystem.type_name}://{result.checkpoint.path}"
    error = last.get(TRIAL_ERROR) or (None if result.error is None else _first_line(result.error))
    return TrialRecord(
        trial_id=str(last.get("trial_id") or Path(result.path).name.rsplit("_", 1)[-1]),
        name=name,
        state=trial_state(last, result.error),
        spec=spec,
        last=last,
        history=history,
        checkpoint=checkpoint,
        error=error,
        path=result.path,
    )


def _is_local(checkpoint: Any) -> bool:
    return checkpoint.filesystem.type_name == "local"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray wraps the trial's exception; its own message is the last line.
    return (lines[-1] if lines else type(error).__name__)[:500]


def fetch_checkpoint(uri_or_path: str, dest: Path) -> Path:
    """A local copy of a trial checkpoint (a path, or a URI on s3:// and friends)."""
    checkpoint = tune.Checkpoint(uri_or_path)
    if _is_local(checkpoint):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory(str(dest)))


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
        where = None if checkpoint is None else checkpoint.path
        if checkpoint is not None and not _is_local(checkpoint):
            where = f"{checkpoint.filesystem.type_name}://{checkpoint.path}"
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
