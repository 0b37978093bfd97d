"""Tests for moodtheme.models: architecture, heads, losses, pretrained loading, CLI."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from moodtheme import models
from moodtheme.config import ConfigError, build_config
from moodtheme.models import (
    BACKBONES,
    PretrainedWeightsError,
    build_backbone,
    build_model,
    combined_loss,
    head_losses,
    load_pretrained,
    predict_proba,
    register_backbone,
    summary,
)

REPO = Path(__file__).resolve().parents[1]
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(preset: str = "quick", **overrides):
    """A model (random init) and its config; overrides use '__' for dots."""
    flat = {"model.pretrained": "none"}
    flat.update({k.replace("__", "."): v for k, v in overrides.items()})
    cfg = build_config(preset, flat)
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.data.input_frames, cfg.data.n_mels), cfg


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def example(cfg, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, cfg.data.n_mels, cfg.data.input_frames, generator=gen)


def calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics of ``x``.

    A fresh network's default running statistics make the deep backbone's activations vanish
    in eval mode, so every segment would get the same embedding.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration pass
    with torch.no_grad():
        model.train()(x)
    return model.eval()


# ----------------------------------------------------------------------------- architecture


@pytest.mark.parametrize(
    ("preset", "expected"), [("submission1", 2_295_663), ("submission2", 9_993_895)]
)
def test_parameter_counts_match_the_submissions(preset, expected):
    model, _ = make(preset)
    assert n_params(model) == expected


def test_submission2_parameter_breakdown():
    model, _ = make("submission2")
    assert n_params(model.stem) == 55
    assert n_params(model.backbone) == 2_223_872
    assert [n_params(m) for m in model.embedding if isinstance(m, nn.Conv2d)] == [
        5_898_752,
        131_328,
    ]
    assert [n_params(layer) for layer in model.attention.encoder] == [789_760, 789_760]
    assert n_params(model.attention.pooler) == 65_792
    assert n_params(model.attention.classifier) == 14_392
    assert n_params(model.segment_head) == 80_184
    # The ImageNet classifier of MobileNetV2 is not part of the model.
    assert not any("classifier" in name for name, _ in model.backbone.named_parameters())


def test_submission1_forward_shape():
    model, cfg = make("submission1")
    assert cfg.data.input_frames == 6590
    with torch.no_grad():
        out = model.eval()(example(cfg, batch=1))
    assert list(out) == ["whole"] == list(model.head_names)
    assert out["whole"].shape == (1, 56)


def test_submission2_forward_shape():
    model, cfg = make("submission2")
    assert (cfg.data.input_frames, cfg.model.segments, cfg.model.segment_frames) == (4096, 16, 256)
    with torch.no_grad():
        out = model.eval()(example(cfg, batch=1))
    assert list(out) == ["attention", "segment"] == list(model.head_names)
    assert all(v.shape == (1, 56) and torch.isfinite(v).all() for v in out.values())


def test_quick_and_attention_off_shapes():
    model, cfg = make("quick")
    x = example(cfg, batch=3)
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"attention": (3, 56), "segment": (3, 56)}

    no_attention, _ = make("quick", model__attention__enabled=False)
    out = no_attention(x)
    assert list(out) == ["segment"] == list(no_attention.head_names)
    assert out["segment"].shape == (3, 56)
    assert no_attention.attention is None
    assert n_params(no_attention) == n_params(model) - n_params(model.attention)


def test_positional_encoding_row_zero_is_zero_and_rest_sinusoidal():
    model, _ = make("submission2")
    table = model.attention.positions.table
    assert table.shape == (16, 256)
    assert torch.equal(table[0], torch.zeros(256))
    assert (table[1:].abs().sum(dim=1) > 0).all()
    assert table[1, 0].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert table[1, 1].item() == pytest.approx(math.cos(1.0), abs=1e-6)
    assert table[5, 10].item() == pytest.approx(math.sin(5 / 10000 ** (10 / 256)), abs=1e-6)
    assert table[5, 11].item() == pytest.approx(math.cos(5 / 10000 ** (10 / 256)), abs=1e-6)
    # A fixed encoding: not trained, not in checkpoints.
    assert "attention.positions.table" not in model.state_dict()
    assert all(p is not table for p in model.parameters())


def test_heads_layers_segments_dropout_configurable():
    model, cfg = make(
        "quick",
        model__attention__heads=8,
        model__attention__layers=3,
        model__attention__ff_dim=32,
        model__segments=4,
        model__segment_frames=64,
        model__dropout=0.5,
    )
    layers = list(model.attention.encoder)
    assert len(layers) == 3
    assert all(layer.attention.heads == 8 for layer in layers)
    assert layers[0].intermediate[0].out_features == 32
    assert model.attention.positions.table.shape == (4, 64)
    assert model.segment_head.classifier[0].p == 0.5
    assert model.attention.classifier[0].p == 0.5
    out = model(example(cfg))
    assert out["attention"].shape == out["segment"].shape == (2, 56)

    wide, _ = make("quick", model__embed_dim=32, model__num_tags=10)
    out = wide(example(cfg))
    assert out["segment"].shape == (2, 10)
    assert wide.segment_head.classifier[1].in_features == 32


def test_segment_count_must_tile_the_input():
    cfg = build_config("quick", {"model.pretrained": "none"})
    with pytest.raises(ConfigError, match=r"model\.segments \* model\.segment_frames = 8 \* 32"):
        build_model(cfg.model, input_frames=1000)
    model, cfg = make("quick")
    with pytest.raises(ValueError, match=r"\[B, 1, n_mels, 256\], got \[2, 1, 96, 500\]"):
        model(torch.zeros(2, 1, 96, 500))


def test_attention_head_sees_segment_order_and_segment_head_does_not():
    model, cfg = make("quick")
    x = example(cfg)
    model = calibrated(model, x)
    frames = cfg.model.segment_frames
    swapped = x.clone()
    # Swap segments 2 and 5; the first (pooled) segment stays put.
    swapped[..., 2 * frames : 3 * frames] = x[..., 5 * frames : 6 * frames]
    swapped[..., 5 * frames : 6 * frames] = x[..., 2 * frames : 3 * frames]
    with torch.no_grad():
        embeddings = model.embed_segments(x)
        assert (embeddings[:, 2] - embeddings[:, 5]).abs().max() > 1e-2  # segments do differ
        out, out_swapped = model(x), model(swapped)
        assert (out["segment"] - model(x.flip(-1))["segment"]).abs().max() > 1e-3
        assert torch.allclose(out["segment"], out_swapped["segment"], atol=1e-5)
        assert (out["attention"] - out_swapped["attention"]).abs().max() > 1e-4

        # The positional encoding is what makes the order matter.
        model.attention.positions.table.zero_()
        out, out_swapped = model(x), model(swapped)
        assert torch.allclose(out["attention"], out_swapped["attention"], atol=1e-5)


def test_segment_head_averages_segment_probabilities():
    model, cfg = make("quick")
    x = example(cfg)
    model = calibrated(model, x)
    with torch.no_grad():
        embeddings = model.embed_segments(x)
        assert embeddings.shape == (2, 8, 64)
        per_segment = model.segment_head.segment_logits(embeddings)
        assert per_segment.shape == (2, 8, 56)
        out = model(x)
    assert torch.allclose(out["segment"].sigmoid(), per_segment.sigmoid().mean(dim=1), atol=1e-6)


def test_mean_probability_logit_is_stable_at_extremes():
    logits = torch.tensor([[[1000.0, 100.0, -1000.0]], [[1000.0, -100.0, -1000.0]]]).transpose(0, 1)
    result = models.mean_probability_logit(logits, dim=1)
    assert torch.isfinite(result).all()
    assert result[0, 0].item() == pytest.approx(1000.0)
    assert result[0, 1].item() == pytest.approx(0.0, abs=1e-5)
    assert result[0, 2].item() == pytest.approx(-1000.0)


def test_channels_last_gives_the_same_outputs():
    for preset, overrides in (("quick", {}), ("quick", {"model__arch": "whole"})):
        model, cfg = make(preset, **overrides)
        x = example(cfg)
        model = calibrated(model, x)
        with torch.no_grad():
            expected = model(x)
            assert (
                expected[model.head_names[0]][0] - expected[model.head_names[0]][1]
            ).abs().max() > 1e-3
            model = model.to(memory_format=torch.channels_last)
            got = model(x.to(memory_format=torch.channels_last))
        assert got.keys() == expected.keys()
        for head in got:
            assert torch.allclose(got[head], expected[head], atol=1e-5), head


def test_stem_cpu_path_matches_its_convolutions_forward_and_backward():
    torch.manual_seed(0)
    stem = models.Stem()
    for parameter in stem.parameters():
        nn.init.normal_(parameter)
    x = 3 * torch.randn(4, 1, 96, 32)
    for training in (True, False):
        stem.train(training)
        results = []
        for forward in (stem.forward, lambda t: nn.Sequential.forward(stem, t)):
            stem.zero_grad()
            inputs = x.clone().requires_grad_()
            out = forward(inputs)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            results.append([out, inputs.grad, *(p.grad.clone() for p in stem.parameters())])
        fast, convolutions = results
        # Both ReLUs must be partly on, or the comparison would miss a wrong weight layout.
        assert 0.1 < (fast[0] > 0).float().mean() < 0.9
        for got, expected in zip(fast, convolutions, strict=True):
            assert got.shape == expected.shape
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_backward_reaches_every_parameter():
    model, cfg = make("quick")
    model.train()
    targets = (torch.rand(2, 56, generator=torch.Generator().manual_seed(3)) > 0.8).float()
    combined_loss(model(example(cfg)), targets).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.attention.classifier[1].weight.grad.abs().sum() > 0
    assert model.segment_head.classifier[3].weight.grad.abs().sum() > 0
    assert model.stem[1].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- losses


def test_losses_are_the_mean_of_per_head_bce():
    gen = torch.Generator().manual_seed(0)
    outputs = {
        "attention": torch.randn(4, 56, generator=gen),
        "segment": torch.randn(4, 56, generator=gen),
    }
    targets = torch.rand(4, 56, generator=gen)  # soft, as after mixup

    def bce(logits):
        p = logits.sigmoid()
        return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()

    losses = head_losses(outputs, targets)
    assert set(losses) == {"attention", "segment"}
    for head, logits in outputs.items():
        assert losses[head].item() == pytest.approx(bce(logits).item(), rel=1e-5)
    expected = (bce(outputs["attention"]) + bce(outputs["segment"])) / 2
    assert combined_loss(outputs, targets).item() == pytest.approx(expected.item(), rel=1e-5)

    proba = predict_proba(outputs)
    assert torch.allclose(
        proba, (outputs["attention"].sigmoid() + outputs["segment"].sigmoid()) / 2
    )
    single = {"whole": outputs["segment"]}
    assert torch.allclose(predict_proba(single), outputs["segment"].sigmoid())
    assert combined_loss(single, targets).item() == pytest.approx(
        bce(outputs["segment"]).item(), rel=1e-5
    )


def test_loss_handles_saturated_logits_and_bf16():
    outputs = {"whole": torch.tensor([[200.0, -200.0]], dtype=torch.bfloat16)}
    loss = combined_loss(outputs, torch.tensor([[0.0, 1.0]]))
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0)


# ----------------------------------------------------------------------------- backbones


def test_registry_lists_backbones_and_accepts_new_ones():
    assert {"mobilenet_v2", "resnext50_32x4d", "resnext_tiny_shallow", "small_cnn"} <= set(
        BACKBONES
    )
    with pytest.raises(
        ConfigError, match="model.backbone='vgg' is not a registered backbone.*mobilenet_v2"
    ):
        build_backbone("vgg")

    class Tiny(models.Backbone):
        out_channels = 8

        def __init__(self, width_mult: float = 1.0):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

        def forward(self, x):
            return self.conv(x)

    try:
        register_backbone("test_tiny")(Tiny)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone("test_tiny")(Tiny)
        model, cfg = make("quick", model__backbone="test_tiny", model__width_mult=1.0)
        assert isinstance(model.backbone, Tiny) and model.backbone.name == "test_tiny"
        assert model(example(cfg))["segment"].shape == (2, 56)
    finally:
        BACKBONES.pop("test_tiny", None)


def test_resnext_tiny_shallow_is_grouped_and_runs():
    model, cfg = make("quick", model__backbone="resnext_tiny_shallow", model__width_mult=1.0)
    grouped = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.groups == 32]
    assert len(grouped) == 4  # one Bottleneck per stage
    assert model.backbone.out_channels == 512
    assert n_params(model.backbone) < 600_000
    out = model(example(cfg))
    assert out["attention"].shape == (2, 56)


def test_small_cnn_is_a_strided_plain_cnn_and_runs_in_the_quick_model():
    model, cfg = make("quick", model__backbone="small_cnn", model__width_mult=1.0)
    backbone = model.backbone
    assert n_params(backbone) == 60_688
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in backbone.modules())
    # A 96 x 32 segment comes out at 1/16 of its resolution, with 64 channels.
    assert backbone(torch.zeros(3, 3, 96, 32)).shape == (3, 64, 6, 2)
    out = model(example(cfg))
    assert out["attention"].shape == out["segment"].shape == (2, 56)
    with pytest.raises(PretrainedWeightsError, match="'small_cnn' has no ImageNet weights"):
        load_pretrained(backbone, "imagenet")


def test_resnext_rejects_width_mult():
    with pytest.raises(
        ConfigError, match="model.width_mult=0.25 applies only to mobilenet_v2.*resnext50"
    ):
        make("quick", model__backbone="resnext50_32x4d")


def test_mobilenet_width_mult_scales_the_backbone():
    narrow = build_backbone("mobilenet_v2", 0.5)
    assert n_params(narrow) < n_params(build_backbone("mobilenet_v2", 1.0))
    assert narrow.out_channels == 1280


# ----------------------------------------------------------------------------- pretrained weights


def _assert_loaded(backbone: nn.Module, saved: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = backbone.state_dict()
    compared = 0
    for key, value in saved.items():
        if key.startswith(("classifier.", "fc.")):
            continue
        assert torch.equal(own[prefix + key], value), key
        compared += 1
    assert compared == len(own)


def _random_mobilenet_state(seed: int = 7, width_mult: float = 1.0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult)
    with torch.no_grad():  # BN statistics differ from a fresh model's, so they are checked too
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return net.state_dict()


def test_loads_a_full_torchvision_state_dict_from_a_file(tmp_path):
    saved = _random_mobilenet_state()
    path = tmp_path / "mobilenet.pth"
    torch.save(saved, path)
    cfg = build_config("submission2", {"model.pretrained": str(path)})
    model = build_model(cfg.model, cfg.data.input_frames)
    _assert_loaded(model.backbone, saved)


def test_loads_a_features_only_state_dict(tmp_path):
    torch.manual_seed(8)
    features = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    path = tmp_path / "features.pth"
    torch.save(features, path)
    backbone = build_backbone("mobilenet_v2")
    load_pretrained(backbone, str(path))
    _assert_loaded(backbone, features, prefix="features.")


def test_loads_resnext50_torchvision_state_dict(tmp_path):
    torch.manual_seed(9)
    saved = torchvision.models.resnext50_32x4d(weights=None).state_dict()
    path = tmp_path / "resnext.pth"
    torch.save(saved, path)
    backbone = build_backbone("resnext50_32x4d")
    load_pretrained(backbone, str(path))
    _assert_loaded(backbone, saved)


def test_imagenet_weights_come_from_the_hub_cache_without_network(tmp_path, monkeypatch):
    saved = _random_mobilenet_state(seed=11)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / MOBILENET_FILE
    cached.parent.mkdir(parents=True)
    torch.save(saved, cached)

    def no_network(url, timeout=3.0):
        raise AssertionError("the network must not be touched when the cache has the weights")

    monkeypatch.setattr(models.pretrained, "_host_reachable", no_network)
    assert (
        models.imagenet_cache_path(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1) == cached
    )
    cfg = build_config("submission1")
    assert cfg.model.pretrained == "imagenet"
    model = build_model(cfg.model, cfg.data.input_frames)
    _assert_loaded(model.backbone, saved)


def test_imagenet_download_when_the_host_answers(tmp_path, monkeypatch):
    saved = _random_mobilenet_state(seed=12)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(models.pretrained, "_host_reachable", lambda url, timeout=3.0: True)
    calls = []

    def fake_download(url, *args, **kwargs):
        calls.append(url)
        target = tmp_path / "hub" / "checkpoints" / Path(url).name
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, target)
        return saved

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    backbone = build_backbone("mobilenet_v2")
    load_pretrained(backbone, "imagenet")
    assert calls == [torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url]
    _assert_loaded(backbone, saved)

    def failing_download(url, *args, **kwargs):
        raise OSError("connection reset")

    (tmp_path / "hub" / "checkpoints" / MOBILENET_FILE).unlink()
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", failing_download)
    with pytest.raises(PretrainedWeightsError, match="download failed \\(connection reset\\)"):
        load_pretrained(build_backbone("mobilenet_v2"), "imagenet")


def test_offline_without_cache_says_how_to_provide_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(models.pretrained, "_host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained(build_backbone("mobilenet_v2"), "imagenet")
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / MOBILENET_FILE) in message
    assert "download.pytorch.org is unreachable" in message
    assert "model.pretrained=/path/to/weights.pth" in message
    assert "model.pretrained=none" in message
    assert "\n" not in message


def test_imagenet_refuses_other_widths_and_weightless_backbones():
    with pytest.raises(PretrainedWeightsError, match="only for model.width_mult=1.0, not 0.25"):
        load_pretrained(build_backbone("mobilenet_v2", 0.25), "imagenet")
    with pytest.raises(
        PretrainedWeightsError, match="'resnext_tiny_shallow' has no ImageNet weights"
    ):
        load_pretrained(build_backbone("resnext_tiny_shallow"), "imagenet")


def test_bad_weight_files_get_clear_errors(tmp_path):
    backbone = build_backbone("mobilenet_v2")
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(PretrainedWeightsError, match=f"model.pretrained={missing}: no such file"):
        load_pretrained(backbone, str(missing))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match=f"could not read weights file {garbage}"):
        load_pretrained(backbone, str(garbage))

    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(PretrainedWeightsError, match=f"weights file {a_list} holds a list"):
        load_pretrained(backbone, str(a_list))

    narrow = tmp_path / "narrow.pth"
    torch.save(_random_mobilenet_state(width_mult=0.5), narrow)
    with pytest.raises(PretrainedWeightsError) as err:
        load_pretrained(backbone, str(narrow))
    message = str(err.value)
    assert f"weights file {narrow} does not fit backbone 'mobilenet_v2'" in message
    assert "wrong shape: features.0.0.weight (file [16, 3, 3, 3] vs model [32, 3, 3, 3])" in message

    other = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(
        PretrainedWeightsError, match=r"missing: features\.0\.0\.weight.*unexpected: "
    ):
        load_pretrained(backbone, str(other))


def test_host_reachable_probe(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert models.pretrained._host_reachable(
            f"https://127.0.0.1:{port}/weights.pth", timeout=2.0
        )
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: refused
    assert not models.pretrained._host_reachable(
        f"https://127.0.0.1:{port}/weights.pth", timeout=2.0
    )


# ----------------------------------------------------------------------------- CLI


def test_cli_summarises_submission2(capsys):
    assert summary.main(["--preset", "submission2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "parameters: 9993895"
    assert "model.pretrained='imagenet' is not loaded" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:-1]}
    assert list(rows) == ["stem", "backbone", "embedding", "attention", "segment_head"]
    assert rows["backbone"].endswith("[16, 1280, 3, 8]")
    assert rows["embedding"].endswith("[16, 256]")
    assert rows["attention"].endswith("[1, 56]") and rows["segment_head"].endswith("[1, 56]")
    assert sum(int(row.split()[1].replace(",", "")) for row in rows.values()) == 9_993_895


def test_cli_overrides_and_counts(capsys):
    assert summary.main(["--preset", "quick", "model.attention.enabled=false"]) == 0
    out = capsys.readouterr().out
    model, _ = make("quick", model__attention__enabled=False)
    assert out.strip().splitlines()[-1] == f"parameters: {n_params(model)}"
    assert "attention" not in out.split("\n", 2)[2]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--preset", "quick", "model.atention.heads=2"],
            "unknown config key 'model.atention.heads'",
        ),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "quick", "model.backbone=vgg"], "model.backbone='vgg' is not a registered"),
    ],
)
def test_cli_config_errors_are_one_line(capsys, argv, needle):
    assert summary.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and needle in captured.err


def test_cli_module_entry_point_exits_2_without_traceback():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moodtheme.models",
            "--preset",
            "submission2",
            "model.attention.heads=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: invalid config")
    assert "model.attention.heads=3 must divide model.embed_dim=256" in result.stderr


@pytest.mark.parametrize("attention", [True, False])
def test_prior_output_bias_sets_every_heads_bias_to_the_tag_log_odds(attention):
    cfg = build_config("quick", {"model.attention.enabled": attention}).model
    model = models.build_model(cfg, 256)
    labels = torch.zeros(40, 56)
    labels[:4, 0] = 1  # 10% of tracks
    labels[:, 1] = 1  # every track: clipped to 1 - 0.5/40
    # tag 2 has no positives: clipped to 0.5/40
    models.init_output_bias(model, labels.numpy())
    layers = model.output_layers()
    assert len(layers) == (2 if attention else 1)
    for layer in layers:
        bias = layer.bias.detach()
        assert torch.isfinite(bias).all()
        assert bias[0].item() == pytest.approx(math.log(0.1 / 0.9), rel=1e-5)
        assert bias[1].item() == pytest.approx(math.log(79.0), rel=1e-5)
        assert bias[2].item() == pytest.approx(-math.log(79.0), rel=1e-5)
    with pytest.raises(ValueError, match="55 tags"):
        models.init_output_bias(model, labels[:, :55].numpy())


def test_only_the_quick_preset_starts_from_the_prior():
    assert build_config("quick").model.output_bias == "prior"
    assert build_config("submission1").model.output_bias == "default"
    assert build_config("submission2").model.output_bias == "default"
    with pytest.raises(ConfigError, match="output_bias"):
        build_config("quick", {"model.output_bias": "mean"})


def test_default_output_bias_is_pytorchs_uniform_init_as_in_the_authors_code():
    # nn.Linear draws its bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); nothing zeroes it.
    cfg = build_config("submission2", {"model.pretrained": "none"}).model
    model = models.build_model(cfg, 4096)
    for layer in model.output_layers():
        bound = 1 / math.sqrt(layer.in_features)
        bias = layer.bias.detach()
        assert bias.abs().max() <= bound
        assert (bias != 0).all() and bias.std() > bound / 4


def test_embedding_convolution_is_unpadded_for_submission2_and_refuses_small_maps():
    cfg = build_config("submission2", {"model.pretrained": "none"}).model
    conv = models.build_model(cfg, 4096).embedding[0]
    assert conv.kernel_size == (3, 3) and conv.padding == (0, 0)
    quick = build_config("quick").model
    assert models.build_model(quick, 256).embedding[0].padding == (1, 1)
    unpadded = quick.model_copy(update={"embedding_padding": 0})
    with pytest.raises(ConfigError, match=r"turns a 96 x 32 segment into 3x1.*embedding_padding=1"):
        models.build_model(unpadded, 256)
