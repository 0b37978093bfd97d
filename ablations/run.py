"""``python -m ablations.run all``: the leave-one-component-out suite, trained and reported.

Every (arm, seed) is one Ray Tune trial run by `tune.search.run_trials`, so the suite gets the
search's GPU pool, resources, ``--address``, ``--storage``, ``--resume``, retries and MLflow
layout (one parent run for the suite, one child per trial). When the trials are done,
:mod:`ablations.report` pairs them by seed and writes the report to
``ablations/results/<run-name>/``. See docs/ablations.md.

Without ``--data`` the suite trains on the cached synthetic dataset at the quick budget; its
``planted.json`` then adds the planted tag groups to the report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ablations.effects import Effect, TrialResult, compute_effects
from ablations.families import DEFAULT_MIN_EFFECT, Conclusions, conclude
from ablations.report import write_report
from ablations.seeding import AUTO, Counts, RoundOutcome, SeedState, run_rounds
from ablations.stats import look_schedule
from ablations.suite import (
    BUDGET_SETTINGS,
    Plan,
    format_overrides,
    plan_suite,
    probe_model,
    select,
)
from ablations.trials import main_preset, tune_round
from moodtheme.data.jamendo import load_tags
from tune import outbox
from tune.search import RunOptions
from tune.space import Resources
from tune.tracking import Tracker, resolve_uri, split_credentials

RESULTS_DIR = Path("ablations/results")
PLAN_FILE = "plan.json"
OUTPUTS_DIR = "outputs"


@dataclass
class SuiteSettings:
    """Everything that defines a suite run; saved in ``plan.json`` so a resume repeats it."""

    names: list[str]
    budget: str = "quick"
    seeds: int | str = 3  # or AUTO: first_seeds, then more where undecided, up to max_seeds
    first_seeds: int = 3
    max_seeds: int = 10
    min_effect: float = DEFAULT_MIN_EFFECT
    data: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 1000
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    @property
    def adaptive(self) -> bool:
        return self.seeds == AUTO

    def seed_state(self) -> SeedState:
        if self.adaptive:
            return SeedState(look_schedule(self.first_seeds, self.max_seeds), adaptive=True)
        return SeedState([int(self.seeds)], adaptive=False)


@dataclass
class SuiteOutcome:
    run_dir: Path
    plan: Plan
    trials: list[TrialResult]
    effects: list[Effect]
    conclusions: Conclusions
    files: dict[str, Path]
    interrupted: bool
    parent_run_id: str | None
    mlflow_uri: str | None = None  # the store holding the parent run, when tracked


class RunError(RuntimeError):
    """A suite that cannot start or resume; the message says what to do."""


# ----------------------------------------------------------------------------- data


def resolve_data(data: str | None) -> tuple[Path, dict[str, list[str]]]:
    """The melspec root (the cached synthetic dataset without ``data``) and, for a synthetic
    root, its planted tag groups."""
    from moodtheme.data.loaders import resolve_data_root
    from moodtheme.data.synth import planted_groups
    from moodtheme.errors import TrainingError

    try:
        root = resolve_data_root(data).resolve()
    except TrainingError as err:
        raise RunError(f"--data {data}: {err}") from None
    return root, planted_groups(root)


# ----------------------------------------------------------------------------- the suite


def default_run_name(settings: SuiteSettings) -> str:
    return f"{settings.budget}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run(results_dir: Path) -> str:
    runs = sorted(results_dir.glob(f"*/{PLAN_FILE}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RunError(f"--resume: no suite to resume in {results_dir}; start one without --resume")
    return runs[-1].parent.name


def run_name(settings: SuiteSettings, options: RunOptions, results_dir: Path) -> str:
    """The suite run's name: ``options.name``, else on resume the latest run under
    ``results_dir``, else the budget and the time."""
    if options.name:
        return options.name
    return latest_run(results_dir) if options.resume else default_run_name(settings)


def _open_run(
    settings: SuiteSettings, options: RunOptions, results_dir: Path, log: Any
) -> tuple[SuiteSettings, RunOptions, Path]:
    """The run's folder and its settings: new ones, or on resume those saved in plan.json
    (the suite as it was started, on the same storage and tracking store)."""
    options = replace(options)
    options.name = run_name(settings, options, results_dir)
    run_dir = results_dir / options.name
    plan_file = run_dir / PLAN_FILE
    if options.resume:
        if not plan_file.is_file():
            raise RunError(f"--resume: {plan_file} not found; is '{options.name}' a suite run?")
        saved = json.loads(plan_file.read_text())
        settings = SuiteSettings(**saved["settings"])
        options.storage = options.storage or saved["run"]["storage"]
        options.mlflow_uri = options.mlflow_uri or saved["run"]["mlflow_uri"]
        log(f"resuming '{options.name}' ({', '.join(settings.names)}; seeds {settings.seeds})")
    elif plan_file.is_file():
        raise RunError(
            f"{run_dir} already holds a suite; pass --resume to continue it, or --name NEW"
        )
    options.storage = options.storage or str(results_dir)
    options.mlflow_uri = resolve_uri(options.mlflow_uri)  # a resume from elsewhere finds it
    return settings, options, run_dir


def run_suite(
    settings: SuiteSettings,
    options: RunOptions,
    results_dir: Path = RESULTS_DIR,
    log: Any = print,
) -> SuiteOutcome:
    """Plan, train (or resume) and report a suite. ``options.name`` names the run (default:
    budget and time; with ``options.resume``, the latest run under ``results_dir``)."""
    settings, options, run_dir = _open_run(settings, options, results_dir, log)
    state = settings.seed_state()
    plan, root, groups, shared = _plan(settings, options, run_dir, state.schedule[-1], log)
    if options.resume:
        state = SeedState.load(run_dir) or state
    preset = main_preset(plan)
    fixed = {**BUDGET_SETTINGS[settings.budget], **shared}  # what every trial shares
    tags = load_tags()

    def train(index: int, new: list[tuple[str, int]]) -> RoundOutcome:
        log(
            f"suite '{options.name}', round {index + 1}: {len(new)} trials "
            f"({len({a for a, _ in new})} arms) at the {settings.budget} budget, data {root}"
        )
        resources = Resources(cpu=settings.cpus_per_trial, gpu=settings.gpus_per_trial)
        return tune_round(
            plan, index, new, preset, fixed, resources, options, run_dir / OUTPUTS_DIR
        )

    def assess(trials: list[TrialResult], counts: Counts) -> list[Effect]:
        effects = compute_effects(plan, trials, tags, groups, settings.n_boot, counts)
        conclude(effects, settings.min_effect, state.looks)
        return effects

    rounds = run_rounds(plan, state, train, assess, lambda s: s.save(run_dir), log)
    conclusions = conclude(rounds.effects, settings.min_effect, state.looks)
    report_settings = {
        "ablations": ", ".join(c.ablation.name for c in plan.comparisons),
        "budget": settings.budget,
        "data": f"{root}" + (" (synthetic)" if groups else ""),
        "seeds": _seeds_text(settings, state),
        "run-wide overrides": format_overrides(settings.overrides) or "none",
        "Ray Tune experiment": f"{options.storage.rstrip('/')}/{options.name}"
        + _later_rounds(len(state.rounds)),
    }
    parent_id = rounds.parent_run_id
    if parent_id:
        report_settings["MLflow parent run"] = parent_id
    if rounds.interrupted:
        report_settings["state"] = "INTERRUPTED: partial report; finish it with --resume"
    files = write_report(
        run_dir,
        options.name or "",
        plan,
        rounds.trials,
        rounds.effects,
        conclusions,
        tags,
        report_settings,
        settings.n_boot,
        groups,
        planned=plan.trials(rounds.counts),
    )
    if parent_id and options.tracking:
        _log_report(options, parent_id, files, rounds.effects)
    return SuiteOutcome(
        run_dir,
        plan,
        rounds.trials,
        rounds.effects,
        conclusions,
        files,
        rounds.interrupted,
        parent_id,
        options.mlflow_uri if options.tracking else None,
    )


def _plan(
    settings: SuiteSettings, options: RunOptions, run_dir: Path, seeds: int, log: Any
) -> tuple[Plan, Path, dict[str, list[str]], dict[str, Any]]:
    """The suite's plan for up to ``seeds`` seeds, its data root, planted tag groups and the
    overrides every arm shares; a new run's plan.json is written."""
    # Plan once without data first: a bad --set fails before any dataset is generated.
    plan_suite(select(settings.names), settings.budget, seeds, settings.overrides)
    root, groups = resolve_data(settings.data)
    settings.data = str(root)
    shared = {"data.root": str(root), "run.progress": False, **settings.overrides}
    plan = plan_suite(select(settings.names), settings.budget, seeds, shared, probe_model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not options.resume:
        # Credentials in the URI stay in memory; a resume is given them again.
        uri = split_credentials(options.mlflow_uri)[0] if options.mlflow_uri else None
        run = {"storage": options.storage, "mlflow_uri": uri}
        (run_dir / PLAN_FILE).write_text(
            json.dumps(
                {"settings": asdict(settings), "run": run, "plan": plan.to_dict()},
                indent=2,
                default=str,
            )
        )
    for c in plan.comparisons:
        if c.skipped:
            log(f"skipping {c.ablation.name}: {c.skipped}")
    return plan, root, groups, shared


def _later_rounds(rounds: int) -> str:
    if rounds < 2:
        return ""
    return " (and -round2)" if rounds == 2 else f" (and -round2 to -round{rounds})"


def _seeds_text(settings: SuiteSettings, state: SeedState) -> str:
    if not state.adaptive:
        return f"{settings.seeds} per arm (0..{int(settings.seeds) - 1}), paired across arms"
    return (
        f"adaptive (--seeds auto): looks at {', '.join(map(str, state.schedule))} seeds, "
        f"more only for undecided ablations; --min-effect {settings.min_effect:g}"
    )


def _log_report(
    options: RunOptions, parent_id: str, files: Mapping[str, Path], effects: Sequence[Effect]
) -> None:
    tracker = Tracker(options.mlflow_uri, options.name or "")
    # MLflow off the critical path: a few seconds at most, the report is on disk anyway.
    for path in files.values():
        outbox.attempt(tracker.log_artifact, parent_id, path, "report")
    metrics = {}
    for e in effects:
        for metric, row in e.metrics.items():
            metrics[f"delta_{metric}.{e.name}"] = row.delta
            metrics[f"p_adjusted_{metric}.{e.name}"] = row.p_adjusted
    if metrics:
        outbox.attempt(tracker.log_metrics, parent_id, metrics, 0)


if __name__ == "__main__":
    from ablations.cli import main

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
