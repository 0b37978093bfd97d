"""The training loop: one `fit` for the CLI, Ray Tune and the ablation suite.

Read top to bottom: data, model, optimiser, then the epoch loop with its two recipes
(submission 1: AMSGrad + reduce-on-plateau + per-class early stopping; submission 2: Adam,
then SGD with reloads of the best model). Each epoch ends with a checkpoint on disk and a
call to the caller's callback, which is how `tune` drives this same loop.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from moodtheme.augment import EvalTransform, TrainTransform, mixup
from moodtheme.config import Config, ConfigError, build_config, config_from_dict
from moodtheme.data import jamendo
from moodtheme.data.jamendo import SplitError
from moodtheme.data.melspec import MelspecDataset, MelspecError, make_loader
from moodtheme.evaluate import (
    apply_thresholds,
    auc_metrics,
    compute_metrics,
    group_metrics,
    optimal_thresholds,
)
from moodtheme.models import build_model, combined_loss, init_output_bias, predict_proba
from moodtheme.progress import Progress

CHECKPOINT_FILE = "checkpoint.pt"
# Wall-clock metrics of an epoch: the training loop alone (loading, mixing, steps), and that
# plus validation. They differ between otherwise identical runs (a resumed one, say).
TIMING_METRICS = ("train_seconds", "epoch_seconds")
BEST_FILE = "best.pt"
EPOCHS_DIR = "epochs"


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says where and why."""


@dataclass
class EpochReport:
    epoch: int
    metrics: dict[str, float]
    checkpoint_dir: Path
    is_best: bool


@dataclass
class FitResult:
    run_dir: Path
    final_metrics: dict[str, float]
    history: list[dict[str, float]]
    best_epoch: int


Callback = Callable[[EpochReport], None]


# ----------------------------------------------------------------------------- data


def resolve_data_root(config: Config) -> Path:
    """The melspec root: the configured one, or the cached synthetic dataset."""
    if config.data.root is None:
        from moodtheme.data.synth import default_dataset

        return default_dataset()
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise TrainingError(
            f"data.root={root} is not a directory; point --data at the folder holding NN/ID.npy"
        )
    return root


def load_tables(config: Config, root: Path) -> dict[str, jamendo.SplitTable]:
    splits_dir = jamendo.resolve_splits_dir(
        root, Path(config.data.splits_dir) if config.data.splits_dir else None
    )
    tags = jamendo.load_tags()
    tables = {}
    for subset in ("train", "validation", "test"):
        table = jamendo.read_split(jamendo.split_tsv(config.data.split, subset, splits_dir), tags)
        if config.data.limit_tracks is not None:
            table = table.subset(np.arange(min(len(table), config.data.limit_tracks)))
        tables[subset] = table
    if tables["train"].labels.shape[1] != config.model.num_tags:
        raise TrainingError(
            f"the tag list has {tables['train'].labels.shape[1]} tags but model.num_tags="
            f"{config.model.num_tags}"
        )
    return tables


# Each dataset draws its augmentation and order from its own stream under the run's seed, so
# the mixup partners are not the training examples' twins and evaluation draws are their own.
STREAMS = {"train": 0, "mixup_partner": 1, "validation": 2, "test": 3}


def uses_partner_loader(config: Config) -> bool:
    """Whether mixup takes its partners from a second training loader (the authors' way)."""
    a = config.augment
    return a.mixup_alpha > 0 and a.mixup_partner == "second_loader"


def make_datasets(
    config: Config, root: Path, tables: dict[str, jamendo.SplitTable]
) -> dict[str, MelspecDataset]:
    """One dataset per split, and ``mixup_partner`` (the training set drawn again) when
    :func:`uses_partner_loader`. Evaluation uses the training transform when
    ``augment.augment_eval`` is set, as the authors' submission 2 did."""
    frames, window = config.data.input_frames, config.data.window
    train_tf = TrainTransform(config.augment, frames, window)
    eval_tf = (
        train_tf if config.augment.augment_eval else EvalTransform(config.augment, frames, window)
    )
    sources = dict(tables)
    if uses_partner_loader(config):
        sources["mixup_partner"] = tables["train"]
    return {
        subset: MelspecDataset(
            root,
            table,
            train_tf if subset in ("train", "mixup_partner") else eval_tf,
            seed=config.run.seed,
            n_mels=config.data.n_mels,
            stream=STREAMS[subset],
        )
        for subset, table in sources.items()
    }


