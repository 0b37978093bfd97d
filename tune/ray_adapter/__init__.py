"""Every Ray call of the project, in one package, so a Ray API change touches one place.

Uses the current ``ray.tune`` API only: ``tune.report``, ``tune.get_checkpoint``,
``tune.get_context``, ``tune.Tuner``/``Tuner.restore``, ``tune.RunConfig``,
``tune.FailureConfig``, ``tune.CheckpointConfig``; Optuna through ``OptunaSearch`` with an
RDB storage, ASHA through ``ASHAScheduler``.

- :mod:`~tune.ray_adapter.cluster`: :func:`connect` / :func:`disconnect` and what the nodes
  offer (:func:`node_resources`).
- :mod:`~tune.ray_adapter.worker`, inside a trial: :func:`report`, :func:`restore_checkpoint`,
  :func:`trial_dir`, :func:`trial_id`, :func:`trial_name`, :func:`placement`.
- :mod:`~tune.ray_adapter.job`, on the driver: :func:`run_job` (a :class:`TuneJob`: an
  Optuna+ASHA search or a fixed list of trial configs, fresh or resumed) returning one
  :class:`TrialRecord` per trial, and :func:`fetch_checkpoint`.
- :mod:`~tune.ray_adapter.callbacks`: the epoch-aware Optuna searcher and the driver callbacks.
- :mod:`~tune.ray_adapter.fields`: what a trial's reports mean (:func:`trial_state`).

`tune.search` builds jobs; the ablation suite goes through `tune.search`, never through here.
"""

from tune.ray_adapter.callbacks import EpochOptunaSearch, FeasibilityWatchdog, TrialStateCallback
from tune.ray_adapter.cluster import (
    ClusterError,
    connect,
    describe_nodes,
    disconnect,
    fits_somewhere,
    node_request,
    node_resources,
)
from tune.ray_adapter.fields import FIT_FINISHED, INFO_FIELDS, TRIAL_ERROR, trial_state
from tune.ray_adapter.job import (
    AshaPlan,
    OptunaPlan,
    TrialRecord,
    TuneJob,
    can_resume,
    fetch_checkpoint,
    run_job,
)
from tune.ray_adapter.worker import (
    placement,
    quiet_trial_logs,
    report,
    restore_checkpoint,
    trial_dir,
    trial_id,
    trial_name,
)

__all__ = [
    "FIT_FINISHED",
    "INFO_FIELDS",
    "TRIAL_ERROR",
    "AshaPlan",
    "ClusterError",
    "EpochOptunaSearch",
    "FeasibilityWatchdog",
    "OptunaPlan",
    "TrialRecord",
    "TrialStateCallback",
    "TuneJob",
    "can_resume",
    "connect",
    "describe_nodes",
    "disconnect",
    "fetch_checkpoint",
    "fits_somewhere",
    "node_request",
    "node_resources",
    "placement",
    "quiet_trial_logs",
    "report",
    "restore_checkpoint",
    "run_job",
    "trial_dir",
    "trial_id",
    "trial_name",
    "trial_state",
]
