"""Seed noise: how far the searched metric moves when only the seed changes.

A search trains every configuration once, with one seed. Whether its best trial is better than
the others, and whether parameter importances mean anything, depends on how much one
configuration's score varies from seed to seed. With ``noise_seeds: N`` in the space file, the
best completed configuration is trained again with seeds 1..N after the search (the search's
own trials use seed 0), at the same budget, and the summary compares the completed trials'
spread with that noise (:func:`separation`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

SEED_KEY = "run.seed"


@dataclass(frozen=True)
class SeedNoise:
    """The searched metric of one configuration under several seeds."""

    overrides: Mapping[str, Any]  # the configuration, as the search's trial ran it
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # the metric at the last epoch, one per seed

    @property
    def sd(self) -> float:
        finite = [v for v in self.values if math.isfinite(v)]
        return float(np.std(finite, ddof=1)) if len(finite) >= 2 else math.nan


@dataclass(frozen=True)
class Separation:
    """Whether the completed trials differ by more than seed noise, and the sentence that
    says so. ``separated`` is None when it cannot be told."""

    separated: bool | None
    p_value: float
    text: str


def noise_trials(overrides: Mapping[str, Any], seeds: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of the extra runs: the same configuration with seeds 1..``seeds``."""
    base = {k: v for k, v in overrides.items() if k != SEED_KEY}
    return [(f"seed{s}", {**base, SEED_KEY: s}) for s in range(1, seeds + 1)]


def separation(completed: Sequence[float], noise: SeedNoise | None) -> Separation:
    """An F test of the completed trials' variance against the seed variance.

    If every completed trial were the same configuration, their scores would scatter like the
    seeds' do; the trials separate when their variance is larger than that at the 5% level.
    """
    values = [v for v in completed if math.isfinite(v)]
    if noise is None or not math.isfinite(noise.sd):
        return Separation(
            None,
            math.nan,
            f"{len(values)} completed trial(s); seed noise not measured (set noise_seeds in "
            "the space file), so whether they differ beyond it is unknown",
        )
    if len(values) < 2:
        return Separation(
            None,
            math.nan,
            f"{len(values)} completed trial(s): too few to compare with the seed noise "
            f"(sd {noise.sd:.4f})",
        )
    between = float(np.std(values, ddof=1))
    n_seeds = sum(math.isfinite(v) for v in noise.values)
    ratio = (between / noise.sd) ** 2 if noise.sd > 0 else math.inf
    p_value = float(stats.f.sf(ratio, len(values) - 1, n_seeds - 1))
    separated = p_value < 0.05
    verdict = "differ beyond" if separated else "do NOT differ beyond"
    return Separation(
        separated,
        p_value,
        f"the {len(values)} completed trials (sd {between:.4f}) {verdict} the seed noise of "
        f"one configuration (sd {noise.sd:.4f} over {n_seeds} seeds; F test p = {p_value:.3g})",
    )
