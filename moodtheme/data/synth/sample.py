"""Which real tracks a synthetic dataset keeps, and how many frames each is rendered with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np

from moodtheme.data.synth.design import FRAMES_PER_SECOND, Design, SynthError


def subset_sizes(tracks: int, real_sizes: Sequence[int]) -> list[int]:
    """``tracks`` split in the real subsets' proportions (the last takes the rounding)."""
    total = sum(real_sizes)
    sizes = [round(tracks * n / total) for n in real_sizes[:-1]]
    sizes.append(tracks - sum(sizes))
    return sizes


def subsample(
    labels: np.ndarray, size: int, min_positives: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices (sorted) of a random ``size``-row subsample in which every tag has at least
    ``min_positives`` positives (or all the real ones, if fewer).

    A uniform draw keeps the real label statistics; tags left short are then repaired by
    swapping in a track that has them for one whose removal leaves no tag short.
    """
    n, _ = labels.shape
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=size, replace=False)] = True
    counts = labels[chosen].sum(axis=0)
    target = np.minimum(labels.sum(axis=0), min_positives)
    for tag in np.argsort(counts, kind="stable"):
        while counts[tag] < target[tag]:
            candidates = np.flatnonzero(~chosen & labels[:, tag])
            short = counts < target
            coverage = labels[candidates][:, short].sum(axis=1)
            add = rng.choice(candidates[coverage == coverage.max()])
            inside = np.flatnonzero(chosen)
            spare = ~(labels[inside] & (counts <= target)).any(axis=1)
            if not spare.any():
                raise SynthError(
                    f"cannot give each of the {labels.shape[1]} tags {min_positives} positives"
                )
            drop = rng.choice(inside[spare])
            chosen[add], chosen[drop] = True, False
            counts += labels[add].astype(counts.dtype) - labels[drop]
    return np.flatnonzero(chosen)


def track_frames(durations: np.ndarray, scale: float, design: Design) -> np.ndarray:
    """Frames per track: the real duration shortened by ``scale``, clipped to the design range."""
    frames = np.round(np.asarray(durations) * FRAMES_PER_SECOND * scale)
    return np.clip(frames, design.min_frames, design.max_frames).astype(np.int64)


def real_track_frames(durations: np.ndarray) -> np.ndarray:
    """Frames per track at the real duration: the sizes of the real melspecs (one frame per
    hop of 256 samples at 12 kHz), unscaled and unclipped."""
    return np.maximum(np.round(np.asarray(durations) * FRAMES_PER_SECOND), 1).astype(np.int64)


def numeric_id(path: str) -> int:
    """948 for ``48/948.npy``: the number every per-track random stream is keyed on."""
    return int(PurePosixPath(path).stem)
