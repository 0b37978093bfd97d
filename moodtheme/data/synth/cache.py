"""The cached synthetic dataset: generated once per parameter set under a shared cache folder,
safe when parallel trials race on first use."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from moodtheme.data.synth.design import Design, Nuisance, SynthError
from moodtheme.data.synth.write import (
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_TRACKS,
    GENERATOR_VERSION,
    PLANTED_FILE,
    generate,
)


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
            "(first use only; about 2 s per 1000 tracks on a 2-core CPU)",
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
