"""Training throughput (samples/s) of the real train step, against a plain PyTorch loop.

    python benchmarks/train_step.py                      # quick + submission2, this machine
    python benchmarks/train_step.py --presets submission2 --steps 20 --device cuda
    python benchmarks/train_step.py --presets quick --set model.backbone=small_cnn model.width_mult=1.0

"trainer" is `moodtheme.train.train_step` with the run's settings: on CUDA that means bf16
autocast and channels_last; on a CPU both paths do the same work. "plain" is a bare loop with
neither. Random inputs of the preset's shape are used, so the data loader is not measured
here (see benchmarks/loader.py).
"""

from __future__ import annotations

import argparse
import time

import torch

from moodtheme.config import ConfigError, build_config, parse_overrides
from moodtheme.device import Placement, pick_device
from moodtheme.models import build_model, combined_loss
from moodtheme.schedule import OptimizerSchedule
from moodtheme.train import train_step

PAPER_EPOCH_TRACKS = 9949


def plain_step(model, optimizer, x, y):
    loss = combined_loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def measure(
    preset: str,
    steps: int,
    warmup: int,
    device_name: str,
    mode: str,
    batch: int | None = None,
    extra: dict | None = None,
) -> float:
    amp = mode == "trainer"
    overrides = {
        **(extra or {}),
        "model.pretrained": "none",
        "run.device": device_name,
        "run.amp": amp,
        "run.channels_last": amp,
    }
    if batch is not None:
        overrides["optim.batch_size"] = batch
    config = build_config(preset, overrides)
    device = pick_device(config.run.device)
    placement = Placement(device, config.run.channels_last, config.run.amp)
    torch.manual_seed(0)
    model = build_model(config.model, config.data.input_frames, config.data.n_mels)
    model = placement.model(model).train()
    optimizer = OptimizerSchedule.from_config(config.optim).first_optimizer(model.parameters())
    b = config.optim.batch_size
    x = torch.randn(b, 1, config.data.n_mels, config.data.input_frames) * 0.2 - 0.5
    y = (torch.rand(b, config.model.num_tags) < 0.05).float()
    if mode == "plain":
        x, y = x.to(device), y.to(device)

    def step():
        if mode == "plain":
            return plain_step(model, optimizer, x, y)
        return train_step(model, optimizer, x, y, placement)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * b / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["quick", "submission2"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: the preset's)")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides"
    )
    args = parser.parse_args()
    extra = parse_overrides(args.set)
    configs = {preset: build_config(preset, extra) for preset in args.presets}  # fail early
    device = pick_device(args.device)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    )
    print(f"device: {name}; torch {torch.__version__}")
    print(
        "| preset | input | batch | plain loop samples/s | trainer samples/s | paper epoch (9949 tracks) |"
    )
    print("|---|---|---|---|---|---|")
    for preset, config in configs.items():
        label = " ".join([preset, *args.set])
        for batch in args.batch or [config.optim.batch_size]:
            plain = measure(preset, args.steps, args.warmup, args.device, "plain", batch, extra)
            trainer = measure(preset, args.steps, args.warmup, args.device, "trainer", batch, extra)
            epoch_min = PAPER_EPOCH_TRACKS / trainer / 60
            print(
                f"| {label} | {config.data.n_mels} x {config.data.input_frames} | "
                f"{batch} | {plain:.1f} | {trainer:.1f} | {epoch_min:.1f} min |",
                flush=True,
            )


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
