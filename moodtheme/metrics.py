"""The trainer's metric names, made here and nowhere else (no torch: `tune` validates search
spaces against them before anything trains).

``val_roc_auc_macro`` is the combined prediction's, ``val_attention_pr_auc_macro`` one head's
of a model with several, ``test_long_range_pr_auc_macro`` a planted tag group's.
"""

from __future__ import annotations

from collections.abc import Sequence

from moodtheme.config import Config

QUANTITIES = ("loss", "roc_auc_macro", "pr_auc_macro")
# Wall-clock metrics of an epoch: the training loop alone (loading, mixing, steps), and that
# plus validation. They differ between otherwise identical runs (a resumed one, say).
TIMING_METRICS = ("train_seconds", "epoch_seconds")
SPLIT_PREFIX = {"validation": "val", "test": "test"}


def metric_name(prefix: str, quantity: str, head: str | None = None) -> str:
    """("val", "roc_auc_macro", "attention") -> "val_attention_roc_auc_macro"."""
    return f"{prefix}_{head}_{quantity}" if head else f"{prefix}_{quantity}"


def epoch_metric_names(head_names: Sequence[str]) -> list[str]:
    """Every metric `fit` reports each epoch for a model with these heads (the last three
    are the learning rate and timings, not scores)."""
    names = ["train_loss", *(metric_name("val", q) for q in QUANTITIES)]
    if len(head_names) > 1:
        names += [metric_name("val", q, h) for h in head_names for q in QUANTITIES]
    return [*names, "lr", *TIMING_METRICS]


def monitored_metric(config: Config) -> str:
    """The per-epoch metric that picks the kept model, e.g. ``val_attention_roc_auc_macro``."""
    es = config.early_stopping
    quantity = "loss" if es.monitor == "val_loss" else es.monitor
    several = len(config.model.head_names()) > 1
    return metric_name("val", quantity, es.head if es.head != "combined" and several else None)
