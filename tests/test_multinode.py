"""docs/tune.md's multi-node runbook, run for real on this machine's loopback.

A head from `ray start --head`, a second node from `ray start --address` (a second raylet
with its own CPU), an `mlflow server` and a folder standing in for the shared storage; then
`python -m tune.search` and `python -m ablations.run` through their command lines. Token
authentication stays on: the nodes and drivers get the token file, and a node with another
token cannot join. Each run loses its worker node mid-trial, which continues from its
checkpoint on the head; then the driver gets Ctrl-C, and the resume command it printed,
run as printed on a rejoined worker node, completes it. MLflow is checked over REST.

The processes live in a private network namespace (tests/loopback_cluster.py): Ray binds
127.0.0.1 only there, and teardown ends every process of it, even when a test fails.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from loopback_cluster import REPO, LoopbackCluster, NamespaceUnavailable, write_token

pytestmark = pytest.mark.slow

EPOCHS = 5
# The smoke space's tiny model and data, for the ablation suite's trials too.
TINY = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())["overrides"]


def trial_rows(experiment: Path) -> dict[str, list[dict]]:
    """Each trial's reported results so far (its result.json), by trial folder name."""
    rows = {}
    for results in sorted(experiment.glob("*/result.json")):
        with contextlib.suppress(OSError):
            lines = results.read_text().split("\n")[:-1]  # the last is unfinished, or empty
            rows[results.parent.name] = [json.loads(line) for line in lines if line]
    return rows


