"""The GPU pool check in one command: ``python -m gpu.pool_check --out DIR [--dry-run]``.

Phases, in order of what matters most (a phase that no longer fits in ``--deadline`` is
skipped and said so; results are rewritten after every phase, so a cut run keeps its data):

1. ``env``: versions, the GPU, the wheels brought;
2. ``data``: ``python -m moodtheme.data synth`` on this machine's disk, validation and test
   cut to ``--eval-tracks`` so that an epoch is almost all training;
3. ``pack``: ``python -m tune.search --space gpu/gpu_pool.yaml --budget packN`` for
   N = 1, 2, 4, 8 trials per GPU (gpu/packing.py);
4. ``isolation``: one trial over its memory share fails alone (gpu/isolation.py);
5. ``step``: the training step eager against ``run.compile`` modes (gpu/step_speed.py);
6. ``compiled``: the packing again with the fastest compile mode, if it won;
7. ``pytest``: tests/test_compile.py and tests/test_cuda.py on the GPU.

``--dry-run`` runs the same pipeline on a CPU at a tiny size (CPU trials, Ray's GPU labels
faked for the isolation phase, no compile), as tests/test_gpu_pool_check.py does.
Results: ``DIR/results.json``, ``DIR/results.md``, ``DIR/gpu_samples.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu import isolation, packing, report
from gpu.monitor import Monitor
from gpu.packing import SPACE_FILE, Workload, run_logged

BATCH = 8  # submission 2's batch, the paper's


@dataclass(frozen=True)
class Plan:
    tracks: int  # synthetic tracks in all (train is about 55%)
    eval_tracks: int
    pack: tuple[int, ...]
    compiled_pack: tuple[int, ...]
    compile_modes: tuple[str, ...]
    isolation_trials: int
    step_args: tuple[str, ...]
    train_tracks: int | None = None  # None: every synthetic training track
    fake_gpus: float | None = None
    dry_run: bool = False
    budget_of: dict[int, str] = field(default_factory=dict)

    def budget(self, trials_per_gpu: int) -> str:
        return self.budget_of.get(trials_per_gpu, f"pack{trials_per_gpu}")


GPU_PLAN = Plan(
    tracks=900,
    eval_tracks=24,
    pack=(1, 2, 4, 8),
    compiled_pack=(1, 8),
    compile_modes=("none", "reduce-overhead"),
    isolation_trials=4,
    step_args=("--steps", "40", "--warmup", "5", "--repeats", "3", "--loader-batches", "60"),
)
DRY_PLAN = Plan(
    tracks=600,
    eval_tracks=8,
    pack=(2,),
    compiled_pack=(),
    compile_modes=("none",),
    isolation_trials=2,
    step_args=("--steps", "2", "--warmup", "1", "--repeats", "1", "--loader-batches", "2"),
    train_tracks=16,
    fake_gpus=1.0,
    dry_run=True,
    budget_of={2: "dry"},
)
# Seconds a phase needs at least, on the GPU machine, to be worth starting, and the most one
# of its commands may take (a hung command must not eat the whole run).
MIN_SECONDS = {"pack": 30, "isolation": 60, "step": 150, "compiled": 90, "pytest": 60}
MAX_SECONDS = {"data": 120, "pack": 240, "step": 330, "compiled": 240, "pytest": 200}


class Run:
    """The run's clock, results and output files."""

    def __init__(self, out: Path, work: Path, plan: Plan, deadline: float) -> None:
        self.out, self.work, self.plan = out, work, plan
        self.started = time.time()
        self.deadline = deadline
        self.monitor = Monitor().start()
        self.results: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "dry_run": plan.dry_run,
            "phases": {},
            "skipped": {},
            "errors": {},
        }

    def left(self, phase: str | None = None) -> float:
        """Seconds to the deadline, or, for a phase, what one of its commands may take."""
        left = self.deadline - (time.time() - self.started)
        return min(left, MAX_SECONDS.get(phase, left)) if phase else left

    def fits(self, phase: str) -> bool:
        need = 0 if self.plan.dry_run else MIN_SECONDS.get(phase, 0)
        if self.left() >= need:
            return True
        self.results["skipped"][phase] = f"{self.left():.0f} s left of --deadline, needs {need}"
        print(f"skipping {phase}: {self.results['skipped'][phase]}", flush=True)
        return False

    def phase(self, name: str, action: Any) -> Any:
        """Run one phase: time it, save the results after it, and if it fails, record the
        error and go on with the next phase (each phase stands on its own)."""
        started = time.time()
        try:
            return action()
        except Exception as err:  # a phase's failure is a result too
            traceback.print_exc()
            self.results["errors"][name] = f"{type(err).__name__}: {err}"[:1000]
            return None
        finally:
            self.results["phases"][name] = round(time.time() - started, 1)
            self.save()

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.time() - self.started, 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        (self.out / "results.md").write_text(report.markdown(self.results))
        self.monitor.write_csv(self.out / "gpu_samples.csv")


