"""Models of the two AMLAG submissions to MediaEval 2019 (music mood/theme tagging).

Both read a one-channel mel-spectrogram ``[B, 1, n_mels, F]``; a learned 1x1 :class:`Stem`
turns it into the three channels an ImageNet CNN (a :class:`Backbone`) expects.

* :class:`WholeNet` (submission 1, ``model.arch=whole``): stem and backbone over the whole
  input, global average pooling, a linear classifier. One head, ``whole``.
* :class:`SegmentAttentionNet` (submission 2, ``model.arch=segments``): the input is cut along
  time into equal segments; each goes through stem, backbone and a conv projection to an
  embedding. A BERT-style encoder over the segment sequence feeds the ``attention`` head; a
  per-segment classifier averaged over segments is the ``segment`` head.

Every head returns logits. Train with :func:`combined_loss`, score with :func:`predict_proba`.
``python -m moodtheme.models --preset NAME [key=value ...]`` prints an architecture summary.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, ResNeXt50_32X4D_Weights, WeightsEnum
from torchvision.models.resnet import Bottleneck

from moodtheme.config import ConfigError, ModelConfig, build_config

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
    "architecture_summary",
    "build_backbone",
    "build_model",
    "combined_loss",
    "head_losses",
    "load_pretrained",
    "main",
    "predict_proba",
    "register_backbone",
]


class PretrainedWeightsError(RuntimeError):
    """Backbone weights that cannot be found or do not fit; the message says how to fix it."""


# ----------------------------------------------------------------------------- stem


class Stem(nn.Sequential):
    """One mel channel -> three image-like channels (BatchNorm, then two 1x1 convs)."""

    def __init__(self, hidden_channels: int = 10, out_channels: int = 3) -> None:
        super().__init__(
            nn.BatchNorm2d(1),
            nn.Conv2d(1, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        # On a CPU, oneDNN runs these 1x1 convolutions over one and ten channels at full
        # resolution at a third of the quick model's step time; as a broadcast and a small
        # matmul over channels-last pixels they cost half as much (docs/benchmarks.md). Same
        # parameters, same result to float rounding.
        norm, expand, _, project, _ = self
        pixels = norm(x).permute(0, 2, 3, 1)
        hidden = F.relu(torch.addcmul(expand.bias, pixels, expand.weight.view(-1)))
        out = F.relu(F.linear(hidden, project.weight.flatten(1), project.bias))
        return out.permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- backbones


class Backbone(nn.Module):
    """A CNN trunk, ``[N, 3, H, W] -> [N, out_channels, h, w]``, that knows its own weights.

    Subclasses keep torchvision's parameter names so that a torchvision state_dict loads as is.
    """

    name: str = ""
    out_channels: int = 0
    width_mult: float = 1.0
    #: ImageNet weights of the torchvision model this trunk comes from, if any.
    imagenet_weights: WeightsEnum | None = None
    #: Key prefixes of torchvision's classifier, dropped from a full-model state_dict.
    head_prefixes: tuple[str, ...] = ()

    def adapt_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Map a torchvision state_dict (full model or trunk only) onto this trunk's keys."""
        return {k: v for k, v in state.items() if not k.startswith(self.head_prefixes)}


BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Register ``factory(width_mult: float) -> Backbone`` under ``name`` (``model.backbone``)."""

    def register(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in BACKBONES:
            raise ValueError(f"backbone '{name}' is already registered")
        BACKBONES[name] = factory
        return factory

    return register


def build_backbone(name: str, width_mult: float = 1.0) -> Backbone:
    if name not in BACKBONES:
        raise ConfigError(
            f"model.backbone='{name}' is not a registered backbone; choose one of "
            f"{', '.join(sorted(BACKBONES))}"
        )
    backbone = BACKBONES[name](width_mult=width_mult)
    backbone.name = name
    return backbone


class MobileNetV2Backbone(Backbone):
    """torchvision's MobileNetV2 ``features`` (its classifier is not built into the model)."""

    imagenet_weights = MobileNet_V2_Weights.IMAGENET1K_V1
    head_prefixes = ("classifier.",)

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        full = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
        self.features = full.features
        self.out_channels = full.last_channel
        self.width_mult = width_mult

    def adapt_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        state = super().adapt_state_dict(state)
        # A state_dict of ``model.features`` alone has no ``features.`` prefix.
        if not any(k.startswith("features.") for k in state):
            state = {f"features.{k}": v for k, v in state.items()}
        return state

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class ResNeXtBackbone(Backbone):
    """A ResNeXt trunk of torchvision ``Bottleneck`` blocks with grouped 3x3 convolutions.

    Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``...), so a
    torchvision ``resnext50_32x4d`` state_dict loads directly (its ``fc`` is dropped).
    """

    head_prefixes = ("fc.",)

    def __init__(
        self,
        blocks: Sequence[int],
        planes: Sequence[int],
        stem_channels: int = 64,
        stem_kernel: int = 7,
        groups: int = 32,
        width_per_group: int = 4,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            3, stem_channels, stem_kernel, stride=2, padding=stem_kernel // 2, bias=False
        )
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem_channels
        stages = []
        for index, (count, width) in enumerate(zip(blocks, planes, strict=True)):
            stride = 1 if index == 0 else 2
            stages.append(self._stage(in_channels, width, count, stride, groups, width_per_group))
            in_channels = width * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = in_channels

    @staticmethod
    def _stage(
        in_channels: int, planes: int, count: int, stride: int, groups: int, width_per_group: int
    ) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        shortcut = None
        if stride != 1 or in_channels != out_channels:
            shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [
            Bottleneck(
                in_channels, planes, stride, shortcut, groups=groups, base_width=width_per_group
            )
        ]
        for _ in range(1, count):
            layers.append(
                Bottleneck(out_channels, planes, groups=groups, base_width=width_per_group)
            )
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _fixed_width(name: str, width_mult: float) -> None:
    # ResNeXt's grouped convolutions leave no clean knob: scaling the per-group width breaks the
    # shallow variant (one channel per group already) and scaling the stage widths changes the
    # architecture. A fixed width is the honest answer.
    if width_mult != 1.0:
        raise ConfigError(
            f"model.width_mult={width_mult} applies only to mobilenet_v2; backbone '{name}' has "
            f"a fixed width: set model.width_mult=1.0"
        )


@register_backbone("mobilenet_v2")
def mobilenet_v2_backbone(width_mult: float = 1.0) -> Backbone:
    return MobileNetV2Backbone(width_mult)


@register_backbone("resnext50_32x4d")
def resnext50_backbone(width_mult: float = 1.0) -> Backbone:
    _fixed_width("resnext50_32x4d", width_mult)
    backbone = ResNeXtBackbone(blocks=(3, 4, 6, 3), planes=(64, 128, 256, 512))
    backbone.imagenet_weights = ResNeXt50_32X4D_Weights.IMAGENET1K_V1
    return backbone


@register_backbone("resnext_tiny_shallow")
def resnext_tiny_shallow_backbone(width_mult: float = 1.0) -> Backbone:
    """One 32-group Bottleneck per stage, 512 output channels: ~0.46M parameters, for CPU runs."""
    _fixed_width("resnext_tiny_shallow", width_mult)
    return ResNeXtBackbone(
        blocks=(1, 1, 1, 1), planes=(16, 32, 64, 128), stem_channels=32, stem_kernel=3
    )


class SmallCNN(Backbone):
    """A plain VGG-style trunk: a stride-2 3x3 convolution, then 3x3 convolutions with
    BatchNorm and ReLU, max-pooled by 2 between stages.

    Not from the paper, and no ImageNet weights exist for it. It is here because the quick
    model trains about twice as fast on a CPU with it as with MobileNetV2 at width 0.25
    (docs/benchmarks.md) and learns the synthetic dataset's signatures within a few hundred
    steps (docs/synthetic.md, "Learnability"), which makes learning tests affordable.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for index, out_channels in enumerate(channels):
            if index > 0:
                layers.append(nn.MaxPool2d(2))
            stride = 2 if index == 0 else 1
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.out_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_backbone("small_cnn")
def small_cnn_backbone(width_mult: float = 1.0) -> Backbone:
    """Four 3x3 stages (16/32/64/64 channels) at 1/16 of the input's resolution: 61k parameters."""
    _fixed_width("small_cnn", width_mult)
    return SmallCNN()


# ----------------------------------------------------------------------------- pretrained weights


