"""Search-space files: the bad-YAML corpus, the bundled spaces, define-by-run compilation."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from moodtheme.config import build_config
from tune.space import SpaceError, load_space

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
BAD = Path(__file__).resolve().parent / "bad_spaces"

# file -> (the field the message must name, a phrase of the fix or the problem)
BAD_FILES = {
    "unknown_key.yaml": ("num_sample", "did you mean 'num_samples'"),
    "wrong_type.yaml": ("num_samples", "expected an integer, got 'ten'"),
    "empty_choice.yaml": ("params.model.attention.heads.values", "give at least one value"),
    "low_above_high.yaml": ("params.augment.mixup_alpha", "swap them"),
    "negative_resource.yaml": ("resources.gpu", "must be 0 or more"),
    "zero_cpu.yaml": ("resources.cpu", "greater than 0"),
    "gpu_fraction_above_one.yaml": ("resources.gpu", "fraction below 1 or a whole number"),
    "heads_not_dividing_width.yaml": (
        "params.model.attention.heads",
        "must divide model.embed_dim",
    ),
    "segments_not_dividing_input.yaml": ("derived.model.segment_frames", "not divisible"),
    "unknown_config_key.yaml": (
        "params.model.attention.head",
        "did you mean 'model.attention.heads'",
    ),
    "unknown_param_type.yaml": ("params.optim.lr.type", "expected one of choice, int"),
    "log_scale_nonpositive.yaml": ("params.optim.lr.low", "low > 0"),
    "unknown_metric.yaml": ("metric", "not a metric the trainer reports"),
    "wrong_mode.yaml": ("mode", "use mode: min"),
    "grace_above_max_t.yaml": ("asha.grace_period", "exceeds max_t"),
    "missing_max_t.yaml": ("asha.max_t", "missing"),
    "condition_on_later_param.yaml": ("when.model.attention.enabled", "listed above"),
    "not_yaml.yaml": ("not valid YAML", "line 3"),
    "not_a_mapping.yaml": ("must hold a mapping", "name, preset, params"),
    "epochs_in_overrides.yaml": ("overrides.optim.epochs", "set that instead"),
    "unknown_budget_key.yaml": ("budgets.quick.samples", "did you mean 'num_samples'"),
    "switch_after_last_epoch.yaml": ("params.optim.switch_epoch", "narrow the parameter's range"),
    "preset_conflicts_with_max_t.yaml": ("asha.max_t", "set the other key in overrides"),
    "duplicate_choice.yaml": ("params.model.attention.heads.values", "listed twice"),
    "unknown_preset.yaml": ("preset", "choose one of submission1"),
    "bad_override_value.yaml": ("overrides.data.limit_tracks", "greater than or equal to 1"),
    "no_params.yaml": ("params", "one at least"),
    "float_int_range.yaml": ("params.model.attention.layers.high", "expected an integer"),
}


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


def test_missing_file_names_the_bundled_spaces(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        SpaceError, match="'nope.yaml' is neither a file nor a bundled space.*attn.yaml"
    ):
        load_space("nope.yaml")


def test_cli_reports_a_bad_space_without_traceback(capsys):
    from tune.search import main

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


@pytest.mark.parametrize("name", ["attn", "mobilenet", "smoke"])
def test_bundled_spaces_load_at_every_budget(name):
    full = load_space(SPACES / f"{name}.yaml")
    assert full.budget == "full"
    quick = load_space(SPACES / f"{name}.yaml", "quick") if name != "smoke" else full
    assert quick.asha.max_t <= full.asha.max_t
    assert quick.num_samples <= full.num_samples
    assert quick.fixed_overrides()["optim.epochs"] == quick.asha.max_t


def test_quick_budget_scales_the_space_down():
    full = load_space(SPACES / "attn.yaml")
    quick = load_space(SPACES / "attn.yaml", "quick")
    assert (full.asha.max_t, quick.asha.max_t) == (120, 4)
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
        assert 2 <= params["optim.switch_epoch"] <= 4
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
