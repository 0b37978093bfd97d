"""How many seeds each ablation gets: a fixed number, or as many as it needs (``--seeds auto``).

Adaptive seeding trains every ablation with the first count of a schedule
(:func:`ablations.stats.look_schedule`, e.g. 3, 5, 8, 10 seeds), then *looks*: it tests the
whole family (:func:`ablations.families.conclude`, alpha split over the schedule's looks)
and gives the next count only to the ablations still undecided, that is, with a headline
metric that neither shows an effect nor rules out ``--min-effect``. A decided ablation keeps
its seeds and its verdict. Seeds stay paired: an ablation with n seeds has seeds 0..n-1 in
both arms, and a shared reference is trained as far as its most-seeded ablation needs.

:class:`SeedState` (``seeds.json`` in the run folder) records each round's seed counts
before it trains, so a resumed suite re-runs exactly the rounds it started and continues
with the same rule. :func:`run_rounds` is the loop; training and assessing are passed in,
so the rule is tested without Ray (tests/test_ablations_seeding.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ablations.effects import FAILED, OK, SKIPPED, Effect, TrialResult
from ablations.stats import NO_EFFECT
from ablations.suite import Plan

AUTO = "auto"
SEEDS_FILE = "seeds.json"
Counts = dict[str, int]  # ablation name -> seeds


@dataclass
class SeedState:
    """The schedule of seed counts and each round's counts, oldest first."""

    schedule: list[int]
    adaptive: bool
    rounds: list[Counts] = field(default_factory=list)

    @property
    def looks(self) -> int:
        return len(self.schedule) if self.adaptive else 1

    def save(self, run_dir: Path) -> None:
        (run_dir / SEEDS_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> SeedState | None:
        path = run_dir / SEEDS_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def first_counts(plan: Plan, state: SeedState) -> Counts:
    return {c.ablation.name: state.schedule[0] for c in plan.comparisons if not c.skipped}


def is_decided(effect: Effect) -> bool:
    """Every headline metric shows an effect or rules out ``--min-effect``."""
    rows = effect.metrics.values()
    return bool(rows) and all(r.verdict != NO_EFFECT or r.ruled_out for r in rows)


def stop_reason(effect: Effect, n: int, state: SeedState) -> str | None:
    """Why ``effect`` (at ``n`` seeds) gets no more, or None when it should get more."""
    if effect.status == SKIPPED:
        return "skipped"
    if effect.status == FAILED:
        return f"no seeds paired: {effect.reason}"
    decided = effect.status == OK and is_decided(effect)
    if not state.adaptive:
        return f"fixed at {n} seeds (--seeds {n})" + ("; decided" if decided else "")
    if decided:
        return f"decided at {n} seeds"
    if effect.status != OK:
        return None  # unfinished: its round is resumed first
    if n >= state.schedule[-1]:
        return f"undecided at the most seeds allowed (--max-seeds {state.schedule[-1]})"
    return None


def next_counts(effects: Sequence[Effect], counts: Counts, state: SeedState) -> Counts:
    """The next round's counts: one more step of the schedule for each undecided ablation."""
    out = dict(counts)
    for e in effects:
        n = counts.get(e.name)
        if n is not None and stop_reason(e, n, state) is None:
            out[e.name] = next(s for s in state.schedule if s > n)
    return out


@dataclass
class RoundOutcome:
    trials: list[TrialResult]
    interrupted: bool
    parent_run_id: str | None = None


Train = Callable[[int, list[tuple[str, int]]], RoundOutcome]  # (round, new trials)
Assess = Callable[[list[TrialResult], Counts], list[Effect]]  # effects, concluded


@dataclass
class RoundsOutcome:
    trials: list[TrialResult]
    effects: list[Effect]
    counts: Counts
    interrupted: bool
    parent_run_id: str | None


def run_rounds(
    plan: Plan,
    state: SeedState,
    train: Train,
    assess: Assess,
    save: Callable[[SeedState], None],
    log: Callable[[str], None] = print,
) -> RoundsOutcome:
    """Train round after round until no ablation needs more seeds (or an interruption)."""
    trials: dict[tuple[str, int], TrialResult] = {}
    effects: list[Effect] = []
    parent: str | None = None
    k = 0
    while True:
        if k == len(state.rounds):
            counts = (
                first_counts(plan, state)
                if k == 0
                else next_counts(effects, state.rounds[-1], state)
            )
            if k > 0 and counts == state.rounds[-1]:
                break
            state.rounds.append(counts)
            save(state)
            if k > 0:
                grown = {n: c for n, c in counts.items() if c != state.rounds[-2].get(n)}
                log(f"look {k}: {len(grown)} undecided; seeds now " + _counts_text(grown))
        counts = state.rounds[k]
        done_before = set(plan.trials(state.rounds[k - 1])) if k else set()
        new = [t for t in plan.trials(counts) if t not in done_before]
        outcome = train(k, new) if new else RoundOutcome([], False)
        parent = parent or outcome.parent_run_id
        trials.update({(t.arm, t.seed): t for t in outcome.trials})
        effects = assess(list(trials.values()), counts)
        if outcome.interrupted:
            return RoundsOutcome(list(trials.values()), effects, counts, True, parent)
        k += 1
        if not state.adaptive:
            break
    for e in effects:
        e.stop = stop_reason(e, counts.get(e.name, 0), state)
    return RoundsOutcome(list(trials.values()), effects, counts, False, parent)


def _counts_text(counts: Counts) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())
