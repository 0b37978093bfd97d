"""Train and eval transforms for mel-spectrograms, and batch-level mixup.

A transform takes a read-only memory map ``mel`` (n_mels x T, dB) and a
``np.random.Generator`` and returns a float32 (n_mels x frames) array divided by
``AugmentConfig.scale``. It slices the map itself, so a long track costs only the frames of
its window.

The train pipeline follows the AMLAG code (sainathadapa/mediaeval-2019-moodtheme-detection,
``submission{1,2}/transforms.py``, ``get_transforms``): a window of ``frames`` frames, random
resized crop with p 0.33 (their ``random_resized_crop.py``), SpecAugment with p 0.5, divide
by 100. The window (``DataConfig.window``) is where the submissions differ: submission 1 pads
a short track around its centre (wrap or constant) and takes a random crop; submission 2's
``dataloader.py`` (``get_spectogram``) takes the first ``frames`` frames of every track and
tiles a short one from its start, so its pad and random crop never act.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from moodtheme.config import AugmentConfig


def _read(mel: np.ndarray, start: int, width: int) -> np.ndarray:
    """A writable float32 copy of ``mel[:, start:start + width]``; only those frames are read."""
    return np.array(mel[:, start : start + width], dtype=np.float32)


def pad_to(x: np.ndarray, frames: int, mode: str) -> np.ndarray:
    """Pad (n_mels x T) to ``frames`` with the track centred: ``wrap`` repeats the track,
    ``constant`` fills with its minimum (the quietest value, i.e. silence in dB)."""
    missing = frames - x.shape[1]
    if missing <= 0:
        return x
    widths = ((0, 0), (missing // 2, missing - missing // 2))
    if mode == "wrap":
        return np.pad(x, widths, mode="wrap")
    return np.pad(x, widths, mode="constant", constant_values=x.min())


def _resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    # Linear interpolation with half-pixel centres: the same samples as
    # torch.nn.functional.interpolate(mode="bilinear", align_corners=False) and PIL's
    # bilinear upscaling, which torchvision's RandomResizedCrop uses.
    n = x.shape[axis]
    if n == size:
        return x
    pos = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(x.dtype)
    shape = [1, 1]
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def resize_bilinear(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array to ``shape`` (separable, half-pixel centres)."""
    return _resize_axis(_resize_axis(x, shape[0], 0), shape[1], 1)


def resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop, with torchvision's RandomResizedCrop semantics.

    Ten attempts draw an area fraction uniformly from ``scale`` and a width/height ratio
    log-uniformly from ``ratio``; the first box that fits wins, at a uniform position.
    Otherwise the fallback is a centred box of the ratio clamped into ``ratio``.

    On a spectrogram this is rarely the random crop the name suggests. A box of area
    s * H * W and ratio r has height sqrt(s * H * W / r), which fits H only if
    W <= H * r / s: for 96 mel bands at most 96 * 2.3 / 0.8 = 276 frames. For any longer
    input (4096 or 6590 frames in the submissions, 512 in ``quick``) all ten attempts fail,
    the input's ratio (e.g. 4096 / 96 = 42.7) exceeds 2.3, and the fallback keeps all 96
    bands and the centred round(96 * 2.3) = 221 frames: a deterministic crop of the middle
    4.7 s, which the resize then stretches back to the full width (x18.5 for 4096 frames).
    The AMLAG code did the same: both submissions' ``random_resized_crop.py`` is a PIL port
    of torchvision's transform with the same ten attempts and fallback, used with scale
    (0.8, 1.0) and ratio (1.7, 2.3).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    x: np.ndarray,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Crop a :func:`resized_crop_box` of ``x`` and resize it back to ``x.shape``."""
    top, left, h, w = resized_crop_box(x.shape[0], x.shape[1], scale, ratio, rng)
    return resize_bilinear(x[top : top + h, left : left + w], x.shape)


def spec_augment(
    x: np.ndarray,
    max_masks: int,
    freq_frac: float,
    time_frac: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mask 1..max_masks (band, span) pairs in place, filled with ``x``'s minimum.

    Each mask covers int(u * n_mels) bands, u ~ U(0, freq_frac), and int(v * frames)
    frames, v ~ U(0, time_frac), at uniform positions (as in AMLAG's ``spec_augment``).
    """
    fill = x.min()
    n_mels, frames = x.shape
    for _ in range(int(rng.integers(1, max_masks + 1))):
        bands = int(rng.uniform(0.0, freq_frac) * n_mels)
        first = int(rng.uniform(0.0, n_mels - bands))
        x[first : first + bands, :] = fill
        span = int(rng.uniform(0.0, time_frac) * frames)
        start = int(rng.uniform(0.0, frames - span))
        x[:, start : start + span] = fill
    return x


