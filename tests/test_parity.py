"""Both presets' models are the authors' architectures: same weights in, same outputs out.

``tests/data/parity/authors-outputs.npz`` holds what the AMLAG authors' own model classes
output for weights and inputs set by a fixed rule (its README). A model whose modules differ in
kind or order gets other weights from the rule (or another entry count) and fails here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from moodtheme.config import build_config
from moodtheme.models import build_model, predict_proba

HERE = Path(__file__).resolve().parent
STORED = HERE / "data" / "parity" / "authors-outputs.npz"
SHARED = HERE.parents[1] / "shared" / "data" / "parity" / "authors-outputs.npz"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(STORED) as npz:
        return {key: npz[key] for key in npz.files}


def set_weights_by_rule(model: torch.nn.Module, base: int, std: float) -> int:
    """Fill every floating-point state_dict entry by the parity rule; return the entry count."""
    state = model.state_dict()
    entries = [(name, t) for name, t in state.items() if t.is_floating_point()]
    for i, (name, tensor) in enumerate(entries):
        g = torch.Generator().manual_seed(base + i)
        shape = tensor.shape
        if name.endswith("running_var"):
            value = torch.rand(shape, generator=g) * 1.5 + 0.5
        elif name.endswith("running_mean"):
            value = torch.randn(shape, generator=g) * 0.1
        elif tensor.dim() == 1 and name.endswith("weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = torch.randn(shape, generator=g) * std
        state[name] = value
    model.load_state_dict(state)
    return len(entries)


def parity_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.3 - 0.5


def preset_model(preset: str) -> torch.nn.Module:
    config = build_config(preset, {"model.pretrained": "none"})
    return build_model(config.model, config.data.input_frames, config.data.n_mels).eval()


def test_submission2_matches_the_authors_model(stored):
    model = preset_model("submission2")
    entries = set_weights_by_rule(model, int(stored["base"]), float(stored["std"]))
    assert entries == int(stored["submission2_entries"])
    with torch.no_grad():
        outputs = model(parity_input((2, 1, 96, 4096), int(stored["input_seed"])))
        attention = torch.sigmoid(outputs["attention"]).numpy()
        segment = torch.sigmoid(outputs["segment"]).numpy()
        prediction = predict_proba(outputs).numpy()
    np.testing.assert_allclose(attention, stored["submission2_attention"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(segment, stored["submission2_segment"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(prediction, stored["submission2_prediction"], atol=TOLERANCE, rtol=0)


def test_submission1_matches_the_authors_model(stored):
    model = preset_model("submission1")
    entries = set_weights_by_rule(model, int(stored["base"]), float(stored["std"]))
    assert entries == int(stored["submission1_entries"])
    with torch.no_grad():
        whole = torch.sigmoid(model(parity_input((1, 1, 96, 6590), 7))["whole"]).numpy()
    np.testing.assert_allclose(whole, stored["submission1_whole"], atol=TOLERANCE, rtol=0)


def test_a_padded_embedding_convolution_fails_parity(stored):
    # The check has teeth: the one-layer difference the project once had is caught.
    config = build_config("submission2", {"model.pretrained": "none", "model.embedding_padding": 1})
    model = build_model(config.model, config.data.input_frames).eval()
    set_weights_by_rule(model, int(stored["base"]), float(stored["std"]))
    with torch.no_grad():
        outputs = model(parity_input((2, 1, 96, 4096), int(stored["input_seed"])))
    gap = np.abs(torch.sigmoid(outputs["attention"]).numpy() - stored["submission2_attention"])
    assert gap.max() > 100 * TOLERANCE


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared is not beside this checkout")
def test_the_stored_copy_is_the_shared_file():
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (STORED, SHARED)]
    assert digest[0] == digest[1]
