"""Where a run computes: device choice, torch's CPU settings, mixed precision, memory layout."""

from __future__ import annotations

import contextlib

import torch

from moodtheme.config import RunConfig
from moodtheme.errors import TrainingError


def pick_device(choice: str) -> torch.device:
    """``auto`` (CUDA when there is one), ``cpu`` or ``cuda``."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainingError("run.device=cuda but no CUDA device is visible; use run.device=auto")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def configure_torch(device: torch.device, threads: int | None, deterministic: bool) -> None:
    if threads is not None:
        # Oversubscribed OpenMP threads spin against each other: with several trials per
        # machine each one must stay within its CPU share, or all of them crawl.
        torch.set_num_threads(threads)
    if deterministic and device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def cap_gpu_memory(fraction: float) -> None:
    """Hold this process to ``fraction`` (0..1) of the GPU's memory, so processes sharing a
    card cannot starve each other; no-op for 0, 1 or without CUDA."""
    if 0 < fraction < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction)


class Placement:
    """How tensors and the model sit on ``device``: channels_last and bf16 autocast apply on
    CUDA only (on a CPU both stay off, so CPU runs are float32 and deterministic)."""

    def __init__(
        self, device: torch.device, channels_last: bool, amp: bool, compile: str = "none"
    ) -> None:
        self.device = device
        self.channels_last = channels_last and device.type == "cuda"
        self.amp = amp and device.type == "cuda"
        # torch.compile of the training step (run.compile); CUDA graphs exist on CUDA only.
        self.compile = (
            compile if compile != "reduce-overhead" or device.type == "cuda" else "default"
        )

    @classmethod
    def for_run(cls, run: RunConfig) -> Placement:
        """The device ``run.device`` names, with torch's threads and determinism set."""
        device = pick_device(run.device)
        configure_torch(device, run.threads, run.deterministic)
        return cls(device, run.channels_last, run.amp, run.compile)

    @property
    def cuda_graphs(self) -> bool:
        return self.compile == "reduce-overhead"

    def training_view(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training step calls: ``model`` itself, or with ``run.compile`` a
        compiled view sharing its parameters, so checkpoints, evaluation and the optimiser
        keep using ``model`` and its state_dict keys.

        Shapes are static (``dynamic=False``): the training loader drops its last partial
        batch, so one graph serves the whole run, and a shape that does change gets its own
        graph rather than a slower dynamic one.
        """
        if self.compile == "none":
            return model
        return torch.compile(model, mode=self.compile, dynamic=False)

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)
