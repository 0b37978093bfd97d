"""Rendering one track's melspec from the plan: background, planted events, distractors."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from moodtheme.data.synth.design import N_MELS, Design, Nuisance, Plan, Signature

M = TypeVar("M")  # a motif: a Signature when rendering, any label when only laying out


def add_event(
    power: np.ndarray,
    profile: np.ndarray,
    start: int,
    length: int,
    level_db: float,
    am_period: float,
    rng: np.random.Generator,
) -> None:
    """Add one event of ``profile`` (relative power per mel bin) to ``power`` in place."""
    # A flat event with raised-cosine edges and a random-phase amplitude modulation: both are
    # symmetric in time, so a reversed arrangement of motifs is not visible inside one motif.
    t = np.arange(length, dtype=np.float64)
    edge = max(1, min(6, length // 3))
    taper = np.minimum(1.0, np.minimum(t + 0.5, length - t - 0.5) / edge)
    envelope = np.sin(0.5 * np.pi * taper) ** 2
    envelope *= 0.7 + 0.3 * np.cos(2 * np.pi * t / am_period + rng.uniform(0, 2 * np.pi))
    lo, hi = max(start, 0), min(start + length, power.shape[1])
    if lo < hi:
        scaled = (
            10.0 ** (level_db / 10.0) * profile[:, None] * envelope[None, lo - start : hi - start]
        )
        power[:, lo:hi] += scaled


def motif_schedule(
    frames: int,
    first: M,
    second: M,
    positive: bool,
    rng: np.random.Generator,
    design: Design,
) -> list[tuple[M, float]]:
    """The motifs of one long-range tag in a positive or decoy track, with their centres.

    ``"order"``: first, second ``order_gap`` later, repeated every ``order_period``; a decoy
    swaps them. ``"conjunction"``: a motif every ``motif_spacing`` frames, alternating in a
    positive, always the same one (drawn at random) in a decoy; ``"exclusive"`` the reverse.
    """
    if design.long_range_kind == "order":
        leading, trailing = (first, second) if positive else (second, first)
        steps = [(leading, 0.0), (trailing, float(design.order_gap))]
        period = float(design.order_period)
    else:
        one, other = (first, second) if rng.random() < 0.5 else (second, first)
        repeats = positive if design.long_range_kind == "exclusive" else not positive
        steps = [(one, 0.0), (one if repeats else other, float(design.motif_spacing))]
        period = 2.0 * design.motif_spacing
    schedule = []
    centre = rng.uniform(0, period) - period
    while centre - design.motif_frames < frames:  # a motif is at most 1.2 x motif_frames long
        schedule += [(signature, centre + offset) for signature, offset in steps]
        centre += period
    return schedule


def render_track(
    frames: int,
    positives: set[str],
    decoys: set[str],
    plan: Plan,
    rng: np.random.Generator,
    design: Design,
    nuisance: Nuisance,
) -> np.ndarray:
    """One melspec in dB, float32 ``N_MELS x frames``; all randomness comes from ``rng``."""
    # The steps draw from ``rng`` in this order; reordering them changes every track's bytes.
    power = _background(frames, rng, nuisance)
    shift = rng.uniform(*nuisance.freq_shift_bins)
    stretch = rng.uniform(*nuisance.time_stretch)
    _add_local_events(power, positives, plan, shift, stretch, rng, design)
    _add_motifs(power, positives, decoys, plan, shift, stretch, rng, design)
    _add_distractors(power, rng, design.peak_width_bins, nuisance)
    db = 10.0 * np.log10(power)
    db += rng.normal(0.0, nuisance.frame_noise_db, size=db.shape)
    db += rng.uniform(*nuisance.gain_db)
    return np.clip(db, -100.0, 20.0).astype(np.float32)


def _background(frames: int, rng: np.random.Generator, nuisance: Nuisance) -> np.ndarray:
    """Power (not dB), ``N_MELS x frames``: louder low bands, a few broad resonances, slow
    loudness drift, a pink-ish floor no tag depends on."""
    mel = np.arange(N_MELS, dtype=np.float64)
    spectrum = rng.uniform(*nuisance.noise_floor_db) - rng.uniform(*nuisance.noise_tilt_db) * (
        mel / (N_MELS - 1)
    )
    for _ in range(3):
        centre, width, height = rng.uniform(0, N_MELS), rng.uniform(6, 14), rng.uniform(-5, 5)
        spectrum += height * np.exp(-0.5 * ((mel - centre) / width) ** 2)
    t = np.arange(frames, dtype=np.float64)
    drift = np.zeros(frames)
    for _ in range(3):
        period = rng.uniform(150, 1500)
        drift += rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return 10.0 ** ((spectrum[:, None] + drift[None, :]) / 10.0)


def _add_local_events(
    power: np.ndarray,
    positives: set[str],
    plan: Plan,
    shift: float,
    stretch: float,
    rng: np.random.Generator,
    design: Design,
) -> None:
    """Short events of each positive local tag's signature at random times."""
    frames = power.shape[1]
    for tag, signature in plan.local.items():
        if tag not in positives:
            continue
        profile = signature.profile(shift, design.peak_width_bins)
        for _ in range(max(1, rng.poisson(frames / design.local_event_spacing))):
            length = max(4, round(rng.uniform(*design.local_event_frames) * stretch))
            start = int(rng.integers(0, frames - length + 1))
            level_db = float(rng.uniform(*design.local_level_db))
            add_event(power, profile, start, length, level_db, signature.am_period, rng)


def _add_motifs(
    power: np.ndarray,
    positives: set[str],
    decoys: set[str],
    plan: Plan,
    shift: float,
    stretch: float,
    rng: np.random.Generator,
    design: Design,
) -> None:
    """The motifs of each long-range tag the track is a positive or a decoy of."""
    # Long-range motifs repeat with a random phase per tag and track: the time between two
    # tags' motifs is then independent of either tag's labels, so which motifs share a
    # segment says nothing about them (fixed slots would leak it).
    frames = power.shape[1]
    motif = max(4, round(design.motif_frames * stretch))
    for tag, (first, second) in plan.long_range.items():
        if tag not in positives and tag not in decoys:
            continue
        for signature, centre in motif_schedule(
            frames, first, second, tag in positives, rng, design
        ):
            start = round(centre - motif / 2)
            profile = signature.profile(shift, design.peak_width_bins)
            level_db = float(rng.uniform(*design.motif_level_db))
            add_event(power, profile, start, motif, level_db, signature.am_period, rng)


def _add_distractors(
    power: np.ndarray, rng: np.random.Generator, width: float, nuisance: Nuisance
) -> None:
    """Untagged events of random peaks, so that energy in a band is not by itself a tag."""
    frames = power.shape[1]
    for _ in range(rng.poisson(frames / nuisance.distractor_spacing)):
        peaks = int(rng.integers(1, 4))
        distractor = Signature(
            bins=tuple(rng.uniform(2, N_MELS - 3, size=peaks)),
            gains_db=tuple(rng.uniform(-6, 0, size=peaks)),
            am_period=float(rng.uniform(4, 16)),
        )
        length = int(rng.integers(*nuisance.distractor_frames, endpoint=True))
        start = int(rng.integers(-length // 2, frames - length // 2))
        level_db = float(rng.uniform(*nuisance.distractor_level_db))
        add_event(
            power,
            distractor.profile(0.0, width),
            start,
            length,
            level_db,
            distractor.am_period,
            rng,
        )