# ----------------------------------------------------------------------------- helpers


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("run.device=cuda but no CUDA device is visible; use run.device=auto")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def cap_gpu_memory(fraction: float) -> None:
    """Hold this process to `fraction` (0..1) of the GPU's memory, so processes sharing a
    card cannot starve each other; no-op for 0, 1 or without CUDA."""
    if 0 < fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch reseeds from (seed, epoch), so a resumed run draws exactly the same
    # shuffles, dropout masks and mixup partners as an uninterrupted one.
    return (seed * 1_000_003 + epoch * 7919) % 2**31


def make_optimizer(name: str, params: Any, lr: float, config: Config) -> torch.optim.Optimizer:
    o = config.optim
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=o.sgd_momentum, nesterov=True, weight_decay=o.sgd_weight_decay
        )
    return torch.optim.Adam(params, lr=lr, weight_decay=o.weight_decay, amsgrad=name == "amsgrad")


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (``weights_only=True``: no pickled code runs)."""
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise TrainingError(f"cannot read checkpoint {path}: {err}") from None


def _to_plain(obj: Any) -> Any:
    """RNG states hold numpy arrays and tuples; make them weights_only-loadable."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, tuple | list):
        return [_to_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _numpy_state(state: Any) -> tuple:
    name, keys, pos, has_gauss, cached = state
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    return (name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached))


def _python_state(state: Any) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(v) for v in internal), gauss)


# ----------------------------------------------------------------------------- eval


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    config: Config,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-head logits and the labels of a whole split, in file order."""
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    labels = []
    for x, y in loader:
        x = _to_device(x, device, config)
        with _autocast(device, config):
            out = model(x)
        for head, logits in out.items():
            outputs.setdefault(head, []).append(logits.float().cpu())
        labels.append(y)
    return {h: torch.cat(v).numpy() for h, v in outputs.items()}, torch.cat(labels).numpy()


def per_tag_loss(logits: dict[str, np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Validation BCE per tag, averaged over the heads (the quantity per-class ES ranks)."""
    y = torch.from_numpy(labels)
    losses = [
        F.binary_cross_entropy_with_logits(torch.from_numpy(v), y, reduction="none").mean(0)
        for v in logits.values()
    ]
    return torch.stack(losses).mean(0).numpy()


def probabilities(logits: dict[str, np.ndarray]) -> np.ndarray:
    return predict_proba({h: torch.from_numpy(v) for h, v in logits.items()}).numpy()


def split_metrics(prefix: str, logits: dict[str, np.ndarray], labels: np.ndarray) -> dict:
    """Loss, ROC-AUC and PR-AUC of the combined prediction and, for a model with several
    heads, of each head (``{prefix}_{head}_loss``, ...)."""
    y = labels.astype(bool)
    combined = auc_metrics(y, probabilities(logits))
    metrics = {
        f"{prefix}_loss": float(per_tag_loss(logits, labels).mean()),
        f"{prefix}_roc_auc_macro": combined["ROC-AUC-macro"],
        f"{prefix}_pr_auc_macro": combined["PR-AUC-macro"],
    }
    if len(logits) > 1:
        for head, v in logits.items():
            m = auc_metrics(y, torch.sigmoid(torch.from_numpy(v)).numpy())
            metrics[f"{prefix}_{head}_loss"] = float(per_tag_loss({head: v}, labels).mean())
            metrics[f"{prefix}_{head}_roc_auc_macro"] = m["ROC-AUC-macro"]
            metrics[f"{prefix}_{head}_pr_auc_macro"] = m["PR-AUC-macro"]
    return metrics


