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
:class:`Outcome` has ``records`` (one `ray_adapter.TrialRecord` per trial: ``state``,
``last`` metrics incl. the kept model's ``kept_*`` scores, ``checkpoint``), ``table`` (a DataFrame, best
first), ``best``, ``path`` and ``parent_run_id``. A completed trial's checkpoint holds the
run's outputs: ``{validation,test}_predictions.npy``, ``*_groundtruth.npy``,
``final_metrics.json``, ``config.json`` (local copy: `ray_adapter.fetch_checkpoint`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from moodtheme.config import ConfigError, build_config, parse_overrides
from tune import preflight, ray_adapter
from tune.ray_adapter import AshaPlan, ClusterError, OptunaPlan, TrialRecord, TuneJob
from tune.seed_noise import SEED_KEY, SeedNoise, Separation, noise_trials, separation
from tune.space import Resources, SearchSpace, SpaceError, load_space
from tune.summary import Summary, table_legend, top_k_text, write_summary
from tune.tracking import Tracker, TrackingError
from tune.trial import TrialContext, run_trial

MANIFEST = "search.json"
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
    top_k: int = 5
    num_cpus: float | None = None  # only when Ray starts here
    num_gpus: float | None = None
    data_sample: int = preflight.DATA_SAMPLE
    verbose: int = 1
    extra_callbacks: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class TrialSpec:
    """One trial of a fixed list: a name, dotted config overrides, MLflow tags."""

    name: str
    overrides: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)


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
    overrides = _flat_params(best)
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
            outcome.tracker.log_artifact(outcome.parent_run_id, path, "summary")
    if outcome.tracker is not None and outcome.parent_run_id and outcome.noise is not None:
        outcome.tracker.log_metrics(
            outcome.parent_run_id, {"seed_noise_sd": outcome.noise.sd}, step=0
        )


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
        experiment=experiment,
        role="search" if experiment is None else "seed_noise",
    )
    grid = [{"name": t.name, "overrides": dict(t.overrides), "tags": dict(t.tags)} for t in trials]
    return _execute(plan, options, lambda exp_dir: {"grid": grid})


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


def _execute(
    plan: _Plan, options: RunOptions, job_parts: Any, space_file: Path | None = None
) -> Outcome:
    storage = preflight.check_storage(options.storage)
    exp_dir = f"{storage.rstrip('/')}/{plan.name}"
    local_exp = None if preflight.is_uri(storage) else Path(exp_dir)
    manifest = _read_manifest(exp_dir) if options.resume else None
    resources = {"cpu": plan.resources.cpu, "gpu": plan.resources.gpu}

    resumable = ray_adapter.can_resume(exp_dir)
    if options.resume and not resumable:
        raise SearchError(f"nothing to resume at {exp_dir}; run without --resume to start")
    if not options.resume and resumable:
        raise SearchError(
            f"{exp_dir} already holds a search; pass --resume to continue it, "
            "or --name NEW to start another"
        )

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
            _write_manifest(exp_dir, plan, fixed, tracker, parent_id)

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
            records, interrupted = ray_adapter.run_job(job, resume=options.resume)
        except Exception:
            if tracker is not None and parent_id is not None:
                tracker.finish_parent(parent_id, failed=True)  # --resume reopens it
            raise
    finally:
        if started_ray:
            ray_adapter.disconnect()

    return _finish(plan, job, records, interrupted, tracker, parent_id, local_exp, exp_dir)


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
        reconcile_children(tracker, parent_id, records)
        for path in summary.files:
            tracker.log_artifact(parent_id, path, "summary")
        best = outcome.best
        if best is not None and best.checkpoint and not interrupted:
            local = ray_adapter.fetch_checkpoint(best.checkpoint, out_dir / "best_checkpoint")
            tracker.log_artifact(parent_id, local, "best_checkpoint")
            tracker.set_tags(parent_id, {"best_trial": best.name, "best_trial_id": best.trial_id})
        if not interrupted:
            tracker.finish_parent(parent_id)
    return outcome