def environment() -> dict[str, Any]:
    """Versions and the GPU, read without creating a CUDA context in this process."""
    import optuna
    import pydantic
    import ray
    import torch
    import torchvision

    gpus = query_gpus()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "gpu": gpus[0].get("name") if gpus else None,
        "gpu_memory_mib": float(gpus[0]["memory.total"]) if gpus else None,
        "driver": gpus[0].get("driver_version") if gpus else None,
        "cpus": os.cpu_count(),
        # Without MPS the trials' kernels take turns on the GPU, they never run at once.
        "mps_control": shutil.which("nvidia-cuda-mps-control"),
        "ray": f"{ray.__version__} ({Path(ray.__file__).parent})",
        "optuna": optuna.__version__,
        "pydantic": pydantic.__version__,
    }
    manifest = Path(".whl/manifest.json")
    if manifest.is_file():
        env["wheels"] = json.loads(manifest.read_text())
    return env


def query_gpus() -> list[dict[str, str]]:
    from gpu.monitor import query

    fields = "name,memory.total,driver_version"
    return query("--query-gpu=" + fields, fields) if shutil.which("nvidia-smi") else []


def make_data(run: Run) -> Workload:
    """Synthetic data on this machine's disk; validation and test cut short."""
    from moodtheme.data import jamendo

    root, splits = run.work / "synth", run.work / "splits"
    if not (root / "planted.json").is_file():
        synth = [sys.executable, "-m", "moodtheme.data", "synth", "--to", str(root)]
        code = run_logged([*synth, "--tracks", str(run.plan.tracks)], timeout=run.left("data"))
        if code != 0:
            raise RuntimeError(f"synthetic data generation failed (exit {code})")
    counts = {}
    for subset in jamendo.SUBSETS:
        source = jamendo.split_tsv(0, subset, root / "splits")
        target = splits / source.relative_to(root / "splits")
        target.parent.mkdir(parents=True, exist_ok=True)
        header, *rows = source.read_text().splitlines()
        keep = rows if subset == "train" else rows[: run.plan.eval_tracks]
        if subset == "train" and run.plan.train_tracks:
            keep = rows[: run.plan.train_tracks]
        target.write_text("\n".join([header, *keep]) + "\n")
        counts[subset] = len(keep)
    train = counts["train"]
    samples = (train // BATCH) * BATCH if train > BATCH else train
    run.results["data"] = {"root": str(root), "tracks": counts, "samples_per_epoch": samples}
    return Workload(root, splits, samples)


def space_overrides(budget: str) -> list[str]:
    """The budget's fixed overrides as KEY=VALUE, for a run outside Ray Tune."""
    from tune.space import load_space

    fixed = load_space(SPACE_FILE, budget).fixed_overrides()
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in fixed.items()]


def step_speed(run: Run, work: Workload) -> dict[str, Any]:
    out = run.work / "step.json"
    sets = space_overrides(run.plan.budget(run.plan.pack[0]))
    sets += [f"data.root={work.data_root}", f"data.splits_dir={work.splits_dir}"]
    sets += list(work.extra_overrides)
    command = [sys.executable, "-m", "gpu.step_speed", "--out", str(out), "--preset", "submission2"]
    command += ["--modes", *run.plan.compile_modes, *run.plan.step_args, "--set", *sets]
    code = run_logged(command, timeout=run.left("step"))
    result = json.loads(out.read_text()) if out.is_file() else {}
    return {"exit_code": code, **result}


