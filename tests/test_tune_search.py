"""End-to-end searches on a local Ray (shared by the module) with the real trainer, on the
synthetic dataset at a seconds-per-trial budget; MLflow checked through a server's REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest

from tune import ray_adapter
from tune.preflight import PreflightError
from tune.search import RunOptions, TrialSpec, run_search, run_trials
from tune.space import Resources, load_space
from tune.tracking import TrackingError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"
# A trial of the smoke space trains 3 epochs of a few seconds; these keep Ray tests short.
TINY = {"data.limit_tracks": 16, "data.num_workers": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """An MLflow tracking server process; ``url`` waits until it answers /health."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.log, self.address = proc, log, f"http://127.0.0.1:{port}"
        self.ready = False

    @property
    def url(self) -> str:
        deadline = time.monotonic() + 240
        while not self.ready and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.address}/health", timeout=2) as r:
                    self.ready = r.status == 200
            except OSError:
                time.sleep(1)
        assert self.ready, "the MLflow server did not come up in 240 s"
        return self.address


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """An MLflow tracking server on a free 127.0.0.1 port, in its own process group. It
    starts in the background (it takes a while), while Ray starts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield _Server(proc, port, log)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _rest(url: str, endpoint: str, payload: dict | None = None, **query) -> dict:
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        address, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


# ----------------------------------------------------------------------------- the search


@pytest.fixture(scope="module")
def search(mlflow_server, ray_session, tmp_path_factory):
    """One search of the smoke space, one trial at a time so ASHA's rungs fill in order."""
    space = load_space(SMOKE, overrides=TINY)
    from dataclasses import replace

    from tune.space import Asha

    space = replace(
        space,
        max_concurrent_trials=1,
        asha=Asha(max_t=3, grace_period=1, reduction_factor=3),
        noise_seeds=1,
    )
    storage = tmp_path_factory.mktemp("results")
    options = RunOptions(
        name="smoke-e2e", storage=str(storage), mlflow_uri=mlflow_server.url, max_failures=0
    )
    return space, run_search(space, options), storage


def test_asha_stops_some_trials_and_optuna_respects_the_space(search):
    space, outcome, storage = search
    table = outcome.table
    assert len(table) == space.num_samples and not outcome.interrupted
    assert set(table["state"]) <= {"completed", "stopped_early"}
    stopped = table[table["state"] == "stopped_early"]
    completed = table[table["state"] == "completed"]
    assert len(stopped) >= 1 and len(completed) >= 1
    assert (stopped["epochs"] < 3).all() and (completed["epochs"] == 3).all()
    assert completed["kept_test_pr_auc_macro"].between(0, 1).all()
    assert stopped["kept_test_pr_auc_macro"].isna().all()
    # suggestions respect the space, including the conditional parameter
    for _, row in table.iterrows():
        enabled = bool(row["param.model.attention.enabled"])
        assert (row["param.model.attention.heads"] in (1, 2, 4)) == enabled
        assert row["param.model.attention.layers"] in (1, 2)
        assert 1e-4 <= row["param.optim.lr"] <= 1e-2
        assert 0.0 <= row["param.augment.mixup_alpha"] <= 1.0
    # ranked: completed first, then by the metric
    assert list(table["state"][: len(completed)]) == ["completed"] * len(completed)
    assert table["val_pr_auc_macro"][: len(completed)].is_monotonic_decreasing


