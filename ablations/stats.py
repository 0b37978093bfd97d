"""Paired statistics for ablation effects: seeds, test tracks, and the verdict they support.

Two sources of noise hide an ablation's effect, and each gets its own interval:

- training randomness: the reference and the variant are trained with the same seeds, so the
  per-seed differences are paired; their mean gets a t-interval (:func:`paired_difference`);
- the finite test set: a paired bootstrap resamples test tracks, the same resample for both
  models and every seed (:func:`paired_bootstrap`).

:func:`verdict` calls an effect only when both intervals agree on its sign, so neither a lucky
seed nor a lucky test set is enough on its own.

Sign convention everywhere: ``variant - reference``. A variant takes a component out, so a
negative difference means the component helps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

Metric = Literal["pr_auc", "roc_auc"]
METRICS: tuple[Metric, ...] = ("pr_auc", "roc_auc")
HELPS, HURTS, NO_EFFECT = "helps", "hurts", "no detectable effect"


@dataclass(frozen=True)
class Estimate:
    """A mean with a two-sided confidence interval; ``low``/``high`` are NaN below two values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0  # False for NaN bounds

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.4f}"
        return f"{self.mean:.4f} ± {(self.high - self.low) / 2:.4f}"


@dataclass(frozen=True)
class BootstrapResult:
    """Observed ``variant - reference`` (mean over seeds) and its bootstrap interval and p-value."""

    delta: float
    low: float
    high: float
    p_value: float
    n_boot: int
    n_tracks: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval over independent values (e.g. seeds)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def paired_difference(
    variant: Sequence[float] | np.ndarray,
    reference: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
) -> Estimate:
    """Mean and t-interval of ``variant[i] - reference[i]``, the two aligned by seed."""
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    if v.shape != r.shape:
        raise ValueError(f"paired values differ in shape: variant {v.shape}, reference {r.shape}")
    return mean_ci(v - r, confidence)


# ----------------------------------------------------------------------------- weighted AUCs


@dataclass(frozen=True)
class _Ranking:
    """One tag's scores sorted once; a bootstrap resample only changes the track weights.

    Both metrics only need, for each run of tied scores that holds a positive, the weight seen
    up to its end and just before its start, and the positive weight at the same two places.
    """

    order: np.ndarray  # tracks, highest score first
    positives: np.ndarray  # the positive tracks, in that order
    group_end: np.ndarray  # sorted position of the last track of each tie group with a positive
    group_start: np.ndarray  # ... and of its first track
    positives_through_end: np.ndarray  # how many positives sit at or before group_end
    positives_before_start: np.ndarray  # how many positives sit before group_start


def _ranking(labels: np.ndarray, scores: np.ndarray) -> _Ranking:
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order].astype(bool)
    new_group = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:] - 1, len(s) - 1]
    group_of = np.cumsum(new_group) - 1
    positions = np.flatnonzero(y)
    groups = np.unique(group_of[positions])
    return _Ranking(
        order=order,
        positives=order[positions],
        group_end=ends[groups],
        group_start=starts[groups],
        positives_through_end=np.searchsorted(positions, ends[groups], side="right"),
        positives_before_start=np.searchsorted(positions, starts[groups], side="left"),
    )