def _finish(x: np.ndarray, scale: float) -> np.ndarray:
    return np.ascontiguousarray(x / np.float32(scale), dtype=np.float32)


def first_frames(mel: np.ndarray, frames: int) -> np.ndarray:
    """The first ``frames`` frames of ``mel``; a shorter track is repeated from its start
    until it fills them (the authors' submission 2 ``get_spectogram``)."""
    length = mel.shape[1]
    x = _read(mel, 0, min(length, frames))
    if length >= frames:
        return x
    return np.tile(x, (1, -(-frames // length)))[:, :frames]


def _centre_window(mel: np.ndarray, frames: int) -> np.ndarray:
    length = mel.shape[1]
    if length < frames:
        return pad_to(_read(mel, 0, length), frames, "constant")
    return _read(mel, (length - frames) // 2, frames)


class EvalTransform:
    """The evaluation window, then divide by the scale: for ``window='first'`` the first
    ``frames`` frames (tiled), otherwise the centre crop or a constant pad (track minimum)."""

    def __init__(self, cfg: AugmentConfig, frames: int, window: str = "random") -> None:
        self.cfg = cfg
        self.frames = frames
        self.window = window

    def __call__(self, mel: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.window == "first":
            x = first_frames(mel, self.frames)
        else:
            x = _centre_window(mel, self.frames)
        return _finish(x, self.cfg.scale)


class TrainTransform:
    """A window of ``frames`` frames, random resized crop, SpecAugment, divide by the scale.

    ``window`` is ``DataConfig.window``: 'random' pads a short track (wrap with probability
    ``wrap_pad_p``, else constant) and crops a long one at random, 'centre' crops the centre,
    'first' takes the first frames (tiled). A probability of 0 disables an augmentation.
    """

    def __init__(self, cfg: AugmentConfig, frames: int, window: str = "random") -> None:
        self.cfg = cfg
        self.frames = frames
        self.window = window

    def read_window(self, mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The frames this example starts from (only those are read from the map)."""
        if self.window == "first":
            return first_frames(mel, self.frames)
        length = mel.shape[1]
        if length < self.frames:
            mode = "wrap" if rng.random() < self.cfg.wrap_pad_p else "constant"
            return pad_to(_read(mel, 0, length), self.frames, mode)
        if self.window == "random":
            start = int(rng.integers(0, length - self.frames + 1))
        else:
            start = (length - self.frames) // 2
        return _read(mel, start, self.frames)

    def __call__(self, mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.cfg
        x = self.read_window(mel, rng)
        if rng.random() < cfg.resized_crop_p:
            x = random_resized_crop(x, cfg.resized_crop_scale, cfg.resized_crop_ratio, rng)
        if rng.random() < cfg.specaugment_p:
            x = spec_augment(
                x, cfg.specaugment_max_masks, cfg.freq_mask_frac, cfg.time_mask_frac, rng
            )
        return _finish(x, cfg.scale)


def mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
    partner: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example with a partner, inputs and labels alike, λ ~ Beta(alpha, alpha) each.

    ``partner`` is a second batch of the same size, as the authors' second training loader
    gave; without one the partner is ``x[perm]`` for a random permutation of the batch.
    ``alpha == 0`` returns the inputs unchanged. Everything random comes from ``generator``:
    torch's Beta sampler cannot take one, so λ is drawn by numpy from a seed that the
    generator supplies (first, so λ is the same whichever partner is used).
    """
    if alpha == 0:
        return x, y
    if not y.is_floating_point():
        y = y.to(x.dtype)
    n = x.shape[0]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    lam = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    if partner is None:
        perm = torch.randperm(n, generator=generator, device=generator.device)
        other_x, other_y = x[perm.to(x.device)], y[perm.to(y.device)]
    else:
        other_x, other_y = partner
        if other_x.shape != x.shape or other_y.shape[0] != n:
            raise ValueError(
                f"mixup partner batch {list(other_x.shape)} does not match {list(x.shape)}"
            )
        other_y = other_y.to(device=y.device, dtype=y.dtype)
        other_x = other_x.to(x.device)
    lam_x = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view(n, *[1] * (x.ndim - 1))
    lam_y = torch.as_tensor(lam, dtype=y.dtype, device=y.device).view(n, *[1] * (y.ndim - 1))
    return lam_x * x + (1 - lam_x) * other_x, lam_y * y + (1 - lam_y) * other_y
