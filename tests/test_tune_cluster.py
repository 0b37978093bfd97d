"""A search on a simulated 3-node Ray cluster with fake GPUs: trials spread over nodes, a
whole-GPU trial never shares its GPU, and losing a node mid-search costs only a retry from
the lost trials' checkpoints."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tune import ray_adapter
from tune.search import RunOptions, run_search
from tune.space import Asha, Resources, load_space

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # GPUs here are only resource labels: no CUDA is needed, trials train on CPU.
    c = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "num_gpus": 1})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    ray_adapter.disconnect()  # the driver leaves first: Cluster refuses to kill its node
    c.shutdown()


def _segments(record) -> list[tuple[str, str, float, float]]:
    """(node, gpu, start, end) for each stretch a trial ran on one node."""
    out: list[tuple[str, str, float, float]] = []
    for _, row in record.history.iterrows():
        start = float(row["timestamp"]) - float(row["time_this_iter_s"])
        key = (row["node_id"], str(row["gpu_ids"]))
        if out and out[-1][:2] == key and start >= out[-1][2]:
            out[-1] = (*key, out[-1][2], float(row["timestamp"]))
        else:
            out.append((*key, start, float(row["timestamp"])))
    return out


def test_search_on_simulated_cluster_survives_a_lost_node(cluster, tmp_path):
    c, workers = cluster
    space = load_space(REPO / "search_spaces" / "smoke.yaml", overrides={"data.limit_tracks": 32})
    space = replace(
        space,
        num_samples=4,
        max_concurrent_trials=3,
        resources=Resources(cpu=1, gpu=1),
        asha=Asha(max_t=5, grace_period=5, reduction_factor=2),  # no early stops
    )
    storage = tmp_path / "results"
    exp = storage / space.name
    by_node_id = {w.node_id: w for w in workers}
    removed: list[tuple[str, int, str]] = []
    done = threading.Event()

    def remove_a_busy_worker() -> None:
        # Once a trial on a worker node has a checkpoint, take that node away.
        while not done.is_set():
            for results in exp.glob("trial_*/result.json"):
                rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
                last = rows[-1] if rows else {}
                node = by_node_id.get(last.get("node_id"))
                if node is not None and not last.get("fit_finished") and last["epoch"] < 4:
                    c.remove_node(node)
                    removed.append((last["trial_id"], int(last["epoch"]), node.node_id))
                    return
            time.sleep(0.2)

    remover = threading.Thread(target=remove_a_busy_worker, daemon=True)
    remover.start()
    try:
        outcome = run_search(
            space, RunOptions(name=space.name, storage=str(storage), tracking=False)
        )
    finally:
        done.set()
        remover.join(timeout=10)

    assert removed, "no trial ran on a worker node long enough to lose it"
    assert [r.state for r in outcome.records] == ["completed"] * 4
    # trials ran on more than one node
    nodes = {n for r in outcome.records for n in r.history["node_id"]}
    assert len(nodes) >= 2
    # a whole-GPU trial holds one GPU, and concurrent trials never share one
    segments = [(r.trial_id, *s) for r in outcome.records for s in _segments(r)]
    assert all(gpu not in ("", "nan") and "," not in gpu for _, _, gpu, _, _ in segments)
    for i, (trial_a, node_a, gpu_a, start_a, end_a) in enumerate(segments):
        for trial_b, node_b, gpu_b, start_b, end_b in segments[i + 1 :]:
            overlap = min(end_a, end_b) - max(start_a, start_b)
            if trial_a != trial_b and overlap > 1.0:  # timestamps have 1 s resolution
                assert (node_a, gpu_a) != (node_b, gpu_b)
    # the trial on the lost node continued elsewhere from its checkpoint
    lost_trial, lost_epoch, lost_node = removed[0]
    record = next(r for r in outcome.records if r.trial_id == lost_trial)
    after = record.history[record.history["restored_from_epoch"] > 0]
    assert len(after) and (after["node_id"] != lost_node).all()
    assert after["restored_from_epoch"].min() >= 1
    assert list(record.history["epoch"]).count(1) == 1
    assert int(record.history["epoch"].iloc[-1]) == 5
