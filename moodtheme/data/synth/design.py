"""What the synthetic dataset plants: the design's knobs, the nuisances, and which tags carry
which spectral signature (`make_plan`), drawn once per dataset from its seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

FRAMES_PER_SECOND = 12000 / 256  # 46.875: essentia melspecs at 12 kHz, hop 256
N_MELS = 96


LongRangeKind = Literal["exclusive", "conjunction", "order"]
LONG_RANGE_KINDS: tuple[str, ...] = get_args(LongRangeKind)


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


def check_design(design: Design, nuisance: Nuisance) -> None:
    """Raise `SynthError` unless ``design`` names known kinds and keeps a tag's motifs in
    different segments, even at the longest time stretch ``nuisance`` allows."""
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
