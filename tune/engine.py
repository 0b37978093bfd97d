"""How one search or fixed list of trials runs: the checks before Ray starts, the MLflow
parent run and the manifest a resume reads, the Tune job, then the summary and each trial's
child run settled. `tune.search` is the public face; this module is its engine.

A :class:`Plan` says what to run (a search or a list), independent of how: `execute` is the
same for both, so both get the same preflight, storage, resume, retries and MLflow layout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moodtheme.config import ConfigError, build_config
from tune import outbox, preflight, ray_adapter
from tune.manifest import ManifestError, differences, read_manifest, write_manifest
from tune.ray_adapter import TrialRecord, TuneJob
from tune.seed_noise import SeedNoise, Separation
from tune.space import Resources
from tune.summary import Summary, write_summary
from tune.tracking import Tracker, resolve_uri
from tune.trial import TrialContext, run_trial

STUDY_DB = "optuna.db"


@dataclass
class RunOptions:
    """Run-level settings shared by searches and fixed lists of trials."""

    name: str | None = None  # results folder and MLflow experiment; default: the space name
    storage: str = "ray_results"  # a directory, or a URI (s3://...) for multi-node runs
    address: str | None = None  # "auto" or host:port joins a cluster; None starts Ray here
    resume: bool = False
    mlflow_uri: str | None = None  # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    tracking: bool = True
    data: str | None = None  # melspec root; None: the cached synthetic dataset
    max_failures: int = 3
    keep_checkpoints: int = 2
    num_cpus: float | None = None  # only when Ray starts here
    num_gpus: float | None = None
    data_sample: int = preflight.DATA_SAMPLE
    set_overrides: Mapping[str, Any] = field(default_factory=dict)  # --set, recorded for resume
    retry_errored: bool = False  # with resume: errored trials run again from their checkpoint
    verbose: int = 1
    extra_callbacks: list[Any] = field(default_factory=list)


@dataclass
class Outcome:
    name: str
    path: str
    records: list[TrialRecord]
    table: pd.DataFrame
    summary: Summary | None
    parent_run_id: str | None
    interrupted: bool
    metric: str
    mode: str
    tracker: Tracker | None = None
    noise: SeedNoise | None = None  # the best configuration under other seeds (noise_seeds)
    separation: Separation | None = None

    @property
    def best(self) -> TrialRecord | None:
        if self.table.empty:
            return None
        best_id = self.table.iloc[0]["trial_id"]
        return next(r for r in self.records if r.trial_id == best_id)


class SearchError(RuntimeError):
    """A search that cannot start or resume; the message says what to do."""


@dataclass
class Plan:
    kind: str
    name: str
    preset: str
    fixed: dict[str, Any]
    metric: str
    mode: str
    resources: Resources
    max_concurrent_trials: int
    source: str
    params: dict[str, Any]
    example: dict[str, Any]  # one trial's own overrides: a whole config for the checks
    experiment: str | None = None  # MLflow experiment; None: the plan's name
    role: str = "search"  # the MLflow parent run's tune_role tag
    definition: dict[str, Any] = field(default_factory=dict)  # what a resume must match


def execute(
    plan: Plan, options: RunOptions, job_parts: Any, space_file: Path | None = None
) -> Outcome:
    storage = preflight.check_storage(options.storage)
    exp_dir = f"{storage.rstrip('/')}/{plan.name}"
    local_exp = None if preflight.is_uri(storage) else Path(exp_dir)
    resources = {"cpu": plan.resources.cpu, "gpu": plan.resources.gpu}
    resumable = ray_adapter.can_resume(exp_dir)
    if options.resume and not resumable:
        raise SearchError(f"nothing to resume at {exp_dir}; run without --resume to start")
    if not options.resume and resumable:
        raise SearchError(
            f"{exp_dir} already holds a search; pass --resume to continue it, "
            "or --name NEW to start another"
        )
    manifest = _checked_manifest(exp_dir, plan, options) if options.resume else None
    if options.tracking and manifest is None:
        resolve_uri(options.mlflow_uri)  # a bad sqlite path is refused before Ray starts

    started_ray = False
    try:
        # The data and tracking checks import torch and MLflow: run them while Ray starts.
        with ThreadPoolExecutor(max_workers=1) as pool:
            checks = pool.submit(_preflight, plan, options, manifest)
            try:
                started_ray = ray_adapter.connect(
                    options.address, num_cpus=options.num_cpus, num_gpus=options.num_gpus
                )
            finally:
                fixed, tracker = checks.result()
        preflight.check_resources(resources, ray_adapter.node_resources(), plan.source)

        parent_id = _open_parent(plan, options, exp_dir, fixed, tracker, manifest, space_file)
        job = _tune_job(plan, options, storage, fixed, tracker, parent_id, job_parts(exp_dir))
        try:
            records, interrupted = ray_adapter.run_job(
                job, resume=options.resume, retry_errored=options.retry_errored
            )
        except BaseException:  # a failure, or a second Ctrl-C that cut Tune short
            if tracker is not None and parent_id is not None:  # --resume reopens it
                outbox.attempt(tracker.finish_parent, parent_id, True)
            raise
    finally:
        if started_ray:
            ray_adapter.disconnect()

    return _finish(plan, job, records, interrupted, tracker, parent_id, local_exp, exp_dir)


def _open_parent(
    plan: Plan,
    options: RunOptions,
    exp_dir: str,
    fixed: Mapping[str, Any],
    tracker: Tracker | None,
    manifest: Mapping[str, Any] | None,
    space_file: Path | None,
) -> str | None:
    """The MLflow parent run (reopened on resume) and, on a first start, the manifest that a
    resume reads. Returns the parent's run id."""
    if not preflight.is_uri(exp_dir):
        Path(exp_dir).mkdir(parents=True, exist_ok=True)
        if not options.resume:
            (Path(exp_dir) / STUDY_DB).unlink(missing_ok=True)  # left by an aborted start
    parent_id = manifest.get("parent_run_id") if manifest else None
    if tracker is not None:
        if parent_id:
            tracker.reopen(parent_id)
        else:
            parent_id = tracker.start_parent(plan.name, plan.params, plan.role)
            if space_file is not None:
                tracker.log_artifact(parent_id, space_file)
    if manifest is None:
        write_manifest(exp_dir, _manifest(plan, options, fixed, tracker, parent_id))
    return parent_id


