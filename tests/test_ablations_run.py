"""The suite end to end through Ray Tune, at a toy budget: interruption, resume, failures."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from ray import tune as ray_tune

from ablations import run
from ablations.effects import FAILED, OK, UNFINISHED
from ablations.suite import ABLATIONS, Ablation
from ablations.trials import trial_name
from tune.search import RunOptions

pytestmark = pytest.mark.slow

TOY = {
    "optim.epochs": 1,
    "optim.switch_epoch": None,
    "data.limit_tracks": 40,
    "optim.batch_size": 8,
}


class InterruptAfterFirstTrial(ray_tune.Callback):
    """Ctrl-C, as a user would press it, once the first trial has completed.

    Tune pickles its callbacks with the experiment and restores them on resume, so whether
    it already fired is kept in a file, not in the object.
    """

    def __init__(self, marker) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


def _result_rows(experiment: Path, arm: str, seed: int) -> list[dict]:
    """Every report Tune filed for one trial, in order."""
    (folder,) = experiment.glob(f"{trial_name(arm, seed)}_*")
    path = folder / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_interrupted_suite_resumes_and_reports_a_failed_variant(small_synth, tmp_path, monkeypatch):
    # A variant whose every trial fails inside the trainer (its split folder does not exist),
    # while its config and model are fine, so only training can find out.
    broken = Ablation(
        "broken-splits",
        component="split files",
        change="reads the splits from a folder that does not exist",
        reference="submission2",
        variant={"data.splits_dir": str(tmp_path / "no-such-splits")},
    )
    monkeypatch.setitem(ABLATIONS, broken.name, broken)
    settings = run.SuiteSettings(
        names=["mixup", broken.name], seeds=2, data=str(small_synth), overrides=TOY, n_boot=200
    )
    results = tmp_path / "results"

    def options(resume: bool, callbacks: list) -> RunOptions:
        return RunOptions(
            name="toy",
            storage=str(results),
            resume=resume,
            mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            max_failures=0,
            verbose=0,
            extra_callbacks=callbacks,
        )

    first = run.run_suite(
        settings,
        options(False, [InterruptAfterFirstTrial(tmp_path / "interrupted")]),
        results,
        log=lambda m: None,
    )
    assert first.interrupted
    states = {(t.arm, t.seed): t.status for t in first.trials}
    assert OK in states.values() and UNFINISHED in states.values()
    run_dir = results / "toy"
    assert "INTERRUPTED" in (run_dir / "report.md").read_text()
    finished = {
        trial_name(t.arm, t.seed): len(_result_rows(results / "toy", t.arm, t.seed))
        for t in first.trials
        if t.status == OK
    }

    # --resume takes the settings from plan.json, not from the command line.
    again = run.run_suite(
        run.SuiteSettings(names=[]), options(True, []), results, log=lambda m: None
    )
    assert not again.interrupted
    # What had finished was not trained again. (Tune may still restart a trial whose last
    # report it had not filed when the interrupt came; it then resumes from the final
    # checkpoint and trains no epoch.)
    for t in again.trials:
        if trial_name(t.arm, t.seed) in finished:
            rows = _result_rows(results / "toy", t.arm, t.seed)
            later = rows[finished[trial_name(t.arm, t.seed)] :]
            assert all(r["restored_from_epoch"] == TOY["optim.epochs"] for r in later), later

    effects = {e.name: e for e in again.effects}
    assert effects["mixup"].status == OK and effects["mixup"].seeds == [0, 1]
    assert effects[broken.name].status == FAILED
    assert "every variant trial (broken-splits) failed" in effects[broken.name].reason
    assert "no-such-splits" in effects[broken.name].reason

    table = pd.read_csv(run_dir / "results.csv")
    assert len(table) == 6
    # At the quick budget mixup's reference turns mixup on; its variant is the plain recipe,
    # which is also the broken variant's reference.
    assert dict(table.groupby("arm").status.agg(lambda s: set(s))) == {
        "mixup-reference": {"ok"},
        "submission2": {"ok"},
        "broken-splits": {"failed"},
    }
    report = (run_dir / "report.md").read_text()
    assert "INTERRUPTED" not in report
    assert "**failed:** every variant trial (broken-splits) failed" in report
    assert "of mixup" in report or "mixup helps" in report or "mixup hurts" in report
    assert (run_dir / "effects.png").is_file() and (run_dir / "per_tag_heatmap.png").is_file()
    assert json.loads((run_dir / run.PLAN_FILE).read_text())["settings"]["names"] == [
        "mixup",
        broken.name,
    ]
