"""``python -m tune.search --space search_spaces/attn.yaml``: distributed hyperparameter search.

Ray Tune runs the trials (ASHA stops the weak ones; Optuna's TPE suggests the next), each
trial is `moodtheme.train.fit` driven through its epoch callback, MLflow records the search
(one parent run) and each trial (one child run). See docs/tune.md.

Reusable API (the ablation suite uses the second):

``run_search(space: SearchSpace, options: RunOptions) -> Outcome``
    An Optuna + ASHA search over a loaded space (`tune.space.load_space`).

``run_trials(trials: Sequence[TrialSpec], *, preset, overrides, metric, mode, resources,
max_concurrent_trials, options: RunOptions) -> Outcome``
    A fixed list of configs (variants x seeds): no Optuna, no ASHA, every trial to the end.
    A :class:`TrialSpec` is ``(name, overrides, tags)``; ``overrides`` go on top of
    ``preset`` and the shared ``overrides``. Same preflight, resources, storage, resume,
    retries and MLflow layout as a search.

:class:`RunOptions` holds the run-level settings: ``name`` (results folder under
``storage`` and MLflow experiment), ``storage``, ``address``, ``resume``, ``mlflow_uri``,
``max_failures``, ``keep_checkpoints``, ``data``, local ``num_cpus``/``num_gpus``.
:class:`Outcome` has ``records`` (one `TrialRecord` per trial: ``state``, ``spec``,
``last`` metrics incl. the kept model's ``kept_*`` scores, ``checkpoint``), ``table`` (a DataFrame, best
first), ``best``, ``path`` and ``parent_run_id``. A completed trial's checkpoint holds the
run's outputs: ``{validation,test}_predictions.npy``, ``*_groundtruth.npy``,
``final_metrics.json``, ``config.json`` (local copy: :func:`trial_outputs`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from moodtheme.config import ConfigError, build_config
from tune import outbox, preflight, ray_adapter
from tune.manifest import (
    ManifestError,
    differences,
    file_sha256,
    read_manifest,
    write_manifest,
)
from tune.ray_adapter import AshaPlan, OptunaPlan, TrialRecord, TuneJob
from tune.seed_noise import SEED_KEY, SeedNoise, Separation, noise_trials, separation
from tune.space import Resources, SearchSpace
from tune.spec import TrialSpec
from tune.summary import Summary, write_summary
from tune.tracking import Tracker, resolve_uri
from tune.trial import TrialContext, run_trial

STUDY_DB = "optuna.db"
SEED_NOISE_FILE = "seed_noise.json"


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


# ----------------------------------------------------------------------------- API


def run_search(space: SearchSpace, options: RunOptions) -> Outcome:
    """Run (or, with ``options.resume``, continue) an Optuna + ASHA search over ``space``."""
    name = options.name or space.name
    plan = _Plan(
        kind="search",
        name=name,
        preset=space.preset,
        fixed=space.fixed_overrides(),
        metric=space.metric,
        mode=space.mode,
        resources=space.resources,
        max_concurrent_trials=space.max_concurrent_trials,
        source=str(space.source),
        example=space.example_overrides(),
        definition={
            "space_file": str(Path(space.source).resolve()),
            "space_sha256": file_sha256(space.source),
            "budget": space.budget,
            "set": dict(options.set_overrides),
            "metric": space.metric,
            "preset": space.preset,
        },
        params={
            "space": space.name,
            "space_file": str(space.source),
            "budget": space.budget,
            "preset": space.preset,
            "num_samples": space.num_samples,
            "max_concurrent_trials": space.max_concurrent_trials,
            "metric": space.metric,
            "mode": space.mode,
            "asha": json.dumps(space.asha.__dict__),
            "sampler": json.dumps(space.sampler.__dict__),
            "resources": json.dumps(space.resources.__dict__),
        },
    )

    def job_parts(exp_dir: str) -> dict[str, Any]:
        study_url = _study_url(exp_dir, name)
        return {
            "optuna": OptunaPlan(
                define_by_run=space.suggest,
                sampler=space.make_sampler(),
                study_url=study_url,
                study_name=name,
                num_samples=space.num_samples,
            ),
            "asha": AshaPlan(
                space.asha.max_t, space.asha.grace_period, space.asha.reduction_factor
            ),
        }

    outcome = _execute(plan, options, job_parts, space_file=space.source)
    if space.noise_seeds and not outcome.interrupted:
        outcome.noise = _measure_seed_noise(space, options, outcome)
    completed = (
        outcome.table[outcome.table["state"] == "completed"]
        if not outcome.table.empty
        else outcome.table
    )
    values = completed[space.metric].tolist() if not completed.empty else []
    outcome.separation = separation(values, outcome.noise)
    _record_seed_noise(outcome)
    return outcome


def _measure_seed_noise(
    space: SearchSpace, options: RunOptions, outcome: Outcome
) -> SeedNoise | None:
    """Train the best completed configuration again with ``space.noise_seeds`` other seeds,
    as a fixed list of trials in the same MLflow experiment (resumed if it was cut short)."""
    best = outcome.best
    if best is None or best.state != "completed":
        return None
    overrides = dict(best.spec.overrides)
    name = f"{outcome.name}-seed-noise"
    storage = preflight.check_storage(options.storage)
    noise_options = replace(
        options,
        name=name,
        resume=ray_adapter.can_resume(f"{storage.rstrip('/')}/{name}"),
        extra_callbacks=[],
    )
    specs = [
        TrialSpec(f"{best.name}.{label}", trial_overrides, {"role": "seed_noise"})
        for label, trial_overrides in noise_trials(overrides, space.noise_seeds)
    ]
    noise = run_trials(
        specs,
        preset=space.preset,
        overrides=space.fixed_overrides(),
        metric=space.metric,
        mode=space.mode,
        resources=space.resources,
        max_concurrent_trials=space.max_concurrent_trials,
        options=noise_options,
        experiment=outcome.name,
    )
    runs = {r.name: r for r in noise.records}
    values = [best.last.get(space.metric, math.nan)] + [
        runs[s.name].last.get(space.metric, math.nan)
        if s.name in runs and runs[s.name].state == "completed"
        else math.nan
        for s in specs
    ]
    seeds = (int(overrides.get(SEED_KEY, 0)), *(int(s.overrides[SEED_KEY]) for s in specs))
    return SeedNoise(overrides, seeds, tuple(float(v) for v in values))


def _record_seed_noise(outcome: Outcome) -> None:
    """Keep the noise check beside the summary and on the search's MLflow parent run."""
    if outcome.separation is None:
        return
    record = {
        "separated": outcome.separation.separated,
        "p_value": outcome.separation.p_value,
        "text": outcome.separation.text,
        "noise": None
        if outcome.noise is None
        else {"seeds": outcome.noise.seeds, "values": outcome.noise.values, "sd": outcome.noise.sd},
    }
    if outcome.summary is not None and outcome.summary.files:
        path = outcome.summary.files[0].parent / SEED_NOISE_FILE
        path.write_text(json.dumps(record, indent=2, default=str))
        outcome.summary.files.append(path)
        if outcome.tracker is not None and outcome.parent_run_id:
            outbox.attempt(outcome.tracker.log_artifact, outcome.parent_run_id, path, "summary")
    if outcome.tracker is not None and outcome.parent_run_id and outcome.noise is not None:
        outbox.attempt(
            outcome.tracker.log_metrics,
            outcome.parent_run_id,
            {"seed_noise_sd": outcome.noise.sd},
            0,
        )


