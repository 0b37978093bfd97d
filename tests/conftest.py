"""Shared fixtures. Synthetic datasets are cached under .cache/ in the repo, so every test
module, subprocess and Ray worker of a run (and later runs) reuse the same files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("MOODTHEME_CACHE", str(REPO / ".cache" / "moodtheme"))


@pytest.fixture(scope="session")
def small_synth() -> Path:
    """A small synthetic MTG-Jamendo (real format, planted effects), shared by the session."""
    from moodtheme.data.synth import cached_dataset

    return cached_dataset(tracks=600)


@pytest.fixture(scope="module")
def ray_session():
    """A local 2-CPU Ray for one test module, shut down after it unless it was already up."""
    from tune import ray_adapter

    started = ray_adapter.connect(None, num_cpus=2, num_gpus=0)
    yield
    if started:
        ray_adapter.disconnect()
