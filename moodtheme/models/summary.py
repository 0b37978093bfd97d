"""``python -m moodtheme.models --preset NAME [key=value ...]``: a configured model's blocks,
their output shapes and parameter counts (built with random weights, so it works offline)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from moodtheme.config import ConfigError, build_config
from moodtheme.models.nets import build_model


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
        f"heads={', '.join(model.head_names)}"
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
