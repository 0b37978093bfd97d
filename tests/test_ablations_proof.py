"""Proof that the suite finds a real effect, and only where it is.

The synthetic dataset plants long-range tags, readable only from the order of two motifs in
different segments, and local tags, readable from any segment (docs/synthetic.md). Removing
self-attention leaves submission 2's segment-average head, which cannot see order. Run through
the suite's own machinery (Ray Tune, paired seeds, the report's statistics), the ablation must
significantly lower PR-AUC on the long-range tags, and much less on the local ones.
"""

from __future__ import annotations

import os

import pytest

from ablations import run
from tune.search import RunOptions

# docs/synthetic.md, "Why the long-range tags are not learnt on a CPU": given the true motif
# presence, the attention head learns the planted order (long-range PR-AUC 0.86 against the
# segment head's 0.20) after tens of thousands of examples, but the whole model had not
# learnt it after 72 000 examples, 25 CPU-minutes per trial, against CI's 20 minutes for the
# whole suite. So the proof runs only when MOODTHEME_PROOF=1 is set, on a machine where
# PROOF_BUDGET can grow.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MOODTHEME_PROOF") != "1",
        reason="the quick model has not learnt the planted order within 25 CPU-minutes per "
        "trial (docs/synthetic.md, 'Why the long-range tags are not learnt on a CPU'); set "
        "MOODTHEME_PROOF=1 to run the proof",
    ),
]

# The small_cnn backbone learns the local signatures within a few hundred steps
# (tests/test_learning.py); augmentation is off to learn faster. 4 epochs is where a
# CPU run would have to stop; raise optim.epochs (and the dataset) on a GPU machine.
PROOF_BUDGET = {
    "model.backbone": "small_cnn",
    "model.width_mult": 1.0,
    "optim.epochs": 4,
    "optim.switch_epoch": None,
    "augment.mixup_alpha": 0.0,
    "augment.specaugment_p": 0.0,
    "data.limit_tracks": None,
}
SEEDS = 2


def test_removing_self_attention_hurts_long_range_tags_not_local_ones(tmp_path):
    settings = run.SuiteSettings(
        names=["self-attention"], seeds=SEEDS, overrides=PROOF_BUDGET, n_boot=2000
    )
    options = RunOptions(
        name="proof",
        storage=str(tmp_path),
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        max_failures=1,
        verbose=0,
    )
    outcome = run.run_suite(settings, options, tmp_path, log=lambda m: None)
    (effect,) = outcome.effects
    assert effect.status == "ok", effect.reason
    assert effect.seeds == list(range(SEEDS))

    long_range = effect.groups["long_range"]["pr_auc"]
    local = effect.groups["local"]["pr_auc"]
    specific = effect.contrasts["long_range - local"]["pr_auc"]
    summary = (
        f"long-range {long_range}, local {local}, long-range - local {specific}; "
        f"report {outcome.files['report']}"
    )
    # (a) removing attention significantly lowers PR-AUC on the planted long-range tags ...
    assert long_range.high < 0 and long_range.p_value < 0.05, summary
    # (b) ... and the effect on the local tags is clearly smaller: the difference between the
    # two groups' effects, on the same track resamples, excludes zero, and the local effect is
    # under half the long-range one.
    assert specific.high < 0, summary
    assert abs(local.delta) < abs(long_range.delta) / 2, summary
