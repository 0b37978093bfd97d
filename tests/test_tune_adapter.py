"""Pieces of the Ray adapter and the summary that need no Ray session: trial states,
resource feasibility, the pending-forever watchdog, the ranked table and the plot."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from tune import ray_adapter
from tune.preflight import PreflightError, check_resources, check_storage
from tune.ray_adapter import ClusterError, FeasibilityWatchdog, TrialRecord, fits_somewhere
from tune.spec import TrialSpec
from tune.summary import top_k_text, trial_table, write_summary


def test_trial_state_from_the_last_result():
    assert ray_adapter.trial_state({"fit_finished": 1, "done": True}, None) == "completed"
    assert ray_adapter.trial_state({"epoch": 1, "done": True}, None) == "stopped_early"
    assert ray_adapter.trial_state({"epoch": 2}, None) == "unfinished"
    assert ray_adapter.trial_state({"fit_finished": 1}, RuntimeError("x")) == "errored"


def test_a_trial_must_fit_on_one_node():
    nodes = [{"CPU": 4.0, "GPU": 0.0}, {"CPU": 1.0, "GPU": 1.0}]
    assert fits_somewhere({"CPU": 1, "GPU": 0.5}, nodes)
    assert fits_somewhere({"CPU": 4, "GPU": 0}, nodes)
    assert not fits_somewhere({"CPU": 2, "GPU": 1}, nodes)  # 5 CPUs and 1 GPU in total
    assert not fits_somewhere({"CPU": 1, "GPU": 1}, [])


def test_resource_preflight_names_the_fix():
    cpu_only = [{"CPU": 2.0}]
    check_resources({"cpu": 1, "gpu": 0}, cpu_only, "x.yaml")
    with pytest.raises(PreflightError, match=r"x.yaml: a trial asks for 1 CPU, 0.5 GPU.*gpu: 0"):
        check_resources({"cpu": 1, "gpu": 0.5}, cpu_only, "x.yaml")
    with pytest.raises(PreflightError, match="lower resources.cpu"):
        check_resources({"cpu": 8, "gpu": 0}, cpu_only, "x.yaml")


def test_watchdog_stops_a_search_whose_trials_can_never_start(monkeypatch):
    nodes = [{"CPU": 2.0, "GPU": 1.0}]
    monkeypatch.setattr(ray_adapter.callbacks, "node_resources", lambda: nodes)
    watchdog = FeasibilityWatchdog({"cpu": 1, "gpu": 1}, every_s=0)
    pending = [SimpleNamespace(status="PENDING")]
    watchdog.on_step_begin(0, pending)  # the GPU node is there: fine
    nodes[:] = [{"CPU": 2.0, "GPU": 0.0}]  # ... and now it is gone
    watchdog.on_step_begin(1, [SimpleNamespace(status="RUNNING")])  # nothing waits: fine
    with pytest.raises(ClusterError, match="no node of the Ray cluster can run a trial"):
        watchdog.on_step_begin(2, pending)


def test_storage_preflight(tmp_path):
    assert check_storage(str(tmp_path / "new" / "dir")) == str(tmp_path / "new" / "dir")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PreflightError, match="not writable.*--storage"):
        check_storage(str(blocker / "sub"))


def _record(trial_id, state, curve, params, final=None):
    history = pd.DataFrame({"epoch": range(1, len(curve) + 1), "val_pr_auc_macro": curve})
    last = {"epoch": len(curve), "val_pr_auc_macro": curve[-1], **(final or {})}
    spec = TrialSpec("", params)
    return TrialRecord(trial_id, f"t_{trial_id}", state, spec, last, history, None, None, "")


@pytest.fixture()
def records():
    return [
        _record("a", "stopped_early", [0.30], {"optim.lr": 0.1}),
        _record(
            "b", "completed", [0.1, 0.2, 0.25], {"optim.lr": 0.01}, {"kept_val_pr_auc_macro": 0.3}
        ),
        _record(
            "c", "completed", [0.1, 0.22, 0.21], {"optim.lr": 0.02}, {"kept_val_pr_auc_macro": 0.2}
        ),
        _record("d", "errored", [0.05], {"optim.lr": 9.0}),
    ]


def test_table_ranks_completed_trials_first(records):
    table = trial_table(records, "val_pr_auc_macro", "max")
    assert list(table["trial_id"]) == ["b", "c", "a", "d"]
    assert table.loc[1, "best_val_pr_auc_macro"] == 0.22  # best over epochs, not the last
    assert list(table["param.optim.lr"]) == [0.01, 0.02, 0.1, 9.0]
    text = top_k_text(table, "val_pr_auc_macro", 2)
    assert "t_b" in text and "t_c" in text and "t_a" not in text
    low = trial_table(records, "val_pr_auc_macro", "min")
    assert list(low["trial_id"][:2]) == ["c", "b"]


def test_summary_files_of_fixed_trials_have_no_importances(records, tmp_path):
    summary = write_summary(records, "val_pr_auc_macro", "max", tmp_path)
    assert [p.name for p in summary.files] == ["trials.csv", "search.png"]
    assert not (tmp_path / "importances.csv").exists()
    assert pd.read_csv(tmp_path / "trials.csv")["trial_id"].tolist() == ["b", "c", "a", "d"]
    assert summary.importances.empty and "no Optuna study" in summary.importance_note
    assert (tmp_path / "search.png").stat().st_size > 1000


def test_the_ray_token_is_made_owner_only(tmp_path, monkeypatch):
    from tune.ray_adapter import cluster

    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)  # what Ray leaves with the usual umask
    assert cluster.keep_token_private(token)
    assert token.stat().st_mode & 0o777 == 0o600
    assert not cluster.keep_token_private(token)  # already private: nothing to do
    assert not cluster.keep_token_private(tmp_path / "missing")

    # connect() fixes the token Ray reads, wherever RAY_AUTH_TOKEN_PATH points.
    token.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(cluster.ray, "init", lambda **kwargs: None)
    assert cluster.connect(None, num_cpus=1) is True
    assert token.stat().st_mode & 0o777 == 0o600
