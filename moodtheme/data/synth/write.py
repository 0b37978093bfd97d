"""Writing a synthetic dataset in the real on-disk format: ``NN/ID.npy`` melspecs, the split
TSVs, and ``planted.json``, which records what was planted and marks the dataset complete."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path, PurePosixPath

import numpy as np

from moodtheme.data.jamendo import SUBSETS, SplitTable, load_tags, read_split, split_tsv
from moodtheme.data.synth.design import (
    FRAMES_PER_SECOND,
    N_MELS,
    Design,
    Nuisance,
    Plan,
    SynthError,
    check_design,
    decoy_flags,
    make_plan,
)
from moodtheme.data.synth.render import render_track
from moodtheme.data.synth.sample import (
    numeric_id,
    real_track_frames,
    subsample,
    subset_sizes,
    track_frames,
)

# Bump whenever the bytes written for the same parameters change: it renames the cache folder.
GENERATOR_VERSION = 6
PLANTED_VERSION = 2
DEFAULT_TRACKS = 1200
DEFAULT_SCALE = 0.03  # median track ~285 frames, a bit longer than the quick preset's 256
DEFAULT_SEED = 0
PLANTED_FILE = "planted.json"
# In this order: the ablation report contrasts the first with the second (long_range - local:
# whether an effect is specific to the long-range relation).
PLANTED_GROUPS = ("long_range", "local")
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")


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
    check_design(design, nuisance)
    out_dir = Path(out_dir)
    _check_arguments(out_dir, tracks, scale)
    tags = load_tags()
    real = {subset: read_split(split_tsv(split, subset), tags) for subset in SUBSETS}
    plan = make_plan(tags, real["train"].labels, design, seed)
    tables = _draw_tables(real, tracks, split, seed, design)

    splits_dir = out_dir / "splits" / f"split-{split}"
    splits_dir.mkdir(parents=True, exist_ok=True)
    frames: dict[str, np.ndarray] = {}
    decoys: dict[str, dict[str, list[str]]] = {}
    for subset, table in tables.items():
        frames[subset] = (
            real_track_frames(table.durations)
            if real_durations
            else track_frames(table.durations, scale, design)
        )
        decoys[subset] = _write_tracks(out_dir, table, frames[subset], plan, seed, design, nuisance)
        _write_tsv(splits_dir / f"autotagging_moodtheme-{subset}.tsv", table, frames[subset])

    planted = _planted_record(
        tags, plan, frames, decoys, design, nuisance, seed, split, None if real_durations else scale
    )
    text = json.dumps(planted, indent=1, sort_keys=True)
    (out_dir / PLANTED_FILE).write_text(text + "\n", encoding="utf-8")
    return out_dir


def _check_arguments(out_dir: Path, tracks: int, scale: float) -> None:
    if tracks < len(SUBSETS):
        raise SynthError(f"--tracks {tracks}: need at least one track per subset")
    if not scale > 0:
        raise SynthError(f"--scale {scale}: must be a positive number (e.g. {DEFAULT_SCALE})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SynthError(f"{out_dir}: exists and is not an empty folder; choose a new one")


def _draw_tables(
    real: dict[str, SplitTable], tracks: int, split: int, seed: int, design: Design
) -> dict[str, SplitTable]:
    """Each subset's subsample of the real split, in the real subsets' proportions."""
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
    return tables


def _write_tracks(
    out_dir: Path,
    table: SplitTable,
    frames: np.ndarray,
    plan: Plan,
    seed: int,
    design: Design,
    nuisance: Nuisance,
) -> dict[str, list[str]]:
    """Render and save every track of one subset; return each long-range tag's decoy track
    ids."""
    decoys: dict[str, list[str]] = {tag: [] for tag in plan.long_range}
    for i, rel in enumerate(table.paths):
        number = numeric_id(rel)
        positives = {table.tags[j] for j in np.flatnonzero(table.labels[i])}
        flags = decoy_flags(number, plan, seed, design)
        track_decoys = {t for t, flag in flags.items() if flag and t not in positives}
        for tag in sorted(track_decoys):
            decoys[tag].append(table.track_ids[i])
        rng = np.random.default_rng([seed, 3, number])
        mel = render_track(int(frames[i]), positives, track_decoys, plan, rng, design, nuisance)
        target = out_dir / rel
        target.parent.mkdir(exist_ok=True)
        with open(target, "wb") as f:
            np.save(f, mel)
    return decoys


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


def _planted_record(
    tags: list[str],
    plan: Plan,
    frames: dict[str, np.ndarray],
    decoys: dict[str, dict[str, list[str]]],
    design: Design,
    nuisance: Nuisance,
    seed: int,
    split: int,
    scale: float | None,
) -> dict:
    """The content of ``planted.json``; ``scale`` is None for tracks at their real length."""
    frames_all = np.concatenate(list(frames.values()))
    return {
        "version": PLANTED_VERSION,
        "generator": "moodtheme.data.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "split": split,
        "scale": scale,
        "real_durations": scale is None,
        "tracks": {subset: len(subset_frames) for subset, subset_frames in frames.items()},
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


def load_planted(root: Path) -> dict:
    """The ``planted.json`` of a synthetic dataset root."""
    path = Path(root) / PLANTED_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthError(f"{path}: not found; is {root} a synthetic dataset?") from None


def planted_groups(root: Path) -> dict[str, list[str]]:
    """The planted tag groups of a synthetic dataset root (``local``, ``long_range``), or
    nothing for real data (no ``planted.json``)."""
    if not (Path(root) / PLANTED_FILE).is_file():
        return {}
    info = load_planted(root)
    return {group: list(info[group]) for group in PLANTED_GROUPS if info.get(group)}
