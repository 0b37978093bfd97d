"""The transport of ``moodtheme.data.download``: resumable HTTP into a ``.part`` file.

Nothing is read or written through a link. ``is_regular_file`` refuses a symbolic link at the
path or at any folder above it; ``open_for_writing`` opens the file and every folder on its
way with O_NOFOLLOW (so a link planted after that check is refused too) and refuses a file
with another hard link, so no byte lands in a file elsewhere. The caller keeps names inside
its folder (``is_plain_relative``) and resolves the folder itself first, so any link found is
one planted below it.
"""

from __future__ import annotations

import http.client
import os
import re
import stat
import time
import urllib.error
import urllib.request
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


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", header or "")
    return int(match.group(1)) if match else None


def fetch(
    url: str,
    part: Path,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
    progress: bool = True,
) -> None:
    """Download ``url`` into ``part``, resuming from the bytes already there (HTTP Range).

    A connection that drops early is retried from where it stopped, at most ``retries`` times;
    the ``.part`` file stays for the next run if every attempt fails. Integrity is the caller's
    sha256 check: a server that ignores Range restarts the file from zero.
    """
    part = Path(part)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(retry_wait * attempt)
        have = _size(part)
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if have and (
                    response.status != 206
                    or _content_range_start(response.headers.get("Content-Range")) != have
                ):
                    have = 0  # the server sent the whole file, not the rest of it
                length = response.headers.get("Content-Length")
                expected = int(length) if length is not None else None
                bar = None
                if progress:
                    total = have + expected if expected is not None else None
                    bar = Progress(total, PurePosixPath(url).name, unit="B", done=have)
                received = 0
                try:
                    with open_for_writing(part, append=bool(have)) as out:
                        while chunk := response.read(CHUNK):
                            out.write(chunk)
                            received += len(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
                if expected is not None and received < expected:
                    raise ConnectionError(f"connection closed after {received} of {expected} bytes")
                return
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:
                return  # nothing left to send: the .part is complete (the sha256 check decides)
            if err.code < 500 and err.code != 429:
                raise DownloadError(
                    f"{url}: HTTP {err.code} {err.reason}; check --base-url"
                ) from None
            last_error = err
        except _NETWORK_ERRORS as err:
            last_error = err
    raise DownloadError(
        f"{url}: download failed after {retries + 1} attempts ({last_error}); "
        f"run the command again to resume from {part}"
    )