def _auc_from_ranking(rank: _Ranking, weights: np.ndarray) -> dict[Metric, np.ndarray]:
    """Both metrics for each row of ``weights`` [B, n]; NaN where a class has no weight."""
    seen = np.cumsum(weights[:, rank.order], axis=1, dtype=weights.dtype)
    total = seen[:, -1].astype(float)
    seen_end = seen[:, rank.group_end].astype(float)
    seen_before = np.where(
        rank.group_start > 0, seen[:, np.maximum(rank.group_start - 1, 0)], 0
    ).astype(float)
    cum_pos = np.zeros((len(weights), len(rank.positives) + 1))
    cum_pos[:, 1:] = np.cumsum(weights[:, rank.positives], axis=1)
    tp_end = cum_pos[:, rank.positives_through_end]
    d_tp = tp_end - cum_pos[:, rank.positives_before_start]
    pos = cum_pos[:, -1]
    neg = total - pos
    fp_end = seen_end - tp_end
    d_fp = (seen_end - seen_before) - d_tp
    valid = (pos > 0) & (neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # sklearn's average precision: recall gained at each threshold times its precision.
        precision = np.divide(tp_end, seen_end, out=np.zeros_like(tp_end), where=seen_end > 0)
        pr_auc = (d_tp * precision).sum(axis=1) / pos
        # Mann-Whitney: each positive beats the negatives below it and half of those tied.
        roc_auc = (d_tp * (neg[:, None] - fp_end + d_fp / 2)).sum(axis=1) / (pos * neg)
    return {"pr_auc": np.where(valid, pr_auc, np.nan), "roc_auc": np.where(valid, roc_auc, np.nan)}


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def weighted_tag_auc(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    weights: np.ndarray,
    metric: Metric = "pr_auc",
) -> np.ndarray:
    """Per-tag ROC-AUC or average precision under track weights.

    ``groundtruth`` and ``predictions`` are [n_tracks, n_tags]; ``weights`` is [B, n_tracks]
    (bootstrap counts; a row of ones gives sklearn's unweighted values, ties included).
    Returns [B, n_tags], NaN where a tag has no weighted positive or no weighted negative.
    """
    _check_metric(metric)
    y = np.asarray(groundtruth).astype(bool)
    p = np.asarray(predictions, dtype=float)
    w = np.atleast_2d(np.asarray(weights))
    if y.shape != p.shape or w.shape[1] != y.shape[0]:
        raise ValueError(
            f"shapes disagree: groundtruth {y.shape}, predictions {p.shape}, weights {w.shape}"
        )
    return np.stack(
        [_auc_from_ranking(_ranking(y[:, t], p[:, t]), w)[metric] for t in range(y.shape[1])],
        axis=1,
    )


def tag_auc(
    groundtruth: np.ndarray, predictions: np.ndarray, metric: Metric = "pr_auc"
) -> np.ndarray:
    """Unweighted per-tag metric [n_tags]; NaN where a tag lacks positives or negatives."""
    ones = np.ones((1, len(groundtruth)), dtype=np.int64)
    return weighted_tag_auc(groundtruth, predictions, ones, metric)[0]


# ----------------------------------------------------------------------------- bootstrap


def _stack_seeds(predictions: np.ndarray | Sequence[np.ndarray], n_tracks: int) -> np.ndarray:
    p = np.asarray(predictions, dtype=float)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] != n_tracks:
        raise ValueError(f"predictions must be [seeds, {n_tracks} tracks, tags], got {p.shape}")
    return p


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # A resample where no tag has both classes is NaN by design; it is dropped later.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=1)


def _bootstrap_deltas(
    groundtruth: np.ndarray,
    reference: np.ndarray | Sequence[np.ndarray],
    variant: np.ndarray | Sequence[np.ndarray],
    tags: Sequence[int] | None,
    n_boot: int,
    seed: int,
    chunk: int,
) -> tuple[dict[Metric, float], dict[Metric, np.ndarray]]:
    """Observed delta and ``n_boot`` resampled deltas per metric. The resamples depend only on
    (``seed``, number of tracks, ``n_boot``, ``chunk``), so two calls that agree on those
    score the same resamples: that is what pairs the groups of :func:`contrast_bootstrap`."""
    y = np.asarray(groundtruth).astype(bool)
    n = y.shape[0]
    ref, var = _stack_seeds(reference, n), _stack_seeds(variant, n)
    if ref.shape != var.shape:
        raise ValueError(f"reference {ref.shape} and variant {var.shape} are not paired")
    cols = np.arange(y.shape[1]) if tags is None else np.asarray(tags, dtype=int)
    if len(cols) == 0:
        raise ValueError("a bootstrap needs at least one tag")
    pairs = [
        (_ranking(y[:, t], ref[s, :, t]), _ranking(y[:, t], var[s, :, t]))
        for s in range(len(ref))
        for t in cols
    ]

    def deltas(weights: np.ndarray) -> dict[Metric, np.ndarray]:
        scored = [(_auc_from_ranking(r, weights), _auc_from_ranking(v, weights)) for r, v in pairs]
        out = {}
        for metric in METRICS:
            r = np.stack([a[metric] for a, _ in scored], 1).reshape(len(weights), len(ref), -1)
            v = np.stack([b[metric] for _, b in scored], 1).reshape(len(weights), len(ref), -1)
            per_seed = [_nanmean_rows(v[:, s]) - _nanmean_rows(r[:, s]) for s in range(len(ref))]
            out[metric] = np.mean(per_seed, axis=0)
        return out

    observed = {m: float(v[0]) for m, v in deltas(np.ones((1, n), dtype=np.int64)).items()}
    rng = np.random.default_rng(seed)
    draws: dict[Metric, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_boot - start))
        for metric, values in deltas(counts.astype(np.int32)).items():
            draws[metric].append(values)
    return observed, {m: np.concatenate(d) for m, d in draws.items()}


