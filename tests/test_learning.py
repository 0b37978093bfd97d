"""The quick segment model, trained from scratch, learns the synthetic dataset's local tags.

This passes only if everything between the generator and the score works together: the
on-disk format, the loader's crops and scaling, the model, the loss, the output-bias
initialisation and the optimiser. A bug anywhere on that path leaves the scores at chance.
The budget is the one measured in docs/synthetic.md ("Learnability"): the quick preset with
the ``small_cnn`` backbone, augmentation off, 4 epochs (332 steps), about a minute.
"""

from __future__ import annotations

import numpy as np
import pytest

import moodtheme.train as train
from moodtheme.config import build_config
from moodtheme.data.jamendo import load_tags
from moodtheme.data.synth import default_dataset, load_planted
from moodtheme.evaluate import per_tag_auc

pytestmark = pytest.mark.slow

LEARNING_BUDGET = {
    "model.backbone": "small_cnn",
    "model.width_mult": 1.0,
    "optim.epochs": 4,
    "optim.switch_epoch": None,
    "augment.mixup_alpha": 0.0,
    "augment.specaugment_p": 0.0,
    "run.threads": 1,
    "run.progress": False,
}


def test_quick_model_learns_the_planted_local_tags_from_scratch(tmp_path):
    train.fit(build_config("quick", LEARNING_BUDGET), tmp_path)

    groundtruth = np.load(tmp_path / "test_groundtruth.npy")
    predictions = np.load(tmp_path / "test_predictions.npy")
    tags = load_tags()
    local = [tags.index(t) for t in load_planted(default_dataset())["local"]]
    roc, pr = per_tag_auc(groundtruth[:, local], predictions[:, local])
    frequency = groundtruth[:, local].mean()
    summary = f"local tags: ROC-AUC {np.nanmean(roc):.3f}, PR-AUC {np.nanmean(pr):.3f}"
    # Measured on generator version 6, seed 0, one thread: ROC-AUC 0.978 and PR-AUC 14.5x the
    # frequency (version 3 needed 8 epochs for 0.873 and 7.8x). Chance is 0.5 and 1x; the
    # bounds are those set then, which leave room for other CPUs' float order.
    assert np.nanmean(roc) > 0.7, summary
    assert np.nanmean(pr) > 3 * frequency, f"{summary}, frequency {frequency:.3f}"
