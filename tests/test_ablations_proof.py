"""Proof that the suite finds a real effect, and only where it is.

The synthetic dataset plants long-range tags, which only a model that pools the segments
before a non-linearity can read (a positive alternates two motifs, a decoy repeats one), and
local tags, readable from any segment (docs/synthetic.md). Removing self-attention leaves
submission 2's segment-average head, for which a positive scores between the two kinds of
decoy. Run through the suite's own machinery (Ray Tune, paired seeds, the report's
statistics), the ablation must significantly lower PR-AUC on the long-range tags, and much
less on the local ones.
"""

from __future__ import annotations

import os

import pytest
import torch

from ablations import run
from moodtheme.data.synth import cached_dataset
from tune.search import RunOptions

# docs/ablations.md, "Proof": on a 2-core CPU the quick model learns the long-range tags of
# the default 1200 tracks within about 1000 steps of batch 8, but the reference (two heads
# sharing the backbone) then still learns the local tags more slowly than the model without
# attention (local PR-AUC 0.68 against 0.83 at 1200 steps, seed 1), so the local effect is
# as large as the long-range one until the local tags saturate. They do within this GPU
# budget (local PR-AUC above 0.97 from 64 000 examples on; an H200 ran 5000 steps of batch 32
# in about 2 minutes per seed, six at once), about 50 minutes per trial on the CPU. So the
# proof runs only where MOODTHEME_PROOF=1 is set, on a GPU machine.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MOODTHEME_PROOF") != "1",
        reason="the local tags must saturate before the local effect is small: about 160 000 "
        "training examples (50 minutes per trial on a 2-core CPU; docs/ablations.md); set "
        "MOODTHEME_PROOF=1 on a GPU machine",
    ),
]

PROOF_TRACKS = 17982  # all of split 0: 9949 training tracks
# The budget of the measured GPU run (benchmarks/planted_ablation.py, docs/ablations.md):
# small_cnn, batch 32, about 5000 steps (16 epochs of 311), Adam only, no augmentation.
PROOF_BUDGET = {
    "model.backbone": "small_cnn",
    "model.width_mult": 1.0,
    "optim.batch_size": 32,
    "optim.epochs": 16,
    "optim.switch_epoch": None,
    "augment.mixup_alpha": 0.0,
    "augment.specaugment_p": 0.0,
    "data.limit_tracks": None,
    "data.num_workers": 2,
}
SEEDS = 3


def test_removing_self_attention_hurts_long_range_tags_not_local_ones(tmp_path):
    settings = run.SuiteSettings(
        names=["self-attention"],
        seeds=SEEDS,
        data=str(cached_dataset(PROOF_TRACKS)),
        overrides=PROOF_BUDGET,
        n_boot=2000,
        cpus_per_trial=2.0,
        # Every trial at once on one GPU; on a CPU machine (50 minutes a trial) none.
        gpus_per_trial=1.0 / (2 * SEEDS) if torch.cuda.is_available() else 0.0,
    )
    options = RunOptions(
        name="proof",
        storage=str(tmp_path),
        # The proof is about the statistics; MLflow logging is tested in test_ablations_run.py,
        # and without it the proof needs only Ray on a GPU machine.
        tracking=False,
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
