"""The trainer on a real GPU: placement, bf16 autocast, channels_last, and the memory cap a
fractional-GPU trial sets. Skipped where no CUDA device is visible (CI); run on a GPU machine
with `pytest tests/test_cuda.py`."""

from __future__ import annotations

import pytest
import torch

import moodtheme.train as train
from moodtheme.config import build_config
from moodtheme.device import Placement, cap_gpu_memory, pick_device
from moodtheme.models import build_model
from moodtheme.rundir import load_checkpoint
from moodtheme.schedule import OptimizerSchedule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_config(**overrides):
    return build_config("quick", {"run.device": "cuda", "run.progress": False, **overrides})


def test_train_step_runs_in_bf16_channels_last_on_the_gpu():
    config = cuda_config()
    placement = Placement(pick_device(config.run.device), channels_last=True, amp=True)
    model = placement.model(build_model(config.model, config.data.input_frames, config.data.n_mels))
    seen = {}

    def record(module, inputs, output):
        seen["conv_dtype"] = output.dtype
        seen["conv_input_channels_last"] = inputs[0].is_contiguous(
            memory_format=torch.channels_last
        )

    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(record)
    optimizer = OptimizerSchedule.from_config(config.optim).first_optimizer(model.parameters())
    x = torch.randn(config.optim.batch_size, 1, config.data.n_mels, config.data.input_frames)
    y = (torch.rand(config.optim.batch_size, config.model.num_tags) < 0.1).float()
    before = [p.detach().clone() for p in model.parameters()]
    loss = train.train_step(model, optimizer, x, y, placement)

    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert seen["conv_dtype"] == torch.bfloat16
    assert seen["conv_input_channels_last"]
    assert torch.isfinite(torch.tensor(loss))
    assert any(
        not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters(), strict=True)
    )


def test_fit_on_cuda_writes_cpu_loadable_checkpoints(small_synth, tmp_path):
    config = cuda_config(
        **{
            "data.root": str(small_synth),
            "data.limit_tracks": 64,
            "optim.epochs": 2,
            "optim.switch_epoch": None,
        }
    )
    result = train.fit(config, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())  # map_location="cpu"
    assert "cuda" in ckpt["rng"]
    assert result.history[-1]["epoch"] == 2
    assert 0.0 <= result.final_metrics["test_roc_auc_macro"] <= 1.0


def test_a_fractional_gpu_trial_cannot_allocate_past_its_share():
    total = torch.cuda.get_device_properties(0).total_memory
    cap_gpu_memory(0.25)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(total * 0.3), dtype=torch.uint8, device="cuda")
        ok = torch.empty(int(total * 0.1), dtype=torch.uint8, device="cuda")
        del ok
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
