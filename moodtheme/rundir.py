"""A run directory: the name of every file a run writes, and the checkpoint that resumes it.

    RUN/config.json                      the run's config
    RUN/checkpoint/checkpoint.pt         latest epoch: weights, optimiser, RNG, trainer state
    RUN/checkpoint/best.pt               the kept (best) model's weights
    RUN/checkpoint/epochs/epoch_NNNN.pt  per-class early stopping: each tag's best epoch
    RUN/{validation,test}_predictions.npy, *_groundtruth.npy, thresholds.npy,
    RUN/final_metrics.json               written once training ends

Everything that reads or writes one of these goes through this module. Checkpoints load with
``weights_only=True``, so no pickled code runs; the RNG states are stored as tensors and lists
for that reason.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moodtheme.config import Config, config_from_dict
from moodtheme.errors import TrainingError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
EPOCHS_DIR = "epochs"
FINAL_METRICS_FILE = "final_metrics.json"
THRESHOLDS_FILE = "thresholds.npy"
EVAL_SPLITS = ("validation", "test")


def predictions_file(split: str) -> str:
    return f"{split}_predictions.npy"


def groundtruth_file(split: str) -> str:
    return f"{split}_groundtruth.npy"


# What a finished run leaves beside its checkpoint folder (tune copies them into the final
# trial checkpoint, the ablation suite reads them from there).
RUN_OUTPUTS = (
    CONFIG_FILE,
    FINAL_METRICS_FILE,
    THRESHOLDS_FILE,
    *(name(s) for s in EVAL_SPLITS for name in (predictions_file, groundtruth_file)),
)


class RunDir:
    """The paths of one run directory (nothing is created until written)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINT_DIR

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / CHECKPOINT_FILE

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST_FILE

    def epoch_weights(self, epoch: int) -> Path:
        return self.checkpoints / EPOCHS_DIR / f"epoch_{epoch:04d}.pt"

    def write_config(self, config: Config) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.config.write_text(config.to_json())

    def read_config(self) -> Config:
        if not self.config.is_file():
            raise TrainingError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        try:
            return config_from_dict(json.loads(self.config.read_text()))
        except ValueError as err:
            raise TrainingError(f"{self.config}: not a valid run config ({err})") from None

    def save_epoch_weights(self, model: torch.nn.Module, epoch: int, keep: Iterable[int]) -> None:
        """Save this epoch's weights and delete those of epochs not in ``keep``."""
        path = self.epoch_weights(epoch)
        path.parent.mkdir(exist_ok=True)
        atomic_save(model.state_dict(), path)
        kept = {self.epoch_weights(e).name for e in keep}
        for old in path.parent.glob("epoch_*.pt"):
            if old.name not in kept:
                old.unlink()


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_save(model.state_dict(), path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


# ----------------------------------------------------------------------------- checkpoint


def save_checkpoint(path: Path, *, config: Config, model: torch.nn.Module, **parts: Any) -> None:
    """The latest epoch: weights, config, this process's RNG states and ``parts`` (optimiser
    and scheduler state dicts, the trainer's own state; plain values and tensors)."""
    atomic_save(
        {
            "model": model.state_dict(),
            "config": config.to_dict(),
            "rng": _to_plain(_rng_state()),
            **{key: _to_plain(value) for key, value in parts.items()},
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (a file, or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise TrainingError(f"cannot read checkpoint {path}: {err}") from None


def restore_rng(saved: Mapping[str, Any]) -> None:
    """Put this process's RNGs back where :func:`save_checkpoint` found them."""
    version, internal, gauss = saved["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = saved["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(saved["torch"])
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_plain(obj: Any) -> Any:
    """RNG states hold numpy arrays and tuples; make them weights_only-loadable."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, tuple | list):
        return [_to_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj
