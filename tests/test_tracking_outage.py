"""Tracking is never on the critical path: the MLflow server stops in the middle of a
search and comes back; the search runs on, and in the end every trial has exactly one child
run with its whole per-epoch history. The server sits behind a basic-auth gate reached
through ``http://user:password@``: every process authenticates, and the password appears
in no output and no file of the experiment."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow_server import AuthGate, MlflowServer, rest
from ray import tune as ray_tune

from tune.search import RunOptions, TrialSpec, run_trials
from tune.space import Resources, load_space
from tune.tracking import TrackingError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "search_spaces" / "smoke.yaml"
TINY = {"data.limit_tracks": 16, "data.num_workers": 0, "optim.epochs": 3}
USER, PASSWORD = "alice", "s3cret-pw-7d1f"
AUTH = f"{USER}:{PASSWORD}"
# The server object cannot go into Tune's pickled state: the callback finds it here.
OUTAGE: dict = {}


class Outage(ray_tune.Callback):
    """Stops the server once the first trial has reported its first epoch; starts it again
    (and waits for it) when the second trial ends. Counts the reports made while down."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        OUTAGE["reports"] = OUTAGE.get("reports", 0) + 1
        if OUTAGE.get("down"):
            OUTAGE["while_down"] = OUTAGE.get("while_down", 0) + 1
        if OUTAGE["reports"] == 1:
            OUTAGE["server"].stop()
            OUTAGE["down"] = True

    def on_trial_complete(self, iteration, trials, trial, **info):
        OUTAGE["ended"] = OUTAGE.get("ended", 0) + 1
        if OUTAGE["ended"] == 2 and OUTAGE.get("down"):
            OUTAGE["server"].start().wait_ready()
            OUTAGE["down"] = False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    gate = AuthGate(server.address, USER, PASSWORD)
    yield server, gate
    gate.close()
    server.stop()


SPECS = [TrialSpec(f"seed{i}", {"run.seed": i}) for i in range(3)]


def _run(options: RunOptions):
    return run_trials(
        SPECS,
        preset="quick",
        overrides={**load_space(SMOKE).overrides, **TINY},
        resources=Resources(cpu=1),
        max_concurrent_trials=1,
        options=options,
    )


@pytest.fixture(scope="module")
def outage(server, ray_session, tmp_path_factory):
    mlflow, gate = server
    mlflow.wait_ready()
    OUTAGE.clear()
    OUTAGE["server"] = mlflow
    storage = tmp_path_factory.mktemp("results")
    options = RunOptions(
        name="outage",
        storage=str(storage),
        mlflow_uri=gate.uri(USER, PASSWORD),
        max_failures=0,
        extra_callbacks=[Outage()],
    )
    outcome = _run(options)
    return outcome, options, storage


def _children(url: str, name: str, parent: str) -> dict[str, dict]:
    experiment = rest(url, "experiments/get-by-name", auth=AUTH, experiment_name=name)
    exp_id = experiment["experiment"]["experiment_id"]
    runs = rest(url, "runs/search", {"experiment_ids": [exp_id], "max_results": 1000}, auth=AUTH)
    tags = [({t["key"]: t["value"] for t in r["data"].get("tags", [])}, r) for r in runs["runs"]]
    children = [(t, r) for t, r in tags if t.get("mlflow.parentRunId") == parent]
    by_trial = {t["tune_trial_id"]: r for t, r in children}
    assert len(by_trial) == len(children), "a trial has more than one child run"
    return by_trial


def _history(url: str, run_id: str, key: str) -> list[int]:
    found = rest(url, "metrics/get-history", auth=AUTH, run_id=run_id, metric_key=key)
    return sorted(m["step"] for m in found.get("metrics", []))


def test_an_outage_mid_search_loses_and_doubles_nothing(outage, server):
    outcome, _, _ = outage
    mlflow, gate = server
    assert OUTAGE["while_down"] >= 4, OUTAGE  # trials trained and reported while it was down
    assert not OUTAGE["down"]
    assert [r.state for r in outcome.records] == ["completed"] * len(SPECS)
    url = gate.uri(USER, PASSWORD).replace(f"{AUTH}@", "")
    children = _children(url, "outage", outcome.parent_run_id)
    assert sorted(children) == sorted(r.trial_id for r in outcome.records)
    for record in outcome.records:
        run = children[record.trial_id]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["trial_state"] == "completed" and run["info"]["status"] == "FINISHED"
        assert _history(url, run["info"]["run_id"], "val_pr_auc_macro") == [1, 2, 3]
        assert _history(url, run["info"]["run_id"], "train_loss") == [1, 2, 3]
        assert _history(url, run["info"]["run_id"], "kept_test_pr_auc_macro") == [3]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["run.seed"] == str(record.spec.overrides["run.seed"])
    parent = rest(url, "runs/get", auth=AUTH, run_id=outcome.parent_run_id)["run"]
    assert parent["info"]["status"] == "FINISHED"
    assert gate.refused == 0  # the driver and every trial sent the credentials


def test_the_password_is_in_no_output_and_no_file(outage, server, capfd):
    outcome, _, storage = outage
    _, gate = server
    out, err = capfd.readouterr()
    assert PASSWORD not in out + err
    files = [p for p in (storage / "outage").rglob("*") if p.is_file()]
    assert any(p.name == "search.json" for p in files)
    leaks = [str(p) for p in files if PASSWORD.encode() in p.read_bytes()]
    assert not leaks
    recorded = json.loads((storage / "outage" / "search.json").read_text())["mlflow_uri"]
    assert recorded == f"http://127.0.0.1:{gate.port}"  # a resume is given them again


def test_a_resume_needs_the_credentials_again_and_works_with_them(outage, server, monkeypatch):
    outcome, options, storage = outage
    _, gate = server
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)  # what the first run left in this process
    resume = replace(options, resume=True, extra_callbacks=[])
    with pytest.raises(TrackingError, match="not reachable"):
        _run(replace(resume, mlflow_uri=None))
    refused = gate.refused
    assert refused >= 1
    again = _run(resume)
    assert again.parent_run_id == outcome.parent_run_id
    assert gate.refused == refused
    url = gate.uri(USER, PASSWORD).replace(f"{AUTH}@", "")
    children = _children(url, "outage", outcome.parent_run_id)
    for run in children.values():
        assert _history(url, run["info"]["run_id"], "val_pr_auc_macro") == [1, 2, 3]
