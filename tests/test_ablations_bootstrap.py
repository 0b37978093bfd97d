"""The paired bootstrap over test tracks (ablations.bootstrap) on simulated predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from ablations.bootstrap import tag_auc, track_bootstrap, weighted_tag_auc
from ablations.stats import bootstrap_se, paired_test, percentile_interval
from moodtheme.evaluate import per_tag_auc


def binormal(rng, n, tags, separation, seeds=1, prevalence=0.2):
    """Labels and scores: positives shifted by ``separation``."""
    y = rng.random((n, tags)) < prevalence
    return y, y[None] * separation + rng.standard_normal((seeds, n, tags))


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


def test_observed_scores_are_each_seeds_per_tag_metric():
    rng = np.random.default_rng(5)
    y, ref = binormal(rng, 150, 3, 1.0, seeds=2)
    _, var = binormal(rng, 150, 3, 0.5, seeds=2)
    scores = track_bootstrap(y, ref, var, n_boot=50)["pr_auc"]
    for s in range(2):
        np.testing.assert_allclose(scores.reference[s], per_tag_auc(y, ref[s])[1])
        np.testing.assert_allclose(scores.variant[s], per_tag_auc(y, var[s])[1])
    expected = [per_tag_auc(y, var[s])[1].mean() - per_tag_auc(y, ref[s])[1].mean() for s in (0, 1)]
    np.testing.assert_allclose(scores.per_seed(), expected)
    assert scores.draws.shape == (50, 3) and scores.reference_draws.shape == (50, 2, 3)
    assert scores.resampled().shape == (50,) and scores.n_tracks == 150


def test_a_true_effect_is_detected_with_the_right_sign():
    rng = np.random.default_rng(6)
    y = rng.random((400, 6)) < 0.2
    noise = rng.standard_normal((3, 400, 6))
    reference = y * 1.2 + noise
    variant = y * 0.8 + noise + 0.3 * rng.standard_normal((3, 400, 6))
    for metric, scores in track_bootstrap(y, reference, variant, n_boot=300).items():
        low, high = percentile_interval(scores.resampled())
        assert scores.per_seed().mean() < 0 and high < 0, metric
        test = paired_test(scores.per_seed(), bootstrap_se(scores.resampled()))
        assert float(test.p_value) < 0.01, metric


def test_track_interval_covers_the_true_auc_difference():
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
        scores = track_bootstrap(y, reference, variant, 300, seed=int(rng.integers(1 << 30)))
        low, high = percentile_interval(scores["roc_auc"].resampled())
        hits += low <= truth <= high
    assert 0.88 <= hits / sims <= 0.99


def test_tag_subsets_and_their_contrast_come_from_the_same_resamples():
    rng = np.random.default_rng(9)
    y = rng.random((300, 4)) < 0.25
    noise = rng.standard_normal((2, 300, 4))
    reference = y * 1.5 + noise
    variant = reference.copy()
    variant[:, :, 3] = y[:, 3] * 0.2 + noise[:, :, 3]  # only tag 3 changes
    scores = track_bootstrap(y, reference, variant, n_boot=100)["pr_auc"]
    assert (scores.per_seed([0, 1, 2]) == 0).all() and (scores.resampled([0, 1, 2]) == 0).all()
    assert percentile_interval(scores.resampled([3]))[1] < 0
    # The contrast of tag 3 against the rest: the untouched tags add no noise of their own.
    contrast = scores.resampled([3]) - scores.resampled([0, 1, 2])
    np.testing.assert_allclose(contrast, scores.resampled([3]))
    with pytest.raises(ValueError, match="at least one tag"):
        scores.per_seed([])


def test_a_tag_without_positives_drops_out_for_both_arms():
    rng = np.random.default_rng(10)
    y, ref = binormal(rng, 100, 3, 1.0, seeds=2)
    y[:, 1] = False
    var = ref + 0.1 * rng.standard_normal(ref.shape)
    scores = track_bootstrap(y, ref, var, n_boot=30)["pr_auc"]
    assert np.isnan(scores.reference[:, 1]).all() and np.isnan(scores.draws[:, 1]).all()
    assert np.isfinite(scores.per_seed()).all() and np.isfinite(scores.resampled()).all()


def test_bootstrap_rejects_unpaired_inputs():
    y = np.zeros((10, 2), bool)
    with pytest.raises(ValueError, match="paired"):
        track_bootstrap(y, np.zeros((2, 10, 2)), np.zeros((3, 10, 2)))
    with pytest.raises(ValueError, match="tracks"):
        track_bootstrap(y, np.zeros((2, 9, 2)), np.zeros((2, 9, 2)))
