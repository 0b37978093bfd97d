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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from moodtheme.config import ConfigError, build_config
from tune import outbox, preflight, ray_adapter
from tune.engine import Outcome, Plan, RunOptions, SearchError, execute, study_url
from tune.manifest import file_sha256
from tune.ray_adapter import AshaPlan, OptunaPlan, TrialRecord
from tune.seed_noise import SEED_KEY, SeedNoise, noise_trials, separation
from tune.space import Resources, SearchSpace
from tune.spec import TrialSpec

SEED_NOISE_FILE = "seed_noise.json"

__all__ = [
    "Outcome",
    "RunOptions",
    "SearchError",
    "TrialRecord",
    "TrialSpec",
    "experiment_exists",
    "run_search",
    "run_trials",
    "trial_outputs",
]


# ----------------------------------------------------------------------------- API


def run_search(space: SearchSpace, options: RunOptions) -> Outcome:
    """Run (or, with ``options.resume``, continue) an Optuna + ASHA search over ``space``."""
    name = options.name or space.name
    plan = Plan(
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
        url = study_url(exp_dir, name)
        return {
            "optuna": OptunaPlan(
                define_by_run=space.suggest,
                sampler=space.make_sampler(),
                study_url=url,
                study_name=name,
                num_samples=space.num_samples,
            ),
            "asha": AshaPlan(
                space.asha.max_t, space.asha.grace_period, space.asha.reduction_factor
            ),
        }

    outcome = execute(plan, options, job_parts, space_file=space.source)
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
    plan = Plan(
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
    return execute(plan, options, lambda exp_dir: {"grid": list(trials)})


if __name__ == "__main__":
    from tune.cli import main

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
