"""The ``python -m ablations.run`` command line: options checked in one line each, then
`ablations.run.run_suite`, then the verdicts printed. See docs/ablations.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ablations.effects import OK
from ablations.families import DEFAULT_MIN_EFFECT
from ablations.run import (
    RESULTS_DIR,
    RunError,
    SuiteOutcome,
    SuiteSettings,
    run_name,
    run_suite,
)
from ablations.seeding import AUTO
from ablations.suite import BUDGETS, SuiteError, describe, select
from moodtheme.config import parse_overrides
from tune.cli import USER_ERRORS, add_cluster_arguments, check_cluster_arguments
from tune.search import RunOptions
from tune.tracking import Tracker


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
    name = None  # the suite's, once it has one
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
        # Named before anything starts, so that even a second Ctrl-C can print its resume.
        options.name = name = run_name(settings, options, results_dir)
        outcome = run_suite(settings, options, results_dir)
    except (SuiteError, RunError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stopped without its own summary
        if name is None:
            print("\nsuite interrupted before it started", file=sys.stderr)
        else:
            command = resume_command(args, name)
            print(f"\nsuite interrupted; continue it with: {command}", file=sys.stderr)
        return 130
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
        print(f"suite interrupted; continue it with: {resume_command(args, outcome.run_dir.name)}")


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The command that continues the suite ``name``."""
    command = f"python -m ablations.run --resume --name {name}"
    if args.results_dir != str(RESULTS_DIR):
        command += f" --results-dir {args.results_dir}"
    if args.address:
        command += f" --address {args.address}"
    return command
