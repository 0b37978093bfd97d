"""Trials packed on one GPU: ``python -m tune.search`` at a ``gpu_pool.yaml`` budget, read back.

Each trial's figures come from its Ray Tune results (``result.json`` in its folder: one line
per report). An epoch's ``train_seconds`` is the trainer's training loop alone (loading,
mixing, steps; no validation, no checkpoint), so a trial's training rate is its samples over
those seconds; the first epoch is a warm-up and is left out. The pool's aggregate is the
sum of its trials' rates (their measured epochs run side by side: ``overlap`` says how far),
and the window rate, every measured sample over the span from the first measured epoch's
start to the last one's end, is its lower bound (Ray's timestamps are whole seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu.monitor import Monitor
from tune.ray_adapter import FIT_FINISHED
from tune.space import load_space

SPACE_FILE = Path(__file__).resolve().parent / "gpu_pool.yaml"
# Ray Tune's files in a trial's folder (ray.air.constants EXPR_RESULT_FILE, EXPR_ERROR_FILE).
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
WARMUP_EPOCHS = 1
PAPER_EPOCH_TRACKS = 9949  # split-0 training tracks: the goal is 330/s, 30 s an epoch


@dataclass(frozen=True)
class Workload:
    """What every packed trial trains: the data and the samples of one epoch."""

    data_root: Path
    splits_dir: Path
    samples_per_epoch: int  # training steps x batch (the loader drops its last partial batch)
    extra_overrides: tuple[str, ...] = ()  # KEY=VALUE for every trial (--set)


def run_logged(command: list[str], timeout: float, env: dict[str, str] | None = None) -> int:
    """Run ``command`` with its output going to ours; kill its whole process group (Ray's
    processes included) if it outlives ``timeout``. Returns the exit code (124: timed out)."""
    print("$ " + " ".join(command), flush=True)
    proc = subprocess.Popen(command, start_new_session=True, env=env)
    try:
        return proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"timed out after {timeout:.0f} s: {command[:4]}", flush=True)
        return 124


def search_command(
    budget: str, name: str, storage: Path, work: Workload, compile_mode: str
) -> list[str]:
    overrides = [f"data.splits_dir={work.splits_dir}", f"run.compile={compile_mode}"]
    overrides += list(work.extra_overrides)
    sets = [arg for kv in overrides for arg in ("--set", kv)]
    return [
        sys.executable,
        "-m",
        "tune.search",
        "--space",
        str(SPACE_FILE),
        "--budget",
        budget,
        "--data",
        str(work.data_root),
        "--no-mlflow",
        "--storage",
        str(storage),
        "--name",
        name,
        "--max-failures",
        "0",
        *sets,
    ]


def read_trials(experiment: Path) -> list[dict[str, Any]]:
    """Every trial of an experiment folder: its reports (one per epoch) and any error."""
    trials = []
    for result in sorted(experiment.glob(f"*/{RESULT_FILE}")):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        error = result.parent / ERROR_FILE
        trials.append(
            {
                "dir": result.parent.name,
                "rows": rows,
                "error": error.read_text().strip().splitlines()[-1] if error.is_file() else None,
            }
        )
    return trials


def trial_figures(
    trial: dict[str, Any], samples_per_epoch: int, batch: int, monitor: Monitor
) -> dict[str, Any]:
    """One trial's rate, step time, placement and memory."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in trial["rows"]:
        by_epoch.setdefault(int(row.get("epoch", 0)), row)  # a retried epoch counts once
    measured = [r for e, r in sorted(by_epoch.items()) if e > WARMUP_EPOCHS]
    first = trial["rows"][0] if trial["rows"] else {}
    last = trial["rows"][-1] if trial["rows"] else {}
    seconds = sum(float(r["train_seconds"]) for r in measured)
    pid = first.get("pid")
    figures: dict[str, Any] = {
        "trial": trial["dir"],
        "state": "errored"
        if trial["error"]
        else ("completed" if last.get(FIT_FINISHED) else "unfinished"),
        "error": trial["error"],
        "pid": pid,
        "gpu_ids": first.get("gpu_ids"),
        "cuda_visible_devices": first.get("cuda_visible_devices"),
        "gpu_seen_by_nvidia_smi": monitor.gpu_index_of_pid().get(pid) if pid else None,
        "measured_epochs": len(measured),
        "samples_per_s": round(len(measured) * samples_per_epoch / seconds, 1) if seconds else None,
        "train_seconds_per_epoch": round(seconds / len(measured), 2) if measured else None,
        "step_ms": round(1000 * seconds * batch / (len(measured) * samples_per_epoch), 1)
        if seconds
        else None,
        "epoch_seconds": [round(float(r["epoch_seconds"]), 2) for r in by_epoch.values()],
        # [start, end] of the measured epochs in whole seconds since the epoch.
        "window": [
            float(measured[0]["timestamp"]) - float(measured[0]["time_this_iter_s"]),
            float(measured[-1]["timestamp"]),
        ]
        if measured
        else None,
    }
    return figures


