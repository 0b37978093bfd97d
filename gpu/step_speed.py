"""Single-trial speed: the trainer's training step eager and compiled, and its data path.

    python -m gpu.step_speed --out step.json [--modes none reduce-overhead] [--set KEY=VALUE ...]

Each ``run.compile`` mode gets its own model (same initial weights) and optimiser; after the
warm-up (where a compiled mode pays its compile), the modes take turns, ``--steps`` steps of
``moodtheme.train.train_step`` at a time, ``--repeats`` rounds, on one random batch of the
preset's shape moved to the device every step as in training. So clock drift touches every
mode alike, and each mode's rounds show its spread. ``--data`` also times the training data
path alone (the loader and, for submission 2, the mixup partner's second loader).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch._dynamo

from moodtheme.config import Config, build_config, parse_overrides, with_overrides
from moodtheme.data.loaders import TrainingData, resolve_data_root
from moodtheme.device import Placement, pick_device
from moodtheme.models import build_model
from moodtheme.schedule import OptimizerSchedule
from moodtheme.train import train_step

MIB = 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class ModeRun:
    """One ``run.compile`` mode: its model, optimiser and measurements."""

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config, self.device = config, device
        torch.manual_seed(0)
        r = config.run
        self.placement = Placement(device, r.channels_last, r.amp, r.compile)
        model = build_model(config.model, config.data.input_frames, config.data.n_mels)
        self.model = self.placement.model(model).train()
        self.step_model = self.placement.training_view(self.model)
        schedule = OptimizerSchedule.from_config(config.optim)
        self.optimizer = schedule.first_optimizer(self.model.parameters())
        self.rounds: list[float] = []  # samples/s of each timed round
        self.result: dict[str, Any] = {"mode": config.run.compile}

    def steps(self, x: torch.Tensor, y: torch.Tensor, count: int) -> float:
        """Seconds for ``count`` steps, the device drained before and after."""
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(count):
            train_step(self.step_model, self.optimizer, x, y, self.placement)
        _sync(self.device)
        return time.perf_counter() - start

    def warm_up(self, x: torch.Tensor, y: torch.Tensor, count: int) -> None:
        first = self.steps(x, y, 1)  # a compiled mode compiles here
        rest = self.steps(x, y, max(count - 1, 1))
        self.result.update(first_step_s=round(first, 3), warmup_rest_s=round(rest, 3))

    def timed_round(self, x: torch.Tensor, y: torch.Tensor, count: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        seconds = self.steps(x, y, count)
        self.rounds.append(count * x.shape[0] / seconds)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated()
            self.result["step_peak_extra_mib"] = round((peak - before) / MIB, 1)
            self.result["process_peak_allocated_mib"] = round(peak / MIB, 1)

    def summary(self, batch: int) -> dict[str, Any]:
        best = max(self.rounds)
        return {
            **self.result,
            "samples_per_s_rounds": [round(r, 1) for r in self.rounds],
            "samples_per_s_best": round(best, 1),
            "ms_per_step_best": round(1000 * batch / best, 2),
        }


def random_batch(config: Config) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    b, shape = config.optim.batch_size, (config.data.n_mels, config.data.input_frames)
    x = torch.randn(b, 1, *shape, generator=generator) * 0.2 - 0.5
    y = (torch.rand(b, config.model.num_tags, generator=generator) < 0.05).float()
    return x, y


def dynamo_counters() -> dict[str, dict[str, int]]:
    wanted = ("stats", "graph_break", "inductor", "recompiles")
    counters = torch._dynamo.utils.counters
    return {k: {str(n): int(v) for n, v in counters[k].items()} for k in wanted if k in counters}


def measure_steps(
    base: Config, modes: list[str], steps: int, warmup: int, repeats: int
) -> dict[str, Any]:
    device = pick_device(base.run.device)
    configs = {mode: with_overrides(base, {"run.compile": mode}) for mode in modes}
    x, y = random_batch(base)
    runs = {}
    for mode, config in configs.items():
        runs[mode] = ModeRun(config, device)
        runs[mode].warm_up(x, y, warmup)
        print(f"{mode}: first step {runs[mode].result['first_step_s']} s", flush=True)
    for _ in range(repeats):
        for run in runs.values():
            run.timed_round(x, y, steps)
    out = {mode: run.summary(base.optim.batch_size) for mode, run in runs.items()}
    for mode, result in out.items():
        print(f"{mode}: {result['samples_per_s_rounds']} samples/s", flush=True)
    return {"modes": out, "dynamo": dynamo_counters(), "steps": steps, "repeats": repeats}


def measure_loader(config: Config, batches: int) -> dict[str, Any]:
    """Training samples/s that the data path alone delivers (both loaders when mixup draws
    its partners from a second one), after a few warm-up batches."""
    data = TrainingData.build(config, resolve_data_root(config.data.root))
    streams = [s for s in ("train", "mixup_partner") if s in data.loaders]
    loaders = [data.loaders[s] for s in streams]
    workers, size = config.data.num_workers, config.optim.batch_size

    def forever():
        while True:
            yield from zip(*loaders, strict=False)

    batches_in = forever()
    for _ in range(3):  # worker start-up and first reads
        next(batches_in)
    start = time.perf_counter()
    for _ in range(batches):
        next(batches_in)
    seconds = time.perf_counter() - start
    return {
        "streams": streams,
        "workers_per_loader": workers,
        "batches": batches,
        "samples_per_s": round(batches * size / seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--preset", default="submission2")
    parser.add_argument("--modes", nargs="+", default=["none", "reduce-overhead"])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loader-batches", type=int, default=60)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = {"model.pretrained": "none", **parse_overrides(args.set)}
    config = build_config(args.preset, overrides)
    device = pick_device(config.run.device)
    result: dict[str, Any] = {
        "preset": args.preset,
        "overrides": overrides,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    result["steps"] = measure_steps(config, args.modes, args.steps, args.warmup, args.repeats)
    if config.data.root is not None and args.loader_batches > 0:
        result["loader"] = measure_loader(config, args.loader_batches)
        print(f"loader: {result['loader']['samples_per_s']} samples/s", flush=True)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
