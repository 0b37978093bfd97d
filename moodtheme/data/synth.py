"""A synthetic MTG-Jamendo moodtheme dataset with planted, documented effects.

Real melspecs cannot be fetched here, so the default commands and the tests run on a dataset
written in exactly the real on-disk format: ``ROOT/NN/ID.npy`` (float32, 96 x T, dB) and
``ROOT/splits/split-N/autotagging_moodtheme-{train,validation,test}.tsv``. Labels, artists and
relative durations are a subsample of the real split, so class imbalance and tag
co-occurrence are real. The spectrograms are synthetic, with three kinds of tags:

* local tags: a tag-specific spectral signature in short events at random times;
* long-range tags: two motifs in different segments. A positive alternates them, a decoy (a
  negative) repeats one, so no single 32-frame segment tells a positive from a decoy, and
  neither does any sum of per-segment evidence (``Design.long_range_kind`` plants the
  reverse, ``"exclusive"``, or the motifs' order, ``"order"``, instead);
* every other tag: nothing planted.

``ROOT/planted.json`` records which tag is which, the signatures and the nuisance ranges;
docs/synthetic.md explains the design. ``default_dataset()`` generates the default size once
and caches it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, TypeVar, get_args

import numpy as np

from moodtheme.data.jamendo import SUBSETS, SplitError, SplitTable, load_tags, read_split, split_tsv

# Bump whenever the bytes written for the same parameters change: it renames the cache folder.
GENERATOR_VERSION = 6
PLANTED_VERSION = 2
FRAMES_PER_SECOND = 12000 / 256  # 46.875: essentia melspecs at 12 kHz, hop 256
N_MELS = 96
DEFAULT_TRACKS = 1200
DEFAULT_SCALE = 0.03  # median track ~285 frames, a bit longer than the quick preset's 256
DEFAULT_SEED = 0
PLANTED_FILE = "planted.json"
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")


LongRangeKind = Literal["exclusive", "conjunction", "order"]
LONG_RANGE_KINDS: tuple[str, ...] = get_args(LongRangeKind)
M = TypeVar("M")  # a motif: a Signature when rendering, any label when only laying out


class SynthError(ValueError):
    """A user-facing problem with the generator's arguments or output folder."""


@dataclass(frozen=True)
class Design:
    """Where and how the effects are planted; tuned for the quick preset (8 x 32 frames).

    Every length is in frames. ``long_range_kind`` says what tells a long-range positive
    from its decoy, which carries the same two motifs:

    * ``"conjunction"``: a positive alternates its tag's two motifs, a decoy repeats ONE of
      them, a motif every ``motif_spacing`` frames. Any model that sums per-segment evidence
      scores a positive between the two kinds of decoy; pooling the segments before a
      non-linearity (self-attention: "both motifs somewhere") tells them apart.
    * ``"exclusive"``: the reverse, a positive repeats one motif and a decoy alternates both.
      The same bound holds, but the quick model learns it far more slowly (an exclusive-or
      of the two motifs' presence instead of a conjunction; docs/synthetic.md).
    * ``"order"``: ``order_gap`` is the distance between the centres of the first and the
      second motif, and the next first motif follows after ``order_period - order_gap``; a
      decoy swaps the two. Only a model that sees the segments' positions can tell.

    The gaps minus a motif exceed a segment, so two motifs of one tag never share a 32-frame
    segment.
    """

    input_frames: int = 256  # the model input the design targets (recorded, not enforced)
    segment_frames: int = 32
    min_frames: int = 256
    max_frames: int = 1024
    # Eight, not version 5's sixteen: the rarer local tags (under 30 training positives in the
    # default 1200 tracks) were learnt last and scored on a handful of test positives.
    n_local: int = 8
    n_long_range: int = 8
    min_positives: int = 3
    local_event_frames: tuple[int, int] = (10, 24)
    local_event_spacing: float = 30.0
    local_level_db: tuple[float, float] = (-10.0, 0.0)
    motif_frames: int = 24
    long_range_kind: LongRangeKind = "conjunction"
    motif_spacing: int = 96
    order_period: int = 192
    order_gap: int = 64
    # Among the negatives. Low enough that a motif's presence is worth learning (41% of a
    # tag's carriers are positives), which is what trains the motif detectors.
    decoy_share: float = 0.1
    motif_level_db: tuple[float, float] = (-14.0, -2.0)
    peak_width_bins: float = 0.8
    # "compact": a signature's peaks sit within a few bins, and signatures differ in the
    # intervals between their peaks, a shape a CNN recognises anywhere. "spread": peaks
    # anywhere in the spectrum, told apart only by absolute mel bins.
    signature_layout: Literal["compact", "spread"] = "compact"


