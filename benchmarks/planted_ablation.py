"""The ablation report for the self-attention ablation, from planted_learning.py predictions.

    python benchmarks/planted_ablation.py --data ROOT --out DIR \\
        --reference ref-0.npz ref-1.npz ref-2.npz --variant noattn-0.npz noattn-1.npz noattn-2.npz

For a GPU machine without Ray (tests/test_ablations_proof.py needs it): the proof's budget
(all of split 0, about 160 000 examples per trial) is trained there with
``benchmarks/planted_learning.py --predictions FILE`` (one file per seed, with and without
``model.attention.enabled=false``). This script puts those predictions through the suite's own statistics and report
(:func:`ablations.effects.compute_effects`, :func:`ablations.report.write_report`), with the
planted groups of ``ROOT/planted.json``, and prints what tests/test_ablations_proof.py asserts.
File ``i`` of each list is seed ``i``; the two lists must pair the same seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ablations.effects import OK, TrialResult, compute_effects
from ablations.families import conclude
from ablations.report import write_report
from ablations.run import RunError, resolve_data
from ablations.suite import plan_suite, select
from moodtheme.data.jamendo import load_tags
from moodtheme.evaluate import auc_metrics
from moodtheme.train import metric_key


def trial(arm: str, seed: int, predictions: Path, out: Path) -> TrialResult:
    """A finished trial whose run folder holds ``predictions``' combined test output."""
    saved = np.load(predictions)
    labels, probs = saved["labels"].astype(bool), saved["combined"]
    run_dir = out / "outputs" / f"{arm}.seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    np.save(run_dir / "test_groundtruth.npy", labels)
    np.save(run_dir / "test_predictions.npy", probs)
    metrics = {metric_key("test", name): v for name, v in auc_metrics(labels, probs).items()}
    return TrialResult(arm, seed, OK, run_dir, metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a synthetic root with planted.json")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--reference", type=Path, nargs="+", required=True)
    parser.add_argument("--variant", type=Path, nargs="+", required=True)
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()
    if len(args.reference) != len(args.variant):
        raise SystemExit("error: --reference and --variant need one file per seed each")
    missing = [str(f) for f in (*args.reference, *args.variant) if not f.is_file()]
    if missing:
        raise SystemExit(f"error: no such predictions file: {', '.join(missing)}")

    try:
        _, groups = resolve_data(args.data)
    except RunError as err:
        raise SystemExit(f"error: {err}") from None
    if not groups:
        raise SystemExit(f"error: --data {args.data}: no planted.json; give a synthetic root")
    plan = plan_suite(select(["self-attention"]), "quick", len(args.reference))
    (comparison,) = plan.comparisons
    trials = [
        trial(arm, seed, path, args.out)
        for arm, paths in (
            (comparison.reference, args.reference),
            (comparison.variant, args.variant),
        )
        for seed, path in enumerate(paths)
    ]
    tags = load_tags()
    effects = compute_effects(plan, trials, tags, groups, n_boot=args.n_boot)
    conclusions = conclude(effects)
    sources = ", ".join(str(f) for f in (*args.reference, *args.variant))
    settings = {"predictions (benchmarks/planted_learning.py)": sources, "data": args.data}
    files = write_report(
        args.out,
        "planted self-attention",
        plan,
        trials,
        effects,
        conclusions,
        tags,
        settings,
        args.n_boot,
        groups,
    )
    (effect,) = effects
    for group in ("long_range", "local", "long_range - local"):
        g = effect.groups[group]["pr_auc"]
        low, high = g.interval()
        print(
            f"{group} PR-AUC delta {g.delta:+.4f} [{low:+.4f}, {high:+.4f}] "
            f"p={g.p_value:.3g} (one-sided {float(g.test.p_below_zero):.3g}; "
            f"Holm over the planted family {g.p_adjusted:.3g})"
        )
    print(f"report: {files['report']}")


if __name__ == "__main__":
    main()
