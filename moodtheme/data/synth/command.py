"""``python -m moodtheme.data synth``: write a synthetic dataset from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from moodtheme.data.jamendo import SUBSETS, SplitError
from moodtheme.data.synth.design import SynthError
from moodtheme.data.synth.write import (
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_TRACKS,
    PLANTED_FILE,
    generate,
    load_planted,
)


def cli(argv: Sequence[str]) -> int:
    """``python -m moodtheme.data synth --to DIR [--tracks N] [--scale S | --real-durations]
    [--seed K] [--split N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m moodtheme.data synth",
        description="Write a synthetic MTG-Jamendo moodtheme dataset in the real on-disk "
        "format (NN/ID.npy melspecs, split TSVs) with planted effects listed in "
        "DIR/planted.json. See docs/synthetic.md.",
    )
    parser.add_argument(
        "--to", type=Path, required=True, metavar="DIR", help="output folder (new or empty)"
    )
    parser.add_argument(
        "--tracks",
        type=int,
        default=DEFAULT_TRACKS,
        metavar="N",
        help=f"total tracks (default {DEFAULT_TRACKS})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        metavar="S",
        help=f"frames = real duration x 46.875 x SCALE, clipped (default {DEFAULT_SCALE})",
    )
    parser.add_argument(
        "--real-durations",
        action="store_true",
        help="every track as long as its real track (46.875 frames/s, ~4 MB a track on "
        "average) instead of scaled by --scale: for measuring loaders on real file sizes",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="K", help="random seed (default 0)"
    )
    parser.add_argument(
        "--split",
        type=int,
        default=0,
        choices=range(5),
        help="real split to draw labels from; writes splits/split-N (default 0)",
    )
    args = parser.parse_args(list(argv))
    started = time.monotonic()
    try:
        root = generate(
            args.to,
            args.tracks,
            args.scale,
            args.seed,
            args.split,
            real_durations=args.real_durations,
        )
    except (SynthError, SplitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write {args.to}: {err.strerror or err}", file=sys.stderr)
        return 1
    planted = load_planted(root)
    size = sum(f.stat().st_size for f in root.rglob("*.npy"))
    counts = ", ".join(f"{planted['tracks'][s]} {s}" for s in SUBSETS)
    print(
        f"wrote {root}: {args.tracks} tracks ({counts}), {size / 1e6:.0f} MB in "
        f"{time.monotonic() - started:.0f} s; planted {len(planted['local'])} local and "
        f"{len(planted['long_range'])} long-range tags, see {root / PLANTED_FILE}"
    )
    return 0