@dataclass(frozen=True)
class Nuisance:
    """Per-track variation unrelated to the labels, where augmentation should help."""

    gain_db: tuple[float, float] = (-8.0, 8.0)
    freq_shift_bins: tuple[float, float] = (-2.0, 2.0)
    time_stretch: tuple[float, float] = (0.85, 1.2)
    noise_floor_db: tuple[float, float] = (-62.0, -50.0)
    noise_tilt_db: tuple[float, float] = (12.0, 28.0)
    frame_noise_db: float = 2.0
    distractor_spacing: float = 96.0
    distractor_level_db: tuple[float, float] = (-40.0, -20.0)
    distractor_frames: tuple[int, int] = (4, 32)


@dataclass(frozen=True)
class Signature:
    """A band-limited pattern: Gaussian peaks at mel bins, amplitude-modulated in time."""

    bins: tuple[float, ...]
    gains_db: tuple[float, ...]
    am_period: float

    def profile(self, shift: float, width: float) -> np.ndarray:
        """Relative power per mel bin (peak 1) with every peak moved by ``shift`` bins."""
        mel = np.arange(N_MELS, dtype=np.float64)[:, None]
        centres = np.asarray(self.bins)[None, :] + shift
        gains = 10.0 ** (np.asarray(self.gains_db)[None, :] / 10.0)
        power = (gains * np.exp(-0.5 * ((mel - centres) / width) ** 2)).sum(axis=1)
        return power / power.max()


@dataclass(frozen=True)
class Plan:
    """Which tags carry which signature; the same for every track of a dataset."""

    local: dict[str, Signature]
    long_range: dict[str, tuple[Signature, Signature]]


# ----------------------------------------------------------------------------- labels


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


# ----------------------------------------------------------------------------- the plan


def _draw_signature(
    rng: np.random.Generator, peaks: int, taken: list[Signature], min_distinct: int
) -> Signature:
    # Peaks within 2 bins of another signature's peak are confusable once the per-track
    # frequency shift is applied; demand at least `min_distinct` clear peaks against each.
    for _ in range(10_000):
        bins = np.sort(rng.choice(np.arange(4, N_MELS - 4), size=peaks, replace=False))
        if np.diff(bins).min() < 6:
            continue
        if all(_clear_peaks(bins, np.asarray(other.bins)) >= min_distinct for other in taken):
            gains = np.round(rng.uniform(-6.0, 0.0, size=peaks), 2)
            gains[rng.integers(peaks)] = 0.0
            return Signature(
                bins=tuple(float(b) for b in bins),
                gains_db=tuple(float(g) for g in gains),
                am_period=float(np.round(rng.uniform(5.0, 12.0), 2)),
            )
    raise SynthError("could not draw distinct signatures; lower Design.n_local/n_long_range")


def _clear_peaks(bins: np.ndarray, other: np.ndarray) -> int:
    """How many of ``bins`` lie over 2 bins from every peak in ``other``."""
    return int((np.abs(bins[:, None] - other[None, :]).min(axis=1) > 2).sum())


def _apart(bins: np.ndarray, other: np.ndarray) -> bool:
    """Whether each of two signatures has a peak over 2 bins from all of the other's peaks (two
    such peaks when their shapes are similar: both intervals within 2 bins)."""
    similar = np.abs(np.diff(bins) - np.diff(other)).max() <= 2
    required = 2 if similar else 1
    return min(_clear_peaks(bins, other), _clear_peaks(other, bins)) >= required


