"""A transient failure is retried from the newest checkpoint that is still readable: when the
crash also damaged the latest one, the retry falls back to the older checkpoint Tune kept."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import ray.cloudpickle
from ray import tune

from tune import ray_adapter
from tune.ray_adapter import worker


def _readable(folder: Path) -> bool:
    try:
        json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def trainable(config: dict) -> None:
    restored = worker.restore_checkpoint(Path(tempfile.mkdtemp()) / "restored", _readable)
    if restored is not None:  # the retry
        epoch = json.loads((restored / "state.json").read_text())["epoch"]
        worker.report({"restored_epoch": epoch, "epoch": epoch + 1})
        return
    for epoch in (1, 2):
        folder = Path(tempfile.mkdtemp())
        (folder / "state.json").write_text(json.dumps({"epoch": epoch}))
        worker.report({"epoch": epoch}, checkpoint_dir=folder)
    # The crash that causes the retry also leaves the latest persisted checkpoint damaged.
    latest = sorted(Path(config["storage"]).glob("fallback/*/checkpoint_*"))[-1]
    (latest / "state.json").write_text("{trunc")
    raise RuntimeError("node lost (simulated)")


@pytest.fixture()
def ray_session():
    # Ray's workers cannot import a test module: send this one's functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = ray_adapter.connect(None, num_cpus=1, num_gpus=0)
    yield
    if started:
        ray_adapter.disconnect()


def test_a_retry_passes_over_a_damaged_latest_checkpoint(ray_session, tmp_path):
    tuner = tune.Tuner(
        trainable,
        param_space={"storage": str(tmp_path)},
        run_config=tune.RunConfig(
            name="fallback",
            storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=1),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    result = tuner.fit()[0]
    assert result.error is None
    assert result.metrics["restored_epoch"] == 1  # not 2: that one was damaged
