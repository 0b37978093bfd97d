"""`python -m moodtheme.predict RUN_DIR`: MediaEval submission files from a finished run.

Writes `predictions.npy` (float, tracks x tags), `decisions.npy` (bool, thresholds chosen
F-optimally per tag on the validation split) and `results.tsv` in the official format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from moodtheme.config import ConfigError, with_overrides
from moodtheme.data.loaders import TrainingData, resolve_data_root
from moodtheme.data.melspec import MelspecError
from moodtheme.device import Placement, pick_device
from moodtheme.errors import TrainingError
from moodtheme.evaluate import (
    EvaluationError,
    apply_thresholds,
    format_results,
    optimal_thresholds,
    write_results_tsv,
)
from moodtheme.inference import kept_predictions, score_split
from moodtheme.models import build_model
from moodtheme.rundir import RunDir


def predict_run(
    run_dir: Path, data: str | None = None, subset: str = "test", out: Path | None = None
) -> dict[str, float]:
    """Predict ``subset`` with a run's kept weights and write the submission files."""
    run = RunDir(run_dir)
    config = run.read_config()
    run.require_kept_weights(per_class=config.early_stopping.mode == "per_class")
    if data is not None:
        config = with_overrides(config, {"data.root": data})
    out = out or run.path / f"submission-{subset}"
    out.mkdir(parents=True, exist_ok=True)

    loaders = TrainingData.build(config, resolve_data_root(config.data.root)).loaders
    wanted = {s: loaders[s] for s in dict.fromkeys(["validation", subset])}
    device = pick_device(config.run.device)
    placement = Placement(device, config.run.channels_last, config.run.amp)
    model = placement.model(build_model(config.model, config.data.input_frames, config.data.n_mels))
    probs, labels = kept_predictions(config, model, run, wanted, placement)

    thresholds = optimal_thresholds(labels["validation"].astype(bool), probs["validation"])
    decisions = apply_thresholds(probs[subset], thresholds)
    np.save(out / "predictions.npy", probs[subset].astype(np.float32))
    np.save(out / "decisions.npy", decisions)
    metrics = score_split(labels[subset].astype(bool), probs[subset], decisions)
    write_results_tsv(metrics, out / "results.tsv")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moodtheme.predict", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="a directory written by moodtheme.train")
    parser.add_argument("--data", help="melspec root (default: the run's own data)")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/submission-SPLIT)")
    args = parser.parse_args(argv)
    try:
        metrics = predict_run(args.run_dir, args.data, args.split, args.out)
    except (ConfigError, TrainingError, MelspecError, EvaluationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_results(metrics), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