def test_study_persisted_beside_results_with_importances(search):
    space, outcome, storage = search
    exp = storage / "smoke-e2e"
    study = optuna.load_study(study_name="smoke-e2e", storage=f"sqlite:///{exp / 'optuna.db'}")
    table = outcome.table
    by_state = {
        state: [t for t in study.trials if t.state == state] for state in optuna.trial.TrialState
    }
    complete, pruned = (
        by_state[optuna.trial.TrialState.COMPLETE],
        by_state[optuna.trial.TrialState.PRUNED],
    )
    # What ASHA stopped is PRUNED, with every epoch it trained as an intermediate value.
    assert len(complete) == (table["state"] == "completed").sum()
    assert len(pruned) == (table["state"] == "stopped_early").sum() >= 1
    assert len(complete) + len(pruned) == space.num_samples
    stopped = table[table["state"] == "stopped_early"]
    assert sorted(len(t.intermediate_values) for t in pruned) == sorted(stopped["epochs"])
    for t in pruned + complete:
        assert sorted(t.intermediate_values) == list(range(1, len(t.intermediate_values) + 1))
    completed = table[table["state"] == "completed"]
    assert sorted(t.value for t in complete) == pytest.approx(sorted(completed["val_pr_auc_macro"]))
    assert all(len(t.intermediate_values) == 3 for t in complete)
    for name in ("trials.csv", "importances.csv", "search.png", "search.json"):
        assert (exp / name).is_file(), name
    assert not outcome.summary.importances.empty
    assert set(outcome.summary.importances["param"]) <= {p.key for p in space.params}


def test_completed_trial_checkpoint_holds_the_outputs(search):
    _, outcome, _ = search
    best = outcome.best
    assert best.state == "completed"
    folder = ray_adapter.fetch_checkpoint(best.checkpoint, Path("unused"))
    for name in ("checkpoint.pt", "trial.json", "final_metrics.json", "test_predictions.npy"):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "final_metrics.json").read_text())
    assert metrics["test_pr_auc_macro"] == pytest.approx(best.last["kept_test_pr_auc_macro"])
    assert np.load(folder / "test_predictions.npy").shape[1] == 56


def test_mlflow_server_holds_parent_children_and_history(search, mlflow_server):
    space, outcome, _ = search
    url = mlflow_server.url
    experiment = _rest(url, "experiments/get-by-name", experiment_name="smoke-e2e")
    exp_id = experiment["experiment"]["experiment_id"]
    runs = _rest(url, "runs/search", {"experiment_ids": [exp_id], "max_results": 1000})["runs"]
    parents = [r for r in runs if _tags(r).get("tune_role") == "search"]
    assert [p["info"]["run_id"] for p in parents] == [outcome.parent_run_id]
    assert parents[0]["info"]["status"] == "FINISHED"
    children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == outcome.parent_run_id]
    by_trial = {_tags(r)["tune_trial_id"]: r for r in children}
    assert len(children) == len(by_trial) == space.num_samples  # one child per trial
    for _, row in outcome.table.iterrows():
        child = by_trial[row["trial_id"]]
        assert _tags(child)["trial_state"] == row["state"]
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["optim.epochs"] == "3" and float(params["optim.lr"]) == row["param.optim.lr"]
        history = _rest(
            url,
            "metrics/get-history",
            run_id=child["info"]["run_id"],
            metric_key="val_pr_auc_macro",
        )["metrics"]
        assert sorted(m["step"] for m in history) == list(range(1, int(row["epochs"]) + 1))
    artifacts = _rest(url, "artifacts/list", run_id=outcome.parent_run_id)
    assert {"summary", "best_checkpoint", "smoke.yaml"} <= {f["path"] for f in artifacts["files"]}
    # The seed-noise runs sit in the same experiment, under their own parent.
    noise_parents = [r for r in runs if _tags(r).get("tune_role") == "seed_noise"]
    assert len(noise_parents) == 1
    noise_id = noise_parents[0]["info"]["run_id"]
    noise_children = [r for r in runs if _tags(r).get("mlflow.parentRunId") == noise_id]
    assert [int(float(_params(r)["run.seed"])) for r in noise_children] == [1]
    assert experiment["experiment"]["tags"] and any(
        t["key"] == "mlflow.experimentKind" for t in experiment["experiment"]["tags"]
    )


