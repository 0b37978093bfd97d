"""Seed noise: the F test that tells whether a search's trials differ beyond it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tune.seed_noise import SeedNoise, noise_trials, separation


def noise(values):
    return SeedNoise({"optim.lr": 0.01}, tuple(range(len(values))), tuple(values))


def test_noise_trials_change_only_the_seed():
    trials = noise_trials({"optim.lr": 0.01, "run.seed": 0, "model.segments": 4}, 2)
    assert [name for name, _ in trials] == ["seed1", "seed2"]
    assert [o["run.seed"] for _, o in trials] == [1, 2]
    assert all(o["optim.lr"] == 0.01 and o["model.segments"] == 4 for _, o in trials)


def test_trials_far_apart_separate_and_trials_within_the_noise_do_not():
    wide = separation([0.10, 0.15, 0.20, 0.25, 0.30], noise([0.200, 0.205, 0.198]))
    assert wide.separated is True and wide.p_value < 0.01
    assert "differ beyond" in wide.text
    close = separation([0.200, 0.204, 0.197, 0.202], noise([0.200, 0.206, 0.195]))
    assert close.separated is False and close.p_value > 0.05
    assert "do NOT differ beyond" in close.text


def test_without_noise_or_trials_it_says_it_cannot_tell():
    unknown = separation([0.1, 0.2], None)
    assert unknown.separated is None and "noise_seeds" in unknown.text
    one = separation([0.1], noise([0.1, 0.11]))
    assert one.separated is None and math.isnan(one.p_value)
    failed_seed = noise([0.1, math.nan])
    assert math.isnan(failed_seed.sd) and separation([0.1, 0.2], failed_seed).separated is None


@pytest.mark.parametrize(("trials", "seeds"), [(8, 3), (4, 5)])
def test_the_test_holds_its_level_when_every_trial_is_the_same_configuration(trials, seeds):
    rng = np.random.default_rng(0)
    draws = 4000
    false = sum(
        bool(
            separation(rng.normal(0.2, 0.01, trials), noise(rng.normal(0.2, 0.01, seeds))).separated
        )
        for _ in range(draws)
    )
    rate = false / draws
    # 5% nominal; the binomial standard error at 4000 draws is 0.35%.
    assert abs(rate - 0.05) < 0.015, rate
