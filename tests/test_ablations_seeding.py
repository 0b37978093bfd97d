"""Adaptive seeding (--seeds auto) with fake trials: who gets more seeds, why each stops, and
that a resumed suite continues with the same rule. No Ray: training is a function here."""

from __future__ import annotations

import numpy as np
import pytest

from ablations.effects import OK, TrialResult, compute_effects
from ablations.families import conclude
from ablations.seeding import SeedState, next_counts, run_rounds, stop_reason
from ablations.stats import HELPS, NO_EFFECT, look_schedule
from ablations.suite import plan_suite, select
from moodtheme.evaluate import auc_metrics

N_TRACKS, N_TAGS = 800, 8
TAGS = [f"mood/theme---tag{i}" for i in range(N_TAGS)]
TRUTH = np.random.default_rng(0).random((N_TRACKS, N_TAGS)) < 0.25


def predictions(arm: str, seed: int) -> np.ndarray:
    """Deterministic per (arm, seed); a seed's noise is shared by every arm (pairing)."""
    noise = np.random.default_rng(seed).standard_normal(TRUTH.shape)
    own = np.random.default_rng([seed, len(arm)]).standard_normal(TRUTH.shape)
    if arm == "self-attention":  # a large, clear effect on every tag
        return TRUTH * 0.5 + noise
    if arm == "mixup":  # no effect: the same model, with noise partly its own
        return TRUTH * 1.5 + 0.8 * noise + 0.6 * own
    if arm == "specaugment":  # no effect, and hardly any noise of its own
        return TRUTH * 1.5 + 0.999 * noise + 0.045 * own
    return TRUTH * 1.5 + noise


class FakeTraining:
    """Trains a round by writing each trial's predictions; can stop after some trials."""

    def __init__(self, tmp_path, stop_after: int | None = None):
        self.tmp_path, self.stop_after, self.rounds = tmp_path, stop_after, []

    def __call__(self, index, new):
        from ablations.seeding import RoundOutcome

        self.rounds.append((index, list(new)))
        results = []
        for i, (arm, seed) in enumerate(new):
            if self.stop_after is not None and i >= self.stop_after:
                return RoundOutcome(results, interrupted=True)
            run_dir = self.tmp_path / "trials" / f"{arm}.seed{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            scores = predictions(arm, seed)
            np.save(run_dir / "test_groundtruth.npy", TRUTH)
            np.save(run_dir / "test_predictions.npy", scores)
            m = auc_metrics(TRUTH, scores)
            metrics = {
                "test_pr_auc_macro": m["PR-AUC-macro"],
                "test_roc_auc_macro": m["ROC-AUC-macro"],
            }
            results.append(TrialResult(arm, seed, OK, run_dir, metrics))
        return RoundOutcome(results, interrupted=False, parent_run_id="parent")


def suite(schedule=(3, 10)):
    plan = plan_suite(
        select(["self-attention", "mixup", "specaugment"]),
        "full",  # never trained here: the full budget's plan shares one reference arm
        seeds=schedule[1],
        base={"model.pretrained": "none"},
    )
    state = SeedState(look_schedule(*schedule), adaptive=True)

    def assess(trials, counts):
        effects = compute_effects(plan, trials, TAGS, n_boot=200, seeds=counts)
        conclude(effects, min_effect=0.005, looks=state.looks)
        return effects

    return plan, state, assess


def test_only_undecided_ablations_get_more_seeds(tmp_path):
    plan, state, assess = suite()
    train = FakeTraining(tmp_path)
    saved = []
    outcome = run_rounds(plan, state, train, assess, lambda s: saved.append(s), log=lambda m: None)
    assert not outcome.interrupted and outcome.parent_run_id == "parent"
    assert state.schedule == [3, 5, 8, 10]
    assert state.rounds == [
        {"self-attention": 3, "mixup": 3, "specaugment": 3},
        {"self-attention": 3, "mixup": 5, "specaugment": 5},
        {"self-attention": 3, "mixup": 8, "specaugment": 5},
        {"self-attention": 3, "mixup": 10, "specaugment": 5},
    ]
    assert saved[-1].rounds == state.rounds  # each round is saved before it trains
    # Round 2 trains seeds 3 and 4 of the undecided variants and of their shared reference.
    assert train.rounds[1] == (
        1,
        [(arm, s) for arm in ("submission2", "mixup", "specaugment") for s in (3, 4)],
    )
    effects = {e.name: e for e in outcome.effects}
    attention, mixup, specaugment = (
        effects["self-attention"],
        effects["mixup"],
        effects["specaugment"],
    )
    # a large effect is decided at the first look ...
    assert attention.seeds == [0, 1, 2] and attention.metrics["pr_auc"].verdict == HELPS
    assert attention.stop == "decided at 3 seeds"
    # ... a null with little noise rules out --min-effect at the second ...
    assert specaugment.seeds == list(range(5)) and specaugment.stop == "decided at 5 seeds"
    assert all(r.ruled_out and r.verdict == NO_EFFECT for r in specaugment.metrics.values())
    # ... and a noisier null runs to the maximum, undecided.
    assert mixup.seeds == list(range(10))
    assert mixup.stop == "undecided at the most seeds allowed (--max-seeds 10)"
    assert not any(r.ruled_out for r in mixup.metrics.values())
    # The seeds stay paired: every seed of the reference that mixup uses was trained.
    trained = {(t.arm, t.seed) for t in outcome.trials}
    assert {("submission2", s) for s in range(10)} <= trained
    assert not any(arm == "self-attention" and s >= 3 for arm, s in trained)


