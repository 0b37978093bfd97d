"""``python -m tune.search``: the command line of a search, and the options every command that
runs trials shares (`ablations.run` uses them too).

Every option is checked before Ray starts, and every mistake is one line. ``--resume`` needs
only ``--name`` (and ``--storage`` or ``--address`` when they were not the defaults): the
space, budget, ``--set`` and data come from the search's ``search.json``, and anything given
that differs from it is refused.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from moodtheme.config import ConfigError, parse_overrides
from tune import preflight
from tune.manifest import ManifestError, read_manifest
from tune.ray_adapter import ClusterError
from tune.search import Outcome, RunOptions, SearchError, experiment_exists, run_search
from tune.seed_noise import Separation
from tune.space import SearchSpace, SpaceError, load_space
from tune.summary import Summary, table_legend, top_k_text
from tune.tracking import TrackingError

DEFAULT_STORAGE = "ray_results"

# Mistakes and conditions a user can meet when running trials: printed as one line, exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    SearchError,
    preflight.PreflightError,
    TrackingError,
    ClusterError,
    ManifestError,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tune.search",
        description="Hyperparameter search with Ray Tune (ASHA + Optuna), tracked in MLflow.",
    )
    p.add_argument("--space", help="search space: a YAML file or a bundled name (attn.yaml)")
    p.add_argument("--data", help="melspec root (ROOT/NN/ID.npy); default: synthetic data")
    p.add_argument(
        "--budget",
        help="a budgets block of the space, or 'full'; default: quick without --data, else full",
    )
    p.add_argument("--name", help="results folder and MLflow experiment (default: space name)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="results directory or s3:// URI")
    p.add_argument("--resume", action="store_true", help="continue a search (needs only --name)")
    p.add_argument(
        "--retry-errored",
        action="store_true",
        help="with --resume: run errored trials again from their last checkpoint",
    )
    p.add_argument("--num-samples", type=int, help="override the space's num_samples")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept per trial")
    p.add_argument("--top-k", type=int, default=5, help="rows of the final table")
    add_cluster_arguments(p, max_failures=3)
    return p


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
        help=f"retries per trial from its last checkpoint, after a lost node or an OOM kill "
        f"(default {max_failures}); a deterministic failure is never retried",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every trial (repeatable)",
    )


def check_cluster_arguments(args: argparse.Namespace) -> None:
    """Refuse, before Ray starts, the shared options no run can use."""
    if args.max_failures < 0:
        raise SearchError(
            f"--max-failures {args.max_failures}: give 0 or more (Ray reads -1 as unlimited)"
        )
    preflight.check_address(args.address)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    space = None
    try:
        check_cluster_arguments(args)
        for option, value, least in (("--keep-checkpoints", args.keep_checkpoints, 1),
                                     ("--top-k", args.top_k, 1)):  # fmt: skip
            if value < least:
                raise SearchError(f"{option} {value}: give {least} or more")
        space, options = _space_and_options(args)
        print(
            f"search '{space.name}' (budget {space.budget}): {space.num_samples} trials, "
            f"{space.asha.max_t} epochs max, {space.resources.cpu:g} CPU / "
            f"{space.resources.gpu:g} GPU per trial"
        )
        outcome = run_search(space, options)
    except (SpaceError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: Tune stopped without its own summary
        name = space.name if space is not None else None
        print(
            f"\nsearch interrupted; continue it with: {resume_command(args, name)}", file=sys.stderr
        )
        return 130
    _print_outcome(outcome, args)
    return 130 if outcome.interrupted else 0


def _space_and_options(args: argparse.Namespace) -> tuple[SearchSpace, RunOptions]:
    """The space and run options the arguments mean; a resume takes what the search was
    started with from its manifest."""
    sets = parse_overrides(args.set)
    if args.resume:
        if not args.name:
            raise SearchError("--resume needs --name, the name of the search to continue")
        where = f"{preflight.check_storage(args.storage).rstrip('/')}/{args.name}"
        if not experiment_exists(where):
            raise SearchError(f"nothing to resume at {where}; check --name and --storage")
        started = read_manifest(where)
        definition = started.get("definition", {})
        space_file = args.space or definition.get("space_file")
        budget = args.budget or definition.get("budget", "full")
        if not args.set:
            sets = definition.get("set", {})
        if not space_file:
            raise SearchError(f"--resume: {args.name}'s manifest names no space file")
        space = load_space(space_file, budget, sets)
    else:
        if not args.space:
            raise SearchError("give --space (a YAML file or attn.yaml), or --resume --name NAME")
        space = _load_default_budget(args, sets)
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise SearchError(f"--num-samples must be at least 1, got {args.num_samples}")
        space = replace(space, num_samples=args.num_samples)
    options = RunOptions(
        name=args.name,
        storage=args.storage,
        address=args.address,
        resume=args.resume,
        retry_errored=args.retry_errored,
        mlflow_uri=args.mlflow_uri,
        tracking=not args.no_mlflow,
        data=args.data,
        set_overrides=sets,
        max_failures=args.max_failures,
        keep_checkpoints=args.keep_checkpoints,
    )
    return space, options


def _load_default_budget(args: argparse.Namespace, sets: dict) -> SearchSpace:
    """``--budget``, else ``quick`` without ``--data`` (``full`` when the file has none) and
    ``full`` with it."""
    if args.budget or args.data:
        return load_space(args.space, args.budget or "full", sets)
    try:
        return load_space(args.space, "quick", sets)
    except SpaceError as err:
        if "no budget 'quick'" not in str(err):
            raise
        return load_space(args.space, "full", sets)


def resume_command(args: argparse.Namespace, name: str | None = None) -> str:
    """The command that continues this search: its name, and where it runs and is stored;
    everything else comes from its manifest."""
    name = name or args.name or (Path(args.space).stem if args.space else "NAME")
    command = f"python -m tune.search --resume --name {name}"
    if args.storage != DEFAULT_STORAGE:
        command += f" --storage {args.storage}"
    if args.address:
        command += f" --address {args.address}"
    if args.no_mlflow:
        command += " --no-mlflow"
    return command


def _print_outcome(outcome: Outcome, args: argparse.Namespace) -> None:
    width = min(shutil.get_terminal_size().columns, 120)
    print("\n" + "=" * width)
    if outcome.interrupted:
        print(f"search interrupted; continue it with: {resume_command(args, outcome.name)}")
    counts = outcome.table["state"].value_counts().to_dict() if not outcome.table.empty else {}
    print(
        f"{len(outcome.records)} trials: "
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    )
    best = outcome.best
    if best is not None:
        print(f"best trial {best.name} ({best.state}, {int(best.last.get('epoch', 0))} epochs)")
        for key, value in best.spec.overrides.items():
            print(f"  {key} = {value}")
    print(f"\ntop {min(args.top_k, len(outcome.table))} by {outcome.metric} (searched):")
    print(top_k_text(outcome.table, outcome.metric, args.top_k))
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
