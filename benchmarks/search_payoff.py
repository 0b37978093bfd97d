"""Search payoff: how many epochs TPE + ASHA and random search + ASHA need to reach what a
full-budget grid finds, on the default search's quick budget.

    python benchmarks/search_payoff.py grid  --out grid.json          # trains the grid (slow)
    python benchmarks/search_payoff.py replay --grid grid.json --seeds 0 1 2 --out payoff

``grid`` trains every configuration of a discretised copy of ``attn.yaml``'s quick budget
(model.segments x augment.mixup_alpha x model.attention.layers) to the full budget through
`tune.search.run_trials` (Ray Tune and the real trainer), plus extra seeds of a few
configurations to measure seed noise, and records every epoch's validation score.

``replay`` then runs the searchers on those recorded curves, a tabular benchmark: each method
is a real Ray Tune search (`tune.ray_adapter.run_job` with Optuna and ASHA, one trial at a
time) whose trials report the recorded curve of the configuration they drew instead of
training. So every method sees the same scores, the grid's best is known, and a search costs
seconds. Methods: TPE + ASHA (the project's bookkeeping: ASHA's stops are PRUNED), TPE + ASHA
with Ray's stock bookkeeping (every trial COMPLETE with its last score), random + ASHA.

Reported per method and searcher seed: the best-so-far full-budget score against epochs spent,
and the epochs spent until it is within one seed-noise SD of the grid's best. Writes
``payoff.md`` (the table) and ``payoff.png`` (the curves).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from moodtheme.config import parse_overrides
from tune import ray_adapter
from tune.search import RunOptions, TrialSpec, run_trials
from tune.space import Param, load_space

METRIC = "val_pr_auc_macro"
GRID = {
    "model.segments": (1, 2, 4, 8),
    "augment.mixup_alpha": (0.0, 0.5, 1.0, 2.0),
    "model.attention.layers": (1, 2),
}
NOISE_CONFIGS = ({"model.segments": 1, "augment.mixup_alpha": 0.0, "model.attention.layers": 2},
                 {"model.segments": 8, "augment.mixup_alpha": 0.0, "model.attention.layers": 2},
                 {"model.segments": 8, "augment.mixup_alpha": 1.0, "model.attention.layers": 2})  # fmt: skip
METHODS = ("tpe+asha", "tpe+asha (stock bookkeeping)", "random+asha")


def config_key(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={float(params[k]):g}" for k in GRID)


def with_derived(params: dict[str, Any], input_frames: int) -> dict[str, Any]:
    """A grid point as a trial runs it: the derived segment length, Adam throughout (the
    benchmark grid does not search the switch epoch) and the preset's 4 heads."""
    frames = input_frames // int(params["model.segments"])
    return {**params, "model.segment_frames": frames, "optim.switch_epoch": None}


# ----------------------------------------------------------------------------- grid


def train_grid(out: Path, noise_seeds: int, extra: dict[str, Any]) -> None:
    space = load_space("attn", "quick", extra)
    frames = space.trial_config(space.example_overrides()).data.input_frames
    fixed = space.fixed_overrides()
    configs = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    specs = [
        TrialSpec(f"grid-{i:02d}", {**with_derived(c, frames), "run.seed": 0})
        for i, c in enumerate(configs)
    ]
    for j, c in enumerate(NOISE_CONFIGS):
        for s in range(1, noise_seeds + 1):
            specs.append(
                TrialSpec(f"noise-{j}-seed{s}", {**with_derived(c, frames), "run.seed": s})
            )
    with tempfile.TemporaryDirectory(prefix="search-payoff-") as tmp:
        outcome = run_trials(
            specs,
            preset=space.preset,
            overrides=fixed,
            metric=METRIC,
            mode="max",
            resources=space.resources,
            max_concurrent_trials=space.max_concurrent_trials,
            options=RunOptions(name="grid", storage=tmp, tracking=False, verbose=0),
        )
    rows = []
    for record in outcome.records:
        overrides = record.spec.overrides
        curve = record.history.dropna(subset=[METRIC]).groupby("epoch")[METRIC].last()
        rows.append(
            {
                "name": record.name,
                "state": record.state,
                "params": {k: overrides[k] for k in GRID},
                "seed": overrides["run.seed"],
                "curve": [float(v) for v in curve.values],
                "kept": {k: v for k, v in record.last.items() if k.startswith("kept_")},
            }
        )
    out.write_text(json.dumps({"max_t": space.asha.max_t, "asha": space.asha.__dict__,
                               "fixed": fixed, "trials": rows}, indent=1))  # fmt: skip
    print(f"wrote {out}: {len(rows)} trials")


