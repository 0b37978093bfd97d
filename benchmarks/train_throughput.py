"""Samples/s of the trainer's data path, alone and with the train step, per mixup partner.

    python benchmarks/train_throughput.py                       # quick model, submission 2 data
    python benchmarks/train_throughput.py --workers 0 2 --steps 40
    python benchmarks/train_throughput.py --preset submission2 --step-steps 3 --device cuda

Builds a temporary dataset of real-size tracks (96 x ~10,000 float32 frames, ~220 s) and
reads it the way `moodtheme.train.fit` does (`moodtheme.data.loaders.TrainingData`): the
training loader and, with `augment.mixup_partner=second_loader`, for the second loader whose
batches are the mixup partners (the authors' code), so a step reads 2 x batch tracks.

Two figures per partner mode and worker count:
- *loader*: training samples/s delivered by the loader(s) alone, with the data settings of
  `--data-preset` (default submission2: the first 4096 frames, resized crop p 0.33,
  SpecAugment p 0.5);
- *loader + step*: the same batches mixed and trained on by `--preset`'s model through
  `moodtheme.train.train_step` (default quick: a CPU-sized model; use submission2 on a GPU).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from loader import make_tracks  # benchmarks/loader.py, beside this script

from moodtheme.augment import mixup
from moodtheme.config import ConfigError, build_config, parse_overrides
from moodtheme.data.loaders import TrainingData
from moodtheme.device import Placement, pick_device
from moodtheme.models import build_model
from moodtheme.schedule import OptimizerSchedule
from moodtheme.train import train_step

PARTNERS = ("in_batch", "second_loader")


def batches(data: TrainingData, epochs: int):
    """(x, y, partner batch or None) for ``epochs`` epochs, worker start-up included once."""
    partner = data.loaders.get("mixup_partner")
    for epoch in range(1, epochs + 1):
        data.set_epoch(epoch)
        partners = iter(partner) if partner is not None else itertools.repeat(None)
        for (x, y), other in zip(data.loaders["train"], partners, strict=False):
            yield x, y, other


def measure(config, root, table, steps: int, warmup: int, model=None, placement=None) -> float:
    """Training samples/s over ``steps`` batches after ``warmup``; with ``model``, each batch
    is also mixed and trained on."""
    tables = {"train": table, "validation": table, "test": table}
    data = TrainingData.from_tables(config, root, tables)
    optimizer = None
    if model is not None:
        optimizer = OptimizerSchedule.from_config(config.optim).first_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(0)
    epochs = -(-(steps + warmup) // len(data.loaders["train"]))
    samples, tick = 0, None
    for i, (x, y, other) in enumerate(batches(data, epochs)):
        if i == warmup:
            tick = time.perf_counter()
        if model is not None:
            x, y = mixup(x, y, config.augment.mixup_alpha, generator, other)
            train_step(model, optimizer, x, y, placement)
        if i >= warmup:
            samples += x.shape[0]
        if i + 1 == steps + warmup:
            break
    if placement is not None and placement.device.type == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - tick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-preset", default="submission2", help="data and augmentation")
    parser.add_argument("--preset", default="quick", help="model for the loader + step rows")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument("--tracks", type=int, default=96)
    parser.add_argument("--frames", type=int, default=10_000, help="mean frames per track")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30, help="batches per loader figure")
    parser.add_argument("--step-steps", type=int, default=20, help="batches per step figure")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (main process)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        base = {"model.pretrained": "none", **parse_overrides(args.set)}
        data_config = build_config(args.data_preset, base)  # fail early on a bad --set
        step_config = build_config(args.preset, {**base, "run.device": args.device})
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    device = pick_device(step_config.run.device)
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, device {device}"
    )
    with tempfile.TemporaryDirectory(prefix="moodtheme-throughput-") as tmp:
        root = Path(tmp)
        table = make_tracks(root, args.tracks, args.frames, seed=0)
        print(
            f"data: {args.tracks} tracks of ~{args.frames} frames; {args.data_preset} window "
            f"{data_config.data.window} x {data_config.data.input_frames}, batch "
            f"{data_config.optim.batch_size}; step model: {args.preset} "
            f"({step_config.data.input_frames} frames)\n"
        )
        print("| mixup partner | workers per loader | loader samples/s | loader + step samples/s |")
        print("|---|---:|---:|---:|")
        for partner, workers in itertools.product(PARTNERS, args.workers):
            common = {**base, "augment.mixup_partner": partner, "data.num_workers": workers}
            cfg = build_config(args.data_preset, common)
            rate = measure(cfg, root, table, args.steps, args.warmup)
            step_cfg = build_config(args.preset, {**common, "run.device": args.device})
            torch.manual_seed(0)
            placement = Placement(device, step_cfg.run.channels_last, step_cfg.run.amp)
            model = placement.model(build_model(step_cfg.model, step_cfg.data.input_frames))
            both = measure(
                step_cfg, root, table, args.step_steps, args.warmup, model.train(), placement
            )
            print(f"| {partner} | {workers} | {rate:.1f} | {both:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
