"""The official MediaEval 2019 metrics, F-optimal per-tag thresholds and a per-tag table.

``compute_metrics`` is the task's evaluation: scikit-learn's ROC-AUC and average precision
on the scores, precision / recall / F-score on the binary decisions, each macro and micro
averaged, with ``zero_division=0`` (a tag that is never predicted scores precision 0, which
is what the official numbers of the "popular" baseline need). ``auc_metrics`` is the
tolerant, vectorised variant that training calls every epoch on small validation sets.

Ground truth and decisions must be boolean; integer or float arrays holding only 0 and 1
are accepted too and read as booleans (soft or mixed-up labels are refused).

CLI::

    python -m moodtheme.evaluate GROUNDTRUTH.npy PREDICTIONS.npy \
        [--decisions DECISIONS.npy] [--output results.tsv]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

AUC_NAMES = ("ROC-AUC-macro", "PR-AUC-macro", "ROC-AUC-micro", "PR-AUC-micro")
# The order of the official results files (submissions/baseline/vggish_results.tsv).
METRIC_NAMES = (
    "ROC-AUC-macro",
    "PR-AUC-macro",
    "precision-macro",
    "recall-macro",
    "F-score-macro",
    "ROC-AUC-micro",
    "PR-AUC-micro",
    "precision-micro",
    "recall-micro",
    "F-score-micro",
)


class EvaluationError(ValueError):
    """Inputs that cannot be scored; the message names the array, the tag or the value."""


# ----------------------------------------------------------------------------- validation


def _tag_label(index: int, tags: Sequence[str] | None) -> str:
    if tags is not None and index < len(tags):
        return f"tag {index} ({tags[index]})"
    return f"tag {index}"


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """A bool matrix from a bool or 0/1 array; anything else is refused."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "iuf":
        raise EvaluationError(f"{name} must be boolean (or 0/1), got dtype {array.dtype}")
    bad = ~((array == 0) | (array == 1))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise EvaluationError(
            f"{name} must be boolean (or 0/1), found {array[row, col].item()!r} at row {row}, "
            f"tag {col}; threshold scores into decisions first"
        )
    return array == 1


