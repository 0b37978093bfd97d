"""A search cannot be wrecked by how it is stopped, resumed or misconfigured: every bad option
is one line before Ray starts; SIGTERM stops it like Ctrl-C; the printed resume command, run
as printed, completes it on the same data; a resume that differs from the start is refused;
a deterministic failure is not retried."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tune import ray_adapter
from tune.search import RunOptions, TrialSpec, run_trials

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-failures", "-1"], "--max-failures -1: give 0 or more"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints 0: give 1 or more"),
        (["--top-k", "0"], "--top-k 0: give 1 or more"),
        (["--address", "garbage"], "--address garbage: expected host:port"),
        (["--address", "ray://10.0.0.1:10001"], "not a URL"),
        (["--address", "127.0.0.1:1"], "no Ray head answers there"),
        (["--resume"], "--resume needs --name"),
        (["--resume", "--name", "never-ran"], "nothing to resume at"),
    ],
)
def test_bad_search_options_are_one_line_before_ray_starts(args, needle, tmp_path):
    started = time.monotonic()
    done = cli("tune.search", "--space", "smoke.yaml", *args, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # no Ray start, no minute-long connection wait


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cpus-per-trial", "0"], "--cpus-per-trial 0"),
        (["--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5"),
        (["--max-failures", "-1"], "--max-failures -1"),
    ],
)
def test_bad_suite_options_are_one_line(args, needle, tmp_path):
    done = cli("ablations.run", "mixup", "--results-dir", str(tmp_path), *args, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_deterministic_failure_is_not_retried(small_synth, tmp_path):
    specs = [
        TrialSpec("ok", {}),
        # Its split folder does not exist: every attempt would fail the same way.
        TrialSpec("broken", {"data.splits_dir": str(tmp_path / "no-such-splits")}),
    ]
    started = ray_adapter.connect(None, num_cpus=2, num_gpus=0)
    try:
        outcome = run_trials(
            specs,
            preset="quick",
            overrides={
                "data.root": str(small_synth),
                "data.limit_tracks": 16,
                "optim.epochs": 1,
                "optim.switch_epoch": None,
                "run.progress": False,
            },
            max_concurrent_trials=2,
            options=RunOptions(
                name="guard", storage=str(tmp_path), tracking=False, max_failures=3, verbose=0
            ),
        )
    finally:
        if started:
            ray_adapter.disconnect()
    records = {r.name: r for r in outcome.records}
    assert records["ok"].state == "completed"
    broken = records["broken"]
    assert broken.state == "errored"
    assert broken.error.startswith("SplitError: ") and "no-such-splits" in broken.error
    assert "\n" not in broken.error
    # One attempt: Tune recorded no failure to retry.
    state = json.loads(sorted((tmp_path / "guard").glob("experiment_state-*.json"))[-1].read_text())
    failures = {
        json.loads(meta)["trial_id"]: json.loads(runtime).get("num_failures", 0)
        for meta, runtime in state["trial_data"]
    }
    assert failures[broken.trial_id] == 0


def _space(tmp: Path) -> Path:
    """The smoke space: 4 trials of 2 epochs, one at a time, no early stopping."""
    raw = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    raw.update(name="guarded", num_samples=4, max_concurrent_trials=1)
    raw["asha"] = {"max_t": 2, "grace_period": 2, "reduction_factor": 2}
    raw["overrides"]["data.limit_tracks"] = 16
    path = tmp / "guarded.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_sigterm_then_the_printed_resume_command_completes_the_data_search(small_synth, tmp_path):
    space, storage = _space(tmp_path), tmp_path / "results"
    driver = subprocess.Popen(
        [sys.executable, "-m", "tune.search", "--space", str(space), "--data", str(small_synth),
         "--budget", "full", "--storage", str(storage), "--no-mlflow"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    exp = storage / "guarded"
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            done = [d for d in exp.glob("*/result.json") if '"fit_finished"' in d.read_text()]
            if done:
                break
            time.sleep(0.5)
        driver.send_signal(signal.SIGTERM)  # as a scheduler preempts a job
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, out
    line = next(x for x in out.splitlines() if "continue it with: " in x)
    command = line.split("continue it with: ", 1)[1]
    assert (
        command == f"python -m tune.search --resume --name guarded --storage {storage} --no-mlflow"
    )

    # A resume that asks for something else is refused in one line.
    refused = cli(*shlex.split(command)[2:], "--set", "data.num_workers=1", cwd=tmp_path)
    assert refused.returncode == 2 and "was started otherwise" in refused.stderr
    assert "set: started with {}, now {'data.num_workers': 1}" in refused.stderr

    # So is a space file edited since the start (the trials would mix two spaces).
    original = space.read_text()
    space.write_text(original.replace("num_samples: 4", "num_samples: 5"))
    edited = cli(*shlex.split(command)[2:], cwd=tmp_path)
    assert edited.returncode == 2 and "space_sha256: started with" in edited.stderr
    space.write_text(original)

    # The printed command, exactly as printed, completes the search on the same data.
    resumed = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "4 trials: 4 completed" in resumed.stdout
    manifest = json.loads((exp / "search.json").read_text())
    assert manifest["definition"]["data"] == str(small_synth.resolve())
    assert manifest["fixed"]["data.root"] == str(small_synth.resolve())


@pytest.mark.parametrize("text", ["{trunc", "[]", None])
def test_a_damaged_manifest_refuses_the_resume_in_one_line(text, tmp_path, monkeypatch, capsys):
    from tune import cli

    exp = tmp_path / "damaged"
    exp.mkdir()
    if text is not None:
        (exp / "search.json").write_text(text)
    # Tune's own state is there; only the manifest that says what the search was is not.
    monkeypatch.setattr(cli, "experiment_exists", lambda where: True)
    code = cli.main(["--resume", "--name", "damaged", "--storage", str(tmp_path), "--no-mlflow"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(exp / "search.json") in err and "--name" in err
