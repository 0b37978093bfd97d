"""Search-space files: the bad-YAML corpus, the bundled spaces, define-by-run compilation."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

from moodtheme.config import build_config
from tune.space import Param, SpaceError, bundled_spaces, load_space

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
BAD = Path(__file__).resolve().parent / "bad_spaces"

# file -> (the field the message must name, a phrase of the fix or the problem), by class
BAD_FILES = {
    # ---- reading: YAML that is broken, or that a space file never needs
    "not_yaml.yaml": ("line 3, column 7", "not valid YAML"),
    "two_documents.yaml": ("line 7", "another document"),
    "not_utf8.yaml": ("not UTF-8", "is this a space file"),
    "empty_file.yaml": ("expected a mapping", "name, preset, params"),
    "not_a_mapping.yaml": ("expected a mapping", "name, preset, params"),
    "duplicate_top_key.yaml": ("num_samples", "written twice (lines 6 and 7"),
    "duplicate_nested_key.yaml": ("params.augment.mixup_alpha.high", "written twice"),
    "duplicate_param.yaml": ("params.optim.lr", "keep one"),
    "merge_key.yaml": ("line 5", "merge keys (<<) are refused"),
    "alias_bomb.yaml": ("line 10", "the alias *a is refused"),
    "alias_reuse.yaml": ("line 7", "write the value out"),
    "deep_nesting.yaml": ("line 3", "nested deeper than 20 levels"),
    # ---- keys: unknown, misplaced, or not for a space file to set or search
    "unknown_key.yaml": ("num_sample", "did you mean 'num_samples'"),
    "unknown_budget_key.yaml": ("budgets.quick.samples", "did you mean 'num_samples'"),
    "budget_top_only_key.yaml": ("budgets.quick.metric", "unknown key; allowed: preset"),
    "unknown_config_key.yaml": (
        "params.model.attention.head",
        "did you mean 'model.attention.heads'",
    ),
    "non_text_param_key.yaml": ("params[1]", "expected a dotted config key"),
    "epochs_in_overrides.yaml": ("overrides.optim.epochs", "set that instead"),
    "override_preset.yaml": ("overrides.preset", "top-level 'preset' key"),
    "search_preset.yaml": ("params.preset", "top-level 'preset' key"),
    "override_data_root.yaml": ("overrides.data.root", "comes from --data"),
    "search_data_root.yaml": ("params.data.root", "comes from --data"),
    "search_limit_tracks.yaml": ("params.data.limit_tracks", "cannot vary between trials"),
    "search_seed.yaml": ("params.run.seed", "noise_seeds"),
    "override_also_searched.yaml": ("overrides.optim.lr", "also listed in params"),
    "derived_also_overridden.yaml": ("derived.model.segment_frames", "keep one"),
    "budget_new_param.yaml": ("budgets.quick.params.augment.mixup_alpha", "add it there first"),
    "budget_named_full.yaml": ("budgets.full", "give this budget another name"),
    "no_params.yaml": ("params", "one at least"),
    "missing_max_t.yaml": ("asha.max_t", "missing; give the epoch budget"),
    # ---- values: types, bounds, names
    "wrong_type.yaml": ("num_samples", "expected an integer, got 'ten'"),
    "float_int_range.yaml": ("params.model.attention.layers.high", "expected an integer"),
    "nan_bound.yaml": ("params.augment.mixup_alpha.low", "expected a finite number"),
    "inf_bound.yaml": ("params.augment.mixup_alpha.high", "expected a finite number"),
    "description_not_text.yaml": ("description", "valid string"),
    "log_flag_not_bool.yaml": ("params.model.attention.layers.log", "valid boolean"),
    "name_path.yaml": ("name", "it names a results folder"),
    "unknown_preset.yaml": ("preset", "choose one of submission1"),
    "unknown_param_type.yaml": ("params.optim.lr.type", "expected one of choice, int"),
    "unknown_sampler.yaml": ("sampler.name", "'tpe' or 'random'"),
    "unknown_mode.yaml": ("mode", "'min' or 'max'"),
    "wrong_mode.yaml": ("mode", "use mode: min"),
    "negative_resource.yaml": ("resources.gpu", "greater than or equal to 0"),
    "zero_cpu.yaml": ("resources.cpu", "greater than 0"),
    "cpu_absurd.yaml": ("resources.cpu", "less than or equal to 1024"),
    "gpu_fraction_above_one.yaml": ("resources.gpu", "fraction below 1 or a whole number"),
    "num_samples_absurd.yaml": ("num_samples", "less than or equal to 100000"),
    "noise_seeds_negative.yaml": ("noise_seeds", "greater than or equal to 0"),
    "sampler_seed_negative.yaml": ("sampler.seed", "greater than or equal to 0"),
    "sampler_seed_too_big.yaml": ("sampler.seed", "less than or equal to 4294967295"),
    "text_number_override.yaml": ("overrides.data.limit_tracks", "cannot be '64'"),
    "bad_override_value.yaml": ("overrides.data.limit_tracks", "greater than or equal to 1"),
    # ---- ASHA
    "grace_above_max_t.yaml": ("asha.grace_period", "exceeds max_t"),
    "grace_zero.yaml": ("asha.grace_period", "greater than or equal to 1"),
    "max_t_absurd.yaml": ("asha.max_t", "less than or equal to 10000"),
    "reduction_factor_huge.yaml": ("asha.reduction_factor", "less than or equal to 100"),
    "reduction_factor_near_one.yaml": ("asha.reduction_factor", "47878 ASHA rungs"),
    "budget_bad_value.yaml": ("budgets.quick.asha.max_t", "greater than or equal to 1"),
    # ---- parameters: their own rules
    "empty_choice.yaml": ("params.model.attention.heads.values", "give at least one value"),
    "duplicate_choice.yaml": ("params.model.attention.heads.values[2]", "listed twice"),
    "int_float_duplicate.yaml": ("params.model.attention.heads.values[1]", "listed twice"),
    "list_as_choice_value.yaml": ("params.model.attention.heads.values[0]", "single value"),
    "low_above_high.yaml": ("params.augment.mixup_alpha", "swap them"),
    "log_scale_nonpositive.yaml": ("params.optim.lr.low", "low > 0"),
    "log_int_with_step.yaml": ("params.model.attention.ff_dim.step", "takes no step"),
    "int_step_not_dividing.yaml": ("params.model.attention.layers.step", "quietly lower high"),
    "float_step_not_dividing.yaml": ("params.augment.mixup_alpha.step", "lower high to 0.9"),
    "int_range_too_wide.yaml": ("params.model.attention.ff_dim.high", "1000000 values"),
    "too_many_values_in_all.yaml": ("params", "hold 30000 values to check"),
    "condition_on_later_param.yaml": ("when.model.attention.enabled", "listed above"),
    "when_on_range_param.yaml": ("when.model.attention.layers", "only test a 'choice'"),
    "when_value_not_a_choice.yaml": ("when.model.attention.enabled", "'maybe' is not among"),
    "never_active.yaml": ("params.model.attention.heads.when", "no trial can meet"),
    # ---- parameters against their config key's type
    "bool_as_int_choice.yaml": ("params.model.attention.heads.values[0]", "not true/false"),
    "choice_wrong_type.yaml": ("params.model.attention.enabled.values[0]", "valid boolean"),
    "choice_value_out_of_bounds.yaml": (
        "params.augment.mixup_alpha.values[1]",
        "greater than or equal to 0",
    ),
    "uniform_on_int_key.yaml": ("params.model.attention.heads.type", "draws floats"),
    "derived_float_key.yaml": ("derived.augment.mixup_alpha", "a derived value is an integer"),
    # ---- every value a trial can draw, built into a config
    "heads_not_dividing_width.yaml": (
        "params.model.attention.heads",
        "must divide model.embed_dim",
    ),
    "heads_int_range_interior.yaml": ("params.model.attention.heads", "the value 3 gives"),
    "budget_interior_int.yaml": ("budgets.quick.params.model.attention.heads", "the value 3"),
    "first_value_invalid.yaml": ("params.model.attention.heads", "its first value 3"),
    "combination_invalid.yaml": ("params.model.attention.heads", "the combination"),
    "switch_after_last_epoch.yaml": ("params.optim.switch_epoch", "narrow the parameter's range"),
    "segments_not_dividing_input.yaml": ("derived.model.segment_frames", "not divisible"),
    "derived_interior_not_dividing.yaml": ("derived.model.segment_frames", "model.segments=3"),
    "preset_conflicts_with_max_t.yaml": ("asha.max_t", "set the other key in overrides"),
    "override_conflicts_with_preset.yaml": ("overrides.model.embed_dim", "change this override"),
    # ---- the metric, against each config
    "unknown_metric.yaml": ("metric", "not a metric the trainer reports"),
    "metric_lr.yaml": ("metric", "not a metric the trainer reports"),
    "metric_per_head_single_head.yaml": ("metric", "not a metric the trainer reports"),
    "metric_per_head_attention_searched.yaml": (
        "metric",
        "not reported by trials with model.attention.enabled=False",
    ),
}
# A message is one line a person reads, whatever the file holds (an alias bomb once made a
# 351 MB line).
MAX_MESSAGE = 600


def test_corpus_is_complete():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(BAD_FILES)


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_space_gets_one_clear_line(name):
    field, phrase = BAD_FILES[name]
    with pytest.raises(SpaceError) as caught:
        load_space(BAD / name)
    message = str(caught.value)
    assert message.startswith(str(BAD / name))
    assert field in message and phrase in message
    assert "\n" not in message and "Traceback" not in message
    assert len(message) < MAX_MESSAGE


def test_missing_file_names_the_bundled_spaces(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SpaceError, match="'nope.yaml' is neither a file nor a bundled space.*attn.yaml"
    ):
        load_space("nope.yaml")


def test_cli_reports_a_bad_space_without_traceback(capsys):
    from tune.cli import main

    assert main(["--space", str(BAD / "empty_choice.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "give at least one value" in err
    assert len(err.splitlines()) == 1


def test_unknown_budget_is_named():
    with pytest.raises(SpaceError, match="no budget 'tiny'.*full, quick"):
        load_space(SPACES / "attn.yaml", "tiny")


def test_extra_overrides_are_validated():
    with pytest.raises(SpaceError, match="overrides.data.limit_tracks"):
        load_space(SPACES / "attn.yaml", "quick", {"data.limit_tracks": 0})
    # an override that clashes with a searched value names both
    with pytest.raises(SpaceError, match="heads=8 must divide model.embed_dim=12"):
        load_space(SPACES / "attn.yaml", "quick", {"model.embed_dim": 12})


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(50 * 2**20)  # 50 MiB (sparse): read whole, it would be pickled into Ray
    with pytest.raises(SpaceError, match="huge.yaml: larger than 256 KiB"):
        load_space(huge)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


SMALL = """
name: small
preset: quick
overrides: {optim.switch_epoch: null}
asha: {max_t: 2}
params:
  optim.lr: {type: loguniform, low: 1e-4, high: 1e-2}
