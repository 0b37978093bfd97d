"""MTG-Jamendo moodtheme metadata: the tag vocabulary, split TSVs and label matrices.

A split TSV has the columns TRACK_ID, ARTIST_ID, ALBUM_ID, PATH (``NN/ID.mp3``) and DURATION,
then one tag per extra column, as many as the track has. Label matrices are bool, one row
per TSV line in file order, one column per tag in the order of ``moodtheme_split.txt``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

RESOURCES = Path(__file__).resolve().parent / "resources"
BUNDLED_SPLITS = RESOURCES / "splits"
BUNDLED_TAGS = RESOURCES / "tags" / "moodtheme_split.txt"
SUBSETS = ("train", "validation", "test")
COLUMNS = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION")


class SplitError(ValueError):
    """A malformed split TSV or tag list; the message names the file and the line."""


def load_tags(path: Path | None = None) -> list[str]:
    """The tag vocabulary, one tag per line, in label-matrix column order (bundled: 56 tags)."""
    path = Path(path) if path is not None else BUNDLED_TAGS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise SplitError(f"{path}: cannot read the tag list ({err.strerror or err})") from None
    tags: list[str] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(lines, 1):
        tag = line.strip()
        if not tag:
            continue
        if tag in seen:
            raise SplitError(f"{path}:{line_no}: tag '{tag}' already listed on line {seen[tag]}")
        seen[tag] = line_no
        tags.append(tag)
    if not tags:
        raise SplitError(f"{path}: the tag list is empty")
    return tags


def split_tsv(split: int, subset: str, splits_dir: Path | None = None) -> Path:
    """Path of ``split-N/autotagging_moodtheme-SUBSET.tsv`` (bundled copy when splits_dir is None)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(SUBSETS)}, not '{subset}'")
    base = Path(splits_dir) if splits_dir is not None else BUNDLED_SPLITS
    path = base / f"split-{split}" / f"autotagging_moodtheme-{subset}.tsv"
    if not path.is_file():
        raise SplitError(
            f"{path}: split file not found; splits_dir must hold split-N/"
            f"autotagging_moodtheme-{{{','.join(SUBSETS)}}}.tsv"
        )
    return path


def resolve_splits_dir(root: Path | None, splits_dir: Path | None) -> Path:
    """The explicit ``splits_dir``, else ``ROOT/splits`` if it exists (synthetic layout), else bundled."""
    if splits_dir is not None:
        splits_dir = Path(splits_dir)
        if not splits_dir.is_dir():
            raise SplitError(f"{splits_dir}: splits directory not found")
        return splits_dir
    if root is not None and (Path(root) / "splits").is_dir():
        return Path(root) / "splits"
    return BUNDLED_SPLITS


