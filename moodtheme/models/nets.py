"""The two submissions' networks, how a config builds one, and their losses and scores.

* :class:`WholeNet` (submission 1, ``model.arch=whole``): stem and backbone over the whole
  input, global average pooling, a linear classifier. One head, ``whole``.
* :class:`SegmentAttentionNet` (submission 2, ``model.arch=segments``): the input is cut along
  time into equal segments; each goes through stem, backbone and a conv projection to an
  embedding. A BERT-style encoder over the segment sequence feeds the ``attention`` head; a
  per-segment classifier averaged over segments is the ``segment`` head.

Every head returns logits; a network's ``head_names`` are the keys of its output dict.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moodtheme.config import ConfigError, ModelConfig
from moodtheme.models.attention import AttentionHead
from moodtheme.models.backbones import Backbone, Stem, build_backbone
from moodtheme.models.pretrained import load_pretrained


class WholeNet(nn.Module):
    """Submission 1: stem, backbone over the whole input, average pooling, linear classifier."""

    def __init__(self, backbone: Backbone, num_tags: int = 56, dropout: float = 0.2) -> None:
        super().__init__()
        self.head_names = ("whole",)
        self.stem = Stem()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(1), nn.Dropout(dropout), nn.Linear(backbone.out_channels, num_tags)
        )

    def output_layers(self) -> list[nn.Linear]:
        return [self.classifier[-1]]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        _check_input(x)
        x = self.pool(self.backbone(self.stem(x)))
        return {"whole": self.classifier(x)}


def mean_probability_logit(logits: Tensor, dim: int) -> Tensor:
    """``logit(mean(sigmoid(logits), dim))``, computed in log space so it never overflows."""
    return torch.logsumexp(F.logsigmoid(logits), dim) - torch.logsumexp(F.logsigmoid(-logits), dim)


class SegmentHead(nn.Module):
    """Classifies every segment on its own and averages the segments' probabilities.

    AMLAG averaged per-segment sigmoid outputs; the head returns that average as a logit so
    that every head's output is a logit and the loss stays BCE-with-logits.
    """

    def __init__(self, dim: int, num_tags: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(dim, dim),
            nn.Dropout(dropout),
            nn.Linear(dim, num_tags),
        )

    def segment_logits(self, embeddings: Tensor) -> Tensor:
        """``[B, S, D] -> [B, S, n_tags]``."""
        return self.classifier(embeddings)

    def forward(self, embeddings: Tensor) -> Tensor:
        return mean_probability_logit(self.segment_logits(embeddings), dim=1)


class GlobalMaxPool(nn.Module):
    """``[N, C, H, W] -> [N, C]``, the maximum over frequency and time."""

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(2, 3))


class SegmentAttentionNet(nn.Module):
    """Submission 2: per-segment CNN embeddings, a self-attention head and a segment head."""

    def __init__(
        self,
        backbone: Backbone,
        segments: int = 16,
        segment_frames: int = 256,
        embed_dim: int = 256,
        num_tags: int = 56,
        dropout: float = 0.2,
        attention: AttentionHead | None = None,
        embedding_padding: int = 0,
    ) -> None:
        super().__init__()
        self.segments = segments
        self.segment_frames = segment_frames
        self.head_names = ("attention", "segment") if attention is not None else ("segment",)
        self.stem = Stem()
        self.backbone = backbone
        self.embedding = nn.Sequential(
            nn.Conv2d(
                backbone.out_channels, 2 * embed_dim, kernel_size=3, padding=embedding_padding
            ),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * embed_dim, embed_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            GlobalMaxPool(),
        )
        self.attention = attention
        self.segment_head = SegmentHead(embed_dim, num_tags, dropout)

    def output_layers(self) -> list[nn.Linear]:
        heads = [self.segment_head.classifier[-1]]
        if self.attention is not None:
            heads.append(self.attention.classifier[-1])
        return heads

    def embed_segments(self, x: Tensor) -> Tensor:
        """``[B, 1, n_mels, S * L] -> [B, S, embed_dim]``; segments fold into the batch."""
        _check_input(x, self.segments * self.segment_frames)
        batch, _, n_mels, _ = x.shape
        x = x.reshape(batch, 1, n_mels, self.segments, self.segment_frames)
        x = x.permute(0, 3, 1, 2, 4).reshape(batch * self.segments, 1, n_mels, self.segment_frames)
        x = self.embedding(self.backbone(self.stem(x)))
        return x.reshape(batch, self.segments, -1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        embeddings = self.embed_segments(x)
        outputs = {}
        if self.attention is not None:
            outputs["attention"] = self.attention(embeddings)
        outputs["segment"] = self.segment_head(embeddings)
        return outputs


def _check_input(x: Tensor, frames: int | None = None) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or (frames is not None and x.shape[3] != frames):
        expected = f"[B, 1, n_mels, {frames if frames is not None else 'F'}]"
        raise ValueError(f"model input must be {expected}, got {list(x.shape)}")


def init_output_bias(model: nn.Module, labels: np.ndarray) -> None:
    """Set every head's output bias to the log-odds of each tag's frequency in ``labels``
    (tracks x tags, 0/1), so an untrained model predicts the label prior. Frequencies are
    kept half a track away from 0 and 1, so a tag absent from ``labels`` gets a finite bias."""
    n = len(labels)
    freq = np.clip(np.asarray(labels, dtype=np.float64).mean(axis=0), 0.5 / n, 1 - 0.5 / n)
    bias = torch.from_numpy(np.log(freq / (1 - freq))).float()
    for layer in model.output_layers():
        if layer.out_features != len(bias):
            raise ValueError(f"{len(bias)} tags in the labels, {layer.out_features} outputs")
        with torch.no_grad():
            layer.bias.copy_(bias)


def build_model(cfg: ModelConfig, input_frames: int, n_mels: int = 96) -> nn.Module:
    """The model that ``cfg`` describes, its backbone initialised as ``cfg.pretrained`` says.

    Its output dict's keys are ``cfg.head_names()``. ``n_mels`` sizes the
    check that a segment's feature map fits the embedding convolution.
    Raises :class:`ConfigError` or :class:`PretrainedWeightsError`.
    """
    backbone = build_backbone(cfg.backbone, cfg.width_mult)
    load_pretrained(backbone, cfg.pretrained)
    if cfg.arch == "whole":
        return WholeNet(backbone, cfg.num_tags, cfg.dropout)
    if cfg.segments * cfg.segment_frames != input_frames:
        raise ConfigError(
            f"model.segments * model.segment_frames = {cfg.segments} * {cfg.segment_frames} "
            f"must equal data.input_frames={input_frames}"
        )
    attention = None
    if cfg.attention.enabled:
        a = cfg.attention
        attention = AttentionHead(
            cfg.embed_dim,
            cfg.segments,
            cfg.num_tags,
            heads=a.heads,
            layers=a.layers,
            ff_dim=a.ff_dim,
            attention_dropout=a.attention_dropout,
            hidden_dropout=a.hidden_dropout,
            dropout=cfg.dropout,
        )
    _check_embedding_fits(backbone, cfg, n_mels)
    return SegmentAttentionNet(
        backbone,
        cfg.segments,
        cfg.segment_frames,
        cfg.embed_dim,
        cfg.num_tags,
        cfg.dropout,
        attention,
        cfg.embedding_padding,
    )


def _check_embedding_fits(backbone: Backbone, cfg: ModelConfig, n_mels: int) -> None:
    """Refuse, at build time, a segment whose feature map the 3x3 embedding cannot cover."""
    if cfg.embedding_padding:
        return
    was_training = backbone.training
    backbone.eval()  # BatchNorm in training mode refuses a batch of one 1x1 map
    with torch.no_grad():
        height, width = backbone(torch.zeros(1, 3, n_mels, cfg.segment_frames)).shape[-2:]
    backbone.train(was_training)
    if height < 3 or width < 3:
        raise ConfigError(
            f"model.embedding_padding=0 needs a feature map of at least 3x3, but backbone "
            f"'{cfg.backbone}' turns a {n_mels} x {cfg.segment_frames} segment into {height}x"
            f"{width}; set model.embedding_padding=1 or lengthen model.segment_frames"
        )


def head_losses(outputs: Mapping[str, Tensor], targets: Tensor) -> dict[str, Tensor]:
    """BCE-with-logits of every head against (possibly mixed-up, soft) ``targets``."""
    return {
        head: F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        for head, logits in outputs.items()
    }


def combined_loss(outputs: Mapping[str, Tensor], targets: Tensor) -> Tensor:
    """The training loss: the mean of the heads' BCE-with-logits."""
    return torch.stack(list(head_losses(outputs, targets).values())).mean()


def predict_proba(outputs: Mapping[str, Tensor]) -> Tensor:
    """Tag probabilities ``[B, n_tags]``: the mean of the heads' sigmoids."""
    return torch.stack([logits.float().sigmoid() for logits in outputs.values()]).mean(dim=0)
