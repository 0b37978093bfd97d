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
        if not self.config.exists():
            raise TrainingError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        fix = f"restore it from a copy, or start a new run with another --out than {self.path}"
        try:
            tree = json.loads(self.config.read_text())
        except (OSError, UnicodeDecodeError) as err:
            raise TrainingError(f"cannot read {self.config} ({err}); {fix}") from None
        except ValueError as err:
            raise TrainingError(f"{self.config}: not valid JSON ({err}); {fix}") from None
        if not isinstance(tree, dict):
            raise TrainingError(
                f"{self.config}: holds a JSON {type(tree).__name__}, not a run config; {fix}"
            )
        try:
            return config_from_dict(tree)
        except ValueError as err:
            raise TrainingError(f"{self.config}: not a valid run config ({err}); {fix}") from None

    def require_kept_weights(self, per_class: bool) -> None:
        """Refuse a run that has kept no weights yet: it has not finished an epoch."""
        needed = self.checkpoint if per_class else self.best
        if not needed.is_file():
            raise TrainingError(
                f"{self.path} has no {needed.relative_to(self.path)}: the run kept no weights "
                "yet; train it (or continue it with --resume) until an epoch ends"
            )

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
    """Write ``path`` whole or not at all: a failed write (a full disk) leaves the previous
    file as it was and raises a one-line TrainingError."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        # Through a Python file, so a failed write raises OSError with its errno; torch's
        # own writer would report an opaque RuntimeError.
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TrainingError(
            f"cannot write {path} ({err.strerror or err}); the previous {path.name} is "
            "untouched: free disk space, then continue the run with --resume"
        ) from None


def save_weights(model: torch.nn.Module, path: Path) -> None:
    atomic_save(model.state_dict(), path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise TrainingError(f"no weights at {path}; train the run until an epoch ends")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise TrainingError(f"cannot read weights {path}: {_first_line(err)}") from None
    load_model_state(model, state, path)


def load_model_state(model: torch.nn.Module, state: Mapping[str, Any], source: Path | str) -> None:
    """``model.load_state_dict(state)``, refused in one line when the weights saved in
    ``source`` do not fit the model (another architecture, or another moodtheme version)."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    resized = [k for k in mine if k in state and getattr(state[k], "shape", None) != mine[k].shape]
    if missing or extra or resized:
        parts = (("missing", missing), ("unexpected", extra), ("of another shape", resized))
        found = "; ".join(f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in parts if keys)
        raise TrainingError(
            f"{source}: the saved weights do not fit the model of this run's config ({found}); "
            "it was written by another model or moodtheme version: start the run again"
        )
    model.load_state_dict(state)


def _first_line(err: BaseException) -> str:
    """The first sentence of an error from torch, whose messages run to paragraphs."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line.split(". ")[0][:200]


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


# What every checkpoint holds, whoever wrote it; callers name the parts they add.
CHECKPOINT_PARTS = ("model", "config", "rng")
RNG_PARTS = ("python", "numpy", "torch")


def load_checkpoint(path: Path, parts: Iterable[str] = ()) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (a file, or the folder holding it),
    refused in one line when it is damaged or lacks one of :data:`CHECKPOINT_PARTS` or
    ``parts`` (names, or ``part.key`` for a key inside a part)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    fix = "start the run again without --resume"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise TrainingError(f"cannot read checkpoint {path} ({_first_line(err)}); {fix}") from None
    wanted = [*CHECKPOINT_PARTS, *(f"rng.{k}" for k in RNG_PARTS), *parts]
    for name in wanted:
        holder, key = (saved, name) if "." not in name else _parent(saved, name)
        if not isinstance(holder, dict) or key not in holder:
            raise TrainingError(
                f"checkpoint {path} has no '{name}': it is damaged or was written by another "
                f"version of moodtheme; {fix}"
            )
    return saved


def _parent(saved: Any, dotted: str) -> tuple[Any, str]:
    *path, key = dotted.split(".")
    for part in path:
        saved = saved.get(part) if isinstance(saved, dict) else None
    return saved, key


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
