"""Retries. A transient failure is retried from the newest checkpoint that is still
readable: when the crash also damaged the latest one, the retry falls back to the older
checkpoint Tune kept. A trial that ended errored runs again only when a resume asks for it."""

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
from tune.spec import TrialSpec


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
def one_cpu_ray():
    # Ray's workers cannot import a test module: send this one's functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = ray_adapter.connect(None, num_cpus=1, num_gpus=0)
    yield
    if started:
        ray_adapter.disconnect()


def test_a_retry_passes_over_a_damaged_latest_checkpoint(one_cpu_ray, tmp_path):
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


def fails_until_marked(config: dict, context: str) -> None:
    if not Path(context).exists():
        raise RuntimeError("the data server was down (simulated)")
    worker.report({"epoch": 1, "score": 1.0, ray_adapter.FIT_FINISHED: 1})


def test_errored_trials_run_again_only_when_the_resume_asks(one_cpu_ray, tmp_path):
    marker = tmp_path / "server-is-back"
    job = ray_adapter.TuneJob(
        name="errored",
        storage=str(tmp_path),
        trainable=fails_until_marked,
        context=str(marker),
        resources={"cpu": 1, "gpu": 0},
        metric="score",
        mode="max",
        max_concurrent_trials=1,
        grid=[TrialSpec("only", {}, {})],
        max_failures=0,
        verbose=0,
    )
    states = lambda records: [r.state for r in records]  # noqa: E731
    assert states(ray_adapter.run_job(job)[0]) == ["errored"]
    marker.touch()
    assert states(ray_adapter.run_job(job, resume=True)[0]) == ["errored"]
    assert states(ray_adapter.run_job(job, resume=True, retry_errored=True)[0]) == ["completed"]
