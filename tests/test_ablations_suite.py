"""The suite's declarations and how a selection becomes arms and paired trials."""

from __future__ import annotations

import pytest

from ablations.suite import (
    ABLATIONS,
    REFERENCES,
    REPLICATE_SEED_OFFSET,
    SuiteError,
    config_key,
    describe,
    plan_suite,
    reference_config,
    select,
)
from moodtheme.config import ConfigError
from moodtheme.models import BACKBONES

ISSUE_COMPONENTS = {
    "self-attention",
    "mixup",
    "specaugment",
    "random-crop",
    "per-class-early-stopping",
    "backbone",
    "optimizer-switch",
    "imagenet-pretraining",
    "eval-augmentation",
}


def test_the_suite_has_every_component_the_paper_and_the_authors_code_use():
    assert set(ABLATIONS) == ISSUE_COMPONENTS
    for a in ABLATIONS.values():
        assert a.reference in REFERENCES and a.change and a.component


def test_select_expands_all_and_keeps_suite_order():
    assert [a.name for a in select(["all"])] == list(ABLATIONS)
    assert [a.name for a in select(["mixup", "self-attention"])] == ["self-attention", "mixup"]


@pytest.mark.parametrize("names", [["attention"], ["mixup", "Mixup"], []])
def test_malformed_names_list_the_valid_ones(names):
    with pytest.raises(SuiteError) as err:
        select(names)
    message = str(err.value)
    assert "Valid names: all" in message
    for name in ABLATIONS:
        assert name in message


def test_list_shows_every_ablation_with_its_overrides():
    text = describe("quick")
    for a in ABLATIONS.values():
        assert a.name in text
    assert "model.attention.enabled=false" in text
    variant_lines = [line for line in text.splitlines() if "variant:" in line]
    assert any("resnext_tiny_shallow" in line for line in variant_lines)
    assert not any("resnext50_32x4d" in line for line in variant_lines)
    assert any(
        "resnext50_32x4d" in line for line in describe("full").splitlines() if "variant:" in line
    )


def changed_keys(a, b):
    fa, fb = a.flat(), b.flat()
    return {k for k in fa if fa[k] != fb[k]} - {"preset"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("self-attention", {"model.attention.enabled"}),
        ("mixup", {"augment.mixup_alpha"}),
        ("specaugment", {"augment.specaugment_p"}),
        ("random-crop", {"data.window", "augment.resized_crop_p"}),
        ("per-class-early-stopping", {"early_stopping.mode"}),
        ("backbone", {"model.backbone", "model.width_mult"}),
        ("optimizer-switch", {"optim.switch_epoch"}),
        ("eval-augmentation", {"augment.augment_eval"}),
    ],
)
def test_each_variant_changes_only_its_component(name, expected):
    plan = plan_suite(select([name]), "quick", seeds=2)
    (c,) = plan.comparisons
    assert c.skipped is None
    ref, var = plan.arms[c.reference].config, plan.arms[c.variant].config
    assert changed_keys(ref, var) == expected


def full_comparison(name):
    plan = plan_suite(select([name]), "full", seeds=1, probe=lambda c: None)
    (c,) = plan.comparisons
    return plan.arms[c.reference].config, plan.arms[c.variant].config


def test_at_full_budget_the_reference_is_the_authors_submission2():
    ref, var = full_comparison("mixup")
    assert ref.data.window == "first" and ref.augment.augment_eval
    assert ref.augment.mixup_partner == "second_loader"
    assert ref.early_stopping.head == "attention"
    assert changed_keys(ref, var) == {"augment.mixup_alpha"}


def test_at_full_budget_every_reference_has_its_component():
    # The authors' submission 2 never crops at random: that ablation's reference does.
    ref, var = full_comparison("random-crop")
    assert ref.data.window == "random" and ref.augment.resized_crop_p > 0
    assert changed_keys(ref, var) == {"data.window", "augment.resized_crop_p"}
    ref, var = full_comparison("eval-augmentation")
    assert ref.augment.augment_eval and not var.augment.augment_eval
    # Without attention, the kept model is chosen by the remaining head's score.
    ref, var = full_comparison("self-attention")
    assert changed_keys(ref, var) == {"model.attention.enabled", "early_stopping.head"}
    assert var.early_stopping.head == "combined"


def test_the_quick_backbone_variant_is_a_registered_shallow_resnext():
    plan = plan_suite(select(["backbone"]), "quick", seeds=1)
    backbone = plan.arms[plan.comparisons[0].variant].config.model.backbone
    assert backbone in BACKBONES and "resnext" in backbone and "shallow" in backbone
    full = plan_suite(select(["backbone"]), "full", seeds=1)
    assert full.arms[full.comparisons[0].variant].config.model.backbone == "resnext50_32x4d"


def test_per_class_early_stopping_runs_on_the_submission1_recipe():
    plan = plan_suite(select(["per-class-early-stopping"]), "quick", seeds=1)
    c = plan.comparisons[0]
    ref = plan.arms[c.reference].config
    assert c.reference == "submission1"
    assert ref.model.arch == "whole" and not ref.model.attention.enabled
    assert ref.optim.optimizer == "amsgrad" and ref.optim.switch_epoch is None
    assert ref.optim.scheduler == "plateau" and ref.early_stopping.monitor == "val_loss"
    assert ref.early_stopping.mode == "per_class"
    assert (
        ref.data.input_frames
        == reference_config(REFERENCES["submission2"], "quick", {}).data.input_frames
    )
    full = plan_suite(select(["per-class-early-stopping"]), "full", seeds=1, probe=lambda c: None)
    assert full.arms["submission1"].config.preset == "submission1"