# ----------------------------------------------------------------------------- replay


def replay_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """A Tune trainable that reports a recorded curve instead of training."""
    curve = context["curves"][config_key(config)]
    for epoch, value in enumerate(curve, start=1):
        last = epoch == len(curve)
        ray_adapter.report(
            {"epoch": epoch, METRIC: value, **({ray_adapter.FIT_FINISHED: 1} if last else {})}
        )


def define_by_run(trial: Any) -> None:
    for key, values in GRID.items():
        Param(key, "choice", values).suggest(trial)


def replay(grid: dict[str, Any], method: str, seed: int, budget: int, tmp: str) -> list[dict]:
    """One search; returns its trials in order: params, epochs trained, completed, score."""
    import optuna

    sampler = (
        optuna.samplers.RandomSampler(seed=seed)
        if method.startswith("random")
        else optuna.samplers.TPESampler(seed=seed)
    )
    name = f"{method.split()[0]}-{'stock' if 'stock' in method else 'own'}-{seed}"
    asha = grid["asha"]
    job = ray_adapter.TuneJob(
        name=name,
        storage=tmp,
        trainable=replay_trial,
        context={"curves": _mean_curves(grid)},
        resources={"cpu": 1},
        metric=METRIC,
        mode="max",
        max_concurrent_trials=1,
        optuna=ray_adapter.OptunaPlan(
            define_by_run=define_by_run,
            sampler=sampler,
            study_url=f"sqlite:///{tmp}/{name}.db",
            study_name=name,
            num_samples=budget,
            record_pruned="stock" not in method,
        ),
        asha=ray_adapter.AshaPlan(asha["max_t"], asha["grace_period"], asha["reduction_factor"]),
        max_failures=0,
        verbose=0,
    )
    records, _ = ray_adapter.run_job(job)
    records.sort(key=lambda r: r.trial_id)  # one at a time: creation order is run order
    return [
        {
            "params": {k: r.spec.overrides[k] for k in GRID},
            "epochs": int(r.last.get("epoch", 0)),
            "completed": r.state == "completed",
            "score": float(r.last.get(METRIC, math.nan)),
        }
        for r in records
    ]


def _mean_curves(grid: dict[str, Any]) -> dict[str, list[float]]:
    """Each configuration's curve, averaged over the seeds it was trained with."""
    curves: dict[str, list[list[float]]] = {}
    for t in grid["trials"]:
        if t["state"] == "completed":
            curves.setdefault(config_key(t["params"]), []).append(t["curve"])
    return {k: list(np.mean(v, axis=0)) for k, v in curves.items()}


def seed_noise_sd(grid: dict[str, Any]) -> float:
    """Pooled SD of the final score over the seeds of each repeated configuration."""
    finals: dict[str, list[float]] = {}
    for t in grid["trials"]:
        if t["state"] == "completed":
            finals.setdefault(config_key(t["params"]), []).append(t["curve"][-1])
    groups = [v for v in finals.values() if len(v) > 1]
    dof = sum(len(v) - 1 for v in groups)
    return math.sqrt(sum(np.var(v, ddof=1) * (len(v) - 1) for v in groups) / dof)


