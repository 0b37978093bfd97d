"""What a suite may conclude: its tests grouped into families, each corrected for its size.

- **headline**: every ablation x headline metric (PR-AUC-macro, ROC-AUC-macro). Holm over
  the family, alpha split over the looks of adaptive seeding; a verdict says "helps" or
  "hurts" only when the adjusted test rejects. The same correction applies to ruling out
  effects of ``--min-effect`` (two one-sided tests), and the minimum detectable effect is
  computed at the level Holm's first step uses, alpha / (family size x looks).
- **planted groups** (synthetic data): every ablation x planted group (and the contrast of
  two groups) x metric, Holm likewise.
- **confirmatory** (synthetic data): the hypotheses stated in advance (``Ablation.expected``:
  the planted effect the data was built to show, with its direction), each tested one-sided
  on PR-AUC, Holm over all of them. They are the suite's pre-registered claims; everything
  else above is exploratory and corrected as such.
- **per-tag map**: every ablation x tag cell of PR-AUC, Benjamini-Hochberg over the whole map
  (one family, not one per ablation: the map is read as a whole).

:func:`conclude` fills each effect's adjusted p-values, verdicts and power figures in place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablations.effects import OK, Confirmation, Effect
from ablations.stats import (
    ALPHA,
    METRICS,
    POWER,
    benjamini_hochberg,
    decide,
    holm,
    minimum_detectable_effect,
    seeds_for_effect,
    stack_tests,
    verdict,
)

DEFAULT_MIN_EFFECT = 0.005


@dataclass(frozen=True)
class Family:
    """A set of tests corrected together: what is in it, how many, and how."""

    members: str  # e.g. "8 ablations x 2 headline metrics"
    size: int
    method: str  # "Holm" or "Benjamini-Hochberg"


@dataclass(frozen=True)
class Conclusions:
    """The settings a report's conclusions rest on, and the families they used."""

    alpha: float
    power: float
    min_effect: float
    looks: int  # 1 for a fixed number of seeds
    headline: Family
    planted: Family | None
    tags: Family | None
    confirmatory: Family | None = None

    @property
    def mde_level(self) -> float:
        """The two-sided level at which Holm surely rejects: alpha / (size x looks)."""
        return self.alpha / max(self.headline.size * self.looks, 1)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def conclude(
    effects: Sequence[Effect],
    min_effect: float = DEFAULT_MIN_EFFECT,
    looks: int = 1,
    alpha: float = ALPHA,
    power: float = POWER,
) -> Conclusions:
    """Correct every family of ``effects`` and fill in their conclusions."""
    ok = [e for e in effects if e.status == OK]
    headline = _headline(ok, min_effect, looks, alpha, power)
    return Conclusions(
        alpha,
        power,
        min_effect,
        looks,
        headline,
        _planted(ok, looks),
        _tags(ok),
        _confirmatory(ok, looks, alpha),
    )


def _headline(
    ok: list[Effect], min_effect: float, looks: int, alpha: float, power: float
) -> Family:
    members = [(e, m) for e in ok for m in METRICS if np.isfinite(e.metrics[m].p_value)]
    family = Family(
        f"{_plural(len({e.name for e, _ in members}), 'ablation')} x "
        f"{_plural(len(METRICS), 'headline metric')}",
        len(members),
        "Holm",
    )
    if not members:
        return family
    decisions = decide(
        stack_tests([e.metrics[m].test for e, m in members]), min_effect, looks, alpha
    )
    level = alpha / (len(members) * looks)
    fixed_level = alpha / len(members)  # a plain --seeds N run has one look
    for i, (e, m) in enumerate(members):
        row = e.metrics[m]
        row.p_adjusted = float(decisions.p_adjusted[i])
        row.equivalence_adjusted = float(decisions.equivalence_adjusted[i])
        row.verdict = verdict(row.delta, row.p_adjusted, alpha)
        row.ruled_out = bool(decisions.ruled_out[i])
        n, se_seeds, se_tracks = (
            int(row.test.n),
            float(row.test.se_seeds),
            float(row.test.se_tracks),
        )
        row.mde = minimum_detectable_effect(se_seeds, se_tracks, n, level, power)
        row.seeds_needed = seeds_for_effect(
            se_seeds * math.sqrt(n), se_tracks, min_effect, fixed_level, power
        )
    return family


def _planted(ok: list[Effect], looks: int) -> Family | None:
    members = [
        (e, g, m)
        for e in ok
        for g in e.groups
        for m in METRICS
        if np.isfinite(e.groups[g][m].p_value)
    ]
    if not members:
        return None
    adjusted = np.minimum(holm([e.groups[g][m].p_value for e, g, m in members]) * looks, 1.0)
    for (e, g, m), p in zip(members, adjusted, strict=True):
        e.groups[g][m].p_adjusted = float(p)
    names = list(dict.fromkeys(g for _, g, _ in members))
    return Family(
        f"{_plural(len({e.name for e, _, _ in members}), 'ablation')} x "
        f"{len(names)} ({', '.join(names)}) x {_plural(len(METRICS), 'metric')}",
        len(members),
        "Holm",
    )


def _confirmatory(ok: list[Effect], looks: int, alpha: float) -> Family | None:
    members = []
    for e in ok:
        e.confirmations = [
            Confirmation(group, direction, e.groups[group]["pr_auc"])
            for group, direction in e.comparison.ablation.expected.items()
            if group in e.groups
        ]
        members += e.confirmations
    if not members:
        return None
    for c in members:
        below = float(c.finding.test.p_below_zero)
        c.p_one_sided = below if c.direction == "lower" else 1.0 - below
    adjusted = np.minimum(holm([c.p_one_sided for c in members]) * looks, 1.0)
    for c, p in zip(members, adjusted, strict=True):
        c.p_adjusted = float(p)
        c.confirmed = bool(p <= alpha)
    return Family(
        f"{len(members)} hypothes{'is' if len(members) == 1 else 'es'} stated in advance (one-sided)",
        len(members),
        "Holm",
    )


def _tags(ok: list[Effect]) -> Family | None:
    cells = [e.tags for e in ok if e.tags is not None]
    if not cells:
        return None
    q = benjamini_hochberg(np.stack([c.p_value for c in cells]))
    for c, row in zip(cells, q, strict=True):
        c.q_value = row
    tested = int(np.isfinite(q).sum())
    return Family(
        f"{_plural(len(cells), 'ablation')} x {len(cells[0].p_value)} tags, the whole map; "
        f"{tested} cells have both classes in the test set",
        tested,
        "Benjamini-Hochberg",
    )
