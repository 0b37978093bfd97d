"""From finished trials to effects: each ablation's reference and variant paired by seed.

:func:`compute_effects` reads every paired trial's test predictions, runs one paired
bootstrap over test tracks per ablation (:mod:`ablations.bootstrap`) and tests each headline
metric, planted tag group and tag cell (:mod:`ablations.stats`). The tests are raw here:
what a suite may conclude from them, after correcting for their number, is decided over
whole families by :mod:`ablations.families`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ablations.bootstrap import TagScores, track_bootstrap
from ablations.stats import (
    METRICS,
    NO_EFFECT,
    Estimate,
    Metric,
    PairedTest,
    Probability,
    bootstrap_se,
    mean_ci,
    paired_difference,
    paired_test,
    percentile_interval,
    probability_of_improvement,
)
from ablations.suite import Comparison, Plan
from moodtheme.rundir import groundtruth_file, predictions_file

OK, FAILED, SKIPPED, UNFINISHED = "ok", "failed", "skipped", "unfinished"
METRIC_LABELS: dict[Metric, str] = {"pr_auc": "PR-AUC-macro", "roc_auc": "ROC-AUC-macro"}
TAG_METRIC: Metric = "pr_auc"  # the metric of the per-tag map
_NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)


@dataclass
class TrialResult:
    """One (arm, seed) trial as the runner saw it end; ``run_dir`` holds fit's outputs."""

    arm: str
    seed: int
    status: str  # OK, FAILED or UNFINISHED (an interrupted run)
    run_dir: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """(test ground truth, test predictions) written by ``moodtheme.train.fit``."""
        assert self.run_dir is not None
        return (
            np.load(self.run_dir / groundtruth_file("test")),
            np.load(self.run_dir / predictions_file("test")),
        )


@dataclass
class Finding:
    """One tested difference, variant - reference: its test over seeds and tracks, the
    interval of the track bootstrap alone, and what its family concluded."""

    test: PairedTest
    tracks_low: float  # percentile interval of the bootstrap over tracks (test-set noise)
    tracks_high: float
    p_adjusted: float = math.nan  # within its family (ablations.families)

    @property
    def delta(self) -> float:
        return float(self.test.delta)

    @property
    def p_value(self) -> float:
        return float(self.test.p_value)

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        low, high = self.test.interval(confidence)
        return float(low), float(high)


@dataclass
class MetricEffect(Finding):
    """A headline metric's effect, with everything its row in the report shows."""

    reference: Estimate = _NO_ESTIMATE  # mean and t-interval over seeds of the trials' metric
    variant: Estimate = _NO_ESTIMATE
    seeds_only: Estimate = _NO_ESTIMATE  # paired t-interval over seeds (training noise)
    improvement: Probability = Probability(math.nan, math.nan, math.nan)
    verdict: str = NO_EFFECT
    equivalence_adjusted: float = math.nan
    ruled_out: bool = False  # |Δ| >= --min-effect ruled out
    mde: float = math.nan  # minimum detectable |Δ| at 80% power in this family
    seeds_needed: int | None = None  # fixed seeds for an MDE of --min-effect; None: none do


@dataclass
class TagCells:
    """Per-tag PR-AUC differences of one ablation, tested cell by cell."""

    delta: np.ndarray  # [tags], mean over seeds; NaN where a tag lacks a class
    p_value: np.ndarray  # [tags]
    q_value: np.ndarray | None = None  # Benjamini-Hochberg over the whole map


@dataclass
class Confirmation:
    """A hypothesis stated in advance about a planted group (``Ablation.expected``): the
    direction of Δ PR-AUC the synthetic data was built to show, tested one-sided."""

    group: str
    direction: str  # "lower" or "higher"
    finding: Finding
    p_one_sided: float = math.nan
    p_adjusted: float = math.nan  # Holm over the suite's confirmatory family
    confirmed: bool = False