def reconcile_children(tracker: Tracker, parent_id: str, records: Sequence[TrialRecord]) -> None:
    """Exactly one child run per trial, each ended with its trial's state, whatever was
    interrupted or retried on the way (a trial that failed before it could log, a driver
    killed between a trial's end and its callback)."""
    children: dict[str, list[Any]] = {}
    for run in tracker.children(parent_id):
        children.setdefault(run.data.tags.get("tune_trial_id", ""), []).append(run)
    for record in records:
        runs = children.get(record.trial_id, [])
        if not runs:
            run_id = tracker.child_run(
                parent_id, record.trial_id, record.name, _flat_params(record)
            )
        else:
            run_id = runs[0].info.run_id
        if record.state != "unfinished":
            current = runs[0].data.tags.get("trial_state") if runs else None
            if current != record.state:
                tracker.finish(run_id, record.state)


def _flat_params(record: TrialRecord) -> dict[str, Any]:
    spec = record.config.get("trial")
    return dict(spec["overrides"]) if isinstance(spec, Mapping) else dict(record.config)


def _study_url(exp_dir: str, name: str) -> str:
    if preflight.is_uri(exp_dir):
        # sqlite cannot live on object storage: keep the study beside the driver instead.
        return f"sqlite:///{Path(f'{name}-{STUDY_DB}').resolve()}"
    return f"sqlite:///{Path(exp_dir) / STUDY_DB}"


