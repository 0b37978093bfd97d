"""The transport of ``moodtheme.data.download``: bounded, resumable HTTP into a ``.part`` file.

Two guarantees, whatever the server or the target folder holds:

- Nothing is read or written through a link. ``is_regular_file`` refuses a symbolic link at
  the path or at any folder above it; ``open_for_writing`` opens the file and every folder on
  its way with O_NOFOLLOW (so a link planted after that check is refused too) and refuses a
  file with another hard link, so no byte lands in a file elsewhere. The caller keeps names
  inside its folder (``is_plain_relative``) and resolves the folder itself first, so any link
  found is one planted below it.
- A download is bounded in bytes and time. ``fetch`` never writes past the size the server
  announced nor past ``max_bytes``; it stops once ``deadline`` seconds have passed for the file,
  retries and waits included; and a partial (206) reply must continue the ``.part`` exactly,
  or it is refused and the ``.part`` kept.
"""

from __future__ import annotations

import http.client
import os
import re
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from moodtheme.progress import Progress

CHUNK = 1 << 20
# O_PATH (Linux) opens a folder that may be searched but not listed, like a shared /scratch.
_FOLDER = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadError(RuntimeError):
    """A download that cannot go on; the message names the archive or URL and what to do."""


def is_plain_relative(name: str) -> bool:
    """True for a relative POSIX path with no ``..``, no backslash and at least one part."""
    pure = PurePosixPath(name)
    return (
        not pure.is_absolute() and bool(pure.parts) and ".." not in pure.parts and "\\" not in name
    )


def _refuse_links(path: Path) -> None:
    """Raise if ``path`` or any folder above it is a symbolic link (a missing part is fine)."""
    for part in (path, *path.parents):
        try:
            is_link = stat.S_ISLNK(part.lstat().st_mode)
        except FileNotFoundError:
            continue
        if is_link:
            raise DownloadError(
                f"{part} is a symbolic link (to {os.readlink(part)}); the download never reads "
                "or writes through a link inside --to: remove the link and run again"
            )


def is_regular_file(path: Path) -> bool:
    """True for a regular file, False for nothing there; a link or anything else is refused."""
    _refuse_links(path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(mode):
        raise DownloadError(f"{path} is not a regular file; remove it and run again")
    return True


def _open_without_links(path: Path, flags: int) -> int:
    """``os.open(path, flags)`` with the name and every folder on the way opened O_NOFOLLOW,
    each relative to the last, so a link planted after the checks is refused all the same."""
    folder = os.open(path.anchor, _FOLDER)
    try:
        for name in path.parts[1:-1]:
            inner = os.open(name, _FOLDER | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(path.name, flags | os.O_NOFOLLOW, 0o644, dir_fd=folder)
    finally:
        os.close(folder)


def open_for_writing(path: Path, append: bool = False) -> BinaryIO:
    """``path`` (absolute) opened for writing, never through a link nor into a file with
    another name.

    A fresh file first removes what was there, so O_EXCL makes a new inode; a file appended
    to must have one name only, or the bytes would also change the file behind its hard link.
    """
    if is_regular_file(path) and not append:
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_EXCL)
    try:
        fd = _open_without_links(path, flags)
    except OSError as err:
        _refuse_links(path)  # the precise message, when a link was planted meanwhile
        raise DownloadError(
            f"{path}: cannot open for writing ({err.strerror}); remove it and run again"
        ) from None
    links = os.fstat(fd).st_nlink
    if links != 1:
        os.close(fd)
        raise DownloadError(
            f"{path} has {links} hard links, so writing it would change another file; "
            "remove it and run again"
        )
    return os.fdopen(fd, "ab" if append else "wb")


def _size(path: Path) -> int:
    return path.lstat().st_size if is_regular_file(path) else 0


class _Clock:
    """The overall deadline of one file, retries and waits included."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def check(self, url: str, part: Path, size: int | None = None) -> None:
        """Raise once the deadline has passed; ``size``: the .part's bytes, if not yet on disk."""
        if self.left() > 0:
            return
        size = _size(part) if size is None else size
        raise DownloadError(
            f"{url}: not finished after {time.monotonic() - self.start:.1f} s (--deadline "
            f"{self.seconds:g} s per archive); {size} bytes kept in {part}, run the command "
            "again to resume or raise --deadline"
        )


def _reply_span(
    response: http.client.HTTPResponse,
    url: str,
    have: int,
    part: Path,
    max_bytes: int,
    log: Callable[[str], None],
) -> tuple[int, int | None]:
    """The byte the reply starts at and the size the .part will reach (None: not announced).

    A 206 must continue the .part exactly (start, end, size, length): anything else is refused
    with the .part kept, since bytes of unknown position must not be written. A 200 to a
    resume request is the whole file: the .part restarts from zero, said in a log line.
    """
    length_text = (response.headers.get("Content-Length") or "").strip()
    length = int(length_text) if length_text.isdigit() else None
    if response.status == 200:
        if have:
            log(f"{url}: the server ignored the request to resume at byte {have}; from zero")
        have, end = 0, length
    elif response.status == 206:
        content_range = (response.headers.get("Content-Range") or "").strip()
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range)
        first, last = (int(match[1]), int(match[2])) if match else (-1, -1)
        total = int(match[3]) if match and match[3] != "*" else None
        if (
            first != have
            or (total is not None and last != total - 1)
            or (length is not None and length != last - first + 1)
        ):
            advice = (
                f"{part} kept as it was: delete it to download from zero, or check --base-url"
                if have
                else "nothing written; check --base-url"
            )
            raise DownloadError(
                f"{url}: asked for bytes {have}- but got Content-Range '{content_range}' "
                f"(Content-Length {length}); refused, {advice}"
            )
        end = last + 1
    else:
        raise DownloadError(f"{url}: unexpected HTTP {response.status}; check --base-url")
    if end is not None and end > max_bytes:
        raise DownloadError(
            f"{url}: the server announces {end} bytes, more than an archive can have "
            f"({max_bytes} bytes, --max-archive-gb); nothing was written, check --base-url"
        )
    return have, end