def experiment_exists(path: str) -> bool:
    """Whether a search or fixed list was started at ``path`` (a results folder or URI):
    what ``options.resume`` would continue."""
    return ray_adapter.can_resume(path)


def trial_outputs(record: TrialRecord, dest: Path) -> Path:
    """A local folder holding a completed trial's run outputs (``moodtheme.rundir``'s
    ``RUN_OUTPUTS``), copied to ``dest`` when its checkpoint is remote."""
    if record.checkpoint is None:
        raise SearchError(f"trial {record.name} has no checkpoint")
    return ray_adapter.fetch_checkpoint(record.checkpoint, dest)


def run_trials(
    trials: Sequence[TrialSpec],
    *,
    preset: str = "quick",
    overrides: Mapping[str, Any] | None = None,
    metric: str = "val_pr_auc_macro",
    mode: str = "max",
    resources: Resources = Resources(),
    max_concurrent_trials: int = 1,
    options: RunOptions,
    experiment: str | None = None,
) -> Outcome:
    """Run a fixed list of trial configs to the end (no Optuna, no ASHA), with the search's
    preflight, storage, resume, retries and MLflow layout. ``options.name`` is required; the
    MLflow experiment is ``experiment``, or that name."""
    if not options.name:
        raise SearchError("run_trials needs options.name (the results folder and experiment)")
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise SearchError("every TrialSpec needs a distinct name")
    fixed = dict(overrides or {})
    for t in trials:  # fail before Ray starts if any variant is not a valid config
        try:
            build_config(preset, {**fixed, **t.overrides})
        except ConfigError as err:
            raise SearchError(f"trial '{t.name}': {err}") from None
    plan = _Plan(
        kind="trials",
        name=options.name,
        preset=preset,
        fixed=fixed,
        metric=metric,
        mode=mode,
        resources=resources,
        max_concurrent_trials=max_concurrent_trials,
        source="run_trials",
        example=dict(trials[0].overrides) if trials else {},
        params={"trials": len(trials), "preset": preset, "metric": metric, "mode": mode},
        definition={
            "trials": [t.to_tune() for t in trials],
            "overrides": fixed,
            "metric": metric,
            "preset": preset,
        },
        experiment=experiment,
        role="search" if experiment is None else "seed_noise",
    )
    return _execute(plan, options, lambda exp_dir: {"grid": list(trials)})