def _check_inputs(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    decisions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    groundtruth, predictions = np.asarray(groundtruth), np.asarray(predictions)
    if groundtruth.ndim != 2:
        raise EvaluationError(
            f"groundtruth must be 2-D (tracks x tags), got shape {groundtruth.shape}"
        )
    if groundtruth.shape[0] == 0 or groundtruth.shape[1] == 0:
        raise EvaluationError(f"groundtruth is empty (shape {groundtruth.shape})")
    if predictions.shape != groundtruth.shape:
        raise EvaluationError(
            f"predictions have shape {predictions.shape} but groundtruth has "
            f"{groundtruth.shape}; they must match (tracks x tags, same order)"
        )
    if predictions.dtype.kind not in "biuf":
        raise EvaluationError(f"predictions must be numeric, got dtype {predictions.dtype}")
    predictions = predictions.astype(np.float64, copy=False)
    finite = np.isfinite(predictions)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise EvaluationError(
            f"predictions hold {int((~finite).sum())} NaN/inf values "
            f"(first at row {row}, tag {col}: {predictions[row, col]})"
        )
    groundtruth = _as_labels(groundtruth, "groundtruth")
    if decisions is not None:
        decisions = np.asarray(decisions)
        if decisions.shape != groundtruth.shape:
            raise EvaluationError(
                f"decisions have shape {decisions.shape} but groundtruth has "
                f"{groundtruth.shape}; they must match"
            )
        decisions = _as_labels(decisions, "decisions")
    return groundtruth, predictions, decisions


def _both_classes(groundtruth: np.ndarray) -> np.ndarray:
    positives = groundtruth.sum(axis=0)
    return (positives > 0) & (positives < groundtruth.shape[0])


def _require_both_classes(groundtruth: np.ndarray, tags: Sequence[str] | None) -> None:
    bad = np.flatnonzero(~_both_classes(groundtruth))
    if bad.size:
        i = int(bad[0])
        kind = "no positive" if not groundtruth[:, i].any() else "no negative"
        more = f" ({bad.size} tags in all: {bad.tolist()})" if bad.size > 1 else ""
        raise EvaluationError(
            f"{_tag_label(i, tags)} has {kind} examples in the ground truth, so its AUC is "
            f"undefined{more}; evaluate on a split where every tag occurs"
        )


# ----------------------------------------------------------------------------- metrics


def compute_metrics(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    decisions: np.ndarray | None = None,
    *,
    tags: Sequence[str] | None = None,
) -> dict[str, float]:
    """The official metrics, keyed by their official names, in the official order.

    Without ``decisions`` only the four AUC metrics are returned. ``tags`` only names tags
    in error messages. Raises :class:`EvaluationError` on bad input or a tag lacking
    positive (or negative) examples.
    """
    groundtruth, predictions, decisions = _check_inputs(groundtruth, predictions, decisions)
    _require_both_classes(groundtruth, tags)
    metrics: dict[str, float] = {}
    for average in ("macro", "micro"):
        metrics[f"ROC-AUC-{average}"] = roc_auc_score(groundtruth, predictions, average=average)
        metrics[f"PR-AUC-{average}"] = average_precision_score(
            groundtruth, predictions, average=average
        )
        if decisions is not None:
            p, r, f, _ = precision_recall_fscore_support(
                groundtruth, decisions, average=average, zero_division=0
            )
            metrics.update({f"precision-{average}": p, f"recall-{average}": r})
            metrics[f"F-score-{average}"] = f
    return {name: float(metrics[name]) for name in METRIC_NAMES if name in metrics}


def _sorted_curves(groundtruth: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per tag (rows of the transposed inputs), sorted by descending score: labels,
    cumulative positives, and for each track the first and last position of its group of
    tied scores."""
    scores = np.ascontiguousarray(predictions.T)
    order = np.argsort(-scores, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    labels = np.take_along_axis(groundtruth.T, order, axis=1).astype(np.float64)
    tps = np.cumsum(labels, axis=1)
    n = scores.shape[1]
    positions = np.arange(n)
    new = np.ones_like(scores, dtype=bool)
    new[:, 1:] = scores[:, 1:] != scores[:, :-1]
    last = np.ones_like(scores, dtype=bool)
    last[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, positions, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, positions, n)[:, ::-1], axis=1)[:, ::-1]
    return labels, tps, start, end


def _roc_pr(groundtruth: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ROC-AUC and average precision, equal to scikit-learn's (ties included).

    Sorting every column at once costs one argsort, where scikit-learn's per-tag loop costs
    a few hundred milliseconds per epoch on the validation split. Columns must hold both
    classes.
    """
    labels, tps, start, end = _sorted_curves(groundtruth, predictions)
    positives = tps[:, -1]
    negatives = labels.shape[1] - positives
    tps_at_end = np.take_along_axis(tps, end, axis=1)
    # Average precision: each positive is credited with the precision at the lowest
    # threshold that still keeps its group of tied scores, i.e. the end of that group.
    precision_at_end = tps_at_end / (end + 1)
    pr = (labels * precision_at_end).sum(axis=1) / positives
    # ROC-AUC as the trapezoid rule: each negative adds the mean of the true-positive counts
    # before and after its tie group, which counts tied positives as half.
    tps_before = np.take_along_axis(tps - labels, start, axis=1)
    roc = ((1 - labels) * (tps_at_end + tps_before)).sum(axis=1) / (2 * positives * negatives)
    return roc, pr


def per_tag_auc(groundtruth: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and PR-AUC per tag; NaN where a tag lacks positive or negative examples."""
    groundtruth, predictions, _ = _check_inputs(groundtruth, predictions)
    roc = np.full(groundtruth.shape[1], np.nan)
    pr = np.full(groundtruth.shape[1], np.nan)
    keep = _both_classes(groundtruth)
    if keep.any():
        roc[keep], pr[keep] = _roc_pr(groundtruth[:, keep], predictions[:, keep])
    return roc, pr


def auc_metrics(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    skip_empty: bool = True,
    *,
    tags: Sequence[str] | None = None,
) -> dict[str, float]:
    """ROC-AUC and PR-AUC, macro and micro, over the tags that have both classes.

    With ``skip_empty=False`` a tag lacking positives (or negatives) raises
    :class:`EvaluationError`, as in :func:`compute_metrics`. When no tag has both classes
    every value is NaN. Matches :func:`compute_metrics` when every tag has both classes.
    """
    groundtruth, predictions, _ = _check_inputs(groundtruth, predictions)
    if not skip_empty:
        _require_both_classes(groundtruth, tags)
    keep = _both_classes(groundtruth)
    if not keep.any():
        return dict.fromkeys(AUC_NAMES, float("nan"))
    groundtruth, predictions = groundtruth[:, keep], predictions[:, keep]
    roc, pr = _roc_pr(groundtruth, predictions)
    roc_micro, pr_micro = _roc_pr(groundtruth.reshape(-1, 1), predictions.reshape(-1, 1))
    return {
        "ROC-AUC-macro": float(roc.mean()),
        "PR-AUC-macro": float(pr.mean()),
        "ROC-AUC-micro": float(roc_micro[0]),
        "PR-AUC-micro": float(pr_micro[0]),
    }


# ----------------------------------------------------------------------------- thresholds


def group_metrics(
    groundtruth: np.ndarray, predictions: np.ndarray, columns: Sequence[int]
) -> dict[str, float]:
    """Macro PR-AUC and ROC-AUC over a group of tags (``columns``), and the group's label
    frequency: the share of positive (track, tag) cells, which is PR-AUC's chance level.
    Tags lacking either class in ``groundtruth`` are left out of the AUCs."""
    columns = list(columns)
    roc, pr = per_tag_auc(groundtruth[:, columns], predictions[:, columns])
    with np.errstate(invalid="ignore"):
        return {
            "pr_auc_macro": float(np.nanmean(pr)) if np.isfinite(pr).any() else math.nan,
            "roc_auc_macro": float(np.nanmean(roc)) if np.isfinite(roc).any() else math.nan,
            "label_frequency": float(np.asarray(groundtruth)[:, columns].mean()),
        }


def optimal_thresholds(groundtruth: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Per tag, the score threshold that maximises the F-score on these tracks.

    Computed on one split (validation) and applied to another with
    :func:`apply_thresholds`. A tag with no positive example here gets ``+inf``, so it is
    never predicted.
    """
    groundtruth, predictions, _ = _check_inputs(groundtruth, predictions)
    thresholds = np.full(groundtruth.shape[1], np.inf)
    for i in np.flatnonzero(groundtruth.any(axis=0)):
        precision, recall, candidates = precision_recall_curve(groundtruth[:, i], predictions[:, i])
        # The curve's last point (precision 1, recall 0) has no threshold.
        precision, recall = precision[:-1], recall[:-1]
        total = precision + recall
        f_score = np.divide(
            2 * precision * recall, total, out=np.zeros_like(total), where=total > 0
        )
        thresholds[i] = candidates[np.argmax(f_score)]
    return thresholds


def apply_thresholds(predictions: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean decisions ``predictions > thresholds`` (one threshold per tag column).

    Strictly greater, as the task's organisers did: it reproduces the official
    vggish_decisions.npy from vggish_predictions.npy and vggish_thresholds.txt exactly,
    whereas ``>=`` flips the 57 entries whose score equals its tag's threshold.
    """
    predictions, thresholds = np.asarray(predictions), np.asarray(thresholds)
    if predictions.ndim != 2 or thresholds.shape != (predictions.shape[1],):
        raise EvaluationError(
            f"thresholds have shape {thresholds.shape} but predictions have shape "
            f"{predictions.shape}; expected one threshold per tag column"
        )
    return predictions > thresholds


def per_tag_table(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    decisions: np.ndarray,
    tags: Sequence[str],
) -> pd.DataFrame:
    """One row per tag: ROC-AUC, PR-AUC (NaN without both classes), F-score, precision,
    recall (0 where undefined, as in the official metrics) and the count of positives."""
    groundtruth, predictions, decisions = _check_inputs(groundtruth, predictions, decisions)
    if len(tags) != groundtruth.shape[1]:
        raise EvaluationError(f"got {len(tags)} tag names for {groundtruth.shape[1]} tag columns")
    roc, pr = per_tag_auc(groundtruth, predictions)
    precision, recall, f_score, positives = precision_recall_fscore_support(
        groundtruth, decisions, average=None, zero_division=0
    )
    return pd.DataFrame(
        {
            "tag": list(tags),
            "ROC-AUC": roc,
            "PR-AUC": pr,
            "F-score": f_score,
            "precision": precision,
            "recall": recall,
            "positives": positives.astype(int),
        }
    )


# ----------------------------------------------------------------------------- files and CLI


def format_results(metrics: Mapping[str, float]) -> str:
    """``NAME<TAB>VALUE`` lines with six decimals, official names first in official order."""
    names = [n for n in METRIC_NAMES if n in metrics]
    names += [n for n in metrics if n not in METRIC_NAMES]
    return "".join(f"{name}\t{metrics[name]:.6f}\n" for name in names)


def write_results_tsv(metrics: Mapping[str, float], path: Path | str) -> Path:
    """Write :func:`format_results` to ``path`` (the official results-file format)."""
    path = Path(path)
    path.write_text(format_results(metrics), encoding="utf-8")
    return path


def _load(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise EvaluationError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise EvaluationError(f"{what} file {path} is not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):
        raise EvaluationError(f"{what} file {path} is an .npz archive; pass a single .npy array")
    return array


def _known_tags(n_tags: int) -> list[str] | None:
    # Names only decorate error messages, and only when the column count matches.
    from moodtheme.data.jamendo import load_tags

    tags = load_tags()
    return tags if len(tags) == n_tags else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.evaluate",
        description="Score predictions (and decisions) with the official MediaEval 2019 "
        "metrics; prints NAME<TAB>VALUE lines.",
    )
    parser.add_argument("groundtruth", type=Path, help="bool .npy, tracks x tags")
    parser.add_argument("predictions", type=Path, help="float .npy scores, tracks x tags")
    parser.add_argument("--decisions", type=Path, help="bool .npy decisions, tracks x tags")
    parser.add_argument("--output", type=Path, help="also write the lines to this .tsv file")
    args = parser.parse_args(argv)
    try:
        groundtruth = _load(args.groundtruth, "groundtruth")
        predictions = _load(args.predictions, "predictions")
        decisions = _load(args.decisions, "decisions") if args.decisions else None
        tags = _known_tags(groundtruth.shape[1]) if groundtruth.ndim == 2 else None
        metrics = compute_metrics(groundtruth, predictions, decisions, tags=tags)
        text = format_results(metrics)
        if args.output:
            try:
                write_results_tsv(metrics, args.output)
            except OSError as err:
                raise EvaluationError(
                    f"cannot write {args.output}: {err.strerror or err}"
                ) from None
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