@dataclass
class SplitTable:
    """One split subset: per-track metadata and the bool label matrix (N x n_tags)."""

    track_ids: list[str]
    artist_ids: list[str]
    album_ids: list[str]
    paths: list[str]  # relative melspec paths, NN/ID.npy
    durations: np.ndarray
    labels: np.ndarray
    tags: list[str]
    source: Path = field(default_factory=Path)

    def __len__(self) -> int:
        return len(self.track_ids)

    def subset(self, indices: Sequence[int] | np.ndarray) -> SplitTable:
        """The rows at ``indices``, in that order (e.g. the first N tracks for a smoke run)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} tracks of {self.source}")
        return SplitTable(
            track_ids=[self.track_ids[i] for i in idx],
            artist_ids=[self.artist_ids[i] for i in idx],
            album_ids=[self.album_ids[i] for i in idx],
            paths=[self.paths[i] for i in idx],
            durations=self.durations[idx].copy(),
            labels=self.labels[idx].copy(),
            tags=list(self.tags),
            source=self.source,
        )


def _melspec_path(audio_path: str, where: str) -> str:
    # The TSV names the mp3; the melspec sits at the same place with .npy. The path is
    # later joined to the data root, so anything that could escape it is refused.
    posix = PurePosixPath(audio_path)
    if not audio_path or posix.is_absolute() or ".." in posix.parts or "\\" in audio_path:
        raise SplitError(f"{where}: PATH '{audio_path}' must be relative, like 12/3412.mp3")
    return str(posix.with_suffix(".npy"))


def read_split(tsv: Path, tags: list[str] | None = None) -> SplitTable:
    """Read a split TSV into a :class:`SplitTable`; unknown tags or bad rows raise SplitError."""
    tsv = Path(tsv)
    tags = load_tags() if tags is None else list(tags)
    column = {tag: j for j, tag in enumerate(tags)}
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise SplitError(f"{tsv}: cannot read the split file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise SplitError(f"{tsv}: not a UTF-8 text file ({err.reason})") from None
    if not lines or tuple(lines[0].split("\t")[: len(COLUMNS)]) != COLUMNS:
        raise SplitError(
            f"{tsv}:1: header must start with {', '.join(COLUMNS)} (tab-separated), "
            f"got '{lines[0][:80] if lines else ''}'"
        )

    track_ids: list[str] = []
    artist_ids: list[str] = []
    album_ids: list[str] = []
    paths: list[str] = []
    durations: list[float] = []
    rows: list[list[int]] = []
    first_seen: dict[str, int] = {}
    for line_no, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        where = f"{tsv}:{line_no}"
        cells = line.split("\t")
        if len(cells) < len(COLUMNS):
            raise SplitError(
                f"{where}: expected at least {len(COLUMNS)} tab-separated columns "
                f"({', '.join(COLUMNS)}), found {len(cells)}"
            )
        track_id, artist_id, album_id, audio_path, duration, *row_tags = cells
        if not track_id:
            raise SplitError(f"{where}: empty TRACK_ID")
        if track_id in first_seen:
            raise SplitError(
                f"{where}: track {track_id} already listed on line {first_seen[track_id]}"
            )
        first_seen[track_id] = line_no
        try:
            seconds = float(duration)
        except ValueError:
            raise SplitError(f"{where}: DURATION '{duration}' is not a number") from None
        row: list[int] = []
        for tag in row_tags:
            if tag not in column:
                hint = " (empty column: a stray tab?)" if not tag else ""
                raise SplitError(
                    f"{where}: unknown tag '{tag}'{hint}; the vocabulary has {len(tags)} tags "
                    f"like '{tags[0]}'"
                )
            row.append(column[tag])
        track_ids.append(track_id)
        artist_ids.append(artist_id)
        album_ids.append(album_id)
        paths.append(_melspec_path(audio_path, where))
        durations.append(seconds)
        rows.append(row)

    labels = np.zeros((len(rows), len(tags)), dtype=bool)
    for i, row in enumerate(rows):
        labels[i, row] = True
    return SplitTable(
        track_ids=track_ids,
        artist_ids=artist_ids,
        album_ids=album_ids,
        paths=paths,
        durations=np.asarray(durations, dtype=np.float64),
        labels=labels,
        tags=tags,
        source=tsv,
    )


def labels_cli(argv: Sequence[str]) -> int:
    """``python -m moodtheme.data labels TSV OUT.npy``: save the bool label matrix."""
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.data labels",
        description="Write the bool label matrix of a split TSV: rows in file order, "
        "columns in tag order.",
    )
    parser.add_argument("tsv", type=Path, help="split TSV, e.g. autotagging_moodtheme-test.tsv")
    parser.add_argument("out", type=Path, help="output .npy file")
    parser.add_argument(
        "--tags", type=Path, default=None, help="tag list (default: bundled 56 tags)"
    )
    args = parser.parse_args(list(argv))
    try:
        table = read_split(args.tsv, load_tags(args.tags))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as f:  # np.save(path) would append .npy to other names
            np.save(f, table.labels)
    except SplitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write {args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {table.labels.shape[0]} tracks x {table.labels.shape[1]} tags")
    return 0
