"""The suite's trials on Ray Tune: one trial per (arm, seed), one Tune experiment per round.

:func:`trial_specs` turns planned (arm, seed) pairs into `tune.search.TrialSpec`;
:func:`collect` turns Tune's records back into :class:`ablations.effects.TrialResult`, the
finished trials' outputs copied into the run folder; :func:`round_name` names each round's
experiment (the suite's name for the first, ``NAME-roundK`` for later rounds of adaptive
seeding: Tune cannot add trials to an experiment it has run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ablations.effects import FAILED, OK, UNFINISHED, TrialResult
from ablations.seeding import RoundOutcome
from ablations.suite import Plan
from moodtheme.config import build_config
from moodtheme.rundir import FINAL_METRICS_FILE, predictions_file
from tune.search import (
    RunOptions,
    TrialRecord,
    TrialSpec,
    experiment_exists,
    run_trials,
    trial_outputs,
)
from tune.space import Resources

METRIC = "val_pr_auc_macro"  # what Tune tracks per trial; the suite reads test metrics


def trial_name(arm: str, seed: int) -> str:
    return f"{arm}.seed{seed}"


def round_name(name: str, index: int) -> str:
    """The Tune experiment (and MLflow experiment) of round ``index`` (0-based)."""
    return name if index == 0 else f"{name}-round{index + 1}"


def trial_specs(
    plan: Plan, trials: Sequence[tuple[str, int]], preset: str, fixed: Mapping[str, Any]
) -> list[TrialSpec]:
    """One TrialSpec per (arm, seed): the dotted keys where the arm's config differs from
    ``preset`` with the ``fixed`` overrides, and its seed. `tune.search.run_trials` validates
    each spec once, on the driver, before any trial starts."""
    base = build_config(preset, dict(fixed)).flat()
    differences = {
        arm: {k: v for k, v in plan.arms[arm].config.flat().items() if base.get(k) != v}
        for arm in dict.fromkeys(arm for arm, _ in trials)
    }
    return [
        TrialSpec(
            trial_name(arm, seed),
            {**differences[arm], **_seed(plan.run_seed(arm, seed), base)},
            tags={
                "ablation_arm": arm,
                "ablation_seed": str(seed),
                "ablation_roles": " ".join(plan.arms[arm].roles),
            },
        )
        for arm, seed in trials
    ]


def _seed(run_seed: int, base: Mapping[str, Any]) -> dict[str, int]:
    return {} if base.get("run.seed") == run_seed else {"run.seed": run_seed}


def collect(records: Sequence[TrialRecord], plan: Plan, outputs: Path) -> list[TrialResult]:
    """TrialResults from Tune's records; completed trials' outputs copied under ``outputs``."""
    by_name = {trial_name(arm, seed): (arm, seed) for arm, seed in plan.trials()}
    results = []
    for record in records:
        if record.name not in by_name:
            continue
        arm, seed = by_name[record.name]
        if record.state == "completed" and record.checkpoint:
            run_dir = trial_outputs(record, outputs / record.name)
            metrics_file = run_dir / FINAL_METRICS_FILE
            if (run_dir / predictions_file("test")).is_file() and metrics_file.is_file():
                metrics = json.loads(metrics_file.read_text())
                results.append(TrialResult(arm, seed, OK, run_dir, metrics))
                continue
            error = f"the final checkpoint {run_dir} lacks the run's predictions"
        elif record.state == "errored":
            error = record.error or "the trial errored"
        else:  # interrupted: a resume continues it
            results.append(TrialResult(arm, seed, UNFINISHED))
            continue
        results.append(TrialResult(arm, seed, FAILED, error=error))
    return results


def main_preset(plan: Plan) -> str:
    """The preset most arms come from: trial params are the differences from it."""
    presets = [a.config.preset for a in plan.arms.values()]
    return max(set(presets), key=presets.count) if presets else "quick"


def tune_round(
    plan: Plan,
    index: int,
    new: Sequence[tuple[str, int]],
    preset: str,
    fixed: Mapping[str, Any],
    resources: Resources,
    options: RunOptions,
    outputs: Path,
) -> RoundOutcome:
    """Train round ``index``'s ``new`` trials as one Tune experiment, every trial at once
    (Ray queues what does not fit). With ``options.resume`` a round that was started is
    resumed: its finished trials are not trained again."""
    name = round_name(options.name or "", index)
    resume = options.resume and experiment_exists(f"{options.storage.rstrip('/')}/{name}")
    outcome = run_trials(
        trial_specs(plan, new, preset, fixed),
        preset=preset,
        overrides=fixed,
        metric=METRIC,
        mode="max",
        resources=resources,
        max_concurrent_trials=len(new),
        options=replace(options, name=name, resume=resume),
    )
    trials = collect(outcome.records, plan, outputs)
    return RoundOutcome(trials, outcome.interrupted, outcome.parent_run_id)
