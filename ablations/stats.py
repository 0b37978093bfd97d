"""Statistics of paired ablation effects, as plain functions of arrays (no Ray, no training).

An ablation's effect Δ = variant - reference is the mean over seeds of the per-seed paired
difference. Two sources of noise hide it:

- training randomness: each seed draws its own initialisation, data order and augmentation;
  the spread of the per-seed differences measures it (``se_seeds`` = s / sqrt(n));
- the finite test set: a paired bootstrap over test tracks measures it (``se_tracks``, the
  standard deviation of Δ over the resamples; ``ablations.bootstrap`` computes the draws).

:func:`paired_test` tests Δ against both at once: t = Δ / sqrt(se_seeds² + se_tracks²) with
n - 1 degrees of freedom. The seed spread is the only estimated part that can be badly
wrong with few seeds, so its degrees of freedom are the test's: valid whatever the share of
the two noises (a Welch-Satterthwaite df would be less conservative, and with 2 or 3 seeds
calls false effects far above its nominal rate; docs/ablations.md).

The rest builds on it: Holm's correction over a suite's family (:func:`holm`), interim looks
of adaptive seeding (:func:`look_schedule`, :func:`decide`), Benjamini-Hochberg over per-tag
cells (:func:`benjamini_hochberg`), two one-sided tests for ruling an effect size out
(:func:`equivalence_p`), power and the minimum detectable effect (:func:`detection_power`,
:func:`minimum_detectable_effect`, :func:`seeds_for_effect`), and the probability of
improvement with a stratified bootstrap interval (:func:`probability_of_improvement`).

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
from scipy import optimize
from scipy import stats as scipy_stats

Metric = Literal["pr_auc", "roc_auc"]
METRICS: tuple[Metric, ...] = ("pr_auc", "roc_auc")
HELPS, HURTS, NO_EFFECT = "helps", "hurts", "no detectable effect"
ALPHA = 0.05  # family-wise error rate of the verdicts, false discovery rate of the tag map
POWER = 0.8  # the power a minimum detectable effect is defined at
ArrayLike = Sequence[float] | np.ndarray | float


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


def mean_ci(values: ArrayLike, confidence: float = 0.95) -> Estimate:
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
    variant: ArrayLike, reference: ArrayLike, confidence: float = 0.95
) -> Estimate:
    """Mean and t-interval of ``variant[i] - reference[i]``, the two aligned by seed: the
    interval of training noise alone."""
    v, r = np.asarray(variant, dtype=float), np.asarray(reference, dtype=float)
    if v.shape != r.shape:
        raise ValueError(f"paired values differ in shape: variant {v.shape}, reference {r.shape}")
    return mean_ci(v - r, confidence)


# ----------------------------------------------------------------------------- the test


@dataclass(frozen=True)
class PairedTest:
    """Δ and its test; every field is a float or, for many tests at once, an array."""

    delta: np.ndarray  # mean over seeds of the per-seed difference
    se_seeds: np.ndarray  # s / sqrt(n) of the per-seed differences: training noise
    se_tracks: np.ndarray  # bootstrap standard deviation of Δ: test-set noise
    n: np.ndarray  # seeds

    @property
    def se(self) -> np.ndarray:
        return np.hypot(self.se_seeds, self.se_tracks)

    @property
    def df(self) -> np.ndarray:
        return np.where(self.n >= 2, self.n - 1.0, np.nan)

    @property
    def p_value(self) -> np.ndarray:
        return t_pvalue(self.delta, self.se, self.df)

    @property
    def p_below_zero(self) -> np.ndarray:
        """One-sided p-value for a hypothesis stated in advance: Δ < 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return scipy_stats.t.cdf(self.delta / self.se, self.df)

    def interval(self, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        half = scipy_stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return self.delta - half, self.delta + half


def paired_test(per_seed: ArrayLike, se_tracks: ArrayLike) -> PairedTest:
    """The test of Δ from the per-seed differences [..., seeds] (NaN: a seed left out) and
    the bootstrap standard error of Δ over test tracks [...]. Below two seeds the training
    noise is unmeasured: the p-value and interval are NaN."""
    d = np.asarray(per_seed, dtype=float)
    n = np.isfinite(d).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.nansum(d, axis=-1) / np.where(n > 0, n, np.nan)
        spread = np.nansum((d - delta[..., None]) ** 2, axis=-1) / (n - 1)
        se_seeds = np.where(n >= 2, np.sqrt(spread / n), np.nan)
    return PairedTest(delta, se_seeds, np.asarray(se_tracks, dtype=float), n)


def t_pvalue(delta: ArrayLike, se: ArrayLike, df: ArrayLike) -> np.ndarray:
    """Two-sided p-value of ``delta / se`` under Student's t; 1 for a zero Δ with zero error
    (two identical arms), 0 for a non-zero Δ with zero error."""
    delta, se = np.asarray(delta, dtype=float), np.asarray(se, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where((se == 0) & (delta == 0), 0.0, np.abs(delta) / se)
    return 2 * scipy_stats.t.sf(t, df)


def equivalence_p(test: PairedTest, margin: float) -> np.ndarray:
    """Two one-sided tests that |Δ| < ``margin``: small when the data rule out effects of
    that size in either direction (the 1 - 2p interval lies inside ±margin)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        below = scipy_stats.t.sf((test.delta + margin) / test.se, test.df)  # H0: Δ <= -margin
        above = scipy_stats.t.cdf((test.delta - margin) / test.se, test.df)  # H0: Δ >= margin
    return np.maximum(below, above)


# ----------------------------------------------------------------------------- corrections


def holm(p: ArrayLike) -> np.ndarray:
    """Holm-adjusted p-values along the last axis; NaN entries are not in the family.

    Rejecting every hypothesis with adjusted p <= alpha keeps the chance of any false
    rejection in the family at most alpha, whatever the dependence between the tests.
    """
    p = np.asarray(p, dtype=float)
    finite = np.isfinite(p)
    m = finite.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    rank = np.arange(p.shape[-1])
    scaled = np.where(rank < m, (m - rank) * ranked, np.nan)
    adjusted = np.minimum(np.maximum.accumulate(scaled, axis=-1), 1.0)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(finite, out, np.nan)


def benjamini_hochberg(p: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over every finite entry of ``p``,
    any shape; the cells with q <= alpha have a false discovery rate of at most alpha."""
    p = np.asarray(p, dtype=float)
    flat = p.ravel()
    finite = np.flatnonzero(np.isfinite(flat))
    q = np.full(flat.shape, np.nan)
    if len(finite):
        order = finite[np.argsort(flat[finite], kind="stable")]
        ranked = flat[order] * len(order) / np.arange(1, len(order) + 1)
        q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q.reshape(p.shape)


def look_schedule(first: int, maximum: int) -> list[int]:
    """The seed counts at which adaptive seeding looks at the data: ``first``, then about
    half as many again each time (at least two more), ending at ``maximum``. Few looks keep
    the price of looking (alpha split between them) low."""
    if first < 2 or maximum < first:
        raise ValueError(f"adaptive seeding needs 2 <= first ({first}) <= maximum ({maximum})")
    looks = [first]
    while looks[-1] < maximum:
        looks.append(min(maximum, looks[-1] + max(2, math.ceil(looks[-1] / 2))))
    return looks


@dataclass(frozen=True)
class Decisions:
    """A family's conclusions at one look; arrays over the family's comparisons."""

    p_adjusted: np.ndarray  # Holm over the family, times the number of looks
    equivalence_adjusted: np.ndarray  # the same for the two one-sided tests at the margin
    effect: np.ndarray  # bool: helps or hurts
    ruled_out: np.ndarray  # bool: no effect as large as the margin

    @property
    def decided(self) -> np.ndarray:
        return self.effect | self.ruled_out


def decide(test: PairedTest, margin: float, looks: int = 1, alpha: float = ALPHA) -> Decisions:
    """Holm over the family (the last axis of ``test``), at level ``alpha / looks``.

    Adaptive seeding looks at the data up to ``looks`` times; splitting alpha between the
    looks (Bonferroni) keeps the chance of any false verdict, over every look together, at
    most alpha. A decided comparison gets no more seeds, so its verdict stands at later looks
    (Holm's step-down never withdraws it; tests/test_ablations_calibration.py).
    """
    p_adjusted = np.minimum(holm(test.p_value) * looks, 1.0)
    equivalence_adjusted = np.minimum(holm(equivalence_p(test, margin)) * looks, 1.0)
    effect = np.nan_to_num(p_adjusted, nan=1.0) <= alpha
    ruled_out = ~effect & (np.nan_to_num(equivalence_adjusted, nan=1.0) <= alpha)
    return Decisions(p_adjusted, equivalence_adjusted, effect, ruled_out)


def verdict(delta: float, p_adjusted: float, alpha: float = ALPHA) -> str:
    """Plain words for the component the variant removes: helps, hurts, no detectable effect."""
    if not p_adjusted <= alpha:  # NaN too
        return NO_EFFECT
    return HELPS if delta < 0 else HURTS  # variant - reference < 0: removing it lowers the score


# ----------------------------------------------------------------------------- power

_QUADRATURE = 512  # midpoints of the seed-variance distribution; exact to ~1e-3 in power


def detection_power(
    delta: ArrayLike, se_seeds: float, se_tracks: float, n: int, level: float
) -> np.ndarray:
    """Chance that :func:`paired_test` rejects at ``level`` when the true effect is ``delta``,
    the seed spread is ``se_seeds * sqrt(n)`` and the test-set error is ``se_tracks``.

    Δ is normal around ``delta`` with variance se_seeds² + se_tracks²; the test divides by
    an estimate whose seed part is scaled chi²(n - 1) / (n - 1), integrated numerically.
    """
    se = math.hypot(se_seeds, se_tracks)
    if n < 2 or not se > 0:
        return np.full(np.shape(delta), np.nan)
    share = se_seeds**2 / se**2
    u = (np.arange(_QUADRATURE) + 0.5) / _QUADRATURE
    spread = scipy_stats.chi2.ppf(u, n - 1) / (n - 1)
    critical = scipy_stats.t.isf(level / 2, n - 1) * np.sqrt(share * spread + 1 - share)
    shift = np.asarray(delta, dtype=float)[..., None] / se
    rejected = scipy_stats.norm.sf(critical - shift) + scipy_stats.norm.cdf(-critical - shift)
    return rejected.mean(axis=-1)


def minimum_detectable_effect(
    se_seeds: float, se_tracks: float, n: int, level: float, power: float = POWER
) -> float:
    """The smallest |Δ| that :func:`paired_test` detects with probability ``power`` at
    ``level``, with the noise as observed; NaN below two seeds."""
    se = math.hypot(se_seeds, se_tracks)
    if n < 2 or not math.isfinite(se):
        return math.nan
    if se == 0:
        return 0.0

    def gap(d: float) -> float:
        return float(detection_power(d, se_seeds, se_tracks, n, level)) - power

    high = se
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=se * 1e-6))


