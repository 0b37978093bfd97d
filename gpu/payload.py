"""What one call to the device machine carries, and whether it fits.

The device tool sends the checkout's tracked files, its untracked files that git does not
ignore, ``shared/`` if the checkout has one, and the ignored paths named in ``carry``: 64 MiB
in all per call (/work/.library/device/README.md, "Limits").
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

LIMIT_BYTES = 64 * 2**20
# The ignored folders prepare_wheels.py fills; a call carries one or both (see SPLIT_FOLDER).
WHEEL_FOLDER = ".whl"
# With --split, everything but Ray goes here, for a second call on the still-warm machine.
SPLIT_FOLDER = ".whl2"
# What gpu/prepare_wheels.py brought on 2026-12-04 (Ray 2.60.0 slimmed to 41.8 MB, and 14
# small wheels): the checkout must leave this much room for a one-call check.
WHEELS_BYTES = 50_687_517


class PayloadError(RuntimeError):
    """The payload cannot be measured or is over the limit; the message says what to do."""


@dataclass(frozen=True)
class Payload:
    repo_bytes: int
    carried_bytes: dict[str, int]

    @property
    def total(self) -> int:
        return self.repo_bytes + sum(self.carried_bytes.values())

    @property
    def margin(self) -> int:
        return LIMIT_BYTES - self.total

    def describe(self) -> str:
        parts = [f"repo {mib(self.repo_bytes)}"]
        parts += [f"{path} {mib(size)}" for path, size in self.carried_bytes.items()]
        return (
            " + ".join(parts)
            + f" = {mib(self.total)} of {mib(LIMIT_BYTES)} (margin {mib(self.margin)})"
        )


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def repo_files(repo: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files that exist, as the device tool sends them."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise PayloadError(f"cannot list the files of {repo} with git ({err})") from None
    files = {repo / name for name in listing.decode().split("\0") if name}
    shared = repo / "shared"
    if shared.is_dir():
        files.update(shared.rglob("*"))
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(repo: Path, carry: list[str]) -> Payload:
    """The payload of a call from ``repo`` that carries the paths ``carry``."""
    repo_bytes = sum(p.stat().st_size for p in repo_files(repo))
    return Payload(repo_bytes, {path: folder_bytes(repo / path) for path in carry})


def check(repo: Path, carry: list[str]) -> Payload:
    """:func:`measure`, raising :class:`PayloadError` when the call would be refused."""
    payload = measure(repo, carry)
    if payload.margin < 0:
        raise PayloadError(
            f"a call carrying {', '.join(carry) or 'nothing'} would send {payload.describe()}; "
            "run gpu/prepare_wheels.py --split and make two calls (docs/benchmarks.md, GPU pool)"
        )
    return payload
