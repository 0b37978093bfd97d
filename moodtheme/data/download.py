"""Resumable, verified download of the official MTG-Jamendo moodtheme melspec archives.

``python -m moodtheme.data download --to DIR`` fetches ``autotagging_moodtheme_melspecs-NN.tar``
(NN = 00..99) into ``DIR/NAME.part`` (resumed with HTTP Range after an interruption), checks
each archive's sha256, unpacks it safely into ``DIR/NN/ID.npy`` and checks each track's sha256.
A file that fails a check is deleted, never left in place. Verified archives are recorded in
``DIR/.verified/`` and skipped on the next run.

Against a misbehaving server or folder (each case is tested in tests/test_download.py), with
a one-line error that names the path or URL:

- Links: nothing is read or written through a symbolic link below ``DIR`` (``DIR`` itself may
  be one) nor into a file with another hard link; such a path is refused before any write.
- Size: an archive is never written past the size the server announces nor past
  ``--max-archive-gb`` (default 2; the track durations put the largest archive at 0.9 GB).
- Time: each archive has a deadline, retries included (``--deadline``, default one hour);
  past it the run stops, naming the elapsed time, and keeps the ``.part`` for the next run.
- Resume: a 206 reply whose Content-Range does not continue the ``.part`` exactly is refused
  and the ``.part`` kept untouched (bytes of uncertain place are never written; deleting the
  ``.part`` restarts). A 200 reply to a resume request restarts from zero and says so.

The transport and these guards live in ``moodtheme.data.fetch``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from moodtheme.data.fetch import (
    CHUNK,
    DownloadError,
    fetch,
    is_plain_relative,
    is_regular_file,
    open_for_writing,
)
from moodtheme.data.jamendo import RESOURCES

# The fast MTG mirror, the default of the dataset's own download script (scripts/download/
# download.py, `--from mtg-fast`). The origin server in Spain is slower.
DEFAULT_BASE_URL = "https://cdn.freesound.org/mtg-jamendo/autotagging_moodtheme/melspecs/"
ORIGIN_BASE_URL = (
    "https://essentia.upf.edu/documentation/datasets/mtg-jamendo/autotagging_moodtheme/melspecs/"
)
SHA256_TARS = RESOURCES / "download" / "autotagging_moodtheme_melspecs_sha256_tars.txt"
SHA256_TRACKS = RESOURCES / "download" / "autotagging_moodtheme_melspecs_sha256_tracks.txt"
VERIFIED_DIR = ".verified"
# No archive size is published, so the cap is a ceiling derived from the bundled metadata: a
# track is 96 float32 mels at 46.875 frames/s, so the split durations put the largest archive
# at about 0.9 GB (71 GB over the 17,982 tracks with a duration). Were each of the other 504
# tracks as long as the longest one (66 min), the largest archive would still be under 1.7 GB;
# tests/test_download.py recomputes that bound. A server announcing more is refused unread.
DEFAULT_MAX_ARCHIVE_BYTES = 2_000_000_000
# Enough for the largest archive (~0.9 GB) at 250 kB/s; a stalled or trickling server is cut
# off instead of holding the run forever. The .part is kept, so a rerun resumes it.
DEFAULT_DEADLINE = 3600.0
_ARCHIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def read_sha256_list(path: Path) -> dict[str, str]:
    """``{name: hex digest}`` from a sha256sum-style file (``DIGEST  NAME`` per line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DownloadError(
            f"{path}: cannot read the sha256 list ({err.strerror or err})"
        ) from None
    sums: dict[str, str] = {}
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")  # sha256sum marks binary mode with '*'
        if not re.fullmatch(r"[0-9a-fA-F]{64}", digest) or not name:
            raise DownloadError(
                f"{path}:{line_no}: expected '<64 hex digits> <name>', got '{line[:90]}'"
            )
        sums[name] = digest.lower()
    if not sums:
        raise DownloadError(f"{path}: the sha256 list is empty")
    return sums


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _archive_key(name: str) -> str | None:
    match = re.search(r"-(\d+)\.tar$", name)
    return match.group(1) if match else None


def _unpack_track(
    tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, root: Path, expected: str
) -> str | None:
    """Write one track under ``root`` if its sha256 matches; else the problem, in one line.

    The track goes to a temporary name while hashed and is only renamed once it matches; a
    mismatching one is removed, as is any older copy at its place.
    """
    try:
        target, tmp = root / name, root / f"{name}.part"
        is_regular_file(target)  # refuses a link on the way before mkdir, and a folder in it
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has data
        with source, open_for_writing(tmp) as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except DownloadError as err:
        return f"{err} (track {name} skipped)"
    if digest.hexdigest() == expected:
        os.replace(tmp, target)
        return None
    tmp.unlink()
    target.unlink(missing_ok=True)
    return f"bad track {target}: sha256 mismatch (removed)"


def unpack(archive: Path, to: Path, track_sums: dict[str, str]) -> list[str]:
    """Unpack the regular files of ``archive`` that the sha256 list names; return problems.

    Links, devices, absolute paths and ``..`` are refused, and so is a link already inside
    ``to`` on a track's way, so nothing lands outside ``to``.
    """
    to = Path(to)
    root = to.resolve()
    problems: list[str] = []
    seen: set[str] = set()
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as err:
        raise DownloadError(f"{archive}: not a readable tar archive ({err})") from None
    with tar:
        try:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isdir():
                    continue
                if not is_plain_relative(name):
                    problems.append(f"unsafe path in {archive.name}: {member.name} (skipped)")
                    continue
                if not member.isfile():
                    problems.append(
                        f"not a regular file in {archive.name}: {member.name} (skipped; links "
                        "and devices are never unpacked)"
                    )
                    continue
                if name not in track_sums:
                    problems.append(
                        f"unexpected file in {archive.name}: {name} (not in the sha256 list, skipped)"
                    )
                    continue
                seen.add(name)
                problem = _unpack_track(tar, member, name, root, track_sums[name])
                if problem is not None:
                    problems.append(problem)
        except (tarfile.TarError, EOFError) as err:
            problems.append(f"corrupt archive {archive}: {err}")
    key = _archive_key(archive.name)
    if key is not None:
        for name in sorted(n for n in track_sums if n.split("/")[0] == key and n not in seen):
            problems.append(f"missing track {to / name}: listed but not in {archive.name}")
    return problems


def _select(names: list[str], wanted: str | None) -> list[str]:
    if wanted is None:
        return names
    by_key = {key: n for n in names if (key := _archive_key(n)) is not None}
    chosen: list[str] = []
    for token in (t.strip() for t in wanted.split(",")):
        low, _, high = token.partition("-")
        if token in names or not token:
            keys = [token] if token else []
        elif low.isdigit() and high.isdigit():
            keys = [f"{k:0{len(low)}d}" for k in range(int(low), int(high) + 1)]
        else:
            keys = [token]
        for key in keys:
            if key not in by_key and key not in names:
                span = f", {min(by_key)}..{max(by_key)}" if by_key else ""
                raise DownloadError(
                    f"--archives: no archive '{key}'; the sha256 list has {len(names)} archives{span}"
                )
            chosen.append(by_key.get(key, key))
    return list(dict.fromkeys(chosen))


def _archive_names(tars_list: Path) -> dict[str, str]:
    """The archive sha256 list; every name must be a plain file name, kept inside --to."""
    sums = read_sha256_list(tars_list)
    for name in sums:
        if not _ARCHIVE_NAME.fullmatch(name):
            raise DownloadError(
                f"{tars_list}: archive name '{name}' is not a plain file name (letters, digits, "
                "'.', '_', '-'), so it could land outside --to; fix the list"
            )
    return sums


def _fetch_archive(
    get: Callable[[str, Path], None], base_url: str, archive: Path, expected: str
) -> str | None:
    """Make ``archive`` a copy whose sha256 is ``expected``, fetching it with ``get(url, part)``
    unless one is there; else the problem, in one line (the bad download is deleted)."""
    if is_regular_file(archive) and sha256_file(archive) != expected:
        archive.unlink()  # a stale or damaged copy: fetch it again
    if is_regular_file(archive):
        return None
    part = archive.with_name(archive.name + ".part")
    get(base_url.rstrip("/") + "/" + archive.name, part)
    actual = sha256_file(part)
    if actual != expected:
        part.unlink()
        return (
            f"bad archive {archive.name}: sha256 {actual} != expected {expected}; the download "
            "was deleted, run the command again"
        )
    os.replace(part, archive)
    return None


def download(
    to: Path,
    base_url: str = DEFAULT_BASE_URL,
    archives: str | None = None,
    sha256_tars: Path | None = None,
    sha256_tracks: Path | None = None,
    *,
    keep_archives: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    deadline: float = DEFAULT_DEADLINE,
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Download, verify and unpack the selected archives (``"00,01"`` or ``"00-09"``; None: all).

    Returns the problems (a bad archive or bad tracks); an empty list means every archive is
    verified and unpacked. A network failure, an expired ``deadline`` (seconds per archive), a
    refused reply or a link inside ``to`` stops the run with DownloadError, keeping the
    ``.part`` file so that the next run resumes it (an oversized body excepted).
    """
    to = Path(to)
    tar_sums = _archive_names(Path(sha256_tars or SHA256_TARS))
    track_sums = read_sha256_list(sha256_tracks or SHA256_TRACKS)
    names = _select(list(tar_sums), archives)
    to.mkdir(parents=True, exist_ok=True)
    root = to.resolve()  # --to may be a link; nothing below it may
    verified = root / VERIFIED_DIR
    get = partial(
        fetch,
        deadline=deadline,
        max_bytes=max_archive_bytes,
        retries=retries,
        timeout=timeout,
        retry_wait=retry_wait,
        progress=progress,
        log=log,
    )
    problems: list[str] = []
    for name in names:
        expected = tar_sums[name]
        marker = verified / f"{name}.sha256"
        if is_regular_file(marker) and marker.read_text().strip() == expected:
            log(f"{name}: already verified, skipped")
            continue
        archive = root / name
        problem = _fetch_archive(get, base_url, archive, expected)
        if problem is not None:
            problems.append(problem)
            continue
        log(f"{name}: sha256 OK, unpacking")
        archive_problems = unpack(archive, to, track_sums)
        if archive_problems:
            problems.extend(archive_problems)
            continue  # keep the verified archive: the next run unpacks it without downloading
        verified.mkdir(exist_ok=True)
        with open_for_writing(marker) as out:
            out.write(f"{expected}\n".encode())
        if not keep_archives:
            archive.unlink()
        log(f"{name}: tracks verified")
    return problems


def _number(kind: type[int] | type[float], low: float, text: str) -> float:
    """An argparse type: a finite ``kind`` value of at least ``low``."""
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
    if not math.isfinite(value) or value < low:
        raise argparse.ArgumentTypeError(f"must be a number >= {low:g}, got '{text}'")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.data download",
        description="Download, verify and unpack the MTG-Jamendo moodtheme melspec archives "
        "(about 100 tar files). Interrupted downloads resume; verified archives are skipped "
        "(delete TO/.verified/NAME.sha256 to redo one). Links below TO are refused; a partial "
        "reply that does not continue a .part is refused, the .part kept (delete it to restart).",
    )
    parser.add_argument(
        "--to", type=Path, required=True, help="data root; tracks land in TO/NN/ID.npy"
    )
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help=f"archive directory URL (default: the fast MTG mirror; origin: {ORIGIN_BASE_URL})",
    )
    parser.add_argument(
        "--archives", default=None, help="which archives, e.g. 00,01 or 00-09 (default all)"
    )
    parser.add_argument(
        "--sha256-tars", type=Path, default=None, help="archive sha256 list (default bundled)"
    )
    parser.add_argument(
        "--sha256-tracks", type=Path, default=None, help="track sha256 list (default bundled)"
    )
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep the .tar files after unpacking"
    )
    parser.add_argument(
        "--retries",
        type=partial(_number, int, 0),
        default=3,
        help="retries per archive after a dropped connection (default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=partial(_number, float, 0.001),
        default=60.0,
        help="seconds one network read may wait (default 60)",
    )
    parser.add_argument(
        "--deadline",
        type=partial(_number, float, 0.001),
        default=DEFAULT_DEADLINE,
        help=f"seconds allowed per archive, retries included (default {DEFAULT_DEADLINE:g}: "
        "0.9 GB at 250 kB/s); past it the .part is kept and a rerun resumes",
    )
    parser.add_argument(
        "--max-archive-gb",
        type=partial(_number, float, 1e-9),
        default=DEFAULT_MAX_ARCHIVE_BYTES / 1e9,
        help=f"refuse an archive larger than this (default {DEFAULT_MAX_ARCHIVE_BYTES / 1e9:g}; "
        "the largest official one is estimated at 0.9 GB)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def cli(argv: Sequence[str]) -> int:
    """``python -m moodtheme.data download --to DIR``: exit 1 on any bad archive or track."""
    args = _parser().parse_args(list(argv))
    try:
        existing = next(p for p in (args.to, *args.to.absolute().parents) if p.exists())
        free = shutil.disk_usage(existing).free
        print(f"downloading into {args.to} ({free / 1e9:.0f} GB free) from {args.base_url}")
        problems = download(
            args.to,
            args.base_url,
            args.archives,
            args.sha256_tars,
            args.sha256_tracks,
            keep_archives=args.keep_archives,
            retries=args.retries,
            timeout=args.timeout,
            deadline=args.deadline,
            max_archive_bytes=max(1, round(args.max_archive_gb * 1e9)),
            progress=not args.quiet,
        )
    except (DownloadError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems; run the command again to retry", file=sys.stderr)
        return 1
    print("all archives verified")
    return 0
