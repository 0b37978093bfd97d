"""The ablation statistics on simulated data whose true effects are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from ablations.stats import (
    HELPS,
    HURTS,
    NO_EFFECT,
    BootstrapResult,
    Estimate,
    contrast_bootstrap,
    mean_ci,
    paired_bootstrap,
    paired_difference,
    tag_auc,
    verdict,
    weighted_tag_auc,
)
from moodtheme.evaluate import per_tag_auc


def binormal(rng, n, tags, separation, seeds=1, prevalence=0.2, seed_spread=0.0):
    """Labels and scores: positives shifted by ``separation`` (+ a per-seed quality shift)."""
    y = rng.random((n, tags)) < prevalence
    shift = separation + seed_spread * rng.standard_normal((seeds, 1, 1))
    return y, y[None] * shift + rng.standard_normal((seeds, n, tags))


# ----------------------------------------------------------------------------- intervals


def test_mean_ci_matches_the_t_formula():
    e = mean_ci([1.0, 2.0, 4.0])
    half = 4.302652729911275 * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert e.mean == pytest.approx(7 / 3)
    assert (e.low, e.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert e.n == 3


def test_mean_ci_of_one_value_has_no_interval_and_ignores_nan():
    e = mean_ci([0.5, math.nan])
    assert e.mean == 0.5 and e.n == 1 and math.isnan(e.low) and not e.excludes_zero


def test_t_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    draws = rng.normal(0.3, 2.0, size=(4000, 3))
    hits = [(e.low <= 0.3 <= e.high) for e in map(mean_ci, draws)]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.015)


def test_paired_difference_removes_the_shared_seed_component():
    rng = np.random.default_rng(2)
    seed_quality = rng.normal(0, 0.05, size=5)  # large, but shared by both arms
    reference = 0.30 + seed_quality
    variant = 0.28 + seed_quality + rng.normal(0, 0.002, size=5)
    paired = paired_difference(variant, reference)
    unpaired_half = (mean_ci(variant).high - mean_ci(variant).low) / 2
    assert paired.high < 0 and paired.mean == pytest.approx(-0.02, abs=0.005)
    assert (paired.high - paired.low) / 2 < unpaired_half / 10
    with pytest.raises(ValueError, match="shape"):
        paired_difference([1, 2], [1, 2, 3])


# ----------------------------------------------------------------------------- weighted AUCs


def test_weighted_metrics_match_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(3)
    y = rng.random((120, 4)) < 0.25
    scores = np.round(y * 0.7 + rng.standard_normal((120, 4)), 1)  # many ties
    weights = rng.integers(0, 4, size=(3, 120))
    pr = weighted_tag_auc(y, scores, weights, "pr_auc")
    roc = weighted_tag_auc(y, scores, weights, "roc_auc")
    for b in range(3):
        for t in range(4):
            w = weights[b]
            assert pr[b, t] == pytest.approx(
                average_precision_score(y[:, t], scores[:, t], sample_weight=w)
            )
            assert roc[b, t] == pytest.approx(roc_auc_score(y[:, t], scores[:, t], sample_weight=w))


def test_unweighted_metrics_agree_with_moodtheme_evaluate():
    rng = np.random.default_rng(4)
    y = rng.random((80, 5)) < 0.3
    y[:, 2] = False  # no positives: NaN in both
    scores = rng.random((80, 5))
    roc, pr = per_tag_auc(y, scores)
    np.testing.assert_allclose(tag_auc(y, scores, "pr_auc"), pr, equal_nan=True)
    np.testing.assert_allclose(tag_auc(y, scores, "roc_auc"), roc, equal_nan=True)
    with pytest.raises(ValueError, match="metric"):
        weighted_tag_auc(y, scores, np.ones((1, 80)), "f1")


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_observed_delta_is_the_mean_over_seeds_of_the_macro_difference():
    rng = np.random.default_rng(5)
    y, ref = binormal(rng, 150, 3, 1.0, seeds=2)
    _, var = binormal(rng, 150, 3, 0.5, seeds=2)
    var = np.where(y[None], var, var)  # same labels are what pairs them
    result = paired_bootstrap(y, ref, var, n_boot=50)
    expected = np.mean(
        [per_tag_auc(y, var[s])[1].mean() - per_tag_auc(y, ref[s])[1].mean() for s in range(2)]
    )
    assert result["pr_auc"].delta == pytest.approx(expected)
    assert result["pr_auc"].n_boot == 50 and result["pr_auc"].n_tracks == 150


def test_a_true_effect_is_detected_with_the_right_sign():
    rng = np.random.default_rng(6)
    y = rng.random((400, 6)) < 0.2
    noise = rng.standard_normal((3, 400, 6))
    reference = y * 1.2 + noise
    variant = y * 0.8 + noise + 0.3 * rng.standard_normal((3, 400, 6))
    result = paired_bootstrap(y, reference, variant, n_boot=300)
    for metric in ("pr_auc", "roc_auc"):
        r = result[metric]
        assert r.delta < 0 and r.high < 0 and r.p_value < 0.01, (metric, r)


def test_a_null_effect_is_rarely_called():
    # Reference and variant come from the same model family; only noise differs. Over many
    # simulated suites the bootstrap should reject at about its nominal 5% rate.
    rng = np.random.default_rng(7)
    rejections = 0
    sims = 60
    for _ in range(sims):
        y, ref = binormal(rng, 200, 2, 1.0, seeds=2)
        var = y[None] * 1.0 + rng.standard_normal(ref.shape)
        rejections += paired_bootstrap(y, ref, var, n_boot=200)["pr_auc"].p_value < 0.05
    assert rejections / sims <= 0.12


def test_bootstrap_interval_covers_the_true_auc_difference():
    # Binormal scores with unit variance: population ROC-AUC = Phi(separation / sqrt(2)).
    rng = np.random.default_rng(8)
    truth = norm.cdf(0.8 / math.sqrt(2)) - norm.cdf(1.2 / math.sqrt(2))
    hits, sims = 0, 120
    for _ in range(sims):
        y = rng.random((300, 1)) < 0.3
        shared = rng.standard_normal((300, 1))
        own = rng.standard_normal((300, 1))
        reference = y * 1.2 + shared
        variant = y * 0.8 + (0.6 * shared + 0.8 * own)  # correlated, still unit variance
        r = paired_bootstrap(y, reference, variant, n_boot=300, seed=int(rng.integers(1 << 30)))
        hits += r["roc_auc"].low <= truth <= r["roc_auc"].high
    assert 0.88 <= hits / sims <= 0.99


def test_bootstrap_on_a_tag_subset_sees_only_those_tags():
    rng = np.random.default_rng(9)
    y = rng.random((300, 4)) < 0.25
    noise = rng.standard_normal((2, 300, 4))
    reference = y * 1.5 + noise
    variant = reference.copy()
    variant[:, :, 3] = y[:, 3] * 0.2 + noise[:, :, 3]  # only tag 3 changes
    untouched = paired_bootstrap(y, reference, variant, tags=[0, 1, 2], n_boot=100)
    touched = paired_bootstrap(y, reference, variant, tags=[3], n_boot=100)
    assert untouched["pr_auc"].delta == 0 and untouched["pr_auc"].p_value == 1.0
    assert touched["pr_auc"].high < 0
    # The contrast scores both groups on the same resamples: only the changed tag stands out.
    specific = contrast_bootstrap(y, reference, variant, [3], [0, 1, 2], n_boot=100)["pr_auc"]
    assert specific.delta == pytest.approx(touched["pr_auc"].delta) and specific.high < 0
    assert specific.high - specific.low == pytest.approx(
        touched["pr_auc"].high - touched["pr_auc"].low
    )
    neither = contrast_bootstrap(y, reference, variant, [0], [1, 2], n_boot=100)["pr_auc"]
    assert neither.delta == 0 and neither.p_value == 1.0


def test_bootstrap_rejects_unpaired_inputs():
    y = np.zeros((10, 2), bool)
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(y, np.zeros((2, 10, 2)), np.zeros((3, 10, 2)))
    with pytest.raises(ValueError, match="tracks"):
        paired_bootstrap(y, np.zeros((2, 9, 2)), np.zeros((2, 9, 2)))


# ----------------------------------------------------------------------------- verdict


def _boot(low, high):
    return BootstrapResult((low + high) / 2, low, high, 0.01, 100, 100)


def test_verdict_needs_both_intervals_on_the_same_side():
    below = Estimate(-0.02, -0.03, -0.01, 3)
    straddles = Estimate(-0.02, -0.05, 0.01, 3)
    assert verdict(below, _boot(-0.03, -0.01)) == HELPS
    assert verdict(Estimate(0.02, 0.01, 0.03, 3), _boot(0.01, 0.03)) == HURTS
    assert verdict(straddles, _boot(-0.03, -0.01)) == NO_EFFECT
    assert verdict(below, _boot(-0.01, 0.01)) == NO_EFFECT
    assert verdict(Estimate(0.02, 0.01, 0.03, 3), _boot(-0.03, -0.01)) == NO_EFFECT
    one_seed = Estimate(-0.02, math.nan, math.nan, 1)
    assert verdict(one_seed, _boot(-0.03, -0.01)) == HELPS


def test_verdict_controls_false_alarms_from_training_noise():
    # Under the null, each seed's model is better or worse by chance (seed_spread), shared by
    # neither arm. The track bootstrap alone sees only test-set noise and cries wolf; the
    # verdict also asks the seed interval, and stays near its nominal rate.
    rng = np.random.default_rng(10)
    boot_alarms = verdict_alarms = 0
    sims = 40
    for _ in range(sims):
        y, ref = binormal(rng, 300, 2, 1.0, seeds=3, seed_spread=0.4)
        var = y[None] * (1.0 + 0.4 * rng.standard_normal((3, 1, 1))) + rng.standard_normal(
            ref.shape
        )
        b = paired_bootstrap(y, ref, var, n_boot=150)["pr_auc"]
        per_seed = [
            per_tag_auc(y, var[s])[1].mean() - per_tag_auc(y, ref[s])[1].mean() for s in range(3)
        ]
        boot_alarms += b.excludes_zero
        verdict_alarms += verdict(mean_ci(per_seed), b) != NO_EFFECT
    assert boot_alarms / sims > 0.2  # the reason the seed interval is needed
    assert verdict_alarms / sims <= 0.1


def test_p_value_and_interval_agree():
    rng = np.random.default_rng(11)
    for shift in (0.0, 0.1, 0.2, 0.3, 0.5):
        y = rng.random((200, 3)) < 0.3
        noise = rng.standard_normal((200, 3))
        r = paired_bootstrap(y, y * 1.0 + noise, y * (1.0 - shift) + noise, n_boot=400)["pr_auc"]
        assert (r.p_value < 0.05) == r.excludes_zero, (shift, r)