def monitored_logits(config: Config, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs that early stopping reads: all heads, or the one ``early_stopping.head``
    names."""
    head = config.early_stopping.head
    return logits if head == "combined" else {head: logits[head]}


def _to_device(x: torch.Tensor, device: torch.device, config: Config) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and config.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(device: torch.device, config: Config):
    enabled = device.type == "cuda" and config.run.amp
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def compile_for_training(
    model: torch.nn.Module, config: Config, device: torch.device
) -> torch.nn.Module:
    """The module :func:`train_step` calls: ``model`` itself, or with ``run.compile`` a
    compiled view sharing its parameters, so checkpoints, evaluation and the optimiser keep
    using ``model`` and its state_dict keys.

    Shapes are static (``dynamic=False``): the training loader drops its last partial batch,
    so one graph serves the whole run, and a shape that does change gets its own graph rather
    than a slower dynamic one.
    """
    if config.run.compile == "none":
        return model
    mode = config.run.compile if device.type == "cuda" else "default"
    return torch.compile(model, mode=mode, dynamic=False)


# ----------------------------------------------------------------------------- the run


@dataclass
class _State:
    """Everything besides weights and optimiser that a resumed run needs."""

    epoch: int = 0
    phase: str = "main"  # "main" (Adam/AMSGrad) or "sgd" after the switch
    best_score: float = -math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0
    tag_best_loss: list[float] = field(default_factory=list)
    tag_best_epoch: list[int] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)


def monitored_metric(config: Config) -> str:
    """The per-epoch metric that picks the kept model, e.g. ``val_attention_roc_auc_macro``."""
    es = config.early_stopping
    quantity = "loss" if es.monitor == "val_loss" else es.monitor
    several = len(config.model.head_names()) > 1
    head = f"{es.head}_" if es.head != "combined" and several else ""
    return f"val_{head}{quantity}"


def _score(config: Config, metrics: dict[str, float]) -> float:
    """Higher is better, whatever the monitored quantity."""
    value = metrics[monitored_metric(config)]
    return -value if config.early_stopping.monitor == "val_loss" else value


def _lr_at_epoch(config: Config, epoch: int) -> tuple[str, float] | None:
    """(phase, lr) to switch to *before* `epoch` (1-based), or None to keep going."""
    o = config.optim
    if o.switch_epoch is None or epoch <= o.switch_epoch:
        return None
    since = epoch - 1 - o.switch_epoch
    if since == 0:
        return "sgd", o.sgd_lr
    if since % o.lr_drop_every == 0 and 1 <= since // o.lr_drop_every <= len(o.lr_drops):
        return "sgd", o.lr_drops[since // o.lr_drop_every - 1]
    return None


def fit(
    config: Config,
    run_dir: Path | str,
    callback: Callback | None = None,
    resume_from: Path | str | None = None,
) -> FitResult:
    """Train `config`, writing checkpoints and final predictions under `run_dir`."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoint"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    log = _Logger(config.run.progress)

    # -- data
    seed_everything(config.run.seed)
    root = resolve_data_root(config)
    tables = load_tables(config, root)
    datasets = make_datasets(config, root, tables)
    workers = config.data.num_workers
    train_loader = make_loader(
        datasets["train"],
        config.optim.batch_size,
        True,
        workers,
        config.run.seed,
        drop_last=len(datasets["train"]) > config.optim.batch_size,
    )
    partner_loader = None
    if "mixup_partner" in datasets:
        partner_loader = make_loader(
            datasets["mixup_partner"],
            config.optim.batch_size,
            True,
            workers,
            config.run.seed,
            drop_last=len(datasets["train"]) > config.optim.batch_size,
        )
    eval_loaders = {
        s: make_loader(datasets[s], config.optim.batch_size, False, workers, config.run.seed)
        for s in ("validation", "test")
    }
    log(
        f"data: {root} (split {config.data.split}: "
        + ", ".join(f"{len(t)} {s}" for s, t in tables.items())
        + ")"
    )

    # -- model and optimiser
    device = pick_device(config.run.device)
    if config.run.threads is not None:
        # Oversubscribed OpenMP threads spin against each other: with several trials per
        # machine each one must stay within its CPU share, or all of them crawl.
        torch.set_num_threads(config.run.threads)
    if config.run.deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(config.model, config.data.input_frames, config.data.n_mels)
    if config.model.output_bias == "prior":
        init_output_bias(model, tables["train"].labels)
    model = model.to(device)
    if device.type == "cuda" and config.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = compile_for_training(model, config, device)
    optimizer = make_optimizer(config.optim.optimizer, model.parameters(), config.optim.lr, config)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=config.optim.plateau_factor,
            patience=config.optim.plateau_patience,
        )
        if config.optim.scheduler == "plateau"
        else None
    )
    n_tags = config.model.num_tags
    state = _State(tag_best_loss=[math.inf] * n_tags, tag_best_epoch=[0] * n_tags)

    # -- resume
    if resume_from is not None:
        ckpt = load_checkpoint(Path(resume_from))
        src = Path(resume_from) if Path(resume_from).is_dir() else Path(resume_from).parent
        if src.resolve() != ckpt_dir.resolve():
            # Ray restores checkpoints into a fresh directory: bring the best/per-epoch weights.
            shutil.copytree(src, ckpt_dir, dirs_exist_ok=True)
        model.load_state_dict(ckpt["model"])
        state = _State(**ckpt["state"])
        if state.phase == "sgd":
            optimizer = make_optimizer("sgd", model.parameters(), config.optim.sgd_lr, config)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        rng = ckpt["rng"]
        set_rng_state(
            {
                "python": _python_state(rng["python"]),
                "numpy": _numpy_state(rng["numpy"]),
                "torch": rng["torch"],
                **({"cuda": rng["cuda"]} if "cuda" in rng else {}),
            }
        )
        log(f"resumed from {resume_from} after epoch {state.epoch}")

    # -- epochs
    for epoch in range(state.epoch + 1, config.optim.epochs + 1):
        switch = _lr_at_epoch(config, epoch)
        if switch is not None:
            phase, lr = switch
            _load_weights(model, ckpt_dir / BEST_FILE)
            if state.phase != "sgd":
                optimizer = make_optimizer("sgd", model.parameters(), lr, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            state.phase = phase
            log(f"epoch {epoch}: reloaded best (epoch {state.best_epoch}); SGD lr={lr:g}")

        torch.manual_seed(epoch_seed(config.run.seed, epoch))
        for dataset in datasets.values():
            dataset.set_epoch(epoch)
        mix_gen = torch.Generator().manual_seed(epoch_seed(config.run.seed, epoch) + 1)
        started = time.time()
        train_loss = _train_epoch(
            step_model, train_loader, partner_loader, optimizer, device, config, epoch, mix_gen, log
        )
        train_seconds = time.time() - started

        val_logits, val_labels = run_inference(model, eval_loaders["validation"], device, config)
        metrics = {"epoch": float(epoch), "train_loss": train_loss}
        metrics.update(split_metrics("val", val_logits, val_labels))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["train_seconds"] = train_seconds
        metrics["epoch_seconds"] = time.time() - started
        for name, value in metrics.items():
            if not math.isfinite(value):
                raise TrainingError(f"epoch {epoch}: metric {name} is {value}; stopping the run")
        if scheduler is not None:
            scheduler.step(metrics["val_loss"])

        score = _score(config, metrics)
        is_best = score > state.best_score
        if is_best:
            state.best_score, state.best_epoch, state.epochs_since_best = score, epoch, 0
            atomic_save(model.state_dict(), ckpt_dir / BEST_FILE)
        else:
            state.epochs_since_best += 1
        if config.early_stopping.mode == "per_class":
            losses = per_tag_loss(monitored_logits(config, val_logits), val_labels)
            _update_per_class(state, losses, epoch, model, ckpt_dir)

        state.epoch = epoch
        state.history.append(metrics)
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "state": _to_plain(state.__dict__),
                "rng": _to_plain(rng_state()),
                "config": config.to_dict(),
            },
            ckpt_dir / CHECKPOINT_FILE,
        )
        log.epoch_summary(epoch, config.optim.epochs, metrics, is_best)
        if callback is not None:
            callback(EpochReport(epoch, metrics, ckpt_dir, is_best))

        patience = config.early_stopping.patience
        if patience is not None and state.epochs_since_best >= patience:
            log(f"early stop: no improvement of {monitored_metric(config)} in {patience} epochs")
            break

    groups = planted_columns(root, tables["test"].tags)
    final = final_predictions(config, model, ckpt_dir, eval_loaders, device, run_dir, groups)
    log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("test_")))
    return FitResult(run_dir, final, state.history, state.best_epoch)


