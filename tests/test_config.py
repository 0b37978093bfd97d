import pytest

from moodtheme.config import (
    PRESETS,
    ConfigError,
    build_config,
    parse_overrides,
    valid_keys,
    with_overrides,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset):
    cfg = build_config(preset)
    assert cfg.preset == preset


def test_submission_presets_follow_the_paper():
    s1 = build_config("submission1")
    assert (s1.model.arch, s1.data.input_frames) == ("whole", 6590)
    assert (s1.optim.optimizer, s1.optim.lr, s1.optim.batch_size) == ("amsgrad", 1e-3, 4)
    assert s1.optim.scheduler == "plateau" and s1.early_stopping.mode == "per_class"
    assert s1.early_stopping.patience == 25 and s1.optim.switch_epoch is None
    s2 = build_config("submission2")
    assert (s2.model.segments, s2.model.segment_frames, s2.data.input_frames) == (16, 256, 4096)
    assert (s2.model.attention.heads, s2.model.attention.layers, s2.model.embed_dim) == (4, 2, 256)
    assert (s2.optim.optimizer, s2.optim.lr, s2.optim.batch_size) == ("adam", 1e-4, 8)
    assert (s2.optim.epochs, s2.optim.switch_epoch) == (120, 60)
    assert s2.optim.lr_drops == [1e-4, 1e-5] and s2.optim.lr_drop_every == 20
    for cfg in (s1, s2):
        assert cfg.augment.mixup_alpha == 1.0 and cfg.model.pretrained == "imagenet"


def test_dotted_overrides_parse_yaml_values():
    cfg = build_config("quick", ["model.attention.heads=2", "optim.switch_epoch=null"])
    assert cfg.model.attention.heads == 2 and cfg.optim.switch_epoch is None
    again = with_overrides(cfg, {"augment.mixup_alpha": 0})
    assert again.augment.mixup_alpha == 0 and again.model.attention.heads == 2
    assert parse_overrides(["optim.lr=1e-3"]) == {"optim.lr": 1e-3}


def test_unknown_key_names_the_key_and_suggests():
    with pytest.raises(ConfigError, match=r"model\.atention\.heads.*model\.attention\.heads"):
        build_config("quick", {"model.atention.heads": 8})


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"early_stopping\.mode.*'per_class', 'joint'"):
        build_config("quick", {"early_stopping.mode": "sometimes"})


def test_bad_number_names_bounds():
    with pytest.raises(ConfigError, match=r"augment\.specaugment_p=1\.5.*<= 1"):
        build_config("quick", {"augment.specaugment_p": 1.5})


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="heads=3 must divide"):
        build_config("submission2", {"model.attention.heads": 3})


def test_segments_must_tile_the_input():
    with pytest.raises(ConfigError, match="must equal data.input_frames"):
        build_config("submission2", {"model.segments": 8})


def test_switch_after_last_epoch_is_rejected():
    with pytest.raises(ConfigError, match="switch_epoch"):
        build_config("quick", {"optim.switch_epoch": 1000})


def test_flat_round_trip():
    cfg = build_config("submission2")
    flat = cfg.flat()
    assert set(flat) <= set(valid_keys()) and flat["model.attention.heads"] == 4
    assert with_overrides(build_config("quick"), flat) == cfg


def test_unknown_preset():
    with pytest.raises(ConfigError, match="submission1, submission2, quick"):
        build_config("sub3")


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        build_config("quick", ["optim.lr"])
