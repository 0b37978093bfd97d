"""The training loop: one `fit` for the CLI, Ray Tune and the ablation suite.

Read `fit` top to bottom: data, model, optimiser, resume, then the epochs. Each epoch trains,
validates, lets the early-stopping objects pick what to keep, writes a checkpoint and calls
the caller's callback (that is how `tune` drives this loop). After the last epoch the kept
model predicts validation and test. The pieces live where they belong: the run directory and
checkpoints in `rundir`, the optimiser schedule in `schedule`, the kept-weights rules in
`early_stopping`, predicting and scoring in `inference`, the data in `data.loaders`.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moodtheme.augment import mixup
from moodtheme.config import Config, ConfigError, build_config
from moodtheme.data.jamendo import SplitError
from moodtheme.data.loaders import TrainingData, resolve_data_root
from moodtheme.data.melspec import MelspecError
from moodtheme.device import Placement, cap_gpu_memory
from moodtheme.early_stopping import BestEpoch, PerTagBestEpoch
from moodtheme.errors import TrainingError
from moodtheme.inference import (
    final_predictions,
    monitored_logits,
    per_tag_loss,
    planted_columns,
    run_inference,
    split_metrics,
)
from moodtheme.metrics import monitored_metric
from moodtheme.models import build_model, combined_loss, init_output_bias
from moodtheme.progress import RunLog
from moodtheme.rundir import (
    CHECKPOINT_FILE,
    RunDir,
    load_checkpoint,
    load_model_state,
    load_weights,
    restore_rng,
    save_checkpoint,
    save_weights,
)
from moodtheme.schedule import OptimizerSchedule, ScheduleStep, plateau_scheduler, set_lr

__all__ = ["EpochReport", "FitResult", "TrainingError", "cap_gpu_memory", "fit", "main"]


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


def fit(
    config: Config,
    run_dir: Path | str,
    callback: Callback | None = None,
    resume_from: Path | str | None = None,
) -> FitResult:
    """Train ``config``, writing checkpoints and final predictions under ``run_dir``."""
    run, log = RunDir(run_dir), RunLog(config.run.progress)
    run.write_config(config)

    # -- data
    seed_everything(config.run.seed)
    data = TrainingData.build(config, resolve_data_root(config.data.root))
    log(data.describe())

    # -- model and optimiser
    placement = Placement.for_run(config.run)
    model = placement.model(_new_model(config, data))
    step_model = placement.training_view(model)
    o, es = config.optim, config.early_stopping
    schedule = OptimizerSchedule.from_config(o)
    optimizer = schedule.first_optimizer(model.parameters())
    plateau = plateau_scheduler(optimizer, o) if o.scheduler == "plateau" else None
    best = BestEpoch(monitored_metric(config), es.monitor != "val_loss", es.patience)
    per_tag = PerTagBestEpoch(config.model.num_tags) if es.mode == "per_class" else None
    history: list[dict[str, float]] = []

    # -- resume: weights, optimiser, early-stopping state and RNGs, as the epoch left them
    if resume_from is not None:
        saved = _restore_into(run, Path(resume_from))
        history = list(saved["trainer"]["history"])
        if schedule.switched_after(len(history)):
            optimizer = schedule.sgd(model.parameters(), schedule.sgd_lr)
        _load_state(saved, model, optimizer, plateau, best, per_tag)
        log(f"resumed from {resume_from} after epoch {len(history)}")

    # -- epochs
    for epoch in range(len(history) + 1, o.epochs + 1):
        step = schedule.step_before(epoch)
        if step is not None:  # the switch to SGD, or an lr drop: both restart from the best
            optimizer = _restart_from_best(model, optimizer, schedule, step, run)
            log(f"epoch {epoch}: reloaded best (epoch {best.best_epoch}); SGD lr={step.lr:g}")

        mix_gen = start_epoch(config.run.seed, epoch, data)
        started = time.time()
        train_loss = train_epoch(
            step_model, optimizer, data, placement, config, epoch, mix_gen, log
        )
        train_seconds = time.time() - started

        val_logits, val_labels = run_inference(model, data.loaders["validation"], placement)
        metrics = {"epoch": float(epoch), "train_loss": train_loss}
        metrics |= split_metrics("val", val_logits, val_labels)
        metrics |= {"lr": optimizer.param_groups[0]["lr"], "train_seconds": train_seconds}
        metrics["epoch_seconds"] = time.time() - started
        _check_finite(epoch, metrics)
        if plateau is not None:
            plateau.step(metrics["val_loss"])

        is_best = best.update(epoch, metrics)
        if is_best:
            save_weights(model, run.best)
        if per_tag is not None and per_tag.update(
            epoch, per_tag_loss(monitored_logits(config, val_logits), val_labels)
        ):
            run.save_epoch_weights(model, epoch, keep=per_tag.kept_epochs())
        history.append(metrics)
        state = _state(optimizer, plateau, history, best, per_tag)
        save_checkpoint(run.checkpoint, config=config, model=model, **state)
        log.epoch_summary(epoch, o.epochs, metrics, is_best)
        if callback is not None:
            callback(EpochReport(epoch, metrics, run.checkpoints, is_best))
        if best.should_stop:
            log(f"early stop: no improvement of {best.metric} in {best.patience} epochs")
            break

    groups = planted_columns(data.root, data.tables["test"].tags)
    final = final_predictions(config, model, run, data.evaluation_loaders(), placement, groups)
    log("final: " + "  ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("test_")))
    return FitResult(run.path, final, history, best.best_epoch)


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: TrainingData,
    placement: Placement,
    config: Config,
    epoch: int,
    mix_gen: torch.Generator,
    log: RunLog,
) -> float:
    """One pass over the training loader; returns the mean loss. Each batch is mixed with
    its partner batch (second loader) or with itself (in-batch permutation)."""
    model.train()
    loader = data.loaders["train"]
    partner = data.loaders.get("mixup_partner")
    partners = iter(partner) if partner is not None else itertools.repeat(None)
    total, count = 0.0, 0
    bar = log.bar(len(loader), f"epoch {epoch}")
    # Both loaders drop their last partial batch, so they end together; repeat(None) never ends.
    for step, ((x, y), other) in enumerate(zip(loader, partners, strict=False), start=1):
        x, y = mixup(x, y, config.augment.mixup_alpha, mix_gen, other)
        loss = train_step(model, optimizer, x, y, placement)
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
    placement: Placement,
) -> float:
    """One optimisation step on a (mixed) batch; returns the loss. Skips the update if the
    loss is not finite, so the caller can stop with a clear error before weights are spoiled."""
    x, y = placement.inputs(x), y.to(placement.device)
    if placement.cuda_graphs:
        # A new step: its CUDA graph replay may overwrite the last step's outputs.
        torch.compiler.cudagraph_mark_step_begin()
    with placement.autocast():
        loss = combined_loss(model(x), y)
    if not torch.isfinite(loss):
        return float(loss.item())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _restart_from_best(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: OptimizerSchedule,
    step: ScheduleStep,
    run: RunDir,
) -> torch.optim.Optimizer:
    """Reload the kept weights and go on at ``step.lr``: with a new SGD optimiser at the
    switch, with the current one (and its momentum) at an lr drop."""
    load_weights(model, run.best)
    if step.switch:
        optimizer = schedule.sgd(model.parameters(), step.lr)
    set_lr(optimizer, step.lr)
    return optimizer


def _new_model(config: Config, data: TrainingData) -> torch.nn.Module:
    model = build_model(config.model, config.data.input_frames, config.data.n_mels)
    if config.model.output_bias == "prior":
        init_output_bias(model, data.tables["train"].labels)
    return model


def _state(optimizer, plateau, history, best, per_tag) -> dict[str, Any]:  # noqa: ANN001
    """Everything besides the weights that the next epoch depends on."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": plateau.state_dict() if plateau is not None else None,
        "trainer": {"history": history},
        "best": best.state_dict(),
        **({"per_tag": per_tag.state_dict()} if per_tag is not None else {}),
    }


