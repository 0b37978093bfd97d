"""ASHA payoff: epochs spent and best score of ASHA + Optuna vs the same number of trials run
to the full budget, on the synthetic dataset.

Both searches use the same space, sampler seed and trial count; the second sets ASHA's grace
period to max_t, so no trial stops early. Reported per search: epochs trained (summed over
trials), wall time, and the best trial's validation and test PR-AUC (final scores of the
best completed trial).

Run: ``python benchmarks/asha_payoff.py`` (about 15 minutes on 2 cores);
``--space/--budget/--num-samples/--set`` change the search.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from moodtheme.config import parse_overrides
from tune import ray_adapter
from tune.search import RunOptions, run_search
from tune.space import Asha, load_space

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(REPO / "search_spaces" / "smoke.yaml"))
    p.add_argument("--budget", default="full")
    p.add_argument("--num-samples", type=int, default=12)
    p.add_argument("--max-t", type=int, default=6)
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=3)
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=["data.limit_tracks=200"],
        metavar="KEY=VALUE",
        help="fixed overrides (default: data.limit_tracks=200)",
    )
    args = p.parse_args(argv)

    space = load_space(args.space, args.budget, parse_overrides(args.set))
    asha = Asha(args.max_t, args.grace_period, args.reduction_factor)
    space = replace(
        space,
        num_samples=args.num_samples,
        max_concurrent_trials=args.concurrent,
        resources=replace(space.resources, cpu=1.0, gpu=0.0),
        asha=asha,
    )
    runs = {
        "ASHA + Optuna": space,
        "full budget + Optuna": replace(space, asha=replace(asha, grace_period=args.max_t)),
    }
    ray_adapter.connect(None, num_cpus=os.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory(prefix="asha-payoff-") as tmp:
        for i, (label, s) in enumerate(runs.items()):
            started = time.perf_counter()
            outcome = run_search(
                s,
                RunOptions(name=f"payoff-{i}", storage=tmp, tracking=False, verbose=0),
            )
            wall = time.perf_counter() - started
            table = outcome.table
            epochs = int(table["epochs"].sum())
            done = table[table["state"] == "completed"]
            best = done.iloc[0] if len(done) else None
            rows.append(
                (
                    label,
                    len(table),
                    int((table["state"] == "stopped_early").sum()),
                    epochs,
                    wall,
                    best["kept_val_pr_auc_macro"] if best is not None else float("nan"),
                    best["kept_test_pr_auc_macro"] if best is not None else float("nan"),
                )
            )
    ray_adapter.disconnect()

    print(
        f"\n{args.num_samples} trials of up to {args.max_t} epochs; ASHA grace "
        f"{args.grace_period}, reduction {args.reduction_factor:g}; {' '.join(args.set)}"
    )
    header = f"{'search':<22}{'trials':>7}{'stopped':>8}{'epochs':>8}{'wall s':>8}"
    print(header + f"{'best val PR-AUC':>17}{'its test PR-AUC':>17}")
    for label, n, stopped, epochs, wall, val, test in rows:
        print(f"{label:<22}{n:>7}{stopped:>8}{epochs:>8}{wall:>8.0f}{val:>17.4f}{test:>17.4f}")
    saved = 1 - rows[0][3] / rows[1][3]
    print(f"ASHA trained {saved:.0%} fewer epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
