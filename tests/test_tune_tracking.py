"""MLflow tracking against a local sqlite store: one child per trial, states, reconciliation."""

from __future__ import annotations

import socket
import sqlite3
import time

import pandas as pd
import pytest

from tune import ray_adapter
from tune.engine import reconcile_children
from tune.outbox import Courier, Outbox, settle
from tune.ray_adapter import TrialRecord
from tune.search import RunOptions, run_trials
from tune.spec import TrialSpec
from tune.tracking import STATE_TAG, Tracker, TrackingError, redact, resolve_uri


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # Creating a sqlite store runs MLflow's migrations (seconds): one store per module.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def tracker(store, request):
    return Tracker(store, request.node.name)


def _record(trial_id: str, state: str) -> TrialRecord:
    return TrialRecord(
        trial_id=trial_id,
        name=f"trial_{trial_id}",
        state=state,
        spec=TrialSpec("", {"optim.lr": 0.01}),
        last={},
        history=pd.DataFrame(),
        checkpoint=None,
        error=None,
        path="",
    )


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_uri(None) == "http://127.0.0.1:5000"
    (tmp_path / "x").mkdir()
    assert resolve_uri("sqlite:///x/m.db") == f"sqlite:///{tmp_path / 'x' / 'm.db'}"


def test_child_run_is_found_again_not_duplicated(tracker):
    parent = tracker.start_parent("search", {"space": "smoke"})
    params = {f"p{i}": i for i in range(150)}  # more than one MLflow batch
    first = tracker.child_run(parent, "abc", "trial_abc", params)
    tracker.log_metrics(first, {"val_pr_auc_macro": 0.5, "epoch": 1}, step=1)
    # a retried trial that lost its checkpoint asks again: same run, no second child
    again = tracker.child_run(parent, "abc", "trial_abc", params)
    assert again == first
    other = tracker.child_run(parent, "xyz", "trial_xyz", {"p0": 0})
    children = tracker.children(parent)
    assert sorted(r.info.run_id for r in children) == sorted([first, other])
    run = tracker.client.get_run(first)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert len(run.data.params) == 150
    history = tracker.client.get_metric_history(first, "val_pr_auc_macro")
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]


def test_states_end_runs(tracker):
    parent = tracker.start_parent("search", {})
    expected = {"completed": "FINISHED", "stopped_early": "FINISHED", "errored": "FAILED"}
    for state, status in expected.items():
        run_id = tracker.child_run(parent, state, state, {})
        tracker.finish(run_id, state)
        run = tracker.client.get_run(run_id)
        assert run.data.tags[STATE_TAG] == state and run.info.status == status
    with pytest.raises(ValueError):
        tracker.finish(run_id, "paused")


def test_reconcile_adds_missing_children_and_fixes_states(tracker):
    parent = tracker.start_parent("search", {})
    kept = tracker.child_run(parent, "t1", "trial_t1", {"optim.lr": 0.01})
    records = [
        _record("t1", "stopped_early"),
        _record("t2", "errored"),
        _record("t3", "unfinished"),
    ]
    reconcile_children(tracker, parent, records)
    reconcile_children(tracker, parent, records)  # idempotent
    children = {r.data.tags["tune_trial_id"]: r for r in tracker.children(parent)}
    assert sorted(children) == ["t1", "t2", "t3"]
    assert children["t1"].info.run_id == kept
    assert children["t1"].data.tags[STATE_TAG] == "stopped_early"
    assert children["t2"].data.tags[STATE_TAG] == "errored"
    assert STATE_TAG not in children["t3"].data.tags  # still running: a resume ends it


def test_tracker_pickles_without_its_client(tracker):
    import pickle

    tracker.experiment_id()
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy.uri == tracker.uri and copy._client is None
    assert copy.experiment_id() == tracker.experiment_id()


def test_unreachable_server_fails_fast_with_clear_message():
    with socket.socket() as s:  # a free port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tracker = Tracker(f"http://127.0.0.1:{port}", "nowhere")
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port} is not reachable.*--mlflow-uri"):
        tracker.check_reachable(timeout_s=2)
    assert time.monotonic() - started < 30