def _compact_signatures(rng: np.random.Generator, count: int) -> list[Signature]:
    # Shapes are the interval pairs (a, b) between three peaks, both even: any two shapes then
    # differ by at least 2 bins in some interval, which the stride-2 first layer of a CNN still
    # resolves (version 5's odd-sum pairs such as (3, 9) and (4, 8) did not, and where such a
    # pair also shared a base bin its tags were barely learnt). The base is redrawn until the
    # signature is apart from each one placed before (`_apart`).
    shapes = [(a, b) for a in range(2, 13, 2) for b in range(2, 13, 2)]
    if count > len(shapes):
        raise SynthError(f"compact signatures allow {len(shapes)} planted patterns, not {count}")
    out: list[Signature] = []
    for k in rng.permutation(len(shapes))[:count]:
        a, b = shapes[k]
        for _ in range(2000):
            base = int(rng.integers(4, N_MELS - 4 - a - b))
            bins = np.array([base, base + a, base + a + b], dtype=np.float64)
            if all(_apart(bins, np.asarray(other.bins)) for other in out):
                break
        else:
            raise SynthError(
                f"could not place {count} compact signatures apart; lower "
                "Design.n_local/n_long_range"
            )
        gains = np.round(rng.uniform(-6.0, 0.0, size=3), 2)
        gains[rng.integers(3)] = 0.0
        out.append(
            Signature(
                bins=tuple(float(x) for x in bins),
                gains_db=tuple(float(g) for g in gains),
                am_period=float(np.round(rng.uniform(5.0, 12.0), 2)),
            )
        )
    return out


