"""The switches that reproduce the authors' submission 2 code, one by one (docs/models.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moodtheme.train as train
from moodtheme.config import ConfigError, build_config
from moodtheme.data.loaders import load_tables, make_datasets, resolve_data_root
from moodtheme.data.melspec import make_loader
from moodtheme.metrics import TIMING_METRICS, monitored_metric
from moodtheme.predict import predict_run

TINY = {"data.limit_tracks": 48, "optim.batch_size": 8, "run.progress": False}
# The authors' switches on the quick model (whose short segments need the padded embedding).
AUTHORS = {
    "data.window": "first",
    "augment.mixup_partner": "second_loader",
    "augment.augment_eval": True,
    "early_stopping.head": "attention",
}


def tiny(root, **overrides):
    return build_config("quick", {"data.root": str(root), **TINY, **overrides})


def datasets_of(config):
    root = resolve_data_root(config.data.root)
    return make_datasets(config, root, load_tables(config, root))


def test_presets_switch_the_authors_behaviour_on_and_quick_keeps_it_off():
    sub2 = build_config("submission2")
    assert sub2.data.window == "first" and sub2.model.embedding_padding == 0
    assert sub2.augment.mixup_partner == "second_loader" and sub2.augment.augment_eval
    assert sub2.early_stopping.head == "attention"
    sub1 = build_config("submission1")
    assert sub1.data.window == "random" and sub1.augment.mixup_partner == "second_loader"
    assert not sub1.augment.augment_eval and sub1.early_stopping.head == "combined"
    quick = build_config("quick")
    assert quick.data.window == "random" and quick.augment.mixup_partner == "in_batch"
    assert not quick.augment.augment_eval and quick.early_stopping.head == "combined"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("data.window=last", "data.window='last'"),
        ("augment.mixup_partner=other", "one of 'second_loader', 'in_batch'"),
        ("early_stopping.head=pooled", "one of 'combined', 'attention', 'segment', 'whole'"),
        ("model.embedding_padding=2", "model.embedding_padding=2"),
        ("augment.augment_eval=maybe", "augment.augment_eval"),
    ],
)
def test_unknown_values_name_the_key_and_the_allowed_values(override, needle):
    with pytest.raises(ConfigError) as err:
        build_config("submission2", [override])
    message = str(err.value)
    assert needle in message and "\n" not in message


def test_a_head_the_model_lacks_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="its heads: segment.*set early_stopping.head"):
        build_config("submission2", {"model.attention.enabled": False})
    with pytest.raises(ConfigError, match="its heads: whole"):
        build_config("submission1", {"early_stopping.head": "segment"})
    assert build_config("submission1", {"early_stopping.head": "whole"})


def test_the_partner_loader_is_another_order_and_another_augmentation(small_synth):
    config = tiny(small_synth, **{"augment.mixup_partner": "second_loader"})
    sets = datasets_of(config)
    train_set, partner = sets["train"], sets["mixup_partner"]
    assert partner.table is train_set.table
    for dataset in (train_set, partner):
        dataset.set_epoch(1)
    orders = [list(make_loader(d, 8, True, 0, 0).sampler) for d in (train_set, partner)]
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
    # The same track, drawn by each stream: the augmentation differs (SpecAugment p 0.5).
    differ = [not torch.equal(train_set[i][0], partner[i][0]) for i in range(16)]
    assert sum(differ) >= 4
    # Without mixup, or with in-batch partners, no second loader is built.
    assert "mixup_partner" not in datasets_of(tiny(small_synth))
    off = tiny(small_synth, **{"augment.mixup_partner": "second_loader", "augment.mixup_alpha": 0})
    assert "mixup_partner" not in datasets_of(off)


def test_training_mixes_every_batch_with_the_second_loaders_batch(
    small_synth, tmp_path, monkeypatch
):
    seen = []
    real = train.mixup

    def spy(x, y, alpha, generator, partner=None):
        seen.append((x.clone(), None if partner is None else partner[0].clone()))
        return real(x, y, alpha, generator, partner)

    monkeypatch.setattr(train, "mixup", spy)
    config = tiny(small_synth, **{"augment.mixup_partner": "second_loader", "optim.epochs": 1,
                                  "optim.switch_epoch": None})  # fmt: skip
    train.fit(config, tmp_path / "run")
    assert len(seen) == 48 // 8
    for x, partner in seen:
        assert partner is not None and partner.shape == x.shape
        own_rows = {row.numpy().tobytes() for row in x}
        assert any(row.numpy().tobytes() not in own_rows for row in partner)


def test_augmented_evaluation_draws_per_epoch_and_is_reproducible(small_synth):
    clean = datasets_of(tiny(small_synth))["validation"]
    augmented = datasets_of(tiny(small_synth, **{"augment.augment_eval": True}))["validation"]
    augmented.set_epoch(3)
    first = [augmented[i][0] for i in range(12)]
    assert any(not torch.equal(a, clean[i][0]) for i, a in enumerate(first))
    assert all(torch.equal(a, augmented[i][0]) for i, a in enumerate(first))
    augmented.set_epoch(4)
    assert any(not torch.equal(a, augmented[i][0]) for i, a in enumerate(first))


def test_head_attention_keeps_the_epoch_of_the_best_attention_score(small_synth, tmp_path):
    config = tiny(
        small_synth,
        **{"optim.epochs": 4, "optim.switch_epoch": None, "optim.lr": 3e-3,
           "early_stopping.head": "attention"},
    )  # fmt: skip
    assert monitored_metric(config) == "val_attention_roc_auc_macro"
    result = train.fit(config, tmp_path / "run")
    scores = [m["val_attention_roc_auc_macro"] for m in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1
    combined = [m["val_roc_auc_macro"] for m in result.history]
    assert scores != combined


def test_monitored_metric_names_each_heads_score_and_loss():
    cases = {
        ("quick", "combined", "roc_auc_macro"): "val_roc_auc_macro",
        ("quick", "segment", "pr_auc_macro"): "val_segment_pr_auc_macro",
        ("quick", "attention", "val_loss"): "val_attention_loss",
        ("submission1", "whole", "val_loss"): "val_loss",
    }
    for (preset, head, monitor), expected in cases.items():
        config = build_config(
            preset, {"early_stopping.head": head, "early_stopping.monitor": monitor}
        )
        assert monitored_metric(config) == expected


def test_resume_is_exact_with_every_authors_switch_on(small_synth, tmp_path):
    config = tiny(small_synth, **AUTHORS, **{"optim.epochs": 3, "optim.switch_epoch": 2})
    full = train.fit(config, tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_after_two(report):
        if report.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.fit(config, tmp_path / "cut", callback=stop_after_two)
    resumed = train.fit(config, tmp_path / "resumed", resume_from=tmp_path / "cut" / "checkpoint")
    for key, value in full.history[2].items():
        if key not in TIMING_METRICS:
            assert resumed.history[2][key] == value, key
    np.testing.assert_array_equal(
        np.load(tmp_path / "full" / "test_predictions.npy"),
        np.load(tmp_path / "resumed" / "test_predictions.npy"),
    )
    # The augmented test predictions are drawn as at epoch 0: predict repeats them exactly.
    predict_run(tmp_path / "full", subset="test", out=tmp_path / "submission")
    np.testing.assert_array_equal(
        np.load(tmp_path / "full" / "test_predictions.npy"),
        np.load(tmp_path / "submission" / "predictions.npy"),
    )
