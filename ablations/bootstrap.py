"""Paired bootstrap over test tracks: per-tag ROC-AUC and PR-AUC of both arms on resamples.

Each resample draws the test tracks with replacement once and scores the reference and the
variant, every seed of both, on it, so the test-set noise they share cancels in their
difference. :func:`track_bootstrap` returns, per metric, the observed per-seed per-tag scores
and the resampled per-tag differences; macro averages over any set of tags (all of them, a
planted group, the contrast of two groups) come from the same resamples
(:class:`TagScores`). The inference on these arrays is in :mod:`ablations.stats`.

The weighted metrics sort each tag's scores once and reuse the order for every resample; they
match scikit-learn's, ties and weights included.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablations.stats import METRICS, Metric


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


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        # A tag without both classes (in a resample, or at all) is NaN by design.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


@dataclass(frozen=True)
class TagScores:
    """One metric's per-tag scores of two paired arms, and their bootstrap differences.

    A tag is NaN where it lacks a positive or a negative (in the test set, or in one
    resample); it then drops out of the macro average for both arms alike.
    """

    reference: np.ndarray  # [seeds, tags], on the whole test set
    variant: np.ndarray  # [seeds, tags]
    reference_draws: np.ndarray  # [resamples, seeds, tags], on each resample of the tracks
    variant_draws: np.ndarray  # [resamples, seeds, tags]
    n_tracks: int

    @property
    def draws(self) -> np.ndarray:
        """[resamples, tags]: variant - reference, mean over seeds."""
        return (self.variant_draws - self.reference_draws).mean(axis=1)

    def _columns(self, tags: Sequence[int] | None) -> np.ndarray:
        cols = np.arange(self.reference.shape[1]) if tags is None else np.asarray(tags, int)
        if len(cols) == 0:
            raise ValueError("a macro average needs at least one tag")
        return cols

    def per_seed(self, tags: Sequence[int] | None = None) -> np.ndarray:
        """[seeds]: each seed's macro difference over ``tags`` (default: all)."""
        cols = self._columns(tags)
        return _nanmean(self.variant[:, cols] - self.reference[:, cols], axis=1)

    def resampled(self, tags: Sequence[int] | None = None) -> np.ndarray:
        """[resamples]: the macro difference over ``tags``, mean over seeds, per resample."""
        return _nanmean(self.draws[:, self._columns(tags)], axis=1)

    @property
    def tag_delta(self) -> np.ndarray:
        """[tags]: per-tag difference, mean over seeds."""
        return self.variant.mean(axis=0) - self.reference.mean(axis=0)


def _stack_seeds(predictions: np.ndarray | Sequence[np.ndarray], n_tracks: int) -> np.ndarray:
    p = np.asarray(predictions, dtype=float)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[1] != n_tracks:
        raise ValueError(f"predictions must be [seeds, {n_tracks} tracks, tags], got {p.shape}")
    return p


def track_bootstrap(
    groundtruth: np.ndarray,
    reference: np.ndarray | Sequence[np.ndarray],
    variant: np.ndarray | Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    chunk: int = 200,
) -> dict[Metric, TagScores]:
    """Both metrics' :class:`TagScores` for paired predictions.

    ``reference`` and ``variant`` are [seeds, n_tracks, n_tags] (or one [n_tracks, n_tags]),
    the seeds aligned. The resamples depend only on (``seed``, number of tracks, ``n_boot``,
    ``chunk``).
    """
    y = np.asarray(groundtruth).astype(bool)
    n, n_tags = y.shape
    ref, var = _stack_seeds(reference, n), _stack_seeds(variant, n)
    if ref.shape != var.shape:
        raise ValueError(f"reference {ref.shape} and variant {var.shape} are not paired")
    n_seeds = len(ref)
    rankings = [
        (_ranking(y[:, t], ref[s, :, t]), _ranking(y[:, t], var[s, :, t]))
        for s in range(n_seeds)
        for t in range(n_tags)
    ]

    def scores(weights: np.ndarray) -> dict[Metric, tuple[np.ndarray, np.ndarray]]:
        """[rows, seeds, tags] per arm and metric."""
        pairs = [
            (_auc_from_ranking(r, weights), _auc_from_ranking(v, weights)) for r, v in rankings
        ]
        shape = (len(weights), n_seeds, n_tags)
        return {
            m: (
                np.stack([a[m] for a, _ in pairs], axis=1).reshape(shape),
                np.stack([b[m] for _, b in pairs], axis=1).reshape(shape),
            )
            for m in METRICS
        }

    observed = scores(np.ones((1, n), dtype=np.int64))
    rng = np.random.default_rng(seed)
    draws: dict[Metric, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in METRICS}
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_boot - start))
        for m, (r, v) in scores(counts.astype(np.int32)).items():
            draws[m].append((r.astype(np.float32), v.astype(np.float32)))
    empty = np.empty((0, n_seeds, n_tags), dtype=np.float32)
    return {
        m: TagScores(
            reference=observed[m][0][0],
            variant=observed[m][1][0],
            reference_draws=np.concatenate([r for r, _ in draws[m]]) if draws[m] else empty,
            variant_draws=np.concatenate([v for _, v in draws[m]]) if draws[m] else empty,
            n_tracks=n,
        )
        for m in METRICS
    }