def _train_epoch(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    partner_loader: torch.utils.data.DataLoader | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    config: Config,
    epoch: int,
    mix_gen: torch.Generator,
    log: _Logger,
) -> float:
    model.train()
    total, count = 0.0, 0
    bar = log.bar(len(loader), f"epoch {epoch}")
    partners = iter(partner_loader) if partner_loader is not None else itertools.repeat(None)
    # Both loaders drop their last partial batch, so they end together; repeat(None) never ends.
    for step, ((x, y), partner) in enumerate(zip(loader, partners, strict=False), start=1):
        x, y = mixup(x, y, config.augment.mixup_alpha, mix_gen, partner)
        loss = train_step(model, optimizer, x, y, device, config)
        if not math.isfinite(loss):
            raise TrainingError(
                f"non-finite loss ({loss}) at epoch {epoch}, step {step}; "
                "lower optim.lr or check the inputs (python -m moodtheme.data check)"
            )
        total += loss * len(x)
        count += len(x)
        if bar is not None:
            bar.update(1, f"  loss {total / count:.4f}")
    if bar is not None:
        bar.clear()
    return total / max(count, 1)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    config: Config,
) -> float:
    """One optimisation step on a (mixed) batch; returns the loss. Skips the update if the
    loss is not finite, so the caller can stop with a clear error before weights are spoiled."""
    x, y = _to_device(x, device, config), y.to(device)
    if config.run.compile == "reduce-overhead" and device.type == "cuda":
        # A new step: its CUDA graph replay may overwrite the last step's outputs.
        torch.compiler.cudagraph_mark_step_begin()
    with _autocast(device, config):
        loss = combined_loss(model(x), y)
    if not torch.isfinite(loss):
        return float(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _update_per_class(
    state: _State, losses: np.ndarray, epoch: int, model: torch.nn.Module, ckpt_dir: Path
) -> None:
    """Keep one weights file per epoch that is still some tag's best, and no more."""
    improved = losses < np.asarray(state.tag_best_loss)
    if not improved.any():
        return
    state.tag_best_loss = np.where(improved, losses, state.tag_best_loss).tolist()
    state.tag_best_epoch = np.where(improved, epoch, state.tag_best_epoch).tolist()
    epochs_dir = ckpt_dir / EPOCHS_DIR
    epochs_dir.mkdir(exist_ok=True)
    atomic_save(model.state_dict(), epochs_dir / f"epoch_{epoch:04d}.pt")
    keep = {f"epoch_{e:04d}.pt" for e in state.tag_best_epoch}
    for path in epochs_dir.glob("epoch_*.pt"):
        if path.name not in keep:
            path.unlink()


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def kept_predictions(
    config: Config,
    model: torch.nn.Module,
    ckpt_dir: Path,
    loaders: dict[str, torch.utils.data.DataLoader],
    device: torch.device,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities and labels of each split in `loaders`, from the weights the run kept.

    Joint mode uses the best epoch's weights. Per-class mode loads each distinct epoch that is
    some tag's best once, and takes that tag's column from it. With ``augment.augment_eval``
    every split is drawn as at epoch 0, so repeated calls give the same predictions.
    """
    probs: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for loader in loaders.values():
        loader.dataset.set_epoch(0)
    if config.early_stopping.mode == "per_class":
        tag_epochs = np.asarray(load_checkpoint(ckpt_dir)["state"]["tag_best_epoch"])
        for epoch in sorted(set(tag_epochs.tolist())):
            _load_weights(model, ckpt_dir / EPOCHS_DIR / f"epoch_{epoch:04d}.pt")
            columns = tag_epochs == epoch
            for s, loader in loaders.items():
                logits, labels[s] = run_inference(model, loader, device, config)
                p = probabilities(logits)
                probs[s] = np.where(columns, p, probs[s]) if s in probs else p
    else:
        _load_weights(model, ckpt_dir / BEST_FILE)
        for s, loader in loaders.items():
            logits, labels[s] = run_inference(model, loader, device, config)
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


def metric_key(prefix: str, official: str) -> str:
    """``final_metrics.json``'s name for an official metric: ("test", "PR-AUC-macro") ->
    "test_pr_auc_macro"."""
    return f"{prefix}_{official.lower().replace('-', '_')}"


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
    ckpt_dir: Path,
    loaders: dict[str, torch.utils.data.DataLoader],
    device: torch.device,
    out_dir: Path,
    groups: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """Predict validation and test with the kept weights; write predictions and metrics.

    ``groups`` (planted tag groups, synthetic data) add each group's PR-AUC, ROC-AUC and label
    frequency: ``test_long_range_pr_auc_macro``, ``test_long_range_label_frequency``, ...
    """
    subsets = ("validation", "test")
    probs, labels = kept_predictions(config, model, ckpt_dir, loaders, device)
    final: dict[str, float] = {}
    for s in subsets:
        np.save(out_dir / f"{s}_predictions.npy", probs[s].astype(np.float32))
        np.save(out_dir / f"{s}_groundtruth.npy", labels[s].astype(bool))
    thresholds = optimal_thresholds(labels["validation"].astype(bool), probs["validation"])
    np.save(out_dir / "thresholds.npy", thresholds)
    for s, prefix in (("validation", "val"), ("test", "test")):
        metrics = score_split(
            labels[s].astype(bool), probs[s], apply_thresholds(probs[s], thresholds)
        )
        for name, value in metrics.items():
            final[metric_key(prefix, name)] = float(value)
        for group, columns in (groups or {}).items():
            for name, value in group_metrics(labels[s], probs[s], columns).items():
                final[f"{prefix}_{group}_{name}"] = value
    (out_dir / "final_metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True))
    return final


# ----------------------------------------------------------------------------- output


class _Logger:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def bar(self, total: int, label: str) -> Progress | None:
        return Progress(total, label, "batches") if self.enabled else None

    def epoch_summary(self, epoch: int, epochs: int, m: dict[str, float], best: bool) -> None:
        self(
            f"epoch {epoch:3d}/{epochs}  train_loss {m['train_loss']:.4f}  "
            f"val_loss {m['val_loss']:.4f}  val ROC-AUC {m['val_roc_auc_macro']:.4f}  "
            f"PR-AUC {m['val_pr_auc_macro']:.4f}  lr {m['lr']:.1e}  "
            f"{m['epoch_seconds']:.1f}s{'  *best' if best else ''}"
        )


# ----------------------------------------------------------------------------- CLI


def load_run_config(run_dir: Path) -> Config:
    path = run_dir / "config.json"
    if not path.is_file():
        raise TrainingError(f"{run_dir} is not a run directory (no config.json)")
    return config_from_dict(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.train",
        description="Train a moodtheme model. Overrides are dotted keys: optim.lr=1e-3",
    )
    parser.add_argument("--preset", default="quick", help="submission1, submission2 or quick")
    parser.add_argument("--data", help="melspec root (ROOT/NN/ID.npy); default: synthetic data")
    parser.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    try:
        overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
        config = build_config(args.preset, overrides)
        out = Path(args.out or f"runs/{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
        resume = None
        if args.resume:
            if not (out / "checkpoint" / CHECKPOINT_FILE).is_file():
                raise TrainingError(f"--resume: no checkpoint in {out / 'checkpoint'}")
            config = load_run_config(out)
            resume = out / "checkpoint"
        print(f"run directory: {out}")
        result = fit(config, out, resume_from=resume)
    except (ConfigError, TrainingError, MelspecError, SplitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with --resume --out {out}", file=sys.stderr)
        return 130
    print(f"best epoch {result.best_epoch}; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
