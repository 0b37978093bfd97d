"""Predicting a split and scoring it: the per-epoch validation metrics, and the kept model's
final predictions, thresholds and official scores (shared by `train` and `predict`).

Metric names come from `moodtheme.metrics`, which needs no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from moodtheme.config import Config
from moodtheme.device import Placement
from moodtheme.evaluate import (
    apply_thresholds,
    auc_metrics,
    compute_metrics,
    group_metrics,
    optimal_thresholds,
)
from moodtheme.metrics import SPLIT_PREFIX, metric_name
from moodtheme.models import predict_proba
from moodtheme.rundir import (
    EVAL_SPLITS,
    FINAL_METRICS_FILE,
    THRESHOLDS_FILE,
    RunDir,
    groundtruth_file,
    load_checkpoint,
    load_weights,
    predictions_file,
)


def metric_key(prefix: str, official: str) -> str:
    """``final_metrics.json``'s name for an official metric: ("test", "PR-AUC-macro") ->
    "test_pr_auc_macro"."""
    return f"{prefix}_{official.lower().replace('-', '_')}"


# ----------------------------------------------------------------------------- predicting


@torch.no_grad()
def run_inference(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, placement: Placement
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-head logits and the labels of a whole split, in file order."""
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    labels = []
    for x, y in loader:
        with placement.autocast():
            out = model(placement.inputs(x))
        for head, logits in out.items():
            outputs.setdefault(head, []).append(logits.float().cpu())
        labels.append(y)
    return {h: torch.cat(v).numpy() for h, v in outputs.items()}, torch.cat(labels).numpy()


def per_tag_loss(logits: Mapping[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Validation BCE per tag, averaged over the heads (the quantity per-class ES ranks)."""
    y = torch.from_numpy(labels)
    losses = [
        F.binary_cross_entropy_with_logits(torch.from_numpy(v), y, reduction="none").mean(0)
        for v in logits.values()
    ]
    return torch.stack(losses).mean(0).numpy()


def probabilities(logits: Mapping[str, np.ndarray]) -> np.ndarray:
    return predict_proba({h: torch.from_numpy(v) for h, v in logits.items()}).numpy()


def split_metrics(prefix: str, logits: Mapping[str, np.ndarray], labels: np.ndarray) -> dict:
    """Loss, ROC-AUC and PR-AUC of the combined prediction and, for a model with several
    heads, of each head."""
    y = labels.astype(bool)
    combined = auc_metrics(y, probabilities(logits))
    metrics = {
        metric_name(prefix, "loss"): float(per_tag_loss(logits, labels).mean()),
        metric_name(prefix, "roc_auc_macro"): combined["ROC-AUC-macro"],
        metric_name(prefix, "pr_auc_macro"): combined["PR-AUC-macro"],
    }
    if len(logits) > 1:
        for head, v in logits.items():
            m = auc_metrics(y, torch.sigmoid(torch.from_numpy(v)).numpy())
            metrics[metric_name(prefix, "loss", head)] = float(
                per_tag_loss({head: v}, labels).mean()
            )
            metrics[metric_name(prefix, "roc_auc_macro", head)] = m["ROC-AUC-macro"]
            metrics[metric_name(prefix, "pr_auc_macro", head)] = m["PR-AUC-macro"]
    return metrics


def monitored_logits(config: Config, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs that early stopping reads: all heads, or the one ``early_stopping.head``
    names."""
    head = config.early_stopping.head
    return logits if head == "combined" else {head: logits[head]}


# ----------------------------------------------------------------------------- the kept model


def kept_predictions(
    config: Config,
    model: torch.nn.Module,
    run: RunDir,
    loaders: Mapping[str, torch.utils.data.DataLoader],
    placement: Placement,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and labels of each split in ``loaders``, from the weights the run kept.

    Joint mode uses the best epoch's weights. Per-class mode loads each distinct epoch that is
    some tag's best once, and takes that tag's column from it. With ``augment.augment_eval``
    every split is drawn as at epoch 0, so repeated calls give the same predictions.
    """
    probs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for loader in loaders.values():
        loader.dataset.set_epoch(0)
    if config.early_stopping.mode == "per_class":
        tag_epochs = np.asarray(load_checkpoint(run.checkpoint)["per_tag"]["best_epoch"])
        for epoch in sorted(set(tag_epochs.tolist())):
            load_weights(model, run.epoch_weights(epoch))
            columns = tag_epochs == epoch
            for s, loader in loaders.items():
                logits, labels[s] = run_inference(model, loader, placement)
                p = probabilities(logits)
                probs[s] = np.where(columns, p, probs[s]) if s in probs else p
    else:
        load_weights(model, run.best)
        for s, loader in loaders.items():
            logits, labels[s] = run_inference(model, loader, placement)
            probs[s] = probabilities(logits)
    return probs, labels


def score_split(
    groundtruth: np.ndarray, predictions: np.ndarray, decisions: np.ndarray
) -> dict[str, float]:
    """Official metrics; on a split too small for every tag to occur (smoke runs), the AUCs
    over the tags that do, since the official macro scores are undefined there."""
    if groundtruth.any(axis=0).all():
        return compute_metrics(groundtruth, predictions, decisions)
    return auc_metrics(groundtruth, predictions)


def planted_columns(root: Path, tags: list[str]) -> dict[str, list[int]]:
    """Label-matrix columns of each planted tag group of a synthetic dataset (none for real
    data), so the final metrics can say what was learnt of each."""
    from moodtheme.data.synth import planted_groups

    return {
        group: [tags.index(t) for t in names if t in tags]
        for group, names in planted_groups(root).items()
    }


def final_predictions(
    config: Config,
    model: torch.nn.Module,
    run: RunDir,
    loaders: Mapping[str, torch.utils.data.DataLoader],
    placement: Placement,
    groups: Mapping[str, list[int]] | None = None,
) -> dict[str, float]:
    """Predict validation and test with the kept weights; write predictions, thresholds and
    scores to the run directory and return the scores.

    ``groups`` (planted tag groups, synthetic data) add each group's PR-AUC, ROC-AUC and label
    frequency: ``test_long_range_pr_auc_macro``, ``test_long_range_label_frequency``, ...
    """
    probs, labels = kept_predictions(config, model, run, loaders, placement)
    for s in EVAL_SPLITS:
        np.save(run.path / predictions_file(s), probs[s].astype(np.float32))
        np.save(run.path / groundtruth_file(s), labels[s].astype(bool))
    thresholds = optimal_thresholds(labels["validation"].astype(bool), probs["validation"])
    np.save(run.path / THRESHOLDS_FILE, thresholds)
    final: dict[str, float] = {}
    for s in EVAL_SPLITS:
        prefix, truth = SPLIT_PREFIX[s], labels[s].astype(bool)
        metrics = score_split(truth, probs[s], apply_thresholds(probs[s], thresholds))
        for name, value in metrics.items():
            final[metric_key(prefix, name)] = float(value)
        for group, columns in (groups or {}).items():
            for name, value in group_metrics(truth, probs[s], columns).items():
                final[f"{prefix}_{group}_{name}"] = value
    (run.path / FINAL_METRICS_FILE).write_text(json.dumps(final, indent=2, sort_keys=True))
    return final
