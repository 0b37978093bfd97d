"""CNN trunks: the stem that turns one mel channel into three, and a registry of backbones
(`model.backbone`) that know their torchvision ImageNet weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, ResNeXt50_32X4D_Weights, WeightsEnum
from torchvision.models.resnet import Bottleneck

from moodtheme.config import ConfigError


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