def seeds_for_effect(
    sd_seeds: float,
    se_tracks: float,
    effect: float,
    level: float,
    power: float = POWER,
    most: int = 200,
) -> int | None:
    """Fewest seeds whose minimum detectable effect is at most ``effect``, given the spread
    ``sd_seeds`` of one seed's difference and the test-set error; None when even ``most``
    seeds would not do (the test set's own noise is then the limit)."""
    if not (math.isfinite(sd_seeds) and math.isfinite(se_tracks)):
        return None

    def mde(n: int) -> float:
        return minimum_detectable_effect(sd_seeds / math.sqrt(n), se_tracks, n, level, power)

    if mde(most) > effect:
        return None
    low, high = 2, most
    while low < high:  # the MDE falls with n
        mid = (low + high) // 2
        low, high = (mid + 1, high) if mde(mid) > effect else (low, mid)
    return low


# ----------------------------------------------------------------------------- improvement


@dataclass(frozen=True)
class Probability:
    value: float
    low: float
    high: float


def _wins(reference: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """1 where the reference scores higher, 0.5 for a tie, 0 below, NaN for a NaN tag."""
    wins = (reference > variant) + 0.5 * (reference == variant)
    return np.where(np.isnan(reference) | np.isnan(variant), np.nan, wins)


def probability_of_improvement(
    reference: np.ndarray,
    variant: np.ndarray,
    reference_draws: np.ndarray,
    variant_draws: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
) -> Probability:
    """P(reference > variant): the chance that, on a tag drawn at random, the run with the
    component scores higher than its paired run without it (ties count half; Bouthillier et
    al. 2021 pair runs the same way).

    ``reference`` and ``variant`` are [seeds, tags] scores on the test set, the ``*_draws``
    [resamples, seeds, tags] the same on bootstrap resamples of the test tracks; NaN cells
    (a tag without both classes) are left out. Each draw of the interval takes one resample of the tracks and draws the
    seeds with replacement: whole seeds, every tag at once, because one run scores every tag
    (rliable's stratified bootstrap resamples runs within each task independently, which
    fits separate runs per task). The interval is the percentile interval, and so covers
    both training and test-set noise.
    """
    r, v = np.asarray(reference, dtype=float), np.asarray(variant, dtype=float)
    rd, vd = np.asarray(reference_draws, dtype=float), np.asarray(variant_draws, dtype=float)
    if r.shape != v.shape or r.ndim != 2 or rd.shape != vd.shape or rd.shape[1:] != r.shape:
        raise ValueError(
            f"need paired [seeds, tags] scores and [resamples, seeds, tags] draws, got "
            f"{r.shape}, {v.shape}, {rd.shape}, {vd.shape}"
        )
    observed = _wins(r, v)
    if not np.isfinite(observed).any():
        return Probability(math.nan, math.nan, math.nan)
    wins = _wins(rd, vd)  # [resamples, seeds, tags]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, r.shape[0], size=wins.shape[:2])
    resampled = np.take_along_axis(wins, picks[..., None], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without a scored tag
        draws = np.nanmean(resampled.reshape(len(wins), -1), axis=1)
    low, high = percentile_interval(draws, confidence)
    return Probability(float(np.nanmean(observed)), low, high)


# ----------------------------------------------------------------------------- bootstrap draws


def percentile_interval(draws: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap draws (NaN draws dropped)."""
    x = np.asarray(draws, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(x, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_se(draws: np.ndarray) -> float:
    """Standard deviation of bootstrap draws: the standard error of the statistic."""
    x = np.asarray(draws, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if len(x) > 1 else math.nan


def stack_tests(tests: Sequence[PairedTest]) -> PairedTest:
    """One :class:`PairedTest` over a family, from its members' tests."""
    return PairedTest(
        *(np.array([np.asarray(getattr(t, f), dtype=float) for t in tests]) for f in _FIELDS)
    )


_FIELDS = ("delta", "se_seeds", "se_tracks", "n")