def test_a_subset_always_runs_with_its_reference_and_paired_seeds():
    plan = plan_suite(select(["mixup"]), "quick", seeds=3)
    # At the quick budget mixup is off in the plain recipe: the mixup ablation's reference
    # turns it on, and its variant is the plain recipe.
    arms = ("mixup-reference", "submission2")
    assert plan.trials() == [(arm, s) for arm in arms for s in (0, 1, 2)]
    assert plan.trial_config("mixup-reference", 2).run.seed == 2
    assert plan.trial_config("submission2", 2).run.seed == 2
    assert plan.arms["mixup-reference"].config.augment.mixup_alpha == 1.0


def test_shared_references_are_trained_once():
    plan = plan_suite(select(["all"]), "quick", seeds=2, probe=lambda c: None)
    uses = set(plan.arms["submission2"].roles)
    assert {"mixup:variant", "random-crop:reference", "optimizer-switch:variant"} <= uses
    keys = [config_key(a.config) for a in plan.arms.values()]
    assert len(keys) == len(set(keys))
    # Same config, different seed: same arm key; different component: different key.
    assert config_key(plan.trial_config("mixup-reference", 0)) == config_key(
        plan.trial_config("mixup-reference", 1)
    )


def test_the_quick_self_attention_comparison_trains_longer_than_the_rest():
    plan = plan_suite(select(["self-attention", "mixup"]), "quick", seeds=1)
    epochs = {name: arm.config.optim.epochs for name, arm in plan.arms.items()}
    assert epochs == {
        "self-attention-reference": 18,
        "self-attention": 18,
        "mixup-reference": 6,
        "submission2": 6,
    }
    # A run-wide --set still wins over an ablation's own budget.
    short = plan_suite(select(["self-attention"]), "quick", seeds=1, base={"optim.epochs": 2})
    assert {a.config.optim.epochs for a in short.arms.values()} == {2}


def test_probe_failures_skip_only_the_ablations_that_need_that_config():
    def no_imagenet(config):
        return "no ImageNet weights offline" if config.model.pretrained == "imagenet" else None

    plan = plan_suite(select(["all"]), "quick", seeds=1, probe=no_imagenet)
    skipped = {c.ablation.name: c.skipped for c in plan.comparisons if c.skipped}
    assert skipped == {"imagenet-pretraining": "no ImageNet weights offline"}
    assert all(c.reference and c.variant for c in plan.comparisons if not c.skipped)
    assert not any(a.config.model.pretrained == "imagenet" for a in plan.arms.values())


def test_base_overrides_reach_every_arm_and_no_op_variants_are_skipped():
    plan = plan_suite(
        select(["self-attention", "mixup"]),
        "quick",
        seeds=1,
        base={"data.root": "/data/x", "model.attention.enabled": False},
    )
    assert all(a.config.data.root == "/data/x" for a in plan.arms.values())
    attention = plan.comparisons[0]
    assert attention.skipped and "changes nothing" in attention.skipped
    assert set(plan.arms) == {"mixup-reference", "submission2"}


def test_invalid_settings_and_seed_counts_are_reported():
    with pytest.raises(SuiteError, match="seeds"):
        plan_suite(select(["mixup"]), "quick", seeds=0)
    with pytest.raises(SuiteError, match="budget"):
        plan_suite(select(["mixup"]), "huge", seeds=1)
    with pytest.raises(ConfigError, match="optim.switch_epoch"):
        plan_suite(select(["mixup"]), "quick", seeds=1, base={"optim.switch_epoch": 9})
    # A budget that leaves an ablation's own reference invalid skips that ablation only.
    plan = plan_suite(select(["optimizer-switch"]), "quick", seeds=1, base={"optim.epochs": 3})
    assert "optim.switch_epoch" in plan.comparisons[0].skipped


def test_the_a_a_control_is_asked_for_by_name_and_trains_other_seeds():
    assert "a-a-control" not in [a.name for a in select(["all"])]
    names = [a.name for a in select(["all", "a-a-control"])]
    assert names[-1] == "a-a-control" and len(names) == len(ABLATIONS) + 1
    plan = plan_suite(select(["mixup", "a-a-control"]), "quick", seeds=2)
    control = plan.arms["a-a-control"]
    assert control.config == plan.arms["submission2"].config  # identical, under another name
    assert (
        control.seed_offset == REPLICATE_SEED_OFFSET and control.key != plan.arms["submission2"].key
    )
    assert plan.trial_config("a-a-control", 1).run.seed == REPLICATE_SEED_OFFSET + 1
    assert plan.trial_config("submission2", 1).run.seed == 1
    assert plan.to_dict()["arms"]["a-a-control"]["seed_offset"] == REPLICATE_SEED_OFFSET


def test_trials_follow_each_ablations_seed_count_and_shared_arms_take_the_most():
    plan = plan_suite(select(["mixup", "specaugment"]), "quick", seeds=5)
    trials = plan.trials({"mixup": 2, "specaugment": 4})
    assert [s for arm, s in trials if arm == "mixup-reference"] == [0, 1]
    assert [s for arm, s in trials if arm == "specaugment-reference"] == [0, 1, 2, 3]
    assert [s for arm, s in trials if arm == "submission2"] == [0, 1, 2, 3]  # both variants
    assert len(plan.trials()) == 3 * 5
