"""The statistics of ablations.stats against known answers: intervals, corrections, power,
probability of improvement. Calibration by simulation is in test_ablations_calibration.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ablations.stats import (
    HELPS,
    HURTS,
    NO_EFFECT,
    benjamini_hochberg,
    decide,
    detection_power,
    equivalence_p,
    holm,
    look_schedule,
    mean_ci,
    minimum_detectable_effect,
    paired_difference,
    paired_test,
    probability_of_improvement,
    seeds_for_effect,
    stack_tests,
    verdict,
)

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


# ----------------------------------------------------------------------------- the test


def test_paired_test_adds_the_two_noises_and_keeps_n_minus_1_df():
    per_seed = np.array([-0.03, -0.01, -0.02, -0.04])
    test = paired_test(per_seed, 0.005)
    s = per_seed.std(ddof=1) / 2
    assert float(test.delta) == pytest.approx(-0.025)
    assert float(test.se_seeds) == pytest.approx(s)
    assert float(test.se) == pytest.approx(math.hypot(s, 0.005))
    assert float(test.df) == 3
    t = 0.025 / math.hypot(s, 0.005)
    assert float(test.p_value) == pytest.approx(2 * scipy_stats.t.sf(t, 3))


def test_one_sided_p_is_half_the_two_sided_in_its_direction():
    below = paired_test(np.array([-0.03, -0.01, -0.02]), 0.005)
    assert float(below.p_below_zero) == pytest.approx(float(below.p_value) / 2)
    above = paired_test(np.array([0.03, 0.01, 0.02]), 0.005)
    assert float(above.p_below_zero) == pytest.approx(1 - float(above.p_value) / 2)


def test_paired_test_leaves_out_missing_seeds():
    with_gap = paired_test(np.array([[0.1, np.nan, 0.3], [0.1, 0.2, 0.3]]), np.array([0.0, 0.0]))
    assert list(with_gap.n) == [2, 3]
    assert with_gap.delta[0] == pytest.approx(0.2) and with_gap.df[0] == 1


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    # Two one-sided tests at 5% each <=> the 90% interval lies inside ±margin.
    test = paired_test(np.array([0.001, -0.001, 0.002, 0.0]), 0.0005)
    low, high = test.interval(0.90)
    inside = max(abs(float(low)), abs(float(high)))
    assert float(equivalence_p(test, inside * 1.01)) < 0.05
    assert float(equivalence_p(test, inside * 0.99)) > 0.05


# ----------------------------------------------------------------------------- corrections


def test_holm_matches_the_step_down_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005, 3 x 0.01, 2 x 0.03, 1 x 0.04, cummax
    expected = [0.03, 0.06, 0.06, 0.02, np.nan]
    np.testing.assert_allclose(holm(p), expected, equal_nan=True)
    np.testing.assert_allclose(holm([[0.2, 0.9], [0.01, 0.02]]), [[0.4, 0.9], [0.02, 0.02]])


def test_benjamini_hochberg_matches_the_step_up_by_hand():
    p = np.array([[0.001, 0.04], [0.03, np.nan], [0.2, 0.008]])
    # sorted 0.001, 0.008, 0.03, 0.04, 0.2 (m = 5): x5/1, x5/2, x5/3, x5/4, x5/5, cummin up
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q, [[0.005, 0.05], [0.05, np.nan], [0.2, 0.02]], equal_nan=True)


def test_decide_splits_alpha_over_the_looks_and_needs_two_seeds():
    per_seed = np.array([[-0.05, -0.06, -0.04], [0.01, -0.01, 0.0], [0.3, np.nan, np.nan]])
    test = paired_test(per_seed, np.array([0.002, 0.002, 0.002]))
    one_look = decide(test, margin=0.05)
    assert list(one_look.effect) == [True, False, False]
    assert list(one_look.ruled_out) == [False, True, False]
    p = float(test.p_value[0])
    assert one_look.p_adjusted[0] == pytest.approx(min(1, 2 * p))  # the 1-seed row is out
    four = decide(test, margin=0.05, looks=4)
    assert four.p_adjusted[0] == pytest.approx(min(1, 8 * p))
    single = decide(paired_test(np.array([[0.3]]), np.array([0.001])), margin=0.05)
    assert not single.decided.any() and np.isnan(single.p_adjusted).all()


def test_verdict_words_and_sign():
    assert verdict(-0.02, 0.01) == HELPS
    assert verdict(0.02, 0.01) == HURTS
    assert verdict(-0.02, 0.2) == NO_EFFECT
    assert verdict(-0.02, math.nan) == NO_EFFECT


def test_stack_tests_makes_one_family():
    tests = [paired_test(np.array([0.1, 0.2]), 0.01), paired_test(np.array([0.0, 0.1, 0.2]), 0.02)]
    family = stack_tests(tests)
    np.testing.assert_allclose(family.p_value, [float(t.p_value) for t in tests])


def test_look_schedule_grows_by_about_half_and_ends_at_the_maximum():
    assert look_schedule(3, 10) == [3, 5, 8, 10]
    assert look_schedule(2, 3) == [2, 3]
    assert look_schedule(5, 5) == [5]
    assert look_schedule(3, 30) == [3, 5, 8, 12, 18, 27, 30]
    with pytest.raises(ValueError, match="first"):
        look_schedule(1, 5)


# ----------------------------------------------------------------------------- power


@pytest.mark.parametrize(
    ("n", "se_seeds", "se_tracks"), [(3, 1.0, 0.0), (4, 0.5, 0.5), (6, 0.2, 1)]
)
def test_power_formula_matches_monte_carlo(n, se_seeds, se_tracks):
    level, delta = 0.01, 3.0 * math.hypot(se_seeds, se_tracks)
    rng = np.random.default_rng(n)
    sims = 100_000
    per_seed = delta + se_seeds * math.sqrt(n) * rng.standard_normal((sims, n))
    per_seed += se_tracks * rng.standard_normal((sims, 1))
    rate = (paired_test(per_seed, np.full(sims, se_tracks)).p_value <= level).mean()
    assert float(detection_power(delta, se_seeds, se_tracks, n, level)) == pytest.approx(
        rate, abs=0.005
    )


def test_minimum_detectable_effect_is_where_power_reaches_80_percent():
    mde = minimum_detectable_effect(0.004, 0.002, 5, 0.05 / 16)
    assert float(detection_power(mde, 0.004, 0.002, 5, 0.05 / 16)) == pytest.approx(0.8, abs=1e-4)
    # Without the test set's noise and with many seeds it is the z-test's (z_a/2 + z_0.8) SE.
    z = scipy_stats.norm.isf(0.025) + scipy_stats.norm.isf(0.2)
    assert minimum_detectable_effect(0.01, 0.0, 2000, 0.05) == pytest.approx(z * 0.01, rel=2e-3)
    assert math.isnan(minimum_detectable_effect(0.01, 0.01, 1, 0.05))
    assert minimum_detectable_effect(0.0, 0.0, 3, 0.05) == 0.0


def test_seeds_for_effect_finds_the_fewest_and_knows_the_test_set_limit():
    level = 0.05 / 16
    n = seeds_for_effect(0.01, 0.001, 0.01, level)
    assert n is not None
    assert minimum_detectable_effect(0.01 / math.sqrt(n), 0.001, n, level) <= 0.01
    assert minimum_detectable_effect(0.01 / math.sqrt(n - 1), 0.001, n - 1, level) > 0.01
    # test-set noise alone gives an MDE of about 3.8 x 0.004 > 0.01: no number of seeds does
    assert seeds_for_effect(0.01, 0.004, 0.01, level) is None


# ----------------------------------------------------------------------------- improvement


def test_probability_of_improvement_counts_paired_wins_and_ties():
    reference = np.array([[0.5, 0.6, 0.7, np.nan], [0.5, 0.6, 0.7, np.nan]])
    variant = np.array([[0.4, 0.6, 0.8, np.nan], [0.4, 0.7, 0.6, np.nan]])
    draws = np.repeat(reference[None], 50, axis=0), np.repeat(variant[None], 50, axis=0)
    p = probability_of_improvement(reference, variant, *draws)
    # seed 0: win, tie, loss; seed 1: win, loss, win; tag 3 (no positives) is left out
    assert p.value == pytest.approx((1 + 0.5 + 0 + 1 + 0 + 1) / 6)
    assert p.low <= p.value <= p.high


def test_probability_of_improvement_interval_resamples_whole_seeds():
    """A seed's luck is shared by every tag it scores; the interval must see that. Under a
    null with a strong per-seed quality, 95% intervals cover 0.5 (resampling seeds tag by tag,
    or not at all, gives intervals far too narrow)."""
    rng = np.random.default_rng(5)
    seeds, tags, boot = 5, 20, 400
    clear = rng.normal(0.6, 0.01, (seeds, tags)), rng.normal(0.4, 0.01, (seeds, tags))
    tight = probability_of_improvement(*clear, *(np.repeat(x[None], boot, 0) for x in clear))
    assert tight.value == 1.0 and tight.low == 1.0
    covered, sims = 0, 200
    for _ in range(sims):
        arms = [
            0.5 + rng.normal(0, 0.05, (seeds, 1)) + rng.normal(0, 0.01, (seeds, tags))
            for _ in range(2)
        ]
        draws = [x[None] + rng.normal(0, 0.002, (boot, seeds, tags)) for x in arms]
        p = probability_of_improvement(*arms, *draws, seed=int(rng.integers(1 << 30)))
        covered += p.low <= 0.5 <= p.high
    assert covered / sims >= 0.85
    with pytest.raises(ValueError, match="paired"):
        probability_of_improvement(np.zeros((2, 3)), np.zeros((3, 3)), *clear)
