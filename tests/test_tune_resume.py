"""A search whose driver is killed mid-way, then resumed with --resume: every trial is
accounted for, trials with a checkpoint continue from it, MLflow has one child per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tune import ray_adapter
from tune.search import RunOptions, run_search
from tune.space import load_space
from tune.tracking import STATE_TAG, Tracker

REPO = Path(__file__).resolve().parents[1]
NAME = "resume"

pytestmark = pytest.mark.slow


def _space_file(tmp: Path) -> Path:
    """The smoke space with 3 trials of 3 epochs and no early stopping (grace = max_t)."""
    raw = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    raw.update(name=NAME, num_samples=3, max_concurrent_trials=2)
    raw["asha"] = {"max_t": 3, "grace_period": 3, "reduction_factor": 2}
    raw["overrides"].update({"data.limit_tracks": 24})
    path = tmp / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc), so the test ends only what it started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _experiment_trials(exp: Path) -> list[dict]:
    """Tune's saved view of each trial: status and last result (with its checkpoint)."""
    states = sorted(exp.glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, ValueError):  # being rewritten
        return []
    out = []
    for meta, runtime in data["trial_data"]:
        meta, runtime = json.loads(meta), json.loads(runtime)
        out.append({"trial_id": meta["trial_id"], "status": meta["status"], **runtime})
    return out


def test_killed_driver_then_resume(tmp_path):
    space_file = _space_file(tmp_path)
    storage, db = tmp_path / "results", tmp_path / "mlflow.db"
    exp = storage / NAME
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tune.search",
            "--space",
            str(space_file),
            "--storage",
            str(storage),
            "--mlflow-uri",
            f"sqlite:///{db}",
            "--keep-checkpoints",
            "1",  # Tune then snapshots its state after every checkpoint
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Kill the driver (and the local Ray it started) once a running trial has a checkpoint
    # in Tune's saved state, before the search ends.
    checkpointed: dict[str, int] = {}
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            trials = _experiment_trials(exp)
            running = [
                t for t in trials if t["status"] == "RUNNING" and t["last_result"].get("epoch")
            ]
            if running:
                checkpointed = {t["trial_id"]: int(t["last_result"]["epoch"]) for t in running}
                break
            time.sleep(0.3)
    finally:
        processes = [driver.pid, *_descendants(driver.pid)]
        for pid in processes:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        driver.wait(timeout=60)
    assert checkpointed, "no trial reached a checkpoint before the deadline"
    assert driver.returncode == -signal.SIGKILL
    assert ray_adapter.can_resume(str(exp))

    started = ray_adapter.connect(None, num_cpus=2, num_gpus=0)
    try:
        outcome = run_search(
            load_space(space_file), RunOptions(name=NAME, storage=str(storage), resume=True)
        )
    finally:
        if started:
            ray_adapter.disconnect()

    # every trial accounted for, each trained to the end
    assert len(outcome.records) == 3 and not outcome.interrupted
    assert {r.state for r in outcome.records} == {"completed"}
    tracker = Tracker(f"sqlite:///{db}", NAME)
    children = tracker.children(outcome.parent_run_id)
    by_trial = {c.data.tags["tune_trial_id"]: c for c in children}
    assert len(children) == len(by_trial) == 3  # one child per trial: none missing, no twins
    assert sorted(by_trial) == sorted(r.trial_id for r in outcome.records)
    assert {c.data.tags[STATE_TAG] for c in children} == {"completed"}
    assert tracker.client.get_run(outcome.parent_run_id).info.status == "FINISHED"

    for record in outcome.records:
        epochs = [int(e) for e in record.history["epoch"]]
        assert epochs[-1] == 3
        if record.trial_id in checkpointed:
            # continued from its checkpoint: epoch 1 was trained (and logged) once only
            assert epochs.count(1) == 1, epochs
            resumed = record.history[record.history["restored_from_epoch"] > 0]
            assert (
                len(resumed)
                and resumed["restored_from_epoch"].min() >= checkpointed[record.trial_id]
            )
            run_id = by_trial[record.trial_id].info.run_id
            history = tracker.client.get_metric_history(run_id, "val_pr_auc_macro")
            assert [m.step for m in history].count(1) == 1
