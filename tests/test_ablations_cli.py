"""The ablation CLI's fast paths: listing, refusing bad input, planning trials for Tune."""

from __future__ import annotations

import json

import pytest

from ablations import cli, run
from ablations.suite import ABLATIONS, BUDGET_SETTINGS, CONTROLS, plan_suite, select
from ablations.trials import round_name, trial_specs
from moodtheme.config import build_config


def test_list_prints_every_ablation(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in (*ABLATIONS, *CONTROLS):
        assert name in out
    assert "resnext_tiny_shallow" in out
    assert cli.main(["--list", "--budget", "full"]) == 0
    assert "resnext50_32x4d" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["self_attention"], "unknown ablation 'self_attention'. Valid names: all, self-attention"),
        ([], "name at least one ablation"),
        (["mixup", "--seeds", "0"], "--seeds 0: give a number of seeds (1 or more) or 'auto'"),
        (["mixup", "--seeds", "many"], "--seeds many"),
        (["mixup", "--seeds", "auto", "--max-seeds", "2"], "--first-seeds (3) <= --max-seeds (2)"),
        (["mixup", "--min-effect", "0"], "--min-effect 0.0"),
        (["mixup", "--bootstrap", "1"], "--bootstrap 1"),
        (["mixup", "--set", "optim.lr"], "key=value"),
        (["mixup", "--set", "optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
    ],
)
def test_bad_input_is_one_clear_line(argv, expected, capsys, tmp_path):
    code = cli.main([*argv, "--results-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and expected in err
    assert "Traceback" not in err


def test_resume_needs_a_run_and_a_new_run_needs_a_free_name(tmp_path, capsys):
    assert cli.main(["--resume", "--results-dir", str(tmp_path)]) == 2
    assert "no suite to resume" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / run.PLAN_FILE).write_text(json.dumps({"settings": {}}))
    assert cli.main(["mixup", "--name", "taken", "--results-dir", str(tmp_path)]) == 2
    assert "already holds a suite; pass --resume" in capsys.readouterr().err


def test_trial_specs_carry_only_what_makes_each_arm_and_seed():
    shared = {"data.root": "/data", "run.progress": False}
    plan = plan_suite(select(["self-attention", "per-class-early-stopping"]), "quick", 2, shared)
    fixed = {**BUDGET_SETTINGS["quick"], **shared}
    specs = trial_specs(plan, plan.trials(), "quick", fixed)
    assert [s.name for s in specs] == [
        "self-attention-reference.seed0",
        "self-attention-reference.seed1",
        "self-attention.seed0",
        "self-attention.seed1",
        "submission1.seed0",
        "submission1.seed1",
        "per-class-early-stopping.seed0",
        "per-class-early-stopping.seed1",
    ]
    by_name = {s.name: s for s in specs}
    # At the quick budget the self-attention comparison trains 18 epochs, the rest 6.
    assert by_name["self-attention.seed1"].overrides == {
        "optim.epochs": 18,
        "model.attention.enabled": False,
        "run.seed": 1,
    }
    assert by_name["self-attention-reference.seed0"].overrides == {"optim.epochs": 18}
    assert by_name["submission1.seed0"].overrides["model.arch"] == "whole"
    assert (
        by_name["per-class-early-stopping.seed0"].tags["ablation_arm"] == "per-class-early-stopping"
    )
    # What Tune will build from a spec is exactly the planned trial.
    for spec in specs:
        arm, seed = spec.tags["ablation_arm"], int(spec.tags["ablation_seed"])
        built = build_config("quick", {**fixed, **spec.overrides})
        assert built == plan.trial_config(arm, seed)


def test_the_a_a_control_trains_the_reference_from_other_seeds():
    shared = {"data.root": "/data", "run.progress": False}
    plan = plan_suite(select(["a-a-control"]), "quick", 2, shared)
    (comparison,) = plan.comparisons
    assert comparison.reference == "submission2" and comparison.variant == "a-a-control"
    specs = {
        s.name: s
        for s in trial_specs(plan, plan.trials(), "quick", {**BUDGET_SETTINGS["quick"], **shared})
    }
    assert specs["submission2.seed1"].overrides == {"run.seed": 1}
    assert specs["a-a-control.seed1"].overrides == {"run.seed": 1001}
    reference, control = plan.arms["submission2"].config, plan.arms["a-a-control"].config
    assert reference == control  # the same config under another name


def test_later_rounds_get_their_own_experiment():
    assert round_name("quick-1", 0) == "quick-1"
    assert round_name("quick-1", 2) == "quick-1-round3"