def pool_figures(trials: list[dict[str, Any]], batch: int, monitor: Monitor) -> dict[str, Any]:
    """The pool's aggregate rate, its lower bound, the trials' overlap and the GPU's load."""
    rated = [t for t in trials if t["samples_per_s"]]
    windows = [t["window"] for t in rated if t["window"]]
    out: dict[str, Any] = {"trials_rated": len(rated)}
    if not rated or not windows:
        return out
    aggregate = sum(t["samples_per_s"] for t in rated)
    start, end = min(w[0] for w in windows), max(w[1] for w in windows)
    common_start, common_end = max(w[0] for w in windows), min(w[1] for w in windows)
    mean_length = sum(w[1] - w[0] for w in windows) / len(windows)
    samples = sum(
        t["samples_per_s"] * t["train_seconds_per_epoch"] * t["measured_epochs"] for t in rated
    )
    load_window = (common_start, common_end) if common_end > common_start else (start, end)
    out.update(
        aggregate_samples_per_s=round(aggregate, 1),
        window_samples_per_s=round(samples / max(end - start, 1.0), 1),
        overlap=round(max(0.0, common_end - common_start) / max(mean_length, 1e-9), 2),
        step_ms_mean=round(1000 * batch * len(rated) / aggregate, 1),
        paper_epoch_s=round(PAPER_EPOCH_TRACKS / aggregate, 1),
        **monitor.window(*load_window),
    )
    peaks = monitor.peak_memory_by_pid(start - 60, end + 60)
    for t in trials:
        t["peak_memory_mib"] = peaks.get(t["pid"]) if t["pid"] else None
    return out


def placement_ok(trial: dict[str, Any]) -> bool:
    """Ray's GPU ids are what CUDA_VISIBLE_DEVICES shows the trial, and nvidia-smi saw its
    process on that GPU (when it could see processes at all)."""
    ids, visible = trial.get("gpu_ids") or "", trial.get("cuda_visible_devices") or ""
    same = sorted(ids.split(",")) == sorted(visible.split(","))
    seen = trial.get("gpu_seen_by_nvidia_smi")
    return same and (seen is None or seen in ids.split(","))


def run_pool(
    budget: str,
    trials_per_gpu: int,
    work: Workload,
    storage: Path,
    monitor: Monitor,
    batch: int,
    compile_mode: str = "none",
    timeout: float = 300,
) -> dict[str, Any]:
    """One ``python -m tune.search`` at ``budget``, and what it measured."""
    name = f"{budget}-{compile_mode}"
    env = None
    if compile_mode != "none":
        # Each trial compiles in its own process: held to its CPU share, N trials do not
        # start N pools of compile workers as wide as the machine.
        cpus = load_space(SPACE_FILE, budget).resources.cpu
        env = {**os.environ, "TORCHINDUCTOR_COMPILE_THREADS": str(max(1, int(cpus)))}
    started = time.time()
    code = run_logged(search_command(budget, name, storage, work, compile_mode), timeout, env)
    wall = time.time() - started
    trials = read_trials(storage / name)
    figures = [trial_figures(t, work.samples_per_epoch, batch, monitor) for t in trials]
    pool = pool_figures(figures, batch, monitor)
    for t in figures:
        t["placement_ok"] = placement_ok(t)
    return {
        "budget": budget,
        "trials_per_gpu": trials_per_gpu,
        "compile": compile_mode,
        "exit_code": code,
        "wall_s": round(wall, 1),
        **pool,
        "placement_ok": bool(figures) and all(t["placement_ok"] for t in figures),
        "trials": figures,
    }