@dataclass
class Effect:
    """What one ablation did, or why there is nothing to say about it."""

    comparison: Comparison
    status: str
    reason: str | None = None
    seeds: list[int] = field(default_factory=list)
    metrics: dict[Metric, MetricEffect] = field(default_factory=dict)
    groups: dict[str, dict[Metric, Finding]] = field(default_factory=dict)  # and "a - b"
    tags: TagCells | None = None
    confirmations: list[Confirmation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stop: str | None = None  # why it got no more seeds (ablations.seeding)
    n_tracks: int = 0  # test tracks every trial was scored on

    @property
    def name(self) -> str:
        return self.comparison.ablation.name


def _first_error(trials: Sequence[TrialResult]) -> str:
    errors = [f"seed {t.seed}: {t.error}" for t in trials if t.error]
    return errors[0] if errors else "no trial finished"


def compute_effects(
    plan: Plan,
    trials: Sequence[TrialResult],
    tags: Sequence[str],
    tag_groups: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    seeds: Mapping[str, int] | None = None,
) -> list[Effect]:
    """One :class:`Effect` per comparison of ``plan``, in suite order.

    ``seeds`` gives each ablation's number of seeds (adaptive seeding; default: all of the
    plan's); only seeds where both arms finished are paired. ``tag_groups`` (e.g. the
    synthetic dataset's planted ``local`` and ``long_range`` tags) are tested on their own,
    the macro average taken over the group's tags only, and two groups' effects against each
    other.
    """
    by_arm: dict[str, dict[int, TrialResult]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, {})[t.seed] = t
    index = {tag: i for i, tag in enumerate(tags)}
    groups = {
        name: cols
        for name, members in (tag_groups or {}).items()
        if (cols := [index[t] for t in members if t in index])
    }
    effects = []
    for c in plan.comparisons:
        if c.skipped:
            effects.append(Effect(c, SKIPPED, reason=c.skipped))
            continue
        wanted = list(range((seeds or {}).get(c.ablation.name, len(plan.seeds))))
        runs = {
            role: by_arm.get(arm, {})
            for role, arm in (("reference", c.reference), ("variant", c.variant))
        }
        done = {role: {s: t for s, t in r.items() if t.status == OK} for role, r in runs.items()}
        paired = sorted(set(done["reference"]) & set(done["variant"]) & set(wanted))
        if not paired:
            effects.append(_no_pairs(c, runs, done, len(wanted)))
            continue
        effect = Effect(c, OK, seeds=paired)
        missing = [s for s in wanted if s not in paired]
        if missing:
            failed = [t for r in runs.values() for s, t in r.items() if s in missing and t.error]
            effect.notes.append(
                f"seeds {', '.join(map(str, missing))} left out (a trial did not finish"
                + (f": {_first_error(failed)})" if failed else ")")
            )
        _fill_effect(effect, done, groups, n_boot)
        effects.append(effect)
    return effects


def _no_pairs(
    c: Comparison,
    runs: dict[str, dict[int, TrialResult]],
    done: dict[str, dict[int, TrialResult]],
    n_seeds: int,
) -> Effect:
    """Why an ablation has no seed finished on both sides: failures, or an unfinished run."""
    for role, arm in (("variant", c.variant), ("reference", c.reference)):
        if done[role]:
            continue
        trials = list(runs[role].values())
        if len(trials) >= n_seeds and all(t.status == FAILED for t in trials):
            return Effect(
                c, FAILED, reason=f"every {role} trial ({arm}) failed; {_first_error(trials)}"
            )
    if all(t.status == FAILED for r in runs.values() for t in r.values()) and any(runs.values()):
        return Effect(c, FAILED, reason="no seed finished for both the reference and the variant")
    return Effect(c, UNFINISHED, reason="its trials have not all finished; resume the suite")


def _load_predictions(
    done: dict[str, dict[int, TrialResult]], seeds: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ground truth, reference [seeds, tracks, tags], variant [...]), checked to share data."""
    arrays: dict[str, list[np.ndarray]] = {"reference": [], "variant": []}
    truth = None
    for role in arrays:
        for s in seeds:
            y, p = done[role][s].predictions()
            if truth is None:
                truth = y
            elif y.shape != truth.shape or not np.array_equal(y, truth):
                raise ValueError(
                    f"{done[role][s].run_dir}: test ground truth differs from the other trials'; "
                    "every trial of a suite must use the same data"
                )
            arrays[role].append(p)
    assert truth is not None
    return truth, np.stack(arrays["reference"]), np.stack(arrays["variant"])


def _finding(per_seed: np.ndarray, resampled: np.ndarray) -> Finding:
    low, high = percentile_interval(resampled)
    return Finding(paired_test(per_seed, bootstrap_se(resampled)), low, high)


def _fill_effect(
    effect: Effect,
    done: dict[str, dict[int, TrialResult]],
    groups: dict[str, list[int]],
    n_boot: int,
) -> None:
    seeds = effect.seeds
    truth, ref, var = _load_predictions(done, seeds)
    scores = track_bootstrap(truth, ref, var, n_boot=n_boot)
    effect.n_tracks = len(truth)
    for metric in METRICS:
        s: TagScores = scores[metric]
        key = f"test_{metric}_macro"
        r = [done["reference"][i].metrics.get(key, math.nan) for i in seeds]
        v = [done["variant"][i].metrics.get(key, math.nan) for i in seeds]
        found = _finding(s.per_seed(), s.resampled())
        effect.metrics[metric] = MetricEffect(
            found.test,
            found.tracks_low,
            found.tracks_high,
            reference=mean_ci(r),
            variant=mean_ci(v),
            seeds_only=paired_difference(v, r),
            improvement=probability_of_improvement(
                s.reference, s.variant, s.reference_draws, s.variant_draws
            ),
        )
        for name, cols in groups.items():
            effect.groups.setdefault(name, {})[metric] = _finding(
                s.per_seed(cols), s.resampled(cols)
            )
        if len(groups) == 2:  # e.g. long_range - local: is the effect specific to one group?
            (a, cols_a), (b, cols_b) = groups.items()
            effect.groups.setdefault(f"{a} - {b}", {})[metric] = _finding(
                s.per_seed(cols_a) - s.per_seed(cols_b), s.resampled(cols_a) - s.resampled(cols_b)
            )
    cells = scores[TAG_METRIC]
    per_seed = (cells.variant - cells.reference).T  # [tags, seeds]
    se = np.array([bootstrap_se(cells.draws[:, t]) for t in range(per_seed.shape[0])])
    effect.tags = TagCells(cells.tag_delta, np.asarray(paired_test(per_seed, se).p_value))
