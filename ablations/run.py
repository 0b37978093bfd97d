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

from ablations.effects import OK, Effect, TrialResult, compute_effects
from ablations.families import DEFAULT_MIN_EFFECT, Conclusions, conclude
from ablations.report import write_report
from ablations.seeding import AUTO, Counts, RoundOutcome, SeedState, run_rounds
from ablations.stats import look_schedule
from ablations.suite import (
    BUDGET_SETTINGS,
    BUDGETS,
    Plan,
    SuiteError,
    describe,
    format_overrides,
    plan_suite,
    probe_model,
    select,
)
from ablations.trials import main_preset, tune_round
from moodtheme.config import parse_overrides
from moodtheme.data.jamendo import load_tags
from tune.cli import USER_ERRORS, add_cluster_arguments, check_cluster_arguments
from tune.search import RunOptions
from tune.space import Resources
from tune.tracking import Tracker, resolve_uri

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
        run = {"storage": options.storage, "mlflow_uri": options.mlflow_uri}
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
    for path in files.values():
        tracker.log_artifact(parent_id, path, "report")
    metrics = {}
    for e in effects:
        for metric, row in e.metrics.items():
            metrics[f"delta_{metric}.{e.name}"] = row.delta
            metrics[f"p_adjusted_{metric}.{e.name}"] = row.p_adjusted
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
        default="3",
        help="seeds per arm, shared by reference and variant (default 3), or 'auto': "
        "--first-seeds, then more seeds for the ablations still undecided, up to --max-seeds",
    )
    p.add_argument(
        "--first-seeds", type=int, default=3, help="with --seeds auto: seeds of the first look (3)"
    )
    p.add_argument(
        "--max-seeds", type=int, default=10, help="with --seeds auto: the most seeds (default 10)"
    )
    p.add_argument(
        "--min-effect",
        type=float,
        default=DEFAULT_MIN_EFFECT,
        help="the smallest |Δ| worth finding, in metric units (default 0.005): the report says "
        "whether a 'no detectable effect' rules it out; --seeds auto stops once it is ruled out",
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


def _seeds(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    try:
        seeds = int(text)
    except ValueError:
        seeds = 0
    if seeds < 1:
        raise SuiteError(f"--seeds {text}: give a number of seeds (1 or more) or 'auto'")
    return seeds


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
        seeds = _seeds(args.seeds)
        if args.bootstrap < 2:
            raise SuiteError(f"--bootstrap {args.bootstrap}: give at least 2 resamples (1000)")
        if seeds == AUTO and not 2 <= args.first_seeds <= args.max_seeds:
            raise SuiteError(
                f"--seeds auto: need 2 <= --first-seeds ({args.first_seeds}) <= --max-seeds "
                f"({args.max_seeds})"
            )
        if not 0 < args.min_effect < 1:
            raise SuiteError(f"--min-effect {args.min_effect}: give a metric difference in (0, 1)")
        if not 0 < args.cpus_per_trial <= 1024:
            raise SuiteError(f"--cpus-per-trial {args.cpus_per_trial}: give a number in (0, 1024]")
        gpus = args.gpus_per_trial
        if gpus is not None and (gpus < 0 or (gpus > 1 and not float(gpus).is_integer())):
            raise SuiteError(
                f"--gpus-per-trial {gpus}: give 0, a fraction below 1 or a whole number of GPUs"
            )
        check_cluster_arguments(args)
        settings = SuiteSettings(
            names=list(args.names),
            budget=budget,
            seeds=seeds,
            first_seeds=args.first_seeds,
            max_seeds=args.max_seeds,
            min_effect=args.min_effect,
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
            row = e.metrics["pr_auc"]
            low, high = row.interval()
            print(
                f"{e.name:<26} Δ PR-AUC {row.delta:+.4f} [{low:+.4f}, {high:+.4f}]  "
                f"p (Holm) {row.p_adjusted:.3f}  {row.verdict}  ({len(e.seeds)} seeds)"
            )
        else:
            print(f"{e.name:<26} {e.status}: {e.reason}")
    for e in outcome.effects:
        for c in e.confirmations:
            print(
                f"expected {e.name}: Δ {c.group} PR-AUC {c.direction}: {c.finding.delta:+.4f}, "
                f"Holm p {c.p_adjusted:.3g} (one-sided): "
                + ("confirmed" if c.confirmed else "not confirmed")
            )
    print(f"\nreport: {outcome.files['report']}")
    if outcome.parent_run_id and outcome.mlflow_uri:
        for line in Tracker(outcome.mlflow_uri, outcome.run_dir.name).browse_hint():
            print(line)
    if outcome.interrupted:
        print(
            f"suite interrupted; continue it with: python -m ablations.run --resume --name "
            f"{outcome.run_dir.name}"
            + (f" --results-dir {args.results_dir}" if args.results_dir != str(RESULTS_DIR) else "")
            + (f" --address {args.address}" if args.address else "")
        )


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    sys.exit(main())