def test_experiments_open_on_the_runs_table_and_the_hint_says_how(tracker, store):
    from tune.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    experiment_id = tracker.experiment_id()
    experiment = tracker.client.get_experiment(experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    command, address = tracker.browse_hint()
    assert f"mlflow ui --backend-store-uri {tracker.uri} --host 127.0.0.1" in command
    assert address.strip() == f"then open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    # An experiment created elsewhere, without the tag, gets it when a search reuses it.
    other = tracker.client.create_experiment("made-elsewhere")
    assert Tracker(store, "made-elsewhere").experiment_id() == other
    assert tracker.client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    server = Tracker("http://127.0.0.1:5999", "x")
    server._experiment_id = "7"
    assert server.browse_hint() == ["MLflow runs: http://127.0.0.1:5999/#/experiments/7/runs"]


def test_bad_sqlite_uris_are_refused_in_one_line_before_ray_starts(tmp_path, monkeypatch):
    started = []  # the preflight runs beside Ray's start: its errors come after it
    monkeypatch.setattr(ray_adapter, "connect", lambda *a, **k: started.append(a) or False)
    missing = tmp_path / "missing" / "deeper"
    for uri, said in (
        ("sqlite:///", "needs a file"),
        (f"sqlite:///{missing}/mlflow.db", f"folder {missing} does not exist; create it"),
    ):
        options = RunOptions(name="bad", storage=str(tmp_path / "results"), mlflow_uri=uri)
        with pytest.raises(TrackingError, match=said) as caught:
            run_trials([], options=options)
        assert "\n" not in str(caught.value)
    assert not started
    assert not (tmp_path / "missing").exists()


def test_credentials_are_split_off_redacted_and_never_pickled():
    import pickle

    from tune.trial import TrialContext

    uri = "http://alice:p%40ss@mlflow.example:5000/"
    assert redact(uri) == "http://alice:***@mlflow.example:5000/"
    assert redact("https://h/x?token=abc&a=1") == "https://h/x?token=***&a=1"
    tracker = Tracker(uri, "e")
    assert tracker.uri == "http://mlflow.example:5000/"
    assert tracker.auth == {
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": "p@ss",
    }
    assert b"p@ss" not in pickle.dumps(tracker)  # Tune writes its callbacks to tuner.pkl
    context = pickle.loads(pickle.dumps(TrialContext("quick", {}, "m", tracker=tracker,
                                                     parent_run_id="p")))  # fmt: skip
    assert context.open_tracker().auth == tracker.auth  # the trials get them in memory
    assert "p@ss" not in repr(context)
    resumed = Tracker("http://mlflow.example:5000/", "e")
    resumed.use_credentials_of("http://other:x@elsewhere:5000/")
    assert resumed.auth == {}
    resumed.use_credentials_of(uri)
    assert resumed.auth == tracker.auth


def _outbox_of_a_trial(trial_id: str) -> Outbox:
    outbox = Outbox(trial_id)
    outbox.open(f"trial_{trial_id}", {"optim.lr": 0.01}, {"arm": "a"})
    outbox.metrics({"val_pr_auc_macro": 0.5, "epoch": 1}, step=1)
    outbox.metrics({"val_pr_auc_macro": 0.6, "epoch": 2}, step=2)
    return outbox


def test_an_outbox_sent_again_from_a_checkpoint_doubles_nothing(tracker, tmp_path):
    parent = tracker.start_parent("search", {})
    outbox = _outbox_of_a_trial("t9")
    outbox.save(tmp_path)  # the checkpoint's copy: nothing acknowledged yet
    courier = Courier(tracker, parent)
    courier.add(outbox)
    assert courier.send(wait_s=60) and outbox.pending == 0
    # The driver, once the trial has ended, sends the checkpoint's copy again.
    again = Courier(tracker, parent)
    settle(again, "t9", "trial_t9", tmp_path, "completed")
    assert again.drain()
    [child] = tracker.children(parent)
    history = tracker.client.get_metric_history(child.info.run_id, "val_pr_auc_macro")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6)]
    assert child.data.params["optim.lr"] == "0.01" and child.data.tags["arm"] == "a"
    assert tracker.client.get_run(child.info.run_id).data.tags[STATE_TAG] == "completed"


def test_a_locked_store_costs_a_trial_seconds_and_loses_nothing(tracker, store):
    parent = tracker.start_parent("search", {})
    outbox = _outbox_of_a_trial("t10")
    courier = Courier(tracker, parent)
    courier.add(outbox)
    lock = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the store (MLflow waits 20 s)
    try:
        started = time.monotonic()
        assert not courier.send(wait_s=1)
        assert time.monotonic() - started < 10
        outbox.finish("completed")  # journaled while the store is locked
    finally:
        lock.execute("ROLLBACK")
    assert courier.drain(wait_s=60)
    [child] = tracker.children(parent)
    history = tracker.client.get_metric_history(child.info.run_id, "val_pr_auc_macro")
    assert [m.step for m in history] == [1, 2]
    assert child.data.tags[STATE_TAG] == "completed"