def wait_for(
    condition: Callable[[], Any], driver: subprocess.Popen, log: Path, what: str, timeout: float
) -> Any:
    """Poll ``condition`` until it returns something true; fail if the driver exits first."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        assert driver.poll() is None, f"the driver ended before {what}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s:\n{tail(log)}"
        time.sleep(0.2)


def finish(driver: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the driver did not end within {timeout:.0f} s:\n{tail(log)}"
        ) from None


def printed_resume(log: Path, prefix: str) -> list[str]:
    """The resume command a driver printed after ``prefix``, as argv (python -m ...)."""
    found = re.findall(rf"{re.escape(prefix)}\s*(python -m .+)", log.read_text())
    assert found, f"no resume command printed:\n{tail(log)}"
    return shlex.split(found[-1])[1:]


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text()[-chars:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    try:
        c = LoopbackCluster(root)
    except NamespaceUnavailable as err:
        pytest.skip(f"needs a private network namespace for a loopback-only cluster: {err}")
    try:
        c.start_mlflow()  # slow to start: it comes up while Ray does
        c.head = c.start_head()
        c.head.wait_started()
        c.worker = c.start_worker()
        wrong = {**c.env, "RAY_AUTH_TOKEN_PATH": str(write_token(root / "another_token"))}
        intruder = c.start_worker(env=wrong)
        c.worker.wait_started()
        c.wait_mlflow()
        assert intruder.proc.wait(timeout=180) != 0, "a node with a wrong token joined"
        assert "InvalidAuthToken" in intruder.log.read_text()
        yield c
    finally:
        c.close()


@dataclass
class Disrupted:
    """What happened to one run: where its trials ran, which one lost its node."""

    experiment: Path
    head: str
    lost_node: str
    rejoined_node: str
    lost_trial: str
    seen_epoch: int  # its last epoch seen before the kill; another may finish before it lands
    rows: dict[str, list[dict]]


def run_disrupted(
    c: LoopbackCluster, argv: list[str], experiment: Path, hint: str, resume_env=None
) -> Disrupted:
    """Run a driver; kill the worker node once one of its trials has a checkpoint; Ctrl-C the
    driver once that trial reported again elsewhere; rejoin a worker node; run the printed
    resume command to the end."""
    driver, log = c.driver(argv, "driver")
    lost_node = c.worker.node_id

    def trial_on_worker():
        for name, rows in trial_rows(experiment).items():
            last = rows[-1] if rows else {}
            if last.get("node_id") == lost_node and not last.get("fit_finished"):
                # room for a report after the restore, and two more epochs after Ctrl-C
                if last["epoch"] <= EPOCHS - 3:
                    return name, int(last["epoch"])
        return None

    lost_trial, seen_epoch = wait_for(
        trial_on_worker, driver, log, "checkpoint of a trial on the worker node", 300
    )
    # While the search runs on both nodes: nothing listens beyond 127.0.0.1.
    sockets = c.ns.listening()
    assert sockets and all(a in ("127.0.0.1", "::ffff:127.0.0.1") for a, _ in sockets), sockets
    assert c.worker.kill() >= 3  # ray start, raylet, the trial's worker process at least

    def continued():
        rows = trial_rows(experiment).get(lost_trial, [])
        return any(r.get("restored_from_epoch", 0) > 0 for r in rows)

    wait_for(continued, driver, log, "report of the lost trial after its restore", 300)
    driver.send_signal(signal.SIGINT)  # Ctrl-C
    assert finish(driver, log, 120) == 130, tail(log)
    resume = printed_resume(log, hint)

    c.worker = c.start_worker()  # the lost machine comes back
    c.worker.wait_started()
    again, again_log = c.driver(resume, "resumed", env=resume_env)
    assert finish(again, again_log, 420) == 0, tail(again_log)
    rows = trial_rows(experiment)
    return Disrupted(
        experiment, c.head.node_id, lost_node, c.worker.node_id, lost_trial, seen_epoch, rows
    )


def check_trials(run: Disrupted, count: int) -> None:
    """Every trial trained every epoch, on both nodes; the lost one from a checkpoint; none
    trained an epoch twice but for one that the Ctrl-C may have raced."""
    assert len(run.rows) == count
    nodes = {r["node_id"] for rows in run.rows.values() for r in rows}
    assert {run.head, run.lost_node} <= nodes
    # the resumed driver joined the cluster too, rather than starting a Ray of its own
    assert nodes <= {run.head, run.lost_node, run.rejoined_node}
    repeats = 0
    for name, rows in run.rows.items():
        epochs = [int(r["epoch"]) for r in rows]
        assert sorted(set(epochs)) == list(range(1, EPOCHS + 1)), (name, epochs)
        assert rows[-1]["fit_finished"] == 1, name
        for previous, row in itertools.pairwise(rows):
            if row["epoch"] != previous["epoch"] + 1:
                # A Ctrl-C that lands while an epoch's report is in flight: Tune logged the
                # result but saved its state before the epoch's checkpoint was registered, so
                # the resume trains that epoch again, from the checkpoint just before it.
                assert row["epoch"] == previous["epoch"], (name, epochs)
                assert row["iterations_since_restore"] == 1, (name, epochs)
                assert row["restored_from_epoch"] == row["epoch"] - 1, (name, epochs)
                repeats += 1
    assert repeats <= 1  # one Ctrl-C, one report it can race
    lost = run.rows[run.lost_trial]
    before = [r for r in lost if r["node_id"] == run.lost_node]
    after = lost[len(before) :]
    assert len(before) >= run.seen_epoch and all(r["restored_from_epoch"] == 0 for r in before)
    assert after and all(r["node_id"] != run.lost_node for r in after)
    # continued from the last epoch it reported on the lost node, none trained twice
    assert after[0]["restored_from_epoch"] == len(before)


def check_mlflow(c: LoopbackCluster, experiment: str, trial_ids: set[str]) -> None:
    """One parent run, finished; exactly one child per trial, completed, with every epoch."""
    found = c.rest("experiments/get-by-name", experiment_name=experiment)
    exp_id = found["experiment"]["experiment_id"]
    runs = c.rest("runs/search", {"experiment_ids": [exp_id], "max_results": 1000})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs}
    parents = [r for r in runs if tags[r["info"]["run_id"]].get("tune_role") == "search"]
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent = parents[0]["info"]["run_id"]
    children = [
        r["info"]["run_id"]
        for r in runs
        if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == parent
    ]
    assert sorted(tags[r]["tune_trial_id"] for r in children) == sorted(trial_ids)
    for run_id in children:
        assert tags[run_id]["trial_state"] == "completed"
        history = c.rest("metrics/get-history", run_id=run_id, metric_key="val_pr_auc_macro")
        assert {int(m["step"]) for m in history["metrics"]} == set(range(1, EPOCHS + 1))


def test_search_on_a_loopback_cluster(cluster, tmp_path):
    raw = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    raw.update(name="multinode", num_samples=4, max_concurrent_trials=2)
    raw["asha"] = {"max_t": EPOCHS, "grace_period": EPOCHS, "reduction_factor": 2}
    space = tmp_path / "multinode.yaml"
    space.write_text(yaml.safe_dump(raw))
    storage = cluster.root / "shared" / "ray_results"  # the NFS folder of the runbook
    argv = ["-m", "tune.search", "--space", str(space), "--address", cluster.address]
    argv += ["--storage", str(storage), "--mlflow-uri", cluster.mlflow_url]
    argv += ["--keep-checkpoints", "1"]

    run = run_disrupted(cluster, argv, storage / "multinode", "continue it with:")

    check_trials(run, count=4)
    with open(storage / "multinode" / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert {row["state"] for row in table} == {"completed"} and len(table) == 4
    check_mlflow(cluster, "multinode", {row["trial_id"] for row in table})


def test_ablation_suite_on_a_loopback_cluster(cluster, tmp_path):
    storage = cluster.root / "shared" / "ablations"
    results = tmp_path / "ablation-results"
    argv = ["-m", "ablations.run", "mixup", "--seeds", "1", "--bootstrap", "100"]
    argv += ["--name", "suite", "--results-dir", str(results), "--storage", str(storage)]
    argv += ["--address", cluster.address, "--mlflow-uri", cluster.mlflow_url]
    for key, value in {**TINY, "optim.epochs": EPOCHS}.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]

    # The suite's resume line names no --address: the runbook exports RAY_ADDRESS for it.
    resume_env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    run = run_disrupted(cluster, argv, storage / "suite", "continue it with:", resume_env)

    check_trials(run, count=2)  # reference (mixup on) and variant (plain recipe), one seed
    with open(results / "suite" / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(row["arm"] for row in table) == ["mixup-reference", "submission2"]
    assert {row["status"] for row in table} == {"ok"}
    assert "INTERRUPTED" not in (results / "suite" / "report.md").read_text()
    ids = {rows[-1]["trial_id"] for rows in run.rows.values()}
    check_mlflow(cluster, "suite", ids)
