"""Effects and report files from fake trials whose predictions have known effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ablations.report import (
    FAILED,
    OK,
    SKIPPED,
    UNFINISHED,
    TrialResult,
    compute_effects,
    write_report,
)
from ablations.stats import HELPS, NO_EFFECT
from ablations.suite import plan_suite, select
from moodtheme.evaluate import auc_metrics

N_TRACKS, N_TAGS = 240, 8
TAGS = [f"mood/theme---tag{i}" for i in range(N_TAGS)]
LONG = TAGS[:3]  # the tags the attention variant hurts


def fake_trial(tmp_path, arm, seed, truth, strength, rng):
    """A finished trial: predictions whose per-tag separation is ``strength``."""
    run_dir = tmp_path / "trials" / arm / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    scores = truth * strength + rng.standard_normal(truth.shape)
    np.save(run_dir / "test_groundtruth.npy", truth)
    np.save(run_dir / "test_predictions.npy", scores.astype(np.float32))
    m = auc_metrics(truth, scores)
    metrics = {"test_pr_auc_macro": m["PR-AUC-macro"], "test_roc_auc_macro": m["ROC-AUC-macro"]}
    return TrialResult(arm, seed, OK, run_dir, metrics)


@pytest.fixture
def suite(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((N_TRACKS, N_TAGS)) < 0.25
    plan = plan_suite(
        select(["self-attention", "mixup", "specaugment", "imagenet-pretraining"]),
        "quick",
        seeds=3,
        probe=lambda c: (
            "ImageNet weights unavailable offline" if c.model.pretrained == "imagenet" else None
        ),
    )
    strong = np.full(N_TAGS, 1.5)
    weak_long = strong.copy()
    weak_long[:3] = 0.3  # no attention: the long-range tags lose most of their signal
    trials = []
    for seed in plan.seeds:
        trials.append(fake_trial(tmp_path, "submission2", seed, truth, strong, rng))
        trials.append(fake_trial(tmp_path, "self-attention", seed, truth, weak_long, rng))
        trials.append(fake_trial(tmp_path, "mixup", seed, truth, strong, rng))
        trials.append(TrialResult("specaugment", seed, "failed", error="CUDA out of memory"))
    return plan, trials


def test_effects_find_the_planted_drop_and_nothing_else(suite):
    plan, trials = suite
    effects = {
        e.name: e
        for e in compute_effects(
            plan, trials, TAGS, {"long_range": LONG, "local": TAGS[3:]}, n_boot=300
        )
    }

    attention = effects["self-attention"]
    assert attention.status == OK and attention.seeds == [0, 1, 2]
    assert attention.verdict["pr_auc"] == HELPS
    assert attention.difference["pr_auc"].high < 0
    assert attention.groups["long_range"]["pr_auc"].high < 0
    local = attention.groups["local"]["pr_auc"]
    assert local.low < 0 < local.high  # the local tags did not change
    specific = attention.contrasts["long_range - local"]["pr_auc"]
    assert specific.high < 0 and specific.delta == pytest.approx(
        attention.groups["long_range"]["pr_auc"].delta - local.delta
    )
    assert np.all(attention.tag_delta[:3] < -0.1)
    assert np.all(np.abs(attention.tag_delta[3:]) < 0.1)

    assert effects["mixup"].verdict["pr_auc"] == NO_EFFECT
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
    assert effect.reference["pr_auc"].mean == pytest.approx(np.mean(ref))
    assert effect.difference["pr_auc"].mean == pytest.approx(np.mean(var) - np.mean(ref))
    # The bootstrap's observed difference is the same quantity, recomputed from predictions.
    assert effect.bootstrap["pr_auc"].delta == pytest.approx(np.mean(var) - np.mean(ref))


def test_a_partly_failed_arm_pairs_only_the_seeds_that_finished(suite):
    plan, trials = suite
    trials = [t for t in trials if not (t.arm == "mixup" and t.seed == 1)]
    trials.append(TrialResult("mixup", 1, "failed", error="worker died"))
    mixup = {e.name: e for e in compute_effects(plan, trials, TAGS, n_boot=50)}["mixup"]
    assert mixup.status == OK and mixup.seeds == [0, 2]
    assert any("1" in n and "worker died" in n for n in mixup.notes)


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
    effects = compute_effects(plan, trials, TAGS, groups, n_boot=200)
    out = tmp_path / "report"
    paths = write_report(
        out,
        "unit",
        plan,
        trials,
        effects,
        TAGS,
        {"budget": "quick", "seeds": "0, 1, 2"},
        200,
        groups,
    )
    assert set(paths) == {"results", "effects", "report", "per_tag", "heatmap", "chart"}

    results = pd.read_csv(paths["results"])
    assert len(results) == len(plan.trials()) == 12
    failed = results[results.arm == "specaugment"]
    assert set(failed.status) == {"failed"} and failed.error.str.contains("out of memory").all()
    assert results[results.status == "ok"].test_pr_auc_macro.notna().all()

    effects_csv = pd.read_csv(paths["effects"])
    row = effects_csv[
        (effects_csv.ablation == "self-attention") & (effects_csv.metric == "PR-AUC-macro")
    ].iloc[0]
    assert row.verdict == HELPS and row.bootstrap_high < 0 and row.long_range_high < 0
    assert row.long_range_minus_local_high < 0

    per_tag = pd.read_csv(paths["per_tag"], index_col=0)
    assert list(per_tag.index) == ["self-attention", "mixup"] and list(per_tag.columns) == TAGS

    text = paths["report"].read_text()
    for expected in (
        "## PR-AUC-macro",
        "## ROC-AUC-macro",
        "self-attention helps",
        "no detectable effect of mixup",
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

    for image in ("chart", "heatmap"):
        data = paths[image].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_a_report_with_nothing_finished_still_explains_itself(tmp_path):
    plan = plan_suite(select(["mixup"]), "quick", seeds=2)
    trials = [TrialResult(arm, s, "failed", error="boom") for arm, s in plan.trials()]
    effects = compute_effects(plan, trials, TAGS, n_boot=10)
    assert effects[0].status == FAILED and "boom" in effects[0].reason
    paths = write_report(tmp_path, "none", plan, trials, effects, TAGS, {}, 10)
    assert "chart" not in paths
    assert "**failed:**" in paths["report"].read_text()
    assert json.loads(json.dumps(plan.to_dict()))["comparisons"][0]["ablation"] == "mixup"


def test_an_interrupted_arm_is_unfinished_not_failed(suite):
    plan, trials = suite
    trials = [t for t in trials if t.arm != "mixup"]
    trials += [TrialResult("mixup", 0, UNFINISHED), TrialResult("mixup", 1, FAILED, error="x")]
    mixup = {e.name: e for e in compute_effects(plan, trials, TAGS, n_boot=20)}["mixup"]
    assert mixup.status == UNFINISHED and "resume" in mixup.reason
