"""The trainer: it learns, its recipes do what the paper says, and runs resume exactly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import moodtheme.train as train
from moodtheme import rundir
from moodtheme.config import build_config
from moodtheme.data.loaders import TrainingData, load_tables
from moodtheme.device import Placement
from moodtheme.errors import TrainingError
from moodtheme.inference import (
    per_tag_loss,
    planted_columns,
    probabilities,
    run_inference,
)
from moodtheme.metrics import TIMING_METRICS
from moodtheme.models import build_model

# A tiny slice of the synthetic set keeps each run to seconds on two cores.
TINY = {
    "data.limit_tracks": 48,
    "optim.batch_size": 8,
    "run.progress": False,
}


def tiny_config(root, **overrides):
    return build_config("quick", {"data.root": str(root), **TINY, **overrides})


def test_callback_sees_every_epoch_with_its_checkpoint(small_synth, tmp_path):
    seen = []

    def callback(report):
        assert (report.checkpoint_dir / rundir.CHECKPOINT_FILE).is_file()
        ckpt = rundir.load_checkpoint(report.checkpoint_dir)
        assert len(ckpt["trainer"]["history"]) == report.epoch
        seen.append(report)

    config = tiny_config(small_synth, **{"optim.epochs": 2, "optim.switch_epoch": None})
    train.fit(config, tmp_path / "run", callback=callback)
    assert [r.epoch for r in seen] == [1, 2]
    for key in (
        "train_loss",
        "val_loss",
        "val_roc_auc_macro",
        "val_pr_auc_macro",
        "val_attention_roc_auc_macro",
        "val_segment_pr_auc_macro",
    ):
        assert np.isfinite(seen[-1].metrics[key]), key


def test_per_class_early_stopping_takes_each_tags_lowest_val_loss_epoch(small_synth, tmp_path):
    config = tiny_config(
        small_synth,
        **{
            "optim.epochs": 4,
            "optim.switch_epoch": None,
            "optim.lr": 3e-3,
            "early_stopping.mode": "per_class",
            "early_stopping.monitor": "val_loss",
        },
    )
    snapshots = {}

    def keep_weights(report):
        snapshots[report.epoch] = rundir.load_checkpoint(report.checkpoint_dir)["model"]

    run = tmp_path / "run"
    train.fit(config, run, callback=keep_weights)

    # Recompute every epoch's per-tag validation loss from its weights, independently.
    loader = TrainingData.build(config, small_synth).loaders["validation"]
    model = build_model(config.model, config.data.input_frames)
    placement = Placement(torch.device("cpu"), channels_last=False, amp=False)
    losses, probs = [], []
    for epoch in sorted(snapshots):
        model.load_state_dict(snapshots[epoch])
        logits, labels = run_inference(model, loader, placement)
        losses.append(per_tag_loss(logits, labels))
        probs.append(probabilities(logits))
    expected = np.argmin(np.stack(losses), axis=0) + 1

    state = rundir.load_checkpoint(run / "checkpoint")["per_tag"]
    assert state["best_epoch"] == expected.tolist()
    kept = sorted(p.name for p in (run / "checkpoint" / "epochs").glob("*.pt"))
    assert kept == [f"epoch_{e:04d}.pt" for e in sorted(set(expected.tolist()))]
    assert len(set(expected.tolist())) > 1, "degenerate case: every tag peaked at one epoch"

    # The saved validation predictions take each tag's column from that tag's best epoch.
    saved = np.load(run / "validation_predictions.npy")
    assembled = np.stack([probs[e - 1][:, t] for t, e in enumerate(expected)], axis=1)
    np.testing.assert_allclose(saved, assembled, rtol=1e-5, atol=1e-6)


def test_optimizer_switch_reloads_best_and_uses_nesterov_sgd(small_synth, tmp_path, monkeypatch):
    config = tiny_config(
        small_synth,
        **{
            "optim.epochs": 4,
            "optim.switch_epoch": 2,
            "optim.sgd_lr": 5e-3,
            "optim.lr_drop_every": 1,
            "optim.lr_drops": [5e-4],
        },
    )
    loads = []
    real_load = train.load_weights

    def spy(model, path):
        best_now = torch.load(path, weights_only=True)
        real_load(model, path)
        loads.append((path.name, best_now, {k: v.clone() for k, v in model.state_dict().items()}))

    monkeypatch.setattr(train, "load_weights", spy)
    reports = []
    train.fit(config, tmp_path / "run", callback=reports.append)

    lrs = [r.metrics["lr"] for r in reports]
    assert lrs == [
        pytest.approx(1e-3),
        pytest.approx(1e-3),
        pytest.approx(5e-3),
        pytest.approx(5e-4),
    ]
    # Before epochs 3 and 4 the best weights were reloaded (then the final prediction's load).
    switch_loads = loads[:2]
    assert [name for name, _, _ in switch_loads] == [rundir.BEST_FILE] * 2
    for _, best, loaded in switch_loads:
        for key, value in best.items():
            assert torch.equal(loaded[key], value), key
    opt = rundir.load_checkpoint(tmp_path / "run" / "checkpoint")["optimizer"]
    group = opt["param_groups"][0]
    assert group["nesterov"] is True and group["momentum"] == 0.9
    assert group["weight_decay"] == pytest.approx(1e-4)


def test_resume_gives_the_same_next_epoch(small_synth, tmp_path):
    config = tiny_config(small_synth, **{"optim.epochs": 3, "optim.switch_epoch": 2})
    full = train.fit(config, tmp_path / "full")

    class Interrupt(Exception):
        pass

    def stop_after_two(report):
        if report.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train.fit(config, tmp_path / "cut", callback=stop_after_two)
    # Resume into a different directory, the way Ray restores a trial's checkpoint.
    resumed = train.fit(config, tmp_path / "resumed", resume_from=tmp_path / "cut" / "checkpoint")
    assert len(resumed.history) == 3
    assert resumed.history[2] == {
        **full.history[2],
        **{key: resumed.history[2][key] for key in TIMING_METRICS},
    }
    np.testing.assert_array_equal(
        np.load(tmp_path / "full" / "test_predictions.npy"),
        np.load(tmp_path / "resumed" / "test_predictions.npy"),
    )


def test_non_finite_loss_stops_with_epoch_and_step(small_synth, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train.combined_loss

    def poisoned(outputs, targets):
        calls["n"] += 1
        loss = real(outputs, targets)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(train, "combined_loss", poisoned)
    config = tiny_config(small_synth, **{"optim.epochs": 1, "optim.switch_epoch": None})
    with pytest.raises(TrainingError, match=r"non-finite loss .* epoch 1, step 3"):
        train.fit(config, tmp_path / "run")


def test_bad_file_is_named(small_synth, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(small_synth, root)
    config = tiny_config(root, **{"optim.epochs": 1, "optim.switch_epoch": None})
    first = load_tables(config, root)["train"].paths[0]
    bad = np.full((96, 600), np.nan, dtype=np.float32)
    np.save(root / first, bad)
    with pytest.raises(train.MelspecError, match=first.split("/")[-1]):
        train.fit(config, tmp_path / "run")


@pytest.mark.slow
def test_cli_train_resume_and_predict(small_synth, tmp_path):
    out = tmp_path / "run"
    common = [
        sys.executable,
        "-m",
        "moodtheme.train",
        "--preset",
        "quick",
        "--data",
        str(small_synth),
        "--out",
        str(out),
    ]
    overrides = ["data.limit_tracks=48", "optim.epochs=2", "optim.switch_epoch=null"]
    done = subprocess.run(common + overrides, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "epoch   2/2" in done.stdout and "best epoch" in done.stdout
    again = subprocess.run(common + ["--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout

    pred = subprocess.run(
        [sys.executable, "-m", "moodtheme.predict", str(out)], capture_output=True, text=True
    )
    assert pred.returncode == 0, pred.stderr
    sub = out / "submission-test"
    p, d = np.load(sub / "predictions.npy"), np.load(sub / "decisions.npy")
    assert p.shape == d.shape and d.dtype == bool
    lines = (sub / "results.tsv").read_text().splitlines()
    # 48 test tracks cannot hold every tag, so only the AUCs over the tags present are defined.
    assert lines[0].startswith("ROC-AUC-macro\t") and len(lines) == 4

    bad = subprocess.run(common + ["model.attention.heads=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "heads=3" in bad.stderr and "Traceback" not in bad.stderr
    json.loads((out / "config.json").read_text())


def test_final_metrics_report_the_planted_groups_on_synthetic_data(small_synth, tmp_path):
    config = tiny_config(small_synth, **{"optim.epochs": 1, "optim.switch_epoch": None})
    final = train.fit(config, tmp_path / "run").final_metrics
    planted = json.loads((small_synth / "planted.json").read_text())
    tags = load_tables(config, small_synth)["test"].tags
    truth = np.load(tmp_path / "run" / "test_groundtruth.npy")
    for group in ("local", "long_range"):
        columns = [tags.index(t) for t in planted[group]]
        assert final[f"test_{group}_label_frequency"] == pytest.approx(truth[:, columns].mean())
        for name in ("pr_auc_macro", "roc_auc_macro"):
            assert 0 <= final[f"test_{group}_{name}"] <= 1
            assert 0 <= final[f"val_{group}_{name}"] <= 1
    # Real data has no planted.json, hence no groups.
    assert planted_columns(tmp_path, tags) == {}
