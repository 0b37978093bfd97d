"""``run.compile``: the training step through torch.compile computes what the eager step
computes, compiles once per run, and leaves checkpoints as they were. On the CPU inductor
generates C++ (the GPU script measures the CUDA graphs of ``reduce-overhead``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo

import moodtheme.train as train
from moodtheme.config import build_config
from moodtheme.device import Placement
from moodtheme.models import build_model
from moodtheme.rundir import load_checkpoint
from moodtheme.schedule import OptimizerSchedule

# Dropout off: compiled code draws its own random numbers, so only then are both paths equal.
SMALL = {
    "model.backbone": "small_cnn",
    "model.width_mult": 1.0,
    "model.segments": 4,
    "model.segment_frames": 32,
    "data.input_frames": 128,
    "model.embed_dim": 16,
    "model.attention.ff_dim": 32,
    "model.dropout": 0.0,
    "model.attention.attention_dropout": 0.0,
    "model.attention.hidden_dropout": 0.0,
    "optim.batch_size": 8,
    "run.device": "cpu",
    "run.progress": False,
}


def small_config(**overrides):
    return build_config("quick", {**SMALL, **overrides})


def placement_for(config, device):
    return Placement(device, config.run.channels_last, config.run.amp, config.run.compile)


def sgd(params, lr, config):
    return OptimizerSchedule.from_config(config.optim).sgd(params, lr)


def assert_close_in_norm(actual, expected, name, rel=1e-7):
    """Equal up to float rounding, measured over the whole tensor: fused kernels sum in
    another order, so single elements near zero may differ by more than an elementwise rtol."""
    error = torch.linalg.vector_norm(actual - expected)
    scale = torch.linalg.vector_norm(expected)
    assert error <= rel * scale + 1e-12, f"{name}: |difference| {error:.3g} vs |value| {scale:.3g}"


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.slow  # inductor compiles C++ for a minute or more on a fresh cache
def test_compiled_steps_match_the_eager_steps():
    config = small_config(**{"run.compile": "default"})
    device = torch.device("cpu")
    torch.manual_seed(0)
    # float64, so the fused kernels' other summation order stays far below the tolerance.
    eager = build_model(config.model, config.data.input_frames, config.data.n_mels).double()
    compiled_source = copy.deepcopy(eager)
    placement = placement_for(config, device)
    compiled = placement.training_view(compiled_source)
    assert compiled is not compiled_source  # a compiled view, not the model itself
    eager.train(), compiled.train()
    # SGD: its update is linear in the gradient (Adam's first step is about lr * sign(g), so
    # a gradient within rounding of zero could flip a weight by 2 lr).
    opt_eager = sgd(eager.parameters(), 0.1, config)
    opt_compiled = sgd(compiled_source.parameters(), 0.1, config)
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):  # the second step runs on updated weights and batch-norm statistics
        shape = (8, 1, config.data.n_mels, config.data.input_frames)
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.2 - 0.5
        y = (torch.rand(8, config.model.num_tags, generator=generator) < 0.2).double()
        loss_eager = train.train_step(eager, opt_eager, x, y, placement)
        loss_compiled = train.train_step(compiled, opt_compiled, x, y, placement)
        assert loss_compiled == pytest.approx(loss_eager, rel=1e-9)
        for (name, p), q in zip(
            eager.named_parameters(), compiled_source.parameters(), strict=True
        ):
            assert_close_in_norm(q.grad, p.grad, name)
            assert_close_in_norm(q, p, name)
    for (name, b), c in zip(eager.named_buffers(), compiled_source.buffers(), strict=True):
        assert_close_in_norm(c.double(), b.double(), name)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled
    assert not torch._dynamo.utils.counters["graph_break"], "the model's forward breaks graphs"


@pytest.mark.slow
def test_fit_compiles_once_and_keeps_plain_checkpoints(small_synth, tmp_path):
    config = small_config(
        **{
            "data.root": str(small_synth),
            "data.limit_tracks": 40,
            "optim.epochs": 2,
            "optim.switch_epoch": 1,  # a new optimiser and reloaded weights: no recompile
            "run.compile": "default",
        }
    )
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = train.fit(config, tmp_path / "run")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert [h["epoch"] for h in result.history] == [1.0, 2.0]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    plain = build_model(config.model, config.data.input_frames, config.data.n_mels)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint")["model"]
    assert set(saved) == set(plain.state_dict())  # no _orig_mod. prefixes


def test_no_compile_hands_back_the_model_itself():
    config = small_config()
    model = build_model(config.model, config.data.input_frames, config.data.n_mels)
    assert placement_for(config, torch.device("cpu")).training_view(model) is model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_steps_follow_the_eager_steps_in_bf16():
    """``reduce-overhead`` on a GPU: the steps replay as CUDA graphs (none skipped) and give
    the eager step's losses within bf16 rounding."""
    config = small_config(**{"run.device": "cuda", "run.compile": "reduce-overhead"})
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = build_model(config.model, config.data.input_frames, config.data.n_mels).to(device)
    eager = eager.to(memory_format=torch.channels_last)
    compiled_source = copy.deepcopy(eager)
    placement = placement_for(config, device)
    compiled = placement.training_view(compiled_source)
    eager.train(), compiled.train()
    opt_eager = sgd(eager.parameters(), 0.01, config)
    opt_compiled = sgd(compiled_source.parameters(), 0.01, config)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):  # cudagraph trees record on the second or third call, then replay
        shape = (8, 1, config.data.n_mels, config.data.input_frames)
        x = torch.randn(shape, generator=generator) * 0.2 - 0.5
        y = (torch.rand(8, config.model.num_tags, generator=generator) < 0.2).float()
        loss_eager = train.train_step(eager, opt_eager, x, y, placement)
        loss_compiled = train.train_step(compiled, opt_compiled, x, y, placement)
        assert loss_compiled == pytest.approx(loss_eager, rel=2e-2)
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] >= 1
    assert not counters["inductor"].get("cudagraph_skips"), dict(counters["inductor"])


def test_compile_modes_survive_the_command_line():
    # YAML reads a bare off/on/no/yes as a boolean: every mode must stay a string.
    for mode in ("none", "default", "reduce-overhead"):
        assert build_config("quick", [f"run.compile={mode}"]).run.compile == mode
