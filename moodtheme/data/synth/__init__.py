"""A synthetic MTG-Jamendo moodtheme dataset with planted, documented effects.

Real melspecs cannot be fetched here, so the default commands and the tests run on a dataset
written in exactly the real on-disk format: ``ROOT/NN/ID.npy`` (float32, 96 x T, dB) and
``ROOT/splits/split-N/autotagging_moodtheme-{train,validation,test}.tsv``. Labels, artists and
relative durations are a subsample of the real split, so class imbalance and tag
co-occurrence are real. The spectrograms are synthetic, with three kinds of tags:

* local tags: a tag-specific spectral signature in short events at random times;
* long-range tags: two motifs in different segments. A positive alternates them, a decoy (a
  negative) repeats one, so no single 32-frame segment tells a positive from a decoy, and
  neither does any sum of per-segment evidence (``Design.long_range_kind`` plants the
  reverse, ``"exclusive"``, or the motifs' order, ``"order"``, instead);
* every other tag: nothing planted.

``ROOT/planted.json`` records which tag is which, the signatures and the nuisance ranges;
docs/synthetic.md explains the design. ``default_dataset()`` generates the default size once
and caches it.

Modules: ``design`` (what is planted), ``sample`` (which real tracks, how long), ``render``
(one track's melspec), ``write`` (the files and planted.json), ``cache`` (the cached
dataset), ``command`` (the command line). Import from this package; the names below are its
public interface.
"""

from moodtheme.data.synth.cache import cache_root, cached_dataset, default_dataset
from moodtheme.data.synth.command import cli
from moodtheme.data.synth.design import (
    FRAMES_PER_SECOND,
    LONG_RANGE_KINDS,
    N_MELS,
    Design,
    LongRangeKind,
    Nuisance,
    Plan,
    Signature,
    SynthError,
    check_design,
    decoy_flags,
    make_plan,
)
from moodtheme.data.synth.render import add_event, motif_schedule, render_track
from moodtheme.data.synth.sample import (
    numeric_id,
    real_track_frames,
    subsample,
    subset_sizes,
    track_frames,
)
from moodtheme.data.synth.write import (
    DEFAULT_SCALE,
    DEFAULT_SEED,
    DEFAULT_TRACKS,
    GENERATOR_VERSION,
    PLANTED_FILE,
    PLANTED_GROUPS,
    PLANTED_VERSION,
    generate,
    load_planted,
    planted_groups,
)

__all__ = [
    "DEFAULT_SCALE",
    "DEFAULT_SEED",
    "DEFAULT_TRACKS",
    "FRAMES_PER_SECOND",
    "GENERATOR_VERSION",
    "LONG_RANGE_KINDS",
    "N_MELS",
    "PLANTED_FILE",
    "PLANTED_GROUPS",
    "PLANTED_VERSION",
    "Design",
    "LongRangeKind",
    "Nuisance",
    "Plan",
    "Signature",
    "SynthError",
    "add_event",
    "cache_root",
    "cached_dataset",
    "check_design",
    "cli",
    "decoy_flags",
    "default_dataset",
    "generate",
    "load_planted",
    "make_plan",
    "motif_schedule",
    "numeric_id",
    "planted_groups",
    "real_track_frames",
    "render_track",
    "subsample",
    "subset_sizes",
    "track_frames",
]