def _params(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"]["params"]}


def test_the_best_configuration_is_retrained_with_other_seeds(search):
    space, outcome, storage = search
    best = outcome.best
    assert best.state == "completed" and outcome.noise is not None
    assert outcome.noise.seeds == (0, 1)
    assert outcome.noise.values[0] == pytest.approx(best.last[space.metric])
    assert np.isfinite(outcome.noise.values[1])
    assert outcome.separation is not None and "seed noise" in outcome.separation.text
    saved = json.loads((storage / "smoke-e2e" / "seed_noise.json").read_text())
    assert saved["noise"]["values"] == pytest.approx(list(outcome.noise.values))
    assert (storage / "smoke-e2e-seed-noise").is_dir()


# ----------------------------------------------------------------------------- fixed lists


def test_run_trials_fixed_list_with_a_diverging_trial(ray_session, tmp_path):
    """The ablation suite's API: every trial to the end, no ASHA; a trial whose loss is not
    finite ends as errored while the others complete."""
    specs = [
        TrialSpec("base/seed0", {"run.seed": 0}, {"arm": "base"}),
        TrialSpec("base/seed1", {"run.seed": 1}, {"arm": "base"}),
        # inputs divided by 1e-38 overflow to inf: the loss is not finite at the first step
        TrialSpec("broken", {"augment.scale": 1e-38}, {"arm": "broken"}),
    ]
    outcome = run_trials(
        specs,
        preset="quick",
        overrides={**load_space(SMOKE).overrides, **TINY, "optim.epochs": 2},
        resources=Resources(cpu=1),
        max_concurrent_trials=2,
        options=RunOptions(
            name="fixed",
            storage=str(tmp_path / "results"),
            mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            max_failures=0,
        ),
    )
    states = {r.name: r.state for r in outcome.records}
    assert states == {"base/seed0": "completed", "base/seed1": "completed", "broken": "errored"}
    broken = next(r for r in outcome.records if r.name == "broken")
    assert "non-finite" in broken.error or "not finite" in broken.error
    seeds = [r for r in outcome.records if r.state == "completed"]
    assert all(int(r.last["epoch"]) == 2 for r in seeds)
    predictions = [
        np.load(ray_adapter.fetch_checkpoint(r.checkpoint, tmp_path) / "test_predictions.npy")
        for r in seeds
    ]
    assert not np.allclose(predictions[0], predictions[1])  # the seed reached the trainer
    from tune.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "fixed")
    children = {r.info.run_name: r for r in tracker.children(outcome.parent_run_id)}
    assert sorted(children) == sorted(states)
    assert children["broken"].info.status == "FAILED"
    assert children["base/seed1"].data.tags["arm"] == "base"


# ----------------------------------------------------------------------------- preflight


def test_gpu_request_on_cpu_cluster_stops_at_once(ray_session, tmp_path):
    space = load_space(SMOKE, overrides=TINY)
    from dataclasses import replace

    space = replace(space, resources=Resources(cpu=1, gpu=1))
    options = RunOptions(name="gpu", storage=str(tmp_path), tracking=False)
    started = time.monotonic()
    with pytest.raises(PreflightError, match=r"asks for 1 CPU, 1 GPU.*0 GPU.*resources.gpu: 0"):
        run_search(space, options)
    assert time.monotonic() - started < 120
    assert not ray_adapter.can_resume(str(tmp_path / "gpu"))  # no trial ever started


def test_unreachable_tracking_server_stops_before_any_trial(ray_session, tmp_path):
    space = load_space(SMOKE, overrides=TINY)
    options = RunOptions(
        name="dead", storage=str(tmp_path), mlflow_uri=f"http://127.0.0.1:{_free_port()}"
    )
    with pytest.raises(TrackingError, match="not reachable"):
        run_search(space, options)
    assert not ray_adapter.can_resume(str(tmp_path / "dead"))


def test_rerun_without_resume_is_refused(search):
    space, outcome, storage = search
    options = RunOptions(name="smoke-e2e", storage=str(storage), tracking=False)
    from tune.search import SearchError

    with pytest.raises(SearchError, match="already holds a search; pass --resume"):
        run_search(space, options)