def _write_manifest(
    exp_dir: str,
    plan: _Plan,
    fixed: Mapping[str, Any],
    tracker: Tracker | None,
    parent_id: str | None,
) -> None:
    """What a resume needs besides Tune's own state: the trials' fixed overrides (data
    root included) and where the MLflow runs are."""
    manifest = {
        "kind": plan.kind,
        "name": plan.name,
        "source": plan.source,
        "preset": plan.preset,
        "fixed": dict(fixed),
        "mlflow_uri": tracker.uri if tracker else None,
        "experiment": tracker.experiment if tracker else None,
        "parent_run_id": parent_id,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    text = json.dumps(manifest, indent=2, default=str)
    if preflight.is_uri(exp_dir):
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(f"{exp_dir}/{MANIFEST}")
        with fs.open_output_stream(path) as out:
            out.write(text.encode())
    else:
        Path(exp_dir, MANIFEST).write_text(text)


def _read_manifest(exp_dir: str) -> dict[str, Any] | None:
    try:
        if preflight.is_uri(exp_dir):
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(f"{exp_dir}/{MANIFEST}")
            with fs.open_input_stream(path) as f:
                return json.loads(f.read().decode())
        return json.loads(Path(exp_dir, MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune.search",
        description="Hyperparameter search with Ray Tune (ASHA + Optuna), tracked in MLflow.",
    )
    p.add_argument("--space", required=True, help="search space YAML (search_spaces/attn.yaml)")
    p.add_argument("--data", help="melspec root (ROOT/NN/ID.npy); default: synthetic data")
    p.add_argument(
        "--budget",
        help="a budgets block of the space, or 'full'; default: quick without --data, else full",
    )
    p.add_argument("--name", help="results folder and MLflow experiment (default: space name)")
    p.add_argument("--storage", default="ray_results", help="results directory or s3:// URI")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--num-samples", type=int, help="override the space's num_samples")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept per trial")
    p.add_argument("--top-k", type=int, default=5, help="rows of the final table")
    add_cluster_arguments(p, max_failures=3)
    return p


# Mistakes and conditions a user can meet when running trials: printed as one line, exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SearchError,
    preflight.PreflightError,
    TrackingError,
    ClusterError,
)


def add_cluster_arguments(p: argparse.ArgumentParser, max_failures: int) -> None:
    """The options every command that runs trials shares (tune.search, ablations.run)."""
    p.add_argument("--address", help="join a Ray cluster ('auto' or host:port); default: local")
    p.add_argument(
        "--mlflow-uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)"
    )
    p.add_argument("--no-mlflow", action="store_true", help="do not track in MLflow")
    p.add_argument(
        "--max-failures",
        type=int,
        default=max_failures,
        help=f"retries per trial from its last checkpoint (default {max_failures})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every trial (repeatable)",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        budget = args.budget or ("full" if args.data else "quick")
        try:
            space = load_space(args.space, budget, parse_overrides(args.set))
        except SpaceError as err:
            if args.budget is None and budget == "quick" and "no budget 'quick'" in str(err):
                space = load_space(args.space, "full", parse_overrides(args.set))
            else:
                raise
        if args.num_samples is not None:
            if args.num_samples < 1:
                raise SearchError(f"--num-samples must be at least 1, got {args.num_samples}")
            space = replace(space, num_samples=args.num_samples)
        options = RunOptions(
            name=args.name,
            storage=args.storage,
            address=args.address,
            resume=args.resume,
            mlflow_uri=args.mlflow_uri,
            tracking=not args.no_mlflow,
            data=args.data,
            max_failures=args.max_failures,
            keep_checkpoints=args.keep_checkpoints,
            top_k=args.top_k,
        )
        print(
            f"search '{space.name}' (budget {space.budget}): {space.num_samples} trials, "
            f"{space.asha.max_t} epochs max, {space.resources.cpu:g} CPU / "
            f"{space.resources.gpu:g} GPU per trial"
        )
        outcome = run_search(space, options)
    except (SpaceError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_outcome(outcome, args, top_k=args.top_k)
    return 130 if outcome.interrupted else 0


def _print_outcome(outcome: Outcome, args: argparse.Namespace, top_k: int) -> None:
    width = min(shutil.get_terminal_size().columns, 120)
    print("\n" + "=" * width)
    if outcome.interrupted:
        print(
            f"search interrupted; continue it with: python -m tune.search --space {args.space} "
            f"--storage {args.storage}"
            + (f" --name {outcome.name}" if args.name else "")
            # without it the resumed search would start a Ray of its own, off the cluster
            + (f" --address {args.address}" if args.address else "")
            + " --resume"
        )
    counts = outcome.table["state"].value_counts().to_dict() if not outcome.table.empty else {}
    print(
        f"{len(outcome.records)} trials: "
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    )
    best = outcome.best
    if best is not None:
        print(f"best trial {best.name} ({best.state}, {int(best.last.get('epoch', 0))} epochs)")
        for key, value in _flat_params(best).items():
            print(f"  {key} = {value}")
    print(f"\ntop {min(top_k, len(outcome.table))} by {outcome.metric} (searched):")
    print(top_k_text(outcome.table, outcome.metric, top_k))
    for line in table_legend(outcome.table, outcome.metric):
        print(f"  {line}")
    if outcome.noise is not None:
        values = ", ".join(f"{v:.4f}" for v in outcome.noise.values)
        seeds = ", ".join(str(s) for s in outcome.noise.seeds)
        print(f"\nseed noise: the best configuration with seeds {seeds}: {outcome.metric} {values}")
    if outcome.separation is not None:
        print(f"separation: {outcome.separation.text}")
    if outcome.summary is not None:
        _print_importances(outcome.summary, outcome.separation)
        print("\nfiles: " + ", ".join(str(p) for p in outcome.summary.files))
    print(f"results: {outcome.path}")
    if outcome.parent_run_id and outcome.tracker is not None:
        print(f"MLflow parent run: {outcome.parent_run_id}")
        for line in outcome.tracker.browse_hint():
            print(line)


def _print_importances(summary: Summary, separated: Separation | None) -> None:
    if summary.importances.empty:
        print(f"\nparameter importances: {summary.importance_note}")
    elif separated is not None and separated.separated is False:
        print(
            "\nparameter importances: not ranked; the trials do not differ beyond seed noise, "
            "so any ranking would be noise"
        )
    else:
        caveat = "" if separated is not None and separated.separated else "; seed noise unknown"
        print(f"\nparameter importances ({summary.importance_note}{caveat}):")
        for _, row in summary.importances.iterrows():
            print(f"  {row['param']:<32} {row['importance']:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
