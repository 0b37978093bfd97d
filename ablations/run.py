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

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ablations.report import (
    FAILED,
    OK,
    UNFINISHED,
    Effect,
    TrialResult,
    compute_effects,
    write_report,
)
from ablations.suite import (
    BUDGET_SETTINGS,
    BUDGETS,
    Plan,
    SuiteError,
    config_key,
    describe,
    format_overrides,
    plan_suite,
    probe_model,
    select,
)
from moodtheme.config import build_config, parse_overrides
from moodtheme.data.jamendo import load_tags
from tune.ray_adapter import TrialRecord, fetch_checkpoint
from tune.search import (
    USER_ERRORS,
    RunOptions,
    TrialSpec,
    add_cluster_arguments,
    run_trials,
)
from tune.space import Resources
from tune.tracking import Tracker, resolve_uri

RESULTS_DIR = Path("ablations/results")
PLAN_FILE = "plan.json"
OUTPUTS_DIR = "outputs"
METRIC = "val_pr_auc_macro"


@dataclass
class SuiteSettings:
    """Everything that defines a suite run; saved in ``plan.json`` so a resume repeats it."""

    names: list[str]
    budget: str = "quick"
    seeds: int = 3
    data: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    n_boot: int = 1000
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass
class SuiteOutcome:
    run_dir: Path
    plan: Plan
    trials: list[TrialResult]
    effects: list[Effect]
    files: dict[str, Path]
    interrupted: bool
    parent_run_id: str | None


class RunError(RuntimeError):
    """A suite that cannot start or resume; the message says what to do."""


# ----------------------------------------------------------------------------- data


def resolve_data(data: str | None) -> tuple[Path, dict[str, list[str]]]:
    """The melspec root (the cached synthetic dataset without ``data``) and, for a synthetic
    root, its planted tag groups."""
    if data is None:
        from moodtheme.data.synth import default_dataset

        root = default_dataset()
    else:
        root = Path(data).expanduser().resolve()
        if not root.is_dir():
            raise RunError(f"--data {data}: not a directory; give the folder holding NN/ID.npy")
    groups: dict[str, list[str]] = {}
    planted = root / "planted.json"
    if planted.is_file():
        from moodtheme.data.synth import load_planted

        info = load_planted(root)
        groups = {g: list(info[g]) for g in ("long_range", "local") if info.get(g)}
    return root, groups


# ----------------------------------------------------------------------------- trials


def trial_name(arm: str, seed: int) -> str:
    return f"{arm}.seed{seed}"


def trial_specs(plan: Plan, preset: str, fixed: Mapping[str, Any]) -> list[TrialSpec]:
    """One TrialSpec per (arm, seed): the dotted keys where the arm differs from ``preset``
    with the ``fixed`` overrides, so each trial's overrides show what makes it that arm."""
    base = build_config(preset, dict(fixed)).flat()
    specs = []
    for arm, seed in plan.trials():
        config = plan.trial_config(arm, seed)
        diff = {k: v for k, v in config.flat().items() if base.get(k) != v}
        rebuilt = build_config(preset, {**fixed, **diff})
        assert config_key(rebuilt) == config_key(config) and rebuilt.run.seed == seed
        specs.append(
            TrialSpec(
                trial_name(arm, seed),
                diff,
                tags={
                    "ablation_arm": arm,
                    "ablation_seed": str(seed),
                    "ablation_roles": " ".join(plan.arms[arm].roles),
                },
            )
        )
    return specs


def collect(records: Sequence[TrialRecord], plan: Plan, outputs: Path) -> list[TrialResult]:
    """TrialResults from Tune's records; completed trials' outputs copied under ``outputs``."""
    by_name = {trial_name(arm, seed): (arm, seed) for arm, seed in plan.trials()}
    results = []
    for record in records:
        if record.name not in by_name:
            continue
        arm, seed = by_name[record.name]
        if record.state == "completed" and record.checkpoint:
            run_dir = fetch_checkpoint(record.checkpoint, outputs / record.name)
            metrics_file = run_dir / "final_metrics.json"
            if (run_dir / "test_predictions.npy").is_file() and metrics_file.is_file():
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


# ----------------------------------------------------------------------------- the suite