# ----------------------------------------------------------------------------- engine


@dataclass
class _Plan:
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


def _execute(
    plan: _Plan, options: RunOptions, job_parts: Any, space_file: Path | None = None
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

        # -- bookkeeping: the parent run and the manifest that a resume reads
        if local_exp is not None:
            local_exp.mkdir(parents=True, exist_ok=True)
            if not options.resume:
                (local_exp / STUDY_DB).unlink(missing_ok=True)  # left by an aborted start
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

        context = TrialContext(
            preset=plan.preset,
            fixed=fixed,
            metric=plan.metric,
            gpu_fraction=plan.resources.gpu,
            tracker=tracker,
            parent_run_id=parent_id,
        )
        job = TuneJob(
            name=plan.name,
            storage=storage,
            trainable=run_trial,
            context=context,
            resources=resources,
            metric=plan.metric,
            mode=plan.mode,
            max_concurrent_trials=plan.max_concurrent_trials,
            max_failures=options.max_failures,
            keep_checkpoints=options.keep_checkpoints,
            tracker=tracker,
            parent_run_id=parent_id,
            verbose=options.verbose,
            extra_callbacks=list(options.extra_callbacks),
            **job_parts(exp_dir),
        )
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


def _manifest(
    plan: _Plan,
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


def _checked_manifest(exp_dir: str, plan: _Plan, options: RunOptions) -> dict[str, Any]:
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
    plan: _Plan, options: RunOptions, manifest: dict[str, Any] | None
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
    plan: _Plan,
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


def _study_url(exp_dir: str, name: str) -> str:
    if preflight.is_uri(exp_dir):
        # sqlite cannot live on object storage: keep the study beside the driver instead.
        return f"sqlite:///{Path(f'{name}-{STUDY_DB}').resolve()}"
    return f"sqlite:///{Path(exp_dir) / STUDY_DB}"


if __name__ == "__main__":
    from tune.cli import main

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