def _receive(
    response: http.client.HTTPResponse,
    url: str,
    part: Path,
    span: tuple[int, int | None],
    max_bytes: int,
    clock: _Clock,
    bar: Progress | None,
) -> None:
    """Write the reply to the .part, never past its end or ``max_bytes``, within the deadline."""
    size, end = span
    limit = end if end is not None else max_bytes
    with open_for_writing(part, append=bool(size)) as out:
        while size < limit:
            clock.check(url, part, size)
            # read1 returns what has arrived, so a trickle cannot hold one read past --timeout
            chunk = response.read1(min(CHUNK, limit - size))
            if not chunk:
                break
            out.write(chunk)
            size += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
        overflow = end is None and size >= limit and response.read1(1)
    if overflow:
        part.unlink()
        raise DownloadError(
            f"{url}: the server sent more than {max_bytes} bytes without announcing a size, "
            f"more than an archive can have (--max-archive-gb); deleted {part}, check --base-url"
        )
    if end is not None and size < end:
        raise ConnectionError(f"connection closed after {size} of {end} bytes")


def _request(
    url: str,
    part: Path,
    clock: _Clock,
    timeout: float,
    max_bytes: int,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """One HTTP request that continues (or, after a 200, restarts) the .part."""
    clock.check(url, part)
    have = _size(part)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=min(timeout, clock.left()))
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return  # nothing left to send: the .part is complete (the sha256 check decides)
        raise
    with response:
        span = _reply_span(response, url, have, part, max_bytes, log)
        bar = (
            Progress(span[1], PurePosixPath(url).name, unit="B", done=span[0]) if progress else None
        )
        try:
            _receive(response, url, part, span, max_bytes, clock, bar)
        finally:
            if bar is not None:
                bar.close()


def fetch(
    url: str,
    part: Path,
    *,
    deadline: float,
    max_bytes: int,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """Download ``url`` into ``part``, resuming from the bytes already there (HTTP Range).

    A connection that drops early is retried from where it stopped, at most ``retries`` times;
    the ``.part`` file stays for the next run if every attempt fails or ``deadline`` seconds
    pass (a read waits at most ``timeout``, so the stop comes within ``timeout`` of it).
    Integrity is the caller's sha256 check.
    """
    part = Path(part)
    clock = _Clock(deadline)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(max(0.0, min(retry_wait * attempt, clock.left())))
        try:
            _request(url, part, clock, timeout, max_bytes, progress, log)
            return
        except urllib.error.HTTPError as err:
            if err.code < 500 and err.code != 429:
                raise DownloadError(
                    f"{url}: HTTP {err.code} {err.reason}; check --base-url"
                ) from None
            last_error = err
        except _NETWORK_ERRORS as err:
            last_error = err
    clock.check(url, part)
    raise DownloadError(
        f"{url}: download failed after {retries + 1} attempts ({last_error}); "
        f"run the command again to resume from {part}"
    )