def _how_to_fix() -> str:
    return "or pass model.pretrained=/path/to/weights.pth (a backbone state_dict), or model.pretrained=none"


def _host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parsed = urllib.parse.urlparse(url)
    opened: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    # A thread, because name resolution ignores the socket timeout and may hang offline.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def imagenet_cache_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (and looks for) ``weights``: ``$TORCH_HOME/hub/checkpoints/FILE``."""
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedWeightsError(
            f"could not read weights file {path} ({reason}); expected a file written by "
            f"torch.save(model.state_dict(), ...)"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedWeightsError(
            f"weights file {path} holds a {type(state).__name__}, not a state_dict mapping "
            f"parameter names to tensors; save one with torch.save(model.state_dict(), ...)"
        )
    return state


def _load_into(backbone: Backbone, state: Mapping[str, Tensor], source: Path) -> None:
    state = backbone.adapt_state_dict(state)
    own = backbone.state_dict()
    # Old checkpoints predate BatchNorm's counter; it does not affect the forward pass.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} (file {list(state[k].shape)} vs model {list(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", reshaped),
    ):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise PretrainedWeightsError(
            f"weights file {source} does not fit backbone '{backbone.name}' "
            f"(width_mult={backbone.width_mult}): {'; '.join(problems)}. Give a state_dict of "
            f"torchvision's {backbone.name} (whole model or trunk only), {_how_to_fix()}"
        )
    backbone.load_state_dict(state, strict=False)