def best_so_far(trials: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative epochs and the best full-budget score reached by then."""
    epochs, best, current = [], [], -math.inf
    spent = 0
    for t in trials:
        spent += t["epochs"]
        if t["completed"]:
            current = max(current, t["score"])
        epochs.append(spent)
        best.append(current)
    return np.array(epochs), np.array(best)


def _within(trials: list[dict], budget: int) -> list[dict]:
    """The trials a search ran before it had spent ``budget`` epochs (the grid's)."""
    spent = np.cumsum([t["epochs"] for t in trials])
    return [t for t, total in zip(trials, spent, strict=True) if total <= budget]


def epochs_to_reach(trials: list[dict], target: float) -> float:
    epochs, best = best_so_far(trials)
    hit = np.flatnonzero(best >= target)
    return float(epochs[hit[0]]) if hit.size else math.nan


def run_replays(grid_path: Path, seeds: list[int], out: Path) -> None:
    grid = json.loads(grid_path.read_text())
    curves = _mean_curves(grid)
    max_t = grid["max_t"]
    finals = {k: c[-1] for k, c in curves.items()}
    grid_best = max(finals.values())
    noise = seed_noise_sd(grid)
    target = grid_best - noise
    grid_epochs = len(finals) * max_t
    # The grid in a fixed random order: its best-so-far curve if stopped early.
    order = np.random.default_rng(0).permutation(sorted(finals))
    grid_trials = [{"epochs": max_t, "completed": True, "score": finals[k]} for k in order]
    results: dict[str, list[list[dict]]] = {m: [] for m in METHODS}
    ray_adapter.connect(None, num_cpus=os.cpu_count())
    try:
        with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
            for method, seed in itertools.product(METHODS, seeds):
                trials = replay(grid, method, seed, 2 * len(finals), tmp)
                results[method].append(_within(trials, grid_epochs))
    finally:
        ray_adapter.disconnect()
    out.mkdir(parents=True, exist_ok=True)
    _write_table(out / "payoff.md", results, grid_trials, grid_best, noise, target, grid_epochs)
    _plot(out / "payoff.png", results, grid_trials, target)
    print((out / "payoff.md").read_text())


def _write_table(path, results, grid_trials, grid_best, noise, target, grid_epochs) -> None:
    lines = [
        f"grid: {len(grid_trials)} configurations x {grid_trials[0]['epochs']} epochs = "
        f"{grid_epochs} epochs; best {grid_best:.4f}; seed noise SD {noise:.4f}; "
        f"target (within one SD of the grid's best) {target:.4f}",
        "",
        "| method | searcher seed | trials | epochs spent | best full-budget score | "
        "epochs to the grid's best (share of the grid's epochs) | epochs to within one SD |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def share(epochs: float) -> str:
        return (
            f"{epochs:g} ({epochs / grid_epochs:.0%})" if math.isfinite(epochs) else "not reached"
        )

    for method, runs in results.items():
        for seed, trials in enumerate(runs):
            best = max((t["score"] for t in trials if t["completed"]), default=math.nan)
            lines.append(
                f"| {method} | {seed} | {len(trials)} | {sum(t['epochs'] for t in trials)} | "
                f"{best:.4f} | {share(epochs_to_reach(trials, grid_best - 1e-12))} | "
                f"{share(epochs_to_reach(trials, target))} |"
            )
    path.write_text("\n".join(lines) + "\n")


def _plot(path, results, grid_trials, target) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = {m: c for m, c in zip(METHODS, ("C0", "C1", "C2"), strict=True)}
    for method, runs in results.items():
        for i, trials in enumerate(runs):
            epochs, best = best_so_far(trials)
            ax.step(epochs, best, where="post", color=colours[method], alpha=0.8,
                    label=method if i == 0 else None)  # fmt: skip
    epochs, best = best_so_far(grid_trials)
    ax.step(epochs, best, where="post", color="k", lw=2, label="full-budget grid (random order)")
    ax.axhline(target, color="grey", ls=":", label="grid's best - seed noise SD")
    ax.set_xlabel("epochs spent")
    ax.set_ylabel(f"best full-budget {METRIC}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="train the full-budget grid (real training)")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--noise-seeds", type=int, default=2)
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    r = sub.add_parser("replay", help="run the searchers on the recorded grid")
    r.add_argument("--grid", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.command == "grid":
        train_grid(args.out, args.noise_seeds, parse_overrides(args.set))
    else:
        run_replays(args.grid, args.seeds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