def fastest_compile_mode(step: dict[str, Any]) -> str | None:
    """The compile mode whose worst round beats eager's best by 10% or more, if any."""
    modes = step.get("steps", {}).get("modes", {})
    eager = modes.get("none", {}).get("samples_per_s_best")
    winners = {
        mode: min(m["samples_per_s_rounds"])
        for mode, m in modes.items()
        if mode != "none" and eager and min(m["samples_per_s_rounds"]) > 1.1 * eager
    }
    return max(winners, key=winners.get) if winners else None


def trial_memory(pools: list[dict[str, Any]]) -> float | None:
    """The most memory a trial of the packing runs held, as nvidia-smi saw it (MiB)."""
    seen = [t.get("peak_memory_mib") for p in pools for t in p.get("trials", [])]
    seen = [m for m in seen if m]
    return max(seen) if seen else None


def run_phases(run: Run, phases: set[str]) -> None:
    plan, results = run.plan, run.results
    # A folder of its own for each run: a rerun on the warm machine must not meet the last
    # run's experiments (tune.search would refuse to start over them).
    storage = run.work / f"ray_results-{int(run.started)}"

    results["environment"] = run.phase("env", environment) or {}
    work = run.phase("data", lambda: make_data(run))
    if work is None:
        return  # nothing to train on
    results["packing"] = []

    def pack(n: int, mode: str, phase: str) -> None:
        if run.fits(phase):
            pool = run.phase(
                f"pack{n}" + ("" if mode == "none" else f"-{mode}"),
                lambda: packing.run_pool(
                    plan.budget(n), n, work, storage, run.monitor, BATCH, mode, run.left(phase)
                ),
            )
            if pool is not None:
                results["packing"].append(pool)
                run.save()

    for n in plan.pack if "pack" in phases else ():
        pack(n, "none", "pack")
    if "isolation" in phases and run.fits("isolation"):
        n = plan.isolation_trials
        gpu_mib = results["environment"].get("gpu_memory_mib")
        share = gpu_mib / n if gpu_mib else None
        train = results["data"]["tracks"]["train"]
        big = isolation.hog_batch(BATCH, trial_memory(results["packing"]), share, train)
        results["isolation"] = run.phase(
            "isolation",
            lambda: isolation.run_isolation(
                plan.budget(n), n, work, storage, BATCH, big, fake_gpus=plan.fake_gpus
            ),
        )
    if "step" in phases and run.fits("step"):
        results["step"] = run.phase("step", lambda: step_speed(run, work))
    mode = fastest_compile_mode(results.get("step") or {})
    results["compile_winner"] = mode
    for n in plan.compiled_pack if "compiled" in phases and mode else ():
        pack(n, mode, "compiled")
    if "pytest" in phases and not plan.dry_run and run.fits("pytest"):
        results["pytest"] = run.phase("pytest", lambda: run_pytest(run))


def run_pytest(run: Run) -> dict[str, Any]:
    import xml.etree.ElementTree as ET

    junit = run.work / "pytest.xml"
    tests = ["tests/test_compile.py", "tests/test_cuda.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    code = run_logged([*command, f"--junit-xml={junit}", *tests], timeout=run.left("pytest"))
    counts: dict[str, Any] = {"exit_code": code, "files": tests}
    if junit.is_file():
        suite = ET.parse(junit).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        for key in ("tests", "failures", "errors", "skipped", "time"):
            counts[key] = suite.get(key) if suite is not None else None
    return counts


PHASES = ("pack", "isolation", "step", "compiled", "pytest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder ($OUT)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pool_check"), help="scratch")
    parser.add_argument("--dry-run", action="store_true", help="tiny, on the CPU")
    parser.add_argument(
        "--phases",
        nargs="+",
        choices=PHASES,
        default=list(PHASES),
        help="(env and data always run)",
    )
    parser.add_argument("--deadline", type=float, default=540, help="seconds for the whole run")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.work, plan, args.deadline)
    try:
        run_phases(run, set(args.phases))
    finally:
        run.monitor.stop()
        run.save()
    print(report.markdown(run.results), flush=True)
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
