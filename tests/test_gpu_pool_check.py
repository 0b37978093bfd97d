"""The GPU pool check (gpu/): its dry run goes end to end on a CPU, its payload fits one
device call, its wheel handling and its arithmetic hold. The GPU figures themselves come
only from a run on the GPU machine (docs/benchmarks.md, "GPU pool")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# gpu/ is a folder of scripts run from the checkout, not an installed package.
sys.path.insert(0, str(REPO))

from gpu import isolation, monitor, packing, payload, prepare_wheels, report  # noqa: E402
from gpu.monitor import Monitor  # noqa: E402
from tune.ray_adapter import FIT_FINISHED  # noqa: E402
from tune.space import load_space  # noqa: E402


@pytest.mark.slow
def test_dry_run_goes_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    done = subprocess.run(
        ["bash", "gpu/pool_check.sh", "--dry-run", "--work", str(tmp_path / "work")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] and results["data"]["tracks"]["validation"] == 8

    (pool,) = results["packing"]
    assert pool["exit_code"] == 0 and pool["trials_per_gpu"] == 2
    assert [t["state"] for t in pool["trials"]] == ["completed", "completed"]
    assert all(t["measured_epochs"] == 1 and t["samples_per_s"] > 0 for t in pool["trials"])
    assert pool["aggregate_samples_per_s"] == pytest.approx(
        sum(t["samples_per_s"] for t in pool["trials"]), abs=0.2
    )
    assert pool["placement_ok"]

    iso = results["isolation"]
    assert iso["others_completed"] and iso["hog_state"] == "completed"  # no memory cap on a CPU
    # Ray's fake GPU labels: each trial saw the GPU id it was given in CUDA_VISIBLE_DEVICES.
    assert [(t["gpu_ids"], t["cuda_visible_devices"]) for t in iso["trials"]] == [("0", "0")] * 2

    step = results["step"]
    assert step["exit_code"] == 0 and step["steps"]["modes"]["none"]["samples_per_s_best"] > 0
    assert step["loader"]["samples_per_s"] > 0

    markdown = (out / "results.md").read_text()
    assert "## Packing" in markdown and "n/a without a GPU" in markdown
    assert (out / "log.txt").stat().st_size > 0


def test_one_device_call_carries_the_checkout_and_the_wheels():
    wheels = REPO / payload.WHEEL_FOLDER
    brought = payload.folder_bytes(wheels) if wheels.is_dir() else payload.WHEELS_BYTES
    repo = payload.measure(REPO, []).repo_bytes
    assert repo + brought <= payload.LIMIT_BYTES, (
        f"repo {payload.mib(repo)} + wheels {payload.mib(brought)} is over 64 MiB: shrink the "
        "checkout or use gpu/prepare_wheels.py --split"
    )


def test_payload_counts_untracked_files_but_not_ignored_ones(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".whl/\n")
    (tmp_path / "kept.txt").write_bytes(b"x" * 1000)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "a.whl").write_bytes(b"y" * 5000)
    measured = payload.measure(tmp_path, [".whl"])
    assert measured.repo_bytes == 1000 + len(".whl/\n")
    assert measured.carried_bytes == {".whl": 5000}
    assert payload.check(tmp_path, [".whl"]).total == 6006
    monkeypatch.setattr(payload, "LIMIT_BYTES", 6000)
    with pytest.raises(payload.PayloadError, match="--split"):
        payload.check(tmp_path, [".whl"])


def _wheel(path: Path, files: dict[str, str], requires: list[str]) -> Path:
    metadata = "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    record = "".join(f"{name},,\n" for name in files) + "demo-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("demo-1.0.dist-info/METADATA", metadata)
        z.writestr("demo-1.0.dist-info/RECORD", record)
    return path


def test_slimming_drops_the_folders_and_their_record_lines(tmp_path):
    wheel = _wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {"demo/__init__.py": "", "demo/jars/big.jar": "j" * 1000, "demo/tune.py": "t"},
        [],
    )
    assert prepare_wheels.slim(wheel, ("demo/jars/",)) == 1
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        record = z.read("demo-1.0.dist-info/RECORD").decode()
    assert "demo/jars/big.jar" not in names and "demo/tune.py" in names
    assert "jars" not in record and "demo/tune.py" in record
    assert prepare_wheels.slim(wheel, ("demo/jars/",)) == 0  # a second run leaves it alone


def test_requirements_follow_markers_and_extras(tmp_path):
    wheel = _wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {"demo/__init__.py": ""},
        [
            "click>=7",
            'tomli; python_version < "3.11"',
            'pandas; extra == "tune"',
            'pywin32; sys_platform == "win32"',
        ],
    )
    names = lambda extras: {r.name for r in prepare_wheels.requirements(wheel, extras)}  # noqa: E731
    assert names(()) == {"click"}
    assert names(("tune",)) == {"click", "pandas"}


def test_unmet_requirements_are_named(tmp_path, monkeypatch):
    wheel = _wheel(
        tmp_path / "demo-1.0-py3-none-any.whl",
        {"demo/__init__.py": ""},
        ["numpy", "jsonschema", "tensorboardx", "helper>=2"],
    )
    helper = _wheel(tmp_path / "helper-1.5-py3-none-any.whl", {"helper/__init__.py": ""}, [])
    wanted = [
        prepare_wheels.Wanted("demo", (), "1.0"),
        prepare_wheels.Wanted("helper", (), "1.5"),
    ]
    problems = prepare_wheels.unmet(
        {"demo": wheel, "helper": helper}, wanted, skipped={"tensorboardx"}
    )
    # numpy is on the device; tensorboardx is skipped on purpose; the other two are not met.
    assert len(problems) == 2
    assert any("jsonschema" in p and "neither brought" in p for p in problems)
    assert any("helper>=2" in p and "brought helper 1.5" in p for p in problems)


def test_the_wheel_list_covers_what_the_device_lacks():
    wanted, skipped = prepare_wheels.read_wheel_list()
    names = {w.name for w in wanted}
    assert {"ray", "optuna", "pydantic", "jsonschema", "sqlalchemy", "alembic"} <= names
    assert "tune" in next(w for w in wanted if w.name == "ray").extras
    assert not names & prepare_wheels.device_packages() - {"typing-extensions"}
    assert skipped == {"tensorboardx"}


@pytest.mark.parametrize("trials", [1, 2, 4, 8])
def test_pack_budgets_share_one_gpu_and_stop_no_trial_early(trials):
    space = load_space(packing.SPACE_FILE, f"pack{trials}")
    assert space.num_samples == space.max_concurrent_trials == trials
    assert space.resources.gpu == pytest.approx(1 / trials)
    assert space.resources.cpu * trials <= 16  # the H200 machine's cores
    assert space.asha.grace_period == space.asha.max_t
    assert (
        space.preset == "submission2" and space.trial_config({"run.seed": 1}).optim.batch_size == 8
    )


def _trial(pid, seconds, start):
    rows = [
        {
            "epoch": e,
            "train_seconds": seconds,
            "epoch_seconds": seconds + 0.5,
            "pid": pid,
            "timestamp": start + 2 * e,
            "time_this_iter_s": 2.0,
            "gpu_ids": "0",
            "cuda_visible_devices": "0",
        }
        for e in (1, 2, 3)
    ]
    rows.append({**rows[-1], FIT_FINISHED: 1})  # the final report repeats the last epoch
    return {"dir": f"trial_{pid}", "rows": rows, "error": None}


def test_pool_figures_sum_the_trials_measured_epochs():
    monitor = Monitor(available=False)
    trials = [
        packing.trial_figures(_trial(1, 1.0, 1000.0), 160, 8, monitor),
        packing.trial_figures(_trial(2, 2.0, 1001.0), 160, 8, monitor),
    ]
    # Epoch 1 is the warm-up: two measured epochs of 160 samples each.
    assert [t["samples_per_s"] for t in trials] == [160.0, 80.0]
    assert [t["step_ms"] for t in trials] == [50.0, 100.0]
    assert all(t["state"] == "completed" and packing.placement_ok(t) for t in trials)
    pool = packing.pool_figures(trials, 8, monitor)
    assert pool["aggregate_samples_per_s"] == 240.0
    assert pool["paper_epoch_s"] == round(packing.PAPER_EPOCH_TRACKS / 240, 1)
    # Windows [1002, 1006] and [1003, 1007]: 3 s in common of 4.
    assert pool["overlap"] == 0.75
    assert pool["window_samples_per_s"] == round(640 / 5, 1)


def test_placement_catches_a_trial_on_another_gpu():
    assert not packing.placement_ok({"gpu_ids": "1", "cuda_visible_devices": "0"})
    assert not packing.placement_ok(
        {"gpu_ids": "0", "cuda_visible_devices": "0", "gpu_seen_by_nvidia_smi": "1"}
    )


def test_the_hog_needs_more_than_its_share_but_fits_the_train_set():
    # 3 GiB seen at batch 8, a 35 GiB share: about 2.5 shares' worth.
    assert isolation.hog_batch(8, 3 * 1024, 35 * 1024, 500) == 234
    assert isolation.hog_batch(8, 3 * 1024, 35 * 1024, 100) == 100
    assert isolation.hog_batch(8, None, None, 500) == 32  # no GPU: no share to exceed
    assert isolation.hog_batch(8, None, 35 * 1024, 500) == 234  # memory not seen: 3 GiB assumed


def test_the_goal_line_says_how_close_the_best_pool_came():
    pools = [
        {
            "trials_per_gpu": 1,
            "compile": "none",
            "aggregate_samples_per_s": 165.0,
            "paper_epoch_s": 60.3,
        },
        {
            "trials_per_gpu": 4,
            "compile": "none",
            "aggregate_samples_per_s": 297.0,
            "paper_epoch_s": 33.5,
        },
    ]
    assert "best 297 samples/s (4 trials per GPU" in report.goal_line(pools)
    assert "90% of it" in report.goal_line(pools)
    pools[1]["aggregate_samples_per_s"] = 340.0
    assert report.goal_line(pools).endswith("met.")


def test_monitor_reads_utilisation_and_each_processes_memory(monkeypatch):
    replies = {
        "--query-gpu=" + monitor.GPU_QUERY: "0, GPU-a1, 87, 12000, 143771, 1980\n",
        "--query-compute-apps=" + monitor.APP_QUERY: "GPU-a1, 4242, 3100\nGPU-a1, 4243, [N/A]\n",
    }

    def fake_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout=replies[command[1]], stderr="")

    monkeypatch.setattr(monitor.subprocess, "run", fake_run)
    gpus = monitor.query("--query-gpu=" + monitor.GPU_QUERY, monitor.GPU_QUERY)
    apps = monitor.query("--query-compute-apps=" + monitor.APP_QUERY, monitor.APP_QUERY)
    assert gpus[0]["utilization.gpu"] == "87" and apps[0]["pid"] == "4242"
    watch = Monitor(available=False)
    quiet = [{**gpus[0], "utilization.gpu": "13", "memory.used": "9000"}]
    watch.samples = [
        monitor.Sample(10.0, gpus, apps),
        monitor.Sample(11.0, quiet, [{**apps[0], "used_memory": "3300"}]),
        monitor.Sample(20.0, gpus, []),  # outside the window below
    ]
    assert watch.window(9.5, 11.5) == {
        "samples": 2,
        "gpu_util_mean_pct": 50.0,
        "gpu_util_max_pct": 87.0,
        "gpu_memory_used_max_mib": 12000.0,
    }
    assert watch.peak_memory_by_pid(0, 30) == {4242: 3300.0}  # [N/A] is no reading
    assert watch.gpu_index_of_pid() == {4242: "0", 4243: "0"}


def test_isolation_passes_only_when_the_hog_alone_ran_out_of_memory():
    iso = {
        "trials_per_gpu": 4,
        "gpu_share": 0.25,
        "hog_batch": 234,
        "hog_state": "errored",
        "hog_error": "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "hog_out_of_memory": True,
        "hog_stopped_by_cap": True,
        "others_completed": True,
        "placement_ok": True,
    }
    assert ": PASS." in report.isolation_lines(iso, on_gpu=True)[0]
    assert "n/a without a GPU" in report.isolation_lines(iso, on_gpu=False)[0]
    assert ": FAIL." in report.isolation_lines({**iso, "others_completed": False}, True)[0]
    assert ": FAIL." in report.isolation_lines({**iso, "hog_out_of_memory": False}, True)[0]


def test_a_failing_phase_is_recorded_and_the_run_goes_on(tmp_path):
    from gpu.pool_check import DRY_PLAN, Run

    run = Run(tmp_path / "out", tmp_path / "work", DRY_PLAN, deadline=60)
    (tmp_path / "out").mkdir()
    assert run.phase("broken", lambda: 1 / 0) is None
    assert run.phase("fine", lambda: 42) == 42
    run.monitor.stop()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["errors"] == {"broken": "ZeroDivisionError: division by zero"}
    assert set(saved["phases"]) == {"broken", "fine"}
    assert "Errors: broken: ZeroDivisionError" in (tmp_path / "out" / "results.md").read_text()