def make_plan(tags: list[str], train_labels: np.ndarray, design: Design, seed: int) -> Plan:
    """Pick the planted tags among the most frequent real ones and draw their signatures.

    Long-range tags come from the very top (they need positives to be learnt at all), local
    tags from the rest of the top ``n_local + n_long_range``.
    """
    rng = np.random.default_rng([seed, 1])
    n_planted = design.n_local + design.n_long_range
    if n_planted > len(tags):
        raise SynthError(f"Design plants {n_planted} tags but the vocabulary has {len(tags)}")
    ranked = np.argsort(-train_labels.sum(axis=0), kind="stable")[:n_planted]
    pool = ranked[: design.n_long_range + design.n_long_range // 2]
    long_range = set(rng.choice(pool, size=design.n_long_range, replace=False).tolist())
    taken: list[Signature] = []
    local: dict[str, Signature] = {}
    order: dict[str, tuple[Signature, Signature]] = {}
    if design.signature_layout == "compact":
        drawn = iter(_compact_signatures(rng, design.n_local + 2 * design.n_long_range))
        for j in sorted(int(i) for i in ranked):
            if j in long_range:
                order[tags[j]] = (next(drawn), next(drawn))
            else:
                local[tags[j]] = next(drawn)
        return Plan(local=local, long_range=order)
    for j in sorted(int(i) for i in ranked):
        if j in long_range:
            first = _draw_signature(rng, 3, taken, 2)
            second = _draw_signature(rng, 3, [*taken, first], 2)
            taken += [first, second]
            order[tags[j]] = (first, second)
        else:
            local[tags[j]] = _draw_signature(rng, 3, taken, 2)
            taken.append(local[tags[j]])
    return Plan(local=local, long_range=order)


def decoy_flags(track_id: int, plan: Plan, seed: int, design: Design) -> dict[str, bool]:
    """Whether the track carries each long-range tag's motifs as a decoy if it is negative."""
    rng = np.random.default_rng([seed, 2, track_id])
    draws = rng.random(len(plan.long_range))
    return {
        tag: bool(u < design.decoy_share) for tag, u in zip(plan.long_range, draws, strict=True)
    }


# ----------------------------------------------------------------------------- rendering


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
    mel = np.arange(N_MELS, dtype=np.float64)
    # Pink-ish background: louder low bands, a few broad resonances, slow loudness drift.
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
    power = 10.0 ** ((spectrum[:, None] + drift[None, :]) / 10.0)

    shift = rng.uniform(*nuisance.freq_shift_bins)
    stretch = rng.uniform(*nuisance.time_stretch)
    width = design.peak_width_bins

    def level(bounds: tuple[float, float] = design.motif_level_db) -> float:
        return float(rng.uniform(*bounds))

    for tag, signature in plan.local.items():
        if tag not in positives:
            continue
        profile = signature.profile(shift, width)
        for _ in range(max(1, rng.poisson(frames / design.local_event_spacing))):
            length = max(4, round(rng.uniform(*design.local_event_frames) * stretch))
            start = int(rng.integers(0, frames - length + 1))
            add_event(
                power,
                profile,
                start,
                length,
                level(design.local_level_db),
                signature.am_period,
                rng,
            )

    # Long-range motifs repeat with a random phase per tag and track: the time between two
    # tags' motifs is then independent of either tag's labels, so which motifs share a
    # segment says nothing about them (fixed slots would leak it).
    motif = max(4, round(design.motif_frames * stretch))
    for tag, (first, second) in plan.long_range.items():
        if tag not in positives and tag not in decoys:
            continue
        for signature, centre in motif_schedule(
            frames, first, second, tag in positives, rng, design
        ):
            start = round(centre - motif / 2)
            profile = signature.profile(shift, width)
            add_event(power, profile, start, motif, level(), signature.am_period, rng)

    # Untagged distractors, so that energy in a band is not by itself a tag.
    for _ in range(rng.poisson(frames / nuisance.distractor_spacing)):
        peaks = int(rng.integers(1, 4))
        distractor = Signature(
            bins=tuple(rng.uniform(2, N_MELS - 3, size=peaks)),
            gains_db=tuple(rng.uniform(-6, 0, size=peaks)),
            am_period=float(rng.uniform(4, 16)),
        )
        length = int(rng.integers(*nuisance.distractor_frames, endpoint=True))
        start = int(rng.integers(-length // 2, frames - length // 2))
        add_event(
            power,
            distractor.profile(0.0, width),
            start,
            length,
            level(nuisance.distractor_level_db),
            distractor.am_period,
            rng,
        )

    db = 10.0 * np.log10(power)
    db += rng.normal(0.0, nuisance.frame_noise_db, size=db.shape)
    db += rng.uniform(*nuisance.gain_db)
    return np.clip(db, -100.0, 20.0).astype(np.float32)


# ----------------------------------------------------------------------------- writing


def _write_tsv(path: Path, table: SplitTable, frames: np.ndarray) -> None:
    # The real files: tab-separated, CRLF line ends, tags in vocabulary order, one per column.
    lines = ["\t".join(HEADER)]
    for i in range(len(table)):
        tags = [table.tags[j] for j in np.flatnonzero(table.labels[i])]
        audio = str(PurePosixPath(table.paths[i]).with_suffix(".mp3"))
        duration = f"{frames[i] / FRAMES_PER_SECOND:.1f}"
        row = [table.track_ids[i], table.artist_ids[i], table.album_ids[i], audio, duration, *tags]
        lines.append("\t".join(row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def generate(
    out_dir: Path,
    tracks: int = DEFAULT_TRACKS,
    scale: float = DEFAULT_SCALE,
    seed: int = DEFAULT_SEED,
    split: int = 0,
    design: Design | None = None,
    nuisance: Nuisance | None = None,
    real_durations: bool = False,
) -> Path:
    """Write a synthetic dataset to ``out_dir`` (new or empty) and return it.

    Byte-identical for the same arguments. ``planted.json`` is written last, so its presence
    marks a complete dataset. ``real_durations`` writes every track at its real track's
    length (`real_track_frames`, ~10,000 frames and ~4 MB on average) instead of the scaled
    and clipped one, so loaders meet the real file sizes; ``scale`` is then unused.
    """
    design = design or Design()
    nuisance = nuisance or Nuisance()
    if design.signature_layout not in ("compact", "spread"):
        raise SynthError(
            f"Design.signature_layout={design.signature_layout!r}: use 'compact' or 'spread'"
        )
    if design.long_range_kind not in LONG_RANGE_KINDS:
        raise SynthError(
            f"Design.long_range_kind={design.long_range_kind!r}: use one of "
            + ", ".join(map(repr, LONG_RANGE_KINDS))
        )
    longest_motif = round(design.motif_frames * nuisance.time_stretch[1])
    if design.long_range_kind == "order":
        shortest_gap = min(design.order_gap, design.order_period - design.order_gap)
        gaps = f"Design.order_gap={design.order_gap} and order_period={design.order_period}"
    else:
        shortest_gap, gaps = design.motif_spacing, f"Design.motif_spacing={design.motif_spacing}"
    if shortest_gap - longest_motif < design.segment_frames:
        raise SynthError(
            f"{gaps} leave less than a segment ({design.segment_frames} frames) between motifs "
            f"of {longest_motif} frames, so one segment could hold both motifs of a tag"
        )
    out_dir = Path(out_dir)
    if tracks < len(SUBSETS):
        raise SynthError(f"--tracks {tracks}: need at least one track per subset")
    if not scale > 0:
        raise SynthError(f"--scale {scale}: must be a positive number (e.g. {DEFAULT_SCALE})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SynthError(f"{out_dir}: exists and is not an empty folder; choose a new one")

    tags = load_tags()
    real = {subset: read_split(split_tsv(split, subset), tags) for subset in SUBSETS}
    plan = make_plan(tags, real["train"].labels, design, seed)
    available = sum(len(table) for table in real.values())
    if tracks > available:
        raise SynthError(f"--tracks {tracks}: split {split} has only {available} real tracks")
    sizes = subset_sizes(tracks, [len(real[s]) for s in SUBSETS])

    # Draw every subset before writing anything, so a too-small --tracks fails cleanly.
    tables: dict[str, SplitTable] = {}
    for k, (subset, size) in enumerate(zip(SUBSETS, sizes, strict=True)):
        rng = np.random.default_rng([seed, 0, k])
        try:
            rows = subsample(real[subset].labels, size, design.min_positives, rng)
        except SynthError as err:
            raise SynthError(
                f"--tracks {tracks} is too small: the {size} tracks of the {subset} subset "
                f"{err}; use --tracks 600 or more"
            ) from None
        tables[subset] = real[subset].subset(rows)

    splits_dir = out_dir / "splits" / f"split-{split}"
    splits_dir.mkdir(parents=True, exist_ok=True)
    all_frames: list[np.ndarray] = []
    decoys: dict[str, dict[str, list[str]]] = {}
    for subset, table in tables.items():
        frames = (
            real_track_frames(table.durations)
            if real_durations
            else track_frames(table.durations, scale, design)
        )
        decoys[subset] = {tag: [] for tag in plan.long_range}
        for i, rel in enumerate(table.paths):
            number = numeric_id(rel)
            positives = {table.tags[j] for j in np.flatnonzero(table.labels[i])}
            flags = decoy_flags(number, plan, seed, design)
            track_decoys = {t for t, flag in flags.items() if flag and t not in positives}
            for tag in sorted(track_decoys):
                decoys[subset][tag].append(table.track_ids[i])
            rng_track = np.random.default_rng([seed, 3, number])
            mel = render_track(
                int(frames[i]), positives, track_decoys, plan, rng_track, design, nuisance
            )
            target = out_dir / rel
            target.parent.mkdir(exist_ok=True)
            with open(target, "wb") as f:
                np.save(f, mel)
        _write_tsv(splits_dir / f"autotagging_moodtheme-{subset}.tsv", table, frames)
        all_frames.append(frames)

    frames_all = np.concatenate(all_frames)
    planted = {
        "version": PLANTED_VERSION,
        "generator": "moodtheme.data.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
        "scale": None if real_durations else scale,
        "real_durations": real_durations,
        "tracks": dict(zip(SUBSETS, sizes, strict=True)),
        "frames_per_second": FRAMES_PER_SECOND,
        "n_mels": N_MELS,
        "frames": {
            "min": int(frames_all.min()),
            "median": float(np.median(frames_all)),
            "max": int(frames_all.max()),
        },
        "local": sorted(plan.local),
        "long_range": sorted(plan.long_range),
        "long_range_kinds": {tag: design.long_range_kind for tag in sorted(plan.long_range)},
        "unplanted": [t for t in tags if t not in plan.local and t not in plan.long_range],
        "signatures": {
            "local": {tag: asdict(s) for tag, s in plan.local.items()},
            "long_range": {
                tag: {"first": asdict(a), "second": asdict(b)}
                for tag, (a, b) in plan.long_range.items()
            },
        },
        "design": asdict(design),
        "nuisance": asdict(nuisance),
        # A decoy scores like a positive for any model that averages per-segment predictions.
        "segment_average_roc_auc_bound": 1.0 - design.decoy_share / 2.0,
        "decoys": decoys,
    }
    text = json.dumps(planted, indent=1, sort_keys=True)
    (out_dir / PLANTED_FILE).write_text(text + "\n", encoding="utf-8")
    return out_dir


def load_planted(root: Path) -> dict:
    """The ``planted.json`` of a synthetic dataset root."""
    path = Path(root) / PLANTED_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthError(f"{path}: not found; is {root} a synthetic dataset?") from None


PLANTED_GROUPS = ("local", "long_range")


def planted_groups(root: Path) -> dict[str, list[str]]:
    """The planted tag groups of a synthetic dataset root (``local``, ``long_range``), or
    nothing for real data (no ``planted.json``)."""
    if not (Path(root) / PLANTED_FILE).is_file():
        return {}
    info = load_planted(root)
    return {group: list(info[group]) for group in PLANTED_GROUPS if info.get(group)}


# ----------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """``$MOODTHEME_CACHE``, else ``~/.cache/moodtheme``."""
    env = os.environ.get("MOODTHEME_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moodtheme"


def _cache_key(tracks: int, scale: float, seed: int, split: int) -> str:
    source = {
        "generator_version": GENERATOR_VERSION,
        "tracks": tracks,
        "scale": scale,
        "seed": seed,
        "split": split,
        "design": asdict(Design()),
        "nuisance": asdict(Nuisance()),
    }
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_dataset(
    tracks: int = DEFAULT_TRACKS,
    scale: float = DEFAULT_SCALE,
    seed: int = DEFAULT_SEED,
    split: int = 0,
    cache_dir: Path | None = None,
) -> Path:
    """The synthetic dataset for these parameters, generated on first use and cached.

    The folder name hashes the generator version and parameters. Generation runs under a
    file lock into a temporary folder that is renamed into place, so processes racing on
    first use (parallel trials) wait for one another and never see a half-written dataset.
    """
    key = _cache_key(tracks, scale, seed, split)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / f"synth-{key}"
    if (final / PLANTED_FILE).is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SynthError(
            f"{root}: cannot create the cache folder ({err.strerror or err}); "
            "set MOODTHEME_CACHE to a writable folder"
        ) from None
    with _exclusive(root / f"synth-{key}.lock"):
        if (final / PLANTED_FILE).is_file():
            return final
        for stale in root.glob(f".synth-{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # not ours to trust: no planted.json means incomplete
            shutil.rmtree(final)
        print(
            f"moodtheme: generating the synthetic dataset ({tracks} tracks) in {final} "
            "(first use only, about a minute)",
            file=sys.stderr,
            flush=True,
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".synth-{key}.tmp-", dir=root))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
            generate(tmp, tracks=tracks, scale=scale, seed=seed, split=split)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def default_dataset() -> Path:
    """The default synthetic dataset's root (``DEFAULT_TRACKS`` tracks, split 0), cached."""
    return cached_dataset()


# ----------------------------------------------------------------------------- CLI


def cli(argv: Sequence[str]) -> int:
    """``python -m moodtheme.data synth --to DIR [--tracks N] [--scale S | --real-durations]
    [--seed K] [--split N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.data synth",
        description="Write a synthetic MTG-Jamendo moodtheme dataset in the real on-disk "
        "format (NN/ID.npy melspecs, split TSVs) with planted effects listed in "
        "DIR/planted.json. See docs/synthetic.md.",
    )
    parser.add_argument(
        "--to", type=Path, required=True, metavar="DIR", help="output folder (new or empty)"
    )
    parser.add_argument(
        "--tracks",
        type=int,
        default=DEFAULT_TRACKS,
        metavar="N",
        help=f"total tracks (default {DEFAULT_TRACKS})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        metavar="S",
        help=f"frames = real duration x 46.875 x SCALE, clipped (default {DEFAULT_SCALE})",
    )
    parser.add_argument(
        "--real-durations",
        action="store_true",
        help="every track as long as its real track (46.875 frames/s, ~4 MB a track on "
        "average) instead of scaled by --scale: for measuring loaders on real file sizes",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="K", help="random seed (default 0)"
    )
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        choices=range(5),
        help="real split to draw labels from; writes splits/split-N (default 0)",
    )
    args = parser.parse_args(list(argv))
    started = time.monotonic()
    try:
        root = generate(
            args.to,
            args.tracks,
            args.scale,
            args.seed,
            args.split,
            real_durations=args.real_durations,
        )
    except (SynthError, SplitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write {args.to}: {err.strerror or err}", file=sys.stderr)
        return 1
    planted = load_planted(root)
    size = sum(f.stat().st_size for f in root.rglob("*.npy"))
    counts = ", ".join(f"{planted['tracks'][s]} {s}" for s in SUBSETS)
    print(
        f"wrote {root}: {args.tracks} tracks ({counts}), {size / 1e6:.0f} MB in "
        f"{time.monotonic() - started:.0f} s; planted {len(planted['local'])} local and "
        f"{len(planted['long_range'])} long-range tags, see {root / PLANTED_FILE}"
    )
    return 0