def test_a_resumed_suite_repeats_its_rounds_and_continues_the_rule(tmp_path):
    plan, state, assess = suite()
    store = {}

    def save(s):
        store["state"] = SeedState(s.schedule, s.adaptive, [dict(r) for r in s.rounds])

    # Interrupted in round 2, after two of its trials.
    first = FakeTraining(tmp_path, stop_after=None)
    first_rounds = []

    def interrupting(index, new):
        first.stop_after = 2 if index == 1 else None
        first_rounds.append(index)
        return first(index, new)

    outcome = run_rounds(plan, state, interrupting, assess, save, log=lambda m: None)
    assert outcome.interrupted and first_rounds == [0, 1]
    resumed_state = store["state"]
    assert [r["mixup"] for r in resumed_state.rounds] == [3, 5]

    # The resume re-runs the recorded rounds (Tune would skip finished trials) and goes on.
    again = FakeTraining(tmp_path)
    outcome = run_rounds(plan, resumed_state, again, assess, save, log=lambda m: None)
    assert not outcome.interrupted
    assert [index for index, _ in again.rounds] == [0, 1, 2, 3]
    assert again.rounds[1][1] == first.rounds[1][1]  # the same trials as the interrupted round
    assert {e.name: len(e.seeds) for e in outcome.effects} == {
        "self-attention": 3,
        "mixup": 10,
        "specaugment": 5,
    }


def test_fixed_seeds_run_one_round_and_say_so(tmp_path):
    plan = plan_suite(
        select(["self-attention", "mixup"]), "full", seeds=3, base={"model.pretrained": "none"}
    )
    state = SeedState([3], adaptive=False)
    assert state.looks == 1

    def assess(trials, counts):
        effects = compute_effects(plan, trials, TAGS, n_boot=100, seeds=counts)
        conclude(effects, min_effect=0.005)
        return effects

    train = FakeTraining(tmp_path)
    outcome = run_rounds(plan, state, train, assess, lambda s: None, log=lambda m: None)
    assert len(train.rounds) == 1 and len(train.rounds[0][1]) == 9
    stops = {e.name: e.stop for e in outcome.effects}
    assert stops == {
        "self-attention": "fixed at 3 seeds (--seeds 3); decided",
        "mixup": "fixed at 3 seeds (--seeds 3)",
    }


def test_failed_and_decided_ablations_stop_and_the_rest_step_through_the_schedule(tmp_path):
    plan, state, assess = suite()
    counts = {"self-attention": 3, "mixup": 3, "specaugment": 3}
    trials = FakeTraining(tmp_path)(0, plan.trials(counts)).trials
    trials = [t for t in trials if t.arm != "specaugment"]
    trials += [TrialResult("specaugment", s, "failed", error="out of memory") for s in range(3)]
    effects = {e.name: e for e in assess(trials, counts)}
    assert stop_reason(effects["specaugment"], 3, state).startswith("no seeds paired: every")
    assert next_counts(effects.values(), counts, state) == {**counts, "mixup": 5}


@pytest.mark.parametrize("text", ["auto"])
def test_state_round_trips_through_its_file(tmp_path, text):
    state = SeedState([3, 5], adaptive=text == "auto", rounds=[{"mixup": 3}])
    state.save(tmp_path)
    assert SeedState.load(tmp_path) == state
    assert SeedState.load(tmp_path / "nowhere") is None
