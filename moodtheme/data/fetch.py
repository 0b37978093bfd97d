"""The transport of ``moodtheme.data.download``: resumable HTTP into a ``.part`` file."""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from moodtheme.progress import Progress

CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadError(RuntimeError):
    """A download that cannot go on; the message names the archive or URL and what to do."""


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
        have = part.stat().st_size if part.exists() else 0
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
                    with open(part, "ab" if have else "wb") as out:
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