def _imagenet_state_dict(backbone: Backbone) -> tuple[Mapping[str, Tensor], Path]:
    weights = backbone.imagenet_weights
    if weights is None:
        raise PretrainedWeightsError(
            f"backbone '{backbone.name}' has no ImageNet weights; use model.pretrained=none or "
            f"model.pretrained=/path/to/weights.pth"
        )
    if backbone.width_mult != 1.0:
        raise PretrainedWeightsError(
            f"ImageNet weights exist only for model.width_mult=1.0, not {backbone.width_mult}; "
            f"set model.width_mult=1.0, {_how_to_fix()}"
        )
    cached = imagenet_cache_path(weights)
    if cached.is_file():
        return _read_state_dict(cached), cached
    fetch = (
        f"ImageNet weights for '{backbone.name}' are not in the torch hub cache. Download "
        f"{weights.url} to {cached} (set TORCH_HOME to use another cache), {_how_to_fix()}"
    )
    if not _host_reachable(weights.url):
        host = urllib.parse.urlparse(weights.url).hostname
        raise PretrainedWeightsError(f"{host} is unreachable. {fetch}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a stalled transfer must fail, not hang the run
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - network and hash failures alike
        raise PretrainedWeightsError(f"download failed ({err}). {fetch}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return _read_state_dict(cached), cached


def load_pretrained(backbone: Backbone, pretrained: str) -> None:
    """Initialise ``backbone`` from ``model.pretrained``: 'imagenet', 'none' or a .pth path.

    ImageNet weights come from the torch hub cache first; a download is tried only when the
    weights host answers within seconds. Raises :class:`PretrainedWeightsError`.
    """
    choice = pretrained.strip()
    if choice.lower() == "none":
        return
    if choice.lower() == "imagenet":
        state, source = _imagenet_state_dict(backbone)
    else:
        source = Path(choice).expanduser()
        if not source.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained={pretrained}: no such file; give an existing backbone "
                f"state_dict (.pth), model.pretrained=imagenet or model.pretrained=none"
            )
        state = _read_state_dict(source)
    _load_into(backbone, state, source)


# ----------------------------------------------------------------------------- submission 1


class WholeNet(nn.Module):
    """Submission 1: stem, backbone over the whole input, average pooling, linear classifier."""

    def __init__(self, backbone: Backbone, num_tags: int = 56, dropout: float = 0.2) -> None:
        super().__init__()
        self.heads = ("whole",)
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


# ----------------------------------------------------------------------------- submission 2


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine encoding of each position; position 0 gets none (zeros)."""

    def __init__(self, positions: int, dim: int) -> None:
        super().__init__()
        position = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
        pair = torch.arange(dim, dtype=torch.float64) // 2
        angle = position / torch.pow(10000.0, 2 * pair / dim)
        table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
        table[0] = 0.0  # as in the AMLAG model, whose first segment is the pooled one
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]].to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (BERT's query/key/value projections)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} attention heads must divide the width {dim}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape

        def split_heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return context.transpose(1, 2).reshape(batch, length, dim)


class DenseResidualNorm(nn.Module):
    """BERT's sublayer output: dense, dropout, add the sublayer's input, LayerNorm."""

    def __init__(self, in_dim: int, dim: int, dropout: float, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.norm(self.dropout(self.dense(x)) + residual)


class EncoderLayer(nn.Module):
    """One post-LayerNorm BERT layer: self-attention, then a GELU feed-forward block."""

    def __init__(
        self, dim: int, heads: int, ff_dim: int, attention_dropout: float, hidden_dropout: float
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.attention_output = DenseResidualNorm(dim, dim, hidden_dropout)
        self.intermediate = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU())
        self.output = DenseResidualNorm(ff_dim, dim, hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attention_output(self.attention(x), x)
        return self.output(self.intermediate(x), x)


class AttentionHead(nn.Module):
    """Segment embeddings ``[B, S, D]`` -> logits ``[B, n_tags]`` through a BERT encoder.

    As BERT's pooler, it classifies the encoder's output at the first position.
    """

    def __init__(
        self,
        dim: int,
        segments: int,
        num_tags: int,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 1024,
        attention_dropout: float = 0.1,
        hidden_dropout: float = 0.2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.positions = SinusoidalPositions(segments, dim)
        self.encoder = nn.Sequential(
            *[
                EncoderLayer(dim, heads, ff_dim, attention_dropout, hidden_dropout)
                for _ in range(layers)
            ]
        )
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_tags))

    def forward(self, embeddings: Tensor) -> Tensor:
        hidden = self.encoder(self.positions(embeddings))
        return self.classifier(self.pooler(hidden[:, 0]))


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
        self.heads = ("attention", "segment") if attention is not None else ("segment",)
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


# ----------------------------------------------------------------------------- building


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

    The model's ``heads`` attribute names the keys of its output dict. ``n_mels`` sizes the
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


# ----------------------------------------------------------------------------- losses and scores


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


# ----------------------------------------------------------------------------- summary CLI


def architecture_summary(model: nn.Module, example: Tensor) -> list[tuple[str, str, int]]:
    """``(block, output shape for example, parameters)`` for each top-level block of ``model``."""
    shapes: dict[str, str] = {}

    def describe(output: Any) -> str:
        if isinstance(output, Tensor):
            return str(list(output.shape))
        if isinstance(output, Mapping):
            return ", ".join(f"{k}: {describe(v)}" for k, v in output.items())
        return type(output).__name__

    hooks = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, describe(out))
        )
        for name, child in model.named_children()
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return [
        (name, shapes.get(name, "-"), sum(p.numel() for p in child.parameters()))
        for name, child in model.named_children()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.models",
        description="Print the architecture of a configured model: blocks, shapes, parameters.",
    )
    parser.add_argument("--preset", default="quick", help="submission1, submission2 or quick")
    parser.add_argument(
        "overrides", nargs="*", help="dotted key=value, e.g. model.attention.heads=8"
    )
    args = parser.parse_args(argv)
    try:
        config = build_config(args.preset, args.overrides)
        # Shapes and counts do not depend on the weights, so the summary never needs them.
        model_cfg = config.model.model_copy(update={"pretrained": "none"})
        model = build_model(model_cfg, config.data.input_frames, config.data.n_mels)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    m = config.model
    example = torch.zeros(1, 1, config.data.n_mels, config.data.input_frames)
    rows = architecture_summary(model, example)
    print(
        f"preset {config.preset}: arch={m.arch}, backbone={m.backbone}, width_mult={m.width_mult}, "
        f"heads={', '.join(model.heads)}"
    )
    weights = "random init"
    if m.pretrained != "none":
        weights += f" (model.pretrained='{m.pretrained}' is not loaded for this summary)"
    print(f"input {list(example.shape)}; weights: {weights}")
    width = max(len(name) for name, _, _ in rows)
    print(f"{'block':<{width}}  {'parameters':>10}  output shape (one example)")
    for name, shape, count in rows:
        print(f"{name:<{width}}  {count:>10,}  {shape}")
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
