"""Backbone initial weights: torchvision's ImageNet weights (from the torch hub cache, or a
download only when the host answers), or a state_dict file (`model.pretrained`)."""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import WeightsEnum

from moodtheme.models.backbones import Backbone


class PretrainedWeightsError(RuntimeError):
    """Backbone weights that cannot be found or do not fit; the message says how to fix it."""


def _how_to_fix() -> str:
    return "or pass model.pretrained=/path/to/weights.pth (a backbone state_dict), or model.pretrained=none"


def _host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parsed = urllib.parse.urlparse(url)
    opened: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    # A thread, because name resolution ignores the socket timeout and may hang offline.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def imagenet_cache_path(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (and looks for) ``weights``: ``$TORCH_HOME/hub/checkpoints/FILE``."""
    filename = os.path.basename(urllib.parse.urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PretrainedWeightsError(
            f"could not read weights file {path} ({reason}); expected a file written by "
            f"torch.save(model.state_dict(), ...)"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedWeightsError(
            f"weights file {path} holds a {type(state).__name__}, not a state_dict mapping "
            f"parameter names to tensors; save one with torch.save(model.state_dict(), ...)"
        )
    return state


def _load_into(backbone: Backbone, state: Mapping[str, Tensor], source: Path) -> None:
    state = backbone.adapt_state_dict(state)
    own = backbone.state_dict()
    # Old checkpoints predate BatchNorm's counter; it does not affect the forward pass.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        f"{k} (file {list(state[k].shape)} vs model {list(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", reshaped),
    ):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{label}: {', '.join(keys[:3])}{more}")
    if problems:
        raise PretrainedWeightsError(
            f"weights file {source} does not fit backbone '{backbone.name}' "
            f"(width_mult={backbone.width_mult}): {'; '.join(problems)}. Give a state_dict of "
            f"torchvision's {backbone.name} (whole model or trunk only), {_how_to_fix()}"
        )
    backbone.load_state_dict(state, strict=False)


def _imagenet_state_dict(backbone: Backbone) -> tuple[Mapping[str, Tensor], Path]:
    weights = backbone.imagenet_weights
    if weights is None:
        raise PretrainedWeightsError(
            f"backbone '{backbone.name}' has no ImageNet weights; use model.pretrained=none or "
            f"model.pretrained=/path/to/weights.pth"
        )
    if backbone.width_mult != 1.0:
        raise PretrainedWeightsError(
            f"ImageNet weights exist only for model.width_mult=1.0, not {backbone.width_mult}; "
            f"set model.width_mult=1.0, {_how_to_fix()}"
        )
    cached = imagenet_cache_path(weights)
    if cached.is_file():
        return _read_state_dict(cached), cached
    fetch = (
        f"ImageNet weights for '{backbone.name}' are not in the torch hub cache. Download "
        f"{weights.url} to {cached} (set TORCH_HOME to use another cache), {_how_to_fix()}"
    )
    if not _host_reachable(weights.url):
        host = urllib.parse.urlparse(weights.url).hostname
        raise PretrainedWeightsError(f"{host} is unreachable. {fetch}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a stalled transfer must fail, not hang the run
    try:
        weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - network and hash failures alike
        raise PretrainedWeightsError(f"download failed ({err}). {fetch}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return _read_state_dict(cached), cached


def load_pretrained(backbone: Backbone, pretrained: str) -> None:
    """Initialise ``backbone`` from ``model.pretrained``: 'imagenet', 'none' or a .pth path.

    ImageNet weights come from the torch hub cache first; a download is tried only when the
    weights host answers within seconds. Raises :class:`PretrainedWeightsError`.
    """
    choice = pretrained.strip()
    if choice.lower() == "none":
        return
    if choice.lower() == "imagenet":
        state, source = _imagenet_state_dict(backbone)
    else:
        source = Path(choice).expanduser()
        if not source.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained={pretrained}: no such file; give an existing backbone "
                f"state_dict (.pth), model.pretrained=imagenet or model.pretrained=none"
            )
        state = _read_state_dict(source)
    _load_into(backbone, state, source)
