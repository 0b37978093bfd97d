"""The A/A calibration control through the real suite: Ray Tune trials, adaptive seeding,
the statistics and the report. The control is the reference itself under another name,
trained from other seeds (ablations.suite.CONTROLS), so every difference it shows is noise:
the suite must not declare an effect, in any family of the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_ablations_run import TOY

from ablations import run
from ablations.effects import OK
from ablations.seeding import SEEDS_FILE
from ablations.stats import ALPHA, NO_EFFECT
from tune.search import RunOptions

pytestmark = pytest.mark.slow


def test_an_a_a_comparison_is_not_declared_an_effect(small_synth, tmp_path):
    settings = run.SuiteSettings(
        names=["a-a-control"],
        seeds="auto",  # 2 seeds, then 3 when undecided: two rounds, two Tune experiments
        first_seeds=2,
        max_seeds=3,
        data=str(small_synth),
        overrides=TOY,
        n_boot=500,
    )
    results = tmp_path / "results"
    options = RunOptions(name="aa", storage=str(results), tracking=False, max_failures=0, verbose=0)
    outcome = run.run_suite(settings, options, results, log=lambda m: None)

    (effect,) = outcome.effects
    assert effect.status == OK and effect.seeds == [0, 1, 2], effect.reason
    for metric, row in effect.metrics.items():
        low, high = row.interval()
        summary = f"{metric}: Δ {row.delta:+.4f} [{low:+.4f}, {high:+.4f}] p(Holm) {row.p_adjusted}"
        assert row.verdict == NO_EFFECT and row.p_adjusted > ALPHA, summary
        assert low < 0 < high, summary
        assert row.improvement.low <= 0.5 <= row.improvement.high, summary
    for group, found in effect.groups.items():  # the planted groups of the synthetic data
        for metric, g in found.items():
            assert g.p_adjusted > ALPHA, (group, metric, g)
    assert not (np.nan_to_num(effect.tags.q_value, nan=1.0) <= ALPHA).any()

    # A true null, not a copy: the control's predictions differ from the reference's.
    by_arm = {(t.arm, t.seed): t for t in outcome.trials}
    reference = by_arm[("submission2", 0)].predictions()[1]
    control = by_arm[("a-a-control", 0)].predictions()[1]
    assert not np.allclose(reference, control)
    assert effect.metrics["pr_auc"].delta != 0

    run_dir = results / "aa"
    assert json.loads((run_dir / SEEDS_FILE).read_text())["rounds"] == [
        {"a-a-control": 2},
        {"a-a-control": 3},
    ]
    assert (results / "aa-round2").is_dir()  # the second round's Tune experiment
    report = (run_dir / "report.md").read_text()
    assert "no detectable effect of the name alone (A/A control)" in report
    assert "The A/A control (a-a-control) is the reference itself" in report
    assert "undecided at the most seeds allowed (--max-seeds 3)" in report
    assert "multiplied by the 2 looks of adaptive seeding" in report