"""


def test_scientific_notation_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-4 as text; a space file reads it as people do
    lr = load_space(_write(tmp_path, SMALL)).params[0]
    assert (lr.low, lr.high) == (1e-4, 1e-2)


def test_files_valid_before_still_load(tmp_path):
    old_style = (
        SMALL
        + """
resources:
sampler:
derived:
budgets:
  tiny: {asha: {max_t: 1.0}, overrides:, params: {optim.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}}}
"""
    )
    path = _write(tmp_path, old_style.replace("asha: {max_t: 2}", "asha: {max_t: 2.0}"))
    space = load_space(path, "tiny")
    assert (space.asha.max_t, space.resources.cpu, space.sampler.name) == (1, 1.0, "tpe")
    assert space.params[0].low == 1e-3 and space.overrides == {"optim.switch_epoch": None}


def test_extra_overrides_are_checked_like_the_files_own():
    with pytest.raises(SpaceError, match="overrides.data.root: .*comes from --data"):
        load_space(SPACES / "smoke.yaml", overrides={"data.root": "/data"})
    with pytest.raises(SpaceError, match="overrides.preset: .*top-level 'preset' key"):
        load_space(SPACES / "smoke.yaml", overrides={"preset": "submission1"})
    with pytest.raises(SpaceError, match="overrides.run.amp: run.amp cannot be 'yes'"):
        load_space(SPACES / "smoke.yaml", overrides={"run.amp": "yes"})
    # a searched value that the extra override breaks is named in the budget it is in
    with pytest.raises(
        SpaceError, match="budgets.quick.params.model.attention.heads: the value 8 .*embed_dim=20"
    ):
        load_space(SPACES / "attn.yaml", "quick", {"model.embed_dim": 20})


def test_drawable_values_are_every_value_a_trial_can_draw():
    assert Param("k", "int", low=1, high=7, step=2).drawable() == [1, 3, 5, 7]
    assert Param("k", "int", low=2, high=5).drawable() == [2, 3, 4, 5]
    assert Param("k", "uniform", low=0.0, high=2.0).drawable() == [0.0, 2.0]
    assert Param("k", "choice", values=(None, "a")).drawable() == [None, "a"]


def test_a_loaded_space_is_small_and_its_blocks_are_dataclasses():
    space = load_space(SPACES / "attn.yaml")
    # the whole space travels into Ray's state
    assert len(pickle.dumps(space)) < 10_000
    assert pickle.loads(pickle.dumps(space)) == space
    assert json.loads(json.dumps(space.asha.__dict__)) == {
        "max_t": 120,
        "grace_period": 10,
        "reduction_factor": 3.0,
    }
    assert replace(space.asha, grace_period=120).grace_period == 120


# ----------------------------------------------------------------------------- bundled


def test_attn_space_searches_what_the_design_names():
    space = load_space(SPACES / "attn.yaml")
    params = {p.key: p for p in space.params}
    assert params["model.attention.heads"].values == (1, 2, 4, 8)
    assert (params["model.attention.layers"].low, params["model.attention.layers"].high) == (1, 4)
    assert params["model.segments"].values == (8, 16, 32)
    assert (params["augment.mixup_alpha"].low, params["augment.mixup_alpha"].high) == (0.0, 2.0)
    assert "optim.switch_epoch" in params
    assert space.preset == "submission2" and space.metric == "val_pr_auc_macro"
    assert space.mode == "max" and space.sampler.name == "tpe"
    assert space.resources.gpu == 0.5


def test_mobilenet_space_covers_submission1_recipe():
    space = load_space(SPACES / "mobilenet.yaml")
    keys = {p.key for p in space.params}
    assert {"optim.lr", "augment.mixup_alpha", "augment.specaugment_p"} <= keys
    assert "augment.resized_crop_p" in keys
    assert space.preset == "submission1"


def _bundled_budgets() -> list[tuple[str, str]]:
    out = []
    for name, path in bundled_spaces().items():
        budgets = yaml.safe_load(path.read_text()).get("budgets") or {}
        out += [(name, budget) for budget in ("full", *budgets)]
    return out


@pytest.mark.parametrize(("name", "budget"), _bundled_budgets())
def test_bundled_spaces_load_at_every_budget(name, budget):
    full = load_space(name)
    space = load_space(name, budget)
    assert space.budget == budget
    assert space.asha.max_t <= full.asha.max_t
    assert space.num_samples <= full.num_samples
    assert space.fixed_overrides()["optim.epochs"] == space.asha.max_t
    # what the loader promises, checked here on its own: every value each parameter can
    # draw (the others at their first value) builds a config
    for param in space.params:
        for value in param.drawable():
            chosen = space.realize({**space.realize({}), param.key: value})
            assert space.trial_config(chosen).optim.epochs == space.asha.max_t


def test_quick_budget_scales_the_space_down():
    full = load_space(SPACES / "attn.yaml")
    quick = load_space(SPACES / "attn.yaml", "quick")
    assert (full.asha.max_t, quick.asha.max_t) == (120, 10)
    assert quick.preset == "quick" and quick.resources.gpu == 0
    switch = next(p for p in quick.params if p.key == "optim.switch_epoch")
    assert switch.high <= quick.asha.max_t


# ----------------------------------------------------------------------------- define-by-run


def _sample(space, n: int, seed: int = 0):
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    out = []
    for _ in range(n):
        trial = study.ask()
        derived = space.suggest(trial)
        out.append((dict(trial.params), derived))
        study.tell(trial, 0.0)
    return out


def test_conditional_parameter_only_when_attention_is_on():
    space = load_space(SPACES / "smoke.yaml")
    samples = _sample(space, 40)
    on = [p for p, _ in samples if p["model.attention.enabled"]]
    off = [p for p, _ in samples if not p["model.attention.enabled"]]
    assert on and off
    assert all(p["model.attention.heads"] in (1, 2, 4) for p in on)
    assert all("model.attention.heads" not in p for p in off)


def test_suggestions_respect_the_space_and_build_valid_configs():
    space = load_space(SPACES / "attn.yaml", "quick")
    for params, derived in _sample(space, 30, seed=1):
        assert params["model.attention.heads"] in (1, 2, 4, 8)
        assert 1 <= params["model.attention.layers"] <= 4
        assert 0.0 <= params["augment.mixup_alpha"] <= 2.0
        assert 8 <= params["optim.switch_epoch"] <= 10
        # segment count at a fixed total input length
        config = space.trial_config(params)
        frames = config.data.input_frames
        assert derived == {"model.segment_frames": frames // params["model.segments"]}
        assert config.model.segments * config.model.segment_frames == config.data.input_frames
        assert config.optim.epochs == space.asha.max_t


def test_loguniform_and_int_steps():
    space = load_space(SPACES / "attn.yaml")
    for params, _ in _sample(space, 20, seed=2):
        assert params["optim.switch_epoch"] in range(30, 91, 10)
    smoke = load_space(SPACES / "smoke.yaml")
    lrs = [p["optim.lr"] for p, _ in _sample(smoke, 30, seed=3)]
    assert all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert min(lrs) < 1e-3 < max(lrs)  # log scale reaches both decades


def test_trial_overrides_match_build_config():
    space = load_space(SPACES / "smoke.yaml")
    chosen = space.example_overrides()
    config = space.trial_config(chosen)
    assert config == build_config(space.preset, space.trial_overrides(chosen))
    assert config.data.limit_tracks == 24


def test_the_documented_example_loads(tmp_path):
    doc = (REPO / "docs" / "tune.md").read_text()
    section = doc[doc.index("## Search space files") :]
    example = section[section.index("```yaml") + len("```yaml") : section.index("```\n\n-")]
    path = _write(tmp_path, example)
    assert {load_space(path, budget).budget for budget in ("full", "quick")} == {"full", "quick"}