def paired_bootstrap(
    groundtruth: np.ndarray,
    reference: np.ndarray | Sequence[np.ndarray],
    variant: np.ndarray | Sequence[np.ndarray],
    tags: Sequence[int] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 200,
) -> dict[Metric, BootstrapResult]:
    """Paired bootstrap over test tracks of the macro difference, variant - reference.

    ``reference`` and ``variant`` are [seeds, n_tracks, n_tags] (or one [n_tracks, n_tags]), the
    seeds aligned. Every resample draws tracks with replacement once and scores both models
    and all seeds on it; the statistic is the mean over seeds of the macro difference over
    ``tags`` (default: all). A tag without both classes in a resample drops out of that
    resample's macro average, for both models alike. Returns one result per metric.

    The interval is the percentile interval; the two-sided p-value is twice the share of
    resamples on the far side of zero, the smallest level at which a percentile interval
    would exclude zero (so, up to the resamples' resolution, ``p < 1 - confidence`` iff the
    interval excludes zero). A p-value of 0 means below ``1 / n_boot``.
    """
    observed, draws = _bootstrap_deltas(groundtruth, reference, variant, tags, n_boot, seed, chunk)
    n = len(groundtruth)
    return {m: _summarise(observed[m], draws[m], confidence, n) for m in METRICS}


def contrast_bootstrap(
    groundtruth: np.ndarray,
    reference: np.ndarray | Sequence[np.ndarray],
    variant: np.ndarray | Sequence[np.ndarray],
    tags: Sequence[int],
    other_tags: Sequence[int],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 200,
) -> dict[Metric, BootstrapResult]:
    """Is the effect on ``tags`` different from the effect on ``other_tags``?

    The statistic is (delta over ``tags``) - (delta over ``other_tags``), both macro deltas
    computed on the same track resamples, so the test-set noise the two groups share cancels.
    """
    observed, draws = _bootstrap_deltas(groundtruth, reference, variant, tags, n_boot, seed, chunk)
    other_observed, other_draws = _bootstrap_deltas(
        groundtruth, reference, variant, other_tags, n_boot, seed, chunk
    )
    n = len(groundtruth)
    return {
        m: _summarise(observed[m] - other_observed[m], draws[m] - other_draws[m], confidence, n)
        for m in METRICS
    }


def _summarise(observed: float, boot: np.ndarray, confidence: float, n: int) -> BootstrapResult:
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0 or not math.isfinite(observed):
        return BootstrapResult(observed, math.nan, math.nan, math.nan, 0, n)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boot, [tail, 1 - tail])
    below, above = int((boot <= 0).sum()), int((boot >= 0).sum())
    p_value = min(1.0, 2 * min(below, above) / len(boot))  # 0: below 1 / n_boot
    return BootstrapResult(observed, float(low), float(high), p_value, len(boot), n)


# ----------------------------------------------------------------------------- verdict


def verdict(seeds: Estimate, bootstrap: BootstrapResult) -> str:
    """Plain words for the component the variant removes: helps, hurts, no detectable effect.

    An effect is called only when the paired bootstrap over tracks excludes zero and, with two
    or more seeds, the t-interval of the per-seed differences excludes zero on the same side.
    With a single seed the bootstrap decides alone (training noise is then not assessed).
    """
    if not bootstrap.excludes_zero:
        return NO_EFFECT
    if seeds.n >= 2 and not (
        seeds.excludes_zero and np.sign(seeds.mean) == np.sign(bootstrap.delta)
    ):
        return NO_EFFECT
    # variant - reference < 0: taking the component out lowers the score.
    return HELPS if bootstrap.delta < 0 else HURTS
