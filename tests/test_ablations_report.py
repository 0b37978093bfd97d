"""Effects and report files from fake trials whose predictions have known effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ablations.effects import (
    FAILED,
    OK,
    SKIPPED,
    UNFINISHED,
    TrialResult,
    compute_effects,
)
from ablations.families import conclude
from ablations.report import write_report
from ablations.stats import HELPS, NO_EFFECT
from ablations.suite import plan_suite, select
from moodtheme.evaluate import auc_metrics

N_TRACKS, N_TAGS = 500, 8
TAGS = [f"mood/theme---tag{i}" for i in range(N_TAGS)]
LONG = TAGS[:3]  # the tags the attention variant hurts
FROM_SCRATCH = {"model.pretrained": "none"}  # planning builds no model, but stay offline-safe


def fake_trial(tmp_path, arm, seed, truth, strength, own=0.0):
    """A finished trial: predictions whose per-tag separation is ``strength``. The noise is
    the seed's, shared by both arms of a pair, with a share ``own`` of the arm's own."""
    run_dir = tmp_path / "trials" / arm / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    shared = np.random.default_rng(seed).standard_normal(truth.shape)
    mine = np.random.default_rng([seed, len(arm)]).standard_normal(truth.shape)
    scores = truth * strength + np.sqrt(1 - own**2) * shared + own * mine
    np.save(run_dir / "test_groundtruth.npy", truth)
    np.save(run_dir / "test_predictions.npy", scores.astype(np.float32))
    m = auc_metrics(truth, scores)
    metrics = {"test_pr_auc_macro": m["PR-AUC-macro"], "test_roc_auc_macro": m["ROC-AUC-macro"]}
    return TrialResult(arm, seed, OK, run_dir, metrics)


@pytest.fixture
def suite(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((N_TRACKS, N_TAGS)) < 0.25
    # The full budget's plan (never trained here): its ablations share one reference arm.
    plan = plan_suite(
        select(["self-attention", "mixup", "specaugment", "imagenet-pretraining"]),
        "full",
        seeds=3,
        base=FROM_SCRATCH,
        probe=lambda c: (
            "ImageNet weights unavailable offline" if c.model.pretrained == "imagenet" else None
        ),
    )
    strong = np.full(N_TAGS, 1.5)
    weak_long = strong.copy()
    weak_long[:3] = 0.3  # no attention: the long-range tags lose most of their signal
    trials = []
    for seed in plan.seeds:
        trials.append(fake_trial(tmp_path, "submission2", seed, truth, strong))
        trials.append(fake_trial(tmp_path, "self-attention", seed, truth, weak_long, own=0.2))
        trials.append(fake_trial(tmp_path, "mixup", seed, truth, strong, own=0.6))  # no effect
        trials.append(TrialResult("specaugment", seed, "failed", error="CUDA out of memory"))
    return plan, trials


def concluded(plan, trials, groups=None, n_boot=300):
    effects = compute_effects(plan, trials, TAGS, groups, n_boot=n_boot)
    return effects, conclude(effects, min_effect=0.005)


def test_effects_find_the_planted_drop_and_nothing_else(suite):
    plan, trials = suite
    found, conclusions = concluded(plan, trials, {"long_range": LONG, "local": TAGS[3:]})
    effects = {e.name: e for e in found}
    # The family: self-attention and mixup (one failed, one skipped) x 2 metrics.
    assert conclusions.headline.size == 4 and conclusions.headline.method == "Holm"

    attention = effects["self-attention"]
    assert attention.status == OK and attention.seeds == [0, 1, 2]
    row = attention.metrics["pr_auc"]
    assert row.verdict == HELPS and row.p_adjusted <= 0.05 and row.interval()[1] < 0
    family = sorted(e.metrics[m].p_value for e in found if e.status == OK for m in e.metrics)
    rank = family.index(row.p_value)
    assert row.p_adjusted == pytest.approx(max((4 - j) * family[j] for j in range(rank + 1)))
    # 3 of the 8 tags always improve with the component, the other 5 half the time
    assert row.improvement.value == pytest.approx(3 / 8 + 5 / 8 / 2, abs=0.1)
    assert row.mde > 0 and row.mde < abs(row.delta)
    long_range = attention.groups["long_range"]["pr_auc"]
    local = attention.groups["local"]["pr_auc"]
    specific = attention.groups["long_range - local"]["pr_auc"]
    assert long_range.interval()[1] < 0 and long_range.p_adjusted <= 0.05
    assert local.interval()[0] < 0 < local.interval()[1]  # the local tags did not change
    assert specific.interval()[1] < 0
    assert specific.delta == pytest.approx(long_range.delta - local.delta)
    cells = attention.tags
    assert np.all(cells.delta[:3] < -0.1) and np.all(np.abs(cells.delta[3:]) < 0.1)
    assert np.all(cells.q_value[:3] <= 0.05) and np.all(cells.q_value[3:] > 0.05)

    mixup = effects["mixup"].metrics["pr_auc"]
    assert mixup.verdict == NO_EFFECT and mixup.improvement.low < 0.5 < mixup.improvement.high
    assert effects["specaugment"].status == FAILED
    assert (
        "CUDA out of memory" in effects["specaugment"].reason
        and "variant" in effects["specaugment"].reason
    )
    assert effects["imagenet-pretraining"].status == SKIPPED
    assert "offline" in effects["imagenet-pretraining"].reason


def test_seed_level_means_come_from_the_trials_metrics(suite):
    plan, trials = suite
    effect = compute_effects(plan, trials, TAGS, n_boot=50)[0]
    ref = [t.metrics["test_pr_auc_macro"] for t in trials if t.arm == "submission2"]
    var = [t.metrics["test_pr_auc_macro"] for t in trials if t.arm == "self-attention"]
    row = effect.metrics["pr_auc"]
    assert row.reference.mean == pytest.approx(np.mean(ref))
    assert row.seeds_only.mean == pytest.approx(np.mean(var) - np.mean(ref))
    # The test's Δ is the same quantity, recomputed from the predictions.
    assert row.delta == pytest.approx(np.mean(var) - np.mean(ref))


def test_a_partly_failed_arm_pairs_only_the_seeds_that_finished(suite):
    plan, trials = suite
    trials = [t for t in trials if not (t.arm == "mixup" and t.seed == 1)]
    trials.append(TrialResult("mixup", 1, "failed", error="worker died"))
    mixup = {e.name: e for e in compute_effects(plan, trials, TAGS, n_boot=50)}["mixup"]
    assert mixup.status == OK and mixup.seeds == [0, 2]
    assert any("1" in n and "worker died" in n for n in mixup.notes)


def test_an_ablation_uses_only_the_seeds_it_was_given(suite):
    plan, trials = suite
    effects = compute_effects(plan, trials, TAGS, n_boot=50, seeds={"self-attention": 2})
    assert effects[0].seeds == [0, 1] and effects[1].seeds == [0, 1, 2]


def test_mismatched_ground_truth_is_refused(suite, tmp_path):
    plan, trials = suite
    odd = next(t for t in trials if t.arm == "mixup" and t.seed == 0)
    truth = np.load(odd.run_dir / "test_groundtruth.npy")
    np.save(odd.run_dir / "test_groundtruth.npy", ~truth)
    with pytest.raises(ValueError, match="ground truth differs"):
        compute_effects(plan, trials, TAGS, n_boot=20)


def test_write_report_produces_every_file(suite, tmp_path):
    plan, trials = suite
    groups = {"long_range": LONG, "local": TAGS[3:]}
    effects, conclusions = concluded(plan, trials, groups, n_boot=200)
    out = tmp_path / "report"
    paths = write_report(
        out,
        "unit",
        plan,
        trials,
        effects,
        conclusions,
        TAGS,
        {"budget": "quick", "seeds": "3 per arm"},
        200,
        groups,
    )
    assert set(paths) == {
        "results",
        "effects",
        "report",
        "per_tag",
        "per_tag_q",
        "heatmap",
        "chart",
    }

    results = pd.read_csv(paths["results"])
    assert len(results) == len(plan.trials()) == 12
    failed = results[results.arm == "specaugment"]
    assert set(failed.status) == {"failed"} and failed.error.str.contains("out of memory").all()
    assert results[results.status == "ok"].test_pr_auc_macro.notna().all()

    effects_csv = pd.read_csv(paths["effects"])
    row = effects_csv[
        (effects_csv.ablation == "self-attention") & (effects_csv.metric == "PR-AUC-macro")
    ].iloc[0]
    assert row.verdict == HELPS and row.delta_high < 0 and row.p_holm <= 0.05
    assert row.long_range_high < 0 and row.long_range_minus_local_high < 0
    assert row.p_improvement > 0.5 and row.mde > 0
    assert {"se_seeds", "se_tracks", "tracks_only_low", "seeds_only_high"} <= set(effects_csv)

    per_tag = pd.read_csv(paths["per_tag"], index_col=0)
    assert list(per_tag.index) == ["self-attention", "mixup"] and list(per_tag.columns) == TAGS
    q = pd.read_csv(paths["per_tag_q"], index_col=0)
    assert (q.loc["self-attention", LONG] <= 0.05).all() and (q.loc["mixup"] > 0.05).all()

    text = paths["report"].read_text()
    for expected in (
        "## Methods",
        "initialisation",
        "same order",
        "The headline family is the 4 tests of this suite (2 ablations x 2 headline metrics)",
        "Holm-adjusted",
        "Benjamini-Hochberg",
        "*MDE*",
        "## PR-AUC-macro",
        "## ROC-AUC-macro",
        "P(component improves)",
        "**self-attention helps**",
        "no detectable effect of mixup; cannot rule out \\|Δ\\| ≥ 0.005",
        "## Seeds",
        "**failed**",
        "**skipped:** ImageNet weights unavailable offline",
        "CUDA out of memory",
        "tags the variant lowers most",
        "## Planted tag groups",
        "Δ long_range - local",
        "![effects](effects.png)",
    ):
        assert expected in text, expected
    lowered = next(line for line in text.splitlines() if "lowers most" in line and "tag0" in line)
    assert {"tag0", "tag1", "tag2"} <= set(lowered.replace(",", " ").split())
    assert lowered.count("*") == 1 + 3  # the legend and the three planted tags

    for image in ("chart", "heatmap"):
        data = paths[image].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_a_report_with_nothing_finished_still_explains_itself(tmp_path):
    plan = plan_suite(select(["mixup"]), "full", seeds=2, base=FROM_SCRATCH)
    trials = [TrialResult(arm, s, "failed", error="boom") for arm, s in plan.trials()]
    effects, conclusions = concluded(plan, trials, n_boot=10)
    assert effects[0].status == FAILED and "boom" in effects[0].reason
    assert conclusions.headline.size == 0
    paths = write_report(tmp_path, "none", plan, trials, effects, conclusions, TAGS, {}, 10)
    assert "chart" not in paths
    assert "**failed:**" in paths["report"].read_text()
    assert json.loads(json.dumps(plan.to_dict()))["comparisons"][0]["ablation"] == "mixup"


def test_an_interrupted_arm_is_unfinished_not_failed(suite):
    plan, trials = suite
    trials = [t for t in trials if t.arm != "mixup"]
    trials += [TrialResult("mixup", 0, UNFINISHED), TrialResult("mixup", 1, FAILED, error="x")]
    mixup = {e.name: e for e in compute_effects(plan, trials, TAGS, n_boot=20)}["mixup"]
    assert mixup.status == UNFINISHED and "resume" in mixup.reason


def test_one_seed_reports_no_verdict_and_says_why(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.random((N_TRACKS, N_TAGS)) < 0.25
    plan = plan_suite(select(["self-attention"]), "full", seeds=1, base=FROM_SCRATCH)
    weak = np.full(N_TAGS, 0.3)
    trials = [
        fake_trial(tmp_path, "submission2", 0, truth, np.full(N_TAGS, 1.5)),
        fake_trial(tmp_path, "self-attention", 0, truth, weak, own=0.2),
    ]
    effects, conclusions = concluded(plan, trials, n_boot=50)
    row = effects[0].metrics["pr_auc"]
    assert row.delta < -0.1 and row.verdict == NO_EFFECT and np.isnan(row.p_adjusted)
    assert conclusions.headline.size == 0  # a test without a p-value is not in the family
    text = write_report(tmp_path / "r", "one", plan, trials, effects, conclusions, TAGS, {}, 50)[
        "report"
    ].read_text()
    assert "(1 seed: training noise unmeasured)" in text and "n/a (1 seed)" in text


def test_tag_cells_count_the_test_sets_noise(tmp_path):
    # Every seed gives the same predictions, so the per-seed differences do not vary: only
    # the bootstrap over tracks says that the small per-tag differences are noise.
    rng = np.random.default_rng(2)
    truth = rng.random((N_TRACKS, N_TAGS)) < 0.25
    noise, own = rng.standard_normal((2, N_TRACKS, N_TAGS))
    plan = plan_suite(select(["mixup"]), "full", seeds=2, base=FROM_SCRATCH)
    trials = []
    for arm, scores in (("submission2", noise), ("mixup", 0.95 * noise + 0.3 * own)):
        for seed in plan.seeds:
            run_dir = tmp_path / arm / str(seed)
            run_dir.mkdir(parents=True)
            np.save(run_dir / "test_groundtruth.npy", truth)
            np.save(run_dir / "test_predictions.npy", truth * 1.5 + scores)
            trials.append(TrialResult(arm, seed, OK, run_dir, {}))
    effects, _ = concluded(plan, trials, n_boot=200)
    cells = effects[0].tags
    assert (np.abs(cells.delta) > 0).all()
    assert (cells.q_value > 0.05).all()


def test_the_planted_expectations_are_a_confirmatory_family_of_their_own(suite, tmp_path):
    plan, trials = suite
    groups = {"long_range": LONG, "local": TAGS[3:]}
    found, conclusions = concluded(plan, trials, groups)
    effects = {e.name: e for e in found}
    attention = effects["self-attention"].confirmations
    # self-attention states two hypotheses in ablations/catalog.py; mixup states none.
    assert [(c.group, c.direction) for c in attention] == [
        ("long_range", "lower"),
        ("long_range - local", "lower"),
    ]
    assert effects["mixup"].confirmations == []
    assert conclusions.confirmatory.size == 2 and conclusions.confirmatory.method == "Holm"
    ones = sorted(c.p_one_sided for c in attention)
    assert sorted(c.p_adjusted for c in attention) == pytest.approx(
        [min(1.0, 2 * ones[0]), min(1.0, max(2 * ones[0], ones[1]))]
    )
    assert all(c.confirmed and c.finding.delta < 0 for c in attention)
    # One-sided in the stated direction: the same drop tested as "higher" is far from it.
    c = attention[0]
    assert c.p_one_sided == pytest.approx(float(c.finding.test.p_below_zero))
    files = write_report(
        tmp_path / "out", "t", plan, trials, found, conclusions, TAGS, {}, 300, groups
    )
    text = files["report"].read_text()
    assert "## Confirmatory hypotheses" in text and "| self-attention | Δ long_range lower" in text
