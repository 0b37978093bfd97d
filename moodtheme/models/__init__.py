"""Models of the two AMLAG submissions to MediaEval 2019 (music mood/theme tagging).

Both read a one-channel mel-spectrogram ``[B, 1, n_mels, F]``; a learned 1x1 :class:`Stem`
turns it into the three channels an ImageNet CNN (a :class:`Backbone`) expects.

* `backbones`: the stem and the registry of CNN trunks (``model.backbone``);
* `pretrained`: ImageNet or file weights for a backbone (``model.pretrained``);
* `attention`: submission 2's self-attention head;
* `nets`: the two networks (:class:`WholeNet`, :class:`SegmentAttentionNet`),
  :func:`build_model`, the loss and the prediction.

Every head returns logits. Train with :func:`combined_loss`, score with :func:`predict_proba`.
``python -m moodtheme.models --preset NAME [key=value ...]`` prints an architecture summary.
"""

from moodtheme.models.attention import AttentionHead
from moodtheme.models.backbones import (
    BACKBONES,
    Backbone,
    SmallCNN,
    Stem,
    build_backbone,
    register_backbone,
)
from moodtheme.models.nets import (
    SegmentAttentionNet,
    SegmentHead,
    WholeNet,
    build_model,
    combined_loss,
    head_losses,
    init_output_bias,
    mean_probability_logit,
    predict_proba,
)
from moodtheme.models.pretrained import (
    PretrainedWeightsError,
    imagenet_cache_path,
    load_pretrained,
)

__all__ = [
    "BACKBONES",
    "AttentionHead",
    "Backbone",
    "PretrainedWeightsError",
    "SegmentAttentionNet",
    "SegmentHead",
    "SmallCNN",
    "Stem",
    "WholeNet",
    "build_backbone",
    "build_model",
    "combined_loss",
    "head_losses",
    "imagenet_cache_path",
    "init_output_bias",
    "load_pretrained",
    "mean_probability_logit",
    "predict_proba",
    "register_backbone",
]
