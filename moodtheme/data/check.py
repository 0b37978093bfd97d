"""Validate every melspec file of a split before training: missing, unreadable, wrong shape,
NaN/inf or too short. ``python -m moodtheme.data check --data ROOT`` lists each bad file."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moodtheme.data.jamendo import (
    SUBSETS,
    SplitError,
    SplitTable,
    read_split,
    resolve_splits_dir,
    split_tsv,
)
from moodtheme.data.melspec import (
    NON_FINITE,
    TOO_SHORT,
    UNREADABLE,
    MelspecError,
    melspec_shape,
    open_melspec,
)
from moodtheme.progress import Progress

# Frames scanned at a time for NaN/inf: bounds memory whatever the track length.
_SCAN_FRAMES = 8192


@dataclass(frozen=True)
class Problem:
    """One bad file: ``problem`` is missing, unreadable, wrong-shape, non-finite or too-short."""

    problem: str
    path: Path
    detail: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.path} ({self.detail})"


def check_file(
    path: Path, n_mels: int = 96, min_frames: int = 1, content: bool = True
) -> Problem | None:
    """The problem with one melspec file, or None. The header (shape, dtype, size) is always
    checked; ``content`` also reads the whole file to look for NaN/inf."""
    try:
        frames = melspec_shape(path, n_mels)[1]
        if frames < min_frames:
            return Problem(TOO_SHORT, Path(path), f"{frames} frames, need at least {min_frames}")
        if not content:
            return None
        mel = open_melspec(path, n_mels)
        for start in range(0, frames, _SCAN_FRAMES):
            block = np.asarray(mel[:, start : start + _SCAN_FRAMES])
            if not np.isfinite(block).all():
                first = start + int(np.argmin(np.isfinite(block).all(axis=0)))
                return Problem(NON_FINITE, Path(path), f"NaN/inf from frame {first} of {frames}")
    except MelspecError as err:
        return Problem(err.problem or UNREADABLE, Path(path), err.detail)
    except OSError as err:
        return Problem(UNREADABLE, Path(path), f"read failed ({err})")
    return None


def _tables(root: Path, tables: int | SplitTable | Iterable[SplitTable], splits_dir: Path | None):
    if isinstance(tables, SplitTable):
        return [tables]
    if isinstance(tables, int):
        directory = resolve_splits_dir(root, splits_dir)
        return [read_split(split_tsv(tables, subset, directory)) for subset in SUBSETS]
    return list(tables)


def check_dataset(
    root: Path,
    tables: int | SplitTable | Iterable[SplitTable] = 0,
    *,
    splits_dir: Path | None = None,
    min_frames: int = 1,
    n_mels: int = 96,
    sample: int | None = None,
    seed: int = 0,
    content: bool = True,
    progress: bool = False,
) -> list[Problem]:
    """Every problem among the files of ``tables`` (a split number means its three subsets).

    ``sample`` checks that many files drawn at random (seeded) instead of all of them: a quick
    preflight. ``content=False`` reads only each file's header (no NaN/inf scan), which
    takes seconds for the whole dataset. Files shared by several tables are checked once.
    """
    if sample is not None and sample < 1:
        raise ValueError(f"sample={sample}: check at least 1 file, or all of them (None)")
    root = Path(root)
    paths = list(dict.fromkeys(p for t in _tables(root, tables, splits_dir) for p in t.paths))
    if sample is not None and sample < len(paths):
        keep = np.random.default_rng(seed).choice(len(paths), size=sample, replace=False)
        paths = [paths[i] for i in np.sort(keep)]
    what = "checked" if content else "checked headers of"
    bar = Progress(len(paths), what, "files") if progress else None
    problems: list[Problem] = []
    for rel in paths:
        problem = check_file(root / rel, n_mels, min_frames, content)
        if problem is not None:
            problems.append(problem)
        if bar is not None:
            bar.update(1, f", {len(problems)} problems")
    if bar is not None:
        bar.close(f", {len(problems)} problems")
    return problems


def summary(problems: Sequence[Problem], checked: int, content: bool = True) -> str:
    what = f"{checked} files checked" + ("" if content else " (headers only)")
    if not problems:
        return f"{what}: all OK"
    counts = Counter(p.problem for p in problems)
    detail = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    return f"{what}: {len(problems)} problems ({detail})"


def parse_sample(text: str) -> int | None:
    """``--sample``: a count of at least 1, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--sample {text}: give a number of files (at least 1) or 'all'")
    return count


def cli(argv: Sequence[str]) -> int:
    """``python -m moodtheme.data check --data ROOT``: exit 1 if any file is bad, else 0."""
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.data check",
        description="Check every melspec file of a split (train, validation and test): one line "
        "per missing, unreadable, wrong-shape, NaN-containing or too-short file.",
    )
    parser.add_argument("--data", type=Path, required=True, help="root holding NN/ID.npy files")
    parser.add_argument("--split", type=int, default=0, help="split number 0-4 (default 0)")
    parser.add_argument(
        "--splits-dir", type=Path, default=None, help="directory with split-N/ TSVs"
    )
    parser.add_argument("--min-frames", type=int, default=1, help="flag files shorter than this")
    parser.add_argument("--n-mels", type=int, default=96, help="expected mel bands (default 96)")
    parser.add_argument(
        "--sample", default="all", help="check only N random files (N >= 1; default all)"
    )
    parser.add_argument(
        "--headers-only",
        action="store_true",
        help="read only each file's header (shape, dtype, size), not its values: seconds for "
        "the whole dataset, but NaN/inf go unseen",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    args = parser.parse_args(list(argv))
    try:
        sample = parse_sample(args.sample)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"error: --data {args.data} is not a directory", file=sys.stderr)
        return 2
    try:
        tables = _tables(args.data, args.split, args.splits_dir)
    except SplitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    checked = len({p for t in tables for p in t.paths})
    if sample is not None:
        checked = min(checked, sample)
    problems = check_dataset(
        args.data,
        tables,
        min_frames=args.min_frames,
        n_mels=args.n_mels,
        sample=sample,
        content=not args.headers_only,
        progress=not args.quiet,
    )
    for problem in problems:
        print(problem)
    print(summary(problems, checked, not args.headers_only))
    return 1 if problems else 0