def _load_state(saved, model, optimizer, plateau, best, per_tag) -> None:  # noqa: ANN001
    """The inverse of :func:`_state`, with the weights and this process's RNGs."""
    load_model_state(model, saved["model"], CHECKPOINT_FILE)
    optimizer.load_state_dict(saved["optimizer"])
    if plateau is not None and saved.get("scheduler"):
        plateau.load_state_dict(saved["scheduler"])
    best.load_state_dict(saved["best"])
    if per_tag is not None:
        per_tag.load_state_dict(saved["per_tag"])
    restore_rng(saved["rng"])


def _check_finite(epoch: int, metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise TrainingError(f"epoch {epoch}: metric {name} is {value}; stopping the run")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % 2**31


def start_epoch(seed: int, epoch: int, data: TrainingData) -> torch.Generator:
    """Reseed everything from (seed, epoch), so a resumed run draws exactly the same shuffles,
    augmentation, dropout masks and mixup partners as an uninterrupted one; returns the
    mixup generator."""
    torch.manual_seed(epoch_seed(seed, epoch))
    data.set_epoch(epoch)
    return torch.Generator().manual_seed(epoch_seed(seed, epoch) + 1)


def _restore_into(run: RunDir, source: Path) -> dict:
    """Read the checkpoint at ``source``; Ray restores a trial's checkpoint into a fresh
    folder, so its best and per-epoch weights are brought into this run's folder first."""
    saved = load_checkpoint(source, parts=("trainer.history", "best", "optimizer"))
    folder = source if source.is_dir() else source.parent
    if folder.resolve() != run.checkpoints.resolve():
        shutil.copytree(folder, run.checkpoints, dirs_exist_ok=True)
    return saved


# ----------------------------------------------------------------------------- CLI


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

    out = Path(args.out or f"runs/{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
        config = build_config(args.preset, overrides)
        resume = None
        if args.resume:
            run = RunDir(out)
            if not run.checkpoint.is_file():
                raise TrainingError(f"--resume: no checkpoint in {run.checkpoints}")
            config, resume = run.read_config(), run.checkpoints
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
