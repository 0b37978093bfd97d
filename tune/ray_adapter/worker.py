"""Inside a trial (worker side): report epochs, restore checkpoints, and say where the trial
runs."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune

# ----------------------------------------------------------------------------- in a trial


def report(metrics: Mapping[str, Any], checkpoint_dir: Path | None = None) -> None:
    """Report one epoch to Tune; the checkpoint directory is copied to the run's storage."""
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
    tune.report(dict(metrics), checkpoint=checkpoint)


def restore_checkpoint(dest: Path, usable: Callable[[Path], bool] = lambda _: True) -> Path | None:
    """Copy the trial's newest Tune checkpoint that ``usable`` accepts (a retry or a resume)
    to ``dest``: the latest first, then the older ones Tune kept, so a checkpoint damaged in
    the crash that caused the retry is passed over. None on a fresh start, or when none is
    usable."""
    latest = tune.get_checkpoint()
    if latest is None:
        return None
    for checkpoint in [latest, *_older_checkpoints(latest)]:
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            checkpoint.to_directory(str(dest))
        except Exception:  # noqa: BLE001 - an unreadable copy is as unusable as a bad file
            continue
        if usable(dest):
            return dest
        logging.getLogger(__name__).warning(
            "checkpoint %s is damaged; trying an older one", checkpoint.path
        )
    shutil.rmtree(dest, ignore_errors=True)
    return None


def _older_checkpoints(latest: Any) -> list[Any]:
    """The trial's other kept checkpoints (``checkpoint_NNNNNN`` beside the latest), newest
    first."""
    import pyarrow.fs

    parent = str(Path(latest.path).parent)
    try:
        infos = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    except OSError:
        return []
    names = sorted(
        (
            i.path
            for i in infos
            if Path(i.path).name.startswith("checkpoint_") and i.path != latest.path
        ),
        reverse=True,
    )
    return [tune.Checkpoint(p, filesystem=latest.filesystem) for p in names]


def quiet_trial_logs() -> None:
    """Ray logs every persisted checkpoint at INFO; the trial table says enough."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def trial_dir() -> Path:
    path = Path(tune.get_context().get_trial_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def trial_id() -> str:
    return tune.get_context().get_trial_id()


def trial_name() -> str:
    return tune.get_context().get_trial_name()


def placement() -> dict[str, str]:
    """Where this trial runs: the Ray node id, the GPU ids Ray assigned to it, and the
    CUDA_VISIBLE_DEVICES its CUDA calls see (which Ray sets from those ids)."""
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