def default_run_name(settings: SuiteSettings) -> str:
    return f"{settings.budget}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run(results_dir: Path) -> str:
    runs = sorted(results_dir.glob(f"*/{PLAN_FILE}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RunError(f"--resume: no suite to resume in {results_dir}; start one without --resume")
    return runs[-1].parent.name


def _open_run(
    settings: SuiteSettings, options: RunOptions, results_dir: Path, log: Any
) -> tuple[SuiteSettings, RunOptions, Path]:
    """The run's folder and its settings: new ones, or on resume those saved in plan.json
    (the suite as it was started, on the same storage and tracking store)."""
    options = replace(options)
    if options.resume and not options.name:
        options.name = latest_run(results_dir)
    options.name = options.name or default_run_name(settings)
    run_dir = results_dir / options.name
    plan_file = run_dir / PLAN_FILE
    if options.resume:
        if not plan_file.is_file():
            raise RunError(f"--resume: {plan_file} not found; is '{options.name}' a suite run?")
        saved = json.loads(plan_file.read_text())
        settings = SuiteSettings(**saved["settings"])
        options.storage = options.storage or saved["run"]["storage"]
        options.mlflow_uri = options.mlflow_uri or saved["run"]["mlflow_uri"]
        log(f"resuming '{options.name}' ({', '.join(settings.names)}; {settings.seeds} seeds)")
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
    plan_file = run_dir / PLAN_FILE

    # Plan once without data first: a bad --set fails before any dataset is generated.
    plan_suite(select(settings.names), settings.budget, settings.seeds, settings.overrides)
    root, groups = resolve_data(settings.data)
    settings.data = str(root)
    shared = {"data.root": str(root), "run.progress": False, **settings.overrides}
    plan = plan_suite(select(settings.names), settings.budget, settings.seeds, shared, probe_model)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not options.resume:
        run = {"storage": options.storage, "mlflow_uri": options.mlflow_uri}
        plan_file.write_text(
            json.dumps(
                {"settings": asdict(settings), "run": run, "plan": plan.to_dict()},
                indent=2,
                default=str,
            )
        )
    for c in plan.comparisons:
        if c.skipped:
            log(f"skipping {c.ablation.name}: {c.skipped}")

    preset = _main_preset(plan)
    fixed = {**BUDGET_SETTINGS[settings.budget], **shared}  # what every trial shares
    specs = trial_specs(plan, preset, fixed)
    records: list[TrialRecord] = []
    interrupted, parent_id = False, None
    if specs:
        log(
            f"suite '{options.name}': {len(plan.arms)} arms x {len(plan.seeds)} seeds = "
            f"{len(specs)} trials at the {settings.budget} budget, data {root}"
        )
        outcome = run_trials(
            specs,
            preset=preset,
            overrides=fixed,
            metric=METRIC,
            mode="max",
            resources=Resources(cpu=settings.cpus_per_trial, gpu=settings.gpus_per_trial),
            max_concurrent_trials=len(specs),
            options=options,
        )
        records, interrupted, parent_id = (
            outcome.records,
            outcome.interrupted,
            outcome.parent_run_id,
        )

    trials = collect(records, plan, run_dir / OUTPUTS_DIR)
    tags = load_tags()
    effects = compute_effects(plan, trials, tags, groups, n_boot=settings.n_boot)
    report_settings = {
        "ablations": ", ".join(c.ablation.name for c in plan.comparisons),
        "budget": settings.budget,
        "data": f"{root}" + (" (synthetic)" if groups else ""),
        "seeds": ", ".join(map(str, plan.seeds)),
        "run-wide overrides": format_overrides(settings.overrides) or "none",
        "Ray Tune experiment": f"{options.storage.rstrip('/')}/{options.name}",
    }
    if parent_id:
        report_settings["MLflow parent run"] = parent_id
    if interrupted:
        report_settings["state"] = "INTERRUPTED: partial report; finish it with --resume"
    files = write_report(
        run_dir, options.name, plan, trials, effects, tags, report_settings, settings.n_boot, groups
    )
    if parent_id and options.tracking:
        _log_report(options, parent_id, files, effects)
    return SuiteOutcome(run_dir, plan, trials, effects, files, interrupted, parent_id)


def _main_preset(plan: Plan) -> str:
    """The preset most arms come from: trial params are the differences from it."""
    presets = [a.config.preset for a in plan.arms.values()]
    return max(set(presets), key=presets.count) if presets else "quick"


def _log_report(
    options: RunOptions, parent_id: str, files: Mapping[str, Path], effects: Sequence[Effect]
) -> None:
    tracker = Tracker(options.mlflow_uri, options.name or "")
    for path in files.values():
        tracker.log_artifact(parent_id, path, "report")
    metrics = {}
    for e in effects:
        if e.status == OK:
            for metric, b in e.bootstrap.items():
                metrics[f"delta_{metric}.{e.name}"] = e.difference[metric].mean
                metrics[f"p_{metric}.{e.name}"] = b.p_value
    if metrics:
        tracker.log_metrics(parent_id, metrics, step=0)


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ablations.run",
        description="Leave-one-component-out ablations with paired multi-seed statistics. "
        "NAME is an ablation (see --list) or 'all'; each runs together with its reference.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="ablations to run, or 'all'")
    p.add_argument("--list", action="store_true", help="print the ablations and exit")
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="seeds per arm, shared by reference and variant (default 3)",
    )
    p.add_argument("--data", help="melspec root (ROOT/NN/ID.npy); default: the synthetic dataset")
    p.add_argument(
        "--budget",
        choices=BUDGETS,
        help="quick (CPU-sized) or full (the submission presets); default: quick without --data, else full",
    )
    p.add_argument("--name", help="run name: ablations/results/NAME and the MLflow experiment")
    p.add_argument(
        "--results-dir",
        default=str(RESULTS_DIR),
        help="where reports go (default ablations/results)",
    )
    p.add_argument(
        "--storage", help="Ray Tune storage, a directory or s3:// URI (default: the results dir)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted suite (--name, default the latest)",
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractions allowed (default: 0 quick, 1 full)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    add_cluster_arguments(p, max_failures=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    budget = args.budget or ("full" if args.data else "quick")
    if args.list:
        print(describe(budget))
        return 0
    try:
        if not args.names and not args.resume:
            raise SuiteError("name at least one ablation, or 'all' (see --list)")
        if args.names:
            select(args.names)  # a typo fails here, before anything starts
        if args.seeds < 1 or args.bootstrap < 1:
            raise SuiteError("--seeds and --bootstrap must be at least 1")
        settings = SuiteSettings(
            names=list(args.names),
            budget=budget,
            seeds=args.seeds,
            data=str(Path(args.data).expanduser().resolve()) if args.data else None,
            overrides=parse_overrides(args.set),
            n_boot=args.bootstrap,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial
            if args.gpus_per_trial is not None
            else float(budget == "full"),
        )
        results_dir = Path(args.results_dir)
        options = RunOptions(
            name=args.name,
            storage=args.storage or "",  # empty: the results dir, or the resumed run's
            address=args.address,
            resume=args.resume,
            mlflow_uri=args.mlflow_uri,
            tracking=not args.no_mlflow,
            max_failures=args.max_failures,
        )
        outcome = run_suite(settings, options, results_dir)
    except (SuiteError, RunError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_outcome(outcome, args)
    return 130 if outcome.interrupted else 0


def _print_outcome(outcome: SuiteOutcome, args: argparse.Namespace) -> None:
    print()
    for e in outcome.effects:
        if e.status == OK:
            d, b = e.difference["pr_auc"], e.bootstrap["pr_auc"]
            print(
                f"{e.name:<26} Δ PR-AUC {d.mean:+.4f}  tracks [{b.low:+.4f}, {b.high:+.4f}] "
                f"p {b.p_value:.3f}  {e.verdict['pr_auc']}"
            )
        else:
            print(f"{e.name:<26} {e.status}: {e.reason}")
    print(f"\nreport: {outcome.files['report']}")
    if outcome.interrupted:
        print(
            f"suite interrupted; continue it with: python -m ablations.run --resume --name "
            f"{outcome.run_dir.name}"
            + (f" --results-dir {args.results_dir}" if args.results_dir != str(RESULTS_DIR) else "")
        )


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
