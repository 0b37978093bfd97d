"""A second Ctrl-C, which cuts Ray Tune's own shutdown short: Tune's ``fit`` raises
KeyboardInterrupt instead of returning its results. The search and the suite must still exit
130, print the command that continues them, and close their MLflow runs, which a resume
reopens. The KeyboardInterrupt is raised where Tune would raise it (``run_job``), because a
real second SIGINT cannot be timed reliably into Tune's shutdown."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest
import ray

from ablations import cli as suite_cli
from tune import cli as search_cli
from tune import ray_adapter

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def second_ctrl_c(monkeypatch):
    calls = []

    def cut_short(job, **_):
        calls.append(job)
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_adapter, "run_job", cut_short)
    return calls


def runs_of(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([found.experiment_id])


def resume_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "continue it with: " in line]
    assert len(lines) == 1, err
    return lines[0].split("continue it with: ", 1)[1]


def test_a_second_ctrl_c_in_the_search(second_ctrl_c, small_synth, tmp_path, capsys):
    storage, uri = tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "my-copy.yaml"  # named smoke inside: the resume needs that name
    space.write_text((REPO / "search_spaces" / "smoke.yaml").read_text())
    code = search_cli.main(
        ["--space", str(space), "--data", str(small_synth),
         "--budget", "full", "--storage", str(storage), "--mlflow-uri", uri]
    )  # fmt: skip

    err = capsys.readouterr().err
    assert second_ctrl_c and code == 130, err
    # the space's own name, and the storage: all a resume needs besides its manifest
    assert resume_line(err) == f"python -m tune.search --resume --name smoke --storage {storage}"
    assert (storage / "smoke" / "search.json").is_file()
    (parent,) = runs_of(uri, "smoke")
    assert parent.data.tags["tune_role"] == "search" and parent.info.status == "FAILED"
    assert not ray.is_initialized()  # the search's own Ray is shut down


def test_a_second_ctrl_c_in_the_suite(second_ctrl_c, small_synth, tmp_path, capsys):
    results, uri = tmp_path / "suites", f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = suite_cli.main(
        ["mixup", "--seeds", "1", "--data", str(small_synth), "--budget", "quick",
         "--results-dir", str(results), "--mlflow-uri", uri]
    )  # fmt: skip

    err = capsys.readouterr().err
    assert second_ctrl_c and code == 130, err
    command = resume_line(err)
    found = re.fullmatch(
        rf"python -m ablations\.run --resume --name (\S+) --results-dir {re.escape(str(results))}",
        command,
    )
    assert found, command
    name = found.group(1)
    assert (results / name / "plan.json").is_file()  # the run that --resume --name continues
    runs = runs_of(uri, name)
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    assert not ray.is_initialized()