def _tune_job(
    plan: Plan,
    options: RunOptions,
    storage: str,
    fixed: dict[str, Any],
    tracker: Tracker | None,
    parent_id: str | None,
    parts: Mapping[str, Any],
) -> TuneJob:
    context = TrialContext(
        preset=plan.preset,
        fixed=fixed,
        metric=plan.metric,
        gpu_fraction=plan.resources.gpu,
        tracker=tracker,
        parent_run_id=parent_id,
    )
    return TuneJob(
        name=plan.name,
        storage=storage,
        trainable=run_trial,
        context=context,
        resources={"cpu": plan.resources.cpu, "gpu": plan.resources.gpu},
        metric=plan.metric,
        mode=plan.mode,
        max_concurrent_trials=plan.max_concurrent_trials,
        max_failures=options.max_failures,
        keep_checkpoints=options.keep_checkpoints,
        tracker=tracker,
        parent_run_id=parent_id,
        verbose=options.verbose,
        extra_callbacks=list(options.extra_callbacks),
        **parts,
    )


def _manifest(
    plan: Plan,
    options: RunOptions,
    fixed: Mapping[str, Any],
    tracker: Tracker | None,
    parent_id: str | None,
) -> dict[str, Any]:
    return {
        "kind": plan.kind,
        "name": plan.name,
        "source": plan.source,
        "preset": plan.preset,
        "fixed": dict(fixed),
        "definition": {**plan.definition, "data": fixed.get("data.root")},
        "storage": options.storage,
        "address": options.address,
        "mlflow_uri": tracker.uri if tracker else None,
        "experiment": tracker.experiment if tracker else None,
        "parent_run_id": parent_id,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _checked_manifest(exp_dir: str, plan: Plan, options: RunOptions) -> dict[str, Any]:
    """The recorded manifest, refused when what this resume asks for differs from it."""
    try:
        manifest = read_manifest(exp_dir)
    except ManifestError as err:
        raise SearchError(str(err)) from None
    current = dict(plan.definition)
    if options.data:
        current["data"] = str(Path(options.data).expanduser().resolve())
    changed = differences(manifest.get("definition", {}), current)
    if changed:
        raise SearchError(
            f"--resume: {plan.name} was started otherwise ({'; '.join(changed)}); resume it as "
            f"it started (python -m tune.search --resume --name {plan.name}) or start another "
            "search under a new --name"
        )
    return manifest


def _preflight(
    plan: Plan, options: RunOptions, manifest: dict[str, Any] | None
) -> tuple[dict[str, Any], Tracker | None]:
    """The trials' fixed overrides (with the checked data root) and the reachable tracker.
    A resume takes both from the manifest, so it runs exactly what was started."""
    fixed = dict(manifest["fixed"]) if manifest else dict(plan.fixed)
    if manifest is None:
        # Each trial keeps to its CPU share: oversubscribed torch threads slow every trial.
        fixed.setdefault("run.threads", max(1, int(plan.resources.cpu)))
    if options.data and manifest is None:
        fixed["data.root"] = str(Path(options.data).expanduser().resolve())
    try:
        config = build_config(plan.preset, {**fixed, **plan.example})
    except ConfigError as err:
        raise SearchError(str(err)) from None
    fixed["data.root"] = str(preflight.check_data(config, options.data_sample))
    tracker = None
    if manifest is not None and manifest.get("mlflow_uri"):
        tracker = Tracker(manifest["mlflow_uri"], manifest["experiment"])
        tracker.use_credentials_of(options.mlflow_uri)  # never recorded: given again
    elif manifest is None and options.tracking:
        tracker = Tracker(options.mlflow_uri, plan.experiment or plan.name)
    if tracker is not None:
        tracker.check_reachable()
    return fixed, tracker


def _finish(
    plan: Plan,
    job: TuneJob,
    records: list[TrialRecord],
    interrupted: bool,
    tracker: Tracker | None,
    parent_id: str | None,
    local_exp: Path | None,
    exp_dir: str,
) -> Outcome:
    out_dir = local_exp if local_exp is not None else Path("tune_summaries") / plan.name
    study = job.optuna
    summary = write_summary(
        records,
        plan.metric,
        plan.mode,
        out_dir,
        study.study_url if study else None,
        study.study_name if study else None,
    )
    outcome = Outcome(
        name=plan.name,
        path=exp_dir,
        records=records,
        table=summary.table,
        summary=summary,
        parent_run_id=parent_id,
        interrupted=interrupted,
        metric=plan.metric,
        mode=plan.mode,
        tracker=tracker,
    )
    if tracker is not None and parent_id is not None:
        delivered = reconcile_children(tracker, parent_id, records)
        best = outcome.best
        local = None
        if best is not None and best.checkpoint and not interrupted:
            local = ray_adapter.fetch_checkpoint(best.checkpoint, out_dir / "best_checkpoint")

        def log_parent() -> None:  # a resume logs it again if MLflow does not answer
            for path in summary.files:
                tracker.log_artifact(parent_id, path, "summary")
            if best is not None and local is not None:
                tracker.log_artifact(parent_id, local, "best_checkpoint")
                tags = {"best_trial": best.name, "best_trial_id": best.trial_id}
                tracker.set_tags(parent_id, tags)
            if not interrupted:
                tracker.finish_parent(parent_id)

        if delivered:  # else MLflow is down: not worth a wait
            outbox.attempt(log_parent, wait_s=120)
    return outcome


def reconcile_children(tracker: Tracker, parent_id: str, records: Sequence[TrialRecord]) -> bool:
    """Exactly one child run per trial, each with its full history and ended with its
    trial's state, whatever was interrupted, retried or unsent on the way (a trial that
    failed before it could log, MLflow down while trials ran); see `tune.outbox`. What
    MLflow does not take within a few seconds stays in the checkpoints for a resume.
    Returns whether MLflow took everything."""
    courier = outbox.Courier(tracker, parent_id)
    for record in records:
        tags = {ray_adapter.TRIAL_ERROR: record.error} if record.state == "errored" else {}
        outbox.settle(
            courier,
            record.trial_id,
            record.name,
            record.checkpoint,
            record.state,
            {k: v for k, v in tags.items() if v},
            dict(record.spec.overrides),
        )
    if not courier.drain():
        print(
            f"MLflow at {tracker.uri} did not take every trial's events ({courier.failure}); "
            "they are kept in the trials' checkpoints: --resume sends them",
            file=sys.stderr,
        )
        return False
    return True


def study_url(exp_dir: str, name: str) -> str:
    if preflight.is_uri(exp_dir):
        # sqlite cannot live on object storage: keep the study beside the driver instead.
        return f"sqlite:///{Path(f'{name}-{STUDY_DB}').resolve()}"
    return f"sqlite:///{Path(exp_dir) / STUDY_DB}"
