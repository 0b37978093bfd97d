"""The synthetic generator's real-size option: every track as long as the real track whose
labels it borrows (DURATION x 46.875 frames/s), so loaders meet the real file sizes."""

from __future__ import annotations

import numpy as np

from moodtheme.data import synth
from moodtheme.data.jamendo import SUBSETS, read_split, split_tsv
from moodtheme.data.melspec import open_melspec


def test_real_durations_give_each_track_its_real_length(tmp_path):
    root = tmp_path / "data"
    # min_positives=0 lets a 12-track dataset exist (each track is ~4 MB here)
    design = synth.Design(min_positives=0)
    synth.generate(root, tracks=12, seed=3, design=design, real_durations=True)
    real = {}
    for subset in SUBSETS:
        table = read_split(split_tsv(0, subset))
        real.update(zip(table.track_ids, table.durations, strict=True))

    frames = []
    for subset in SUBSETS:
        table = read_split(root / "splits" / "split-0" / f"autotagging_moodtheme-{subset}.tsv")
        for track_id, rel in zip(table.track_ids, table.paths, strict=True):
            length = open_melspec(root / rel).shape[1]
            assert length == round(real[track_id] * synth.FRAMES_PER_SECOND), track_id
            frames.append(length)
    assert len(frames) == 12
    # unclipped: far beyond the scaled design's 1024 frames, as real tracks are
    assert min(frames) > 1024 and np.mean(frames) > 5000
    planted = synth.load_planted(root)
    assert planted["real_durations"] is True and planted["scale"] is None
    assert planted["frames"]["max"] == max(frames)


def test_the_command_line_passes_the_option_on(tmp_path, monkeypatch, capsys):
    seen = {}

    def generate(*args, **kwargs):
        seen.update(kwargs)
        raise synth.SynthError("stopped here")

    monkeypatch.setattr(synth.command, "generate", generate)  # the name cli calls
    assert synth.cli(["--to", str(tmp_path / "a"), "--real-durations"]) == 1
    assert seen["real_durations"] is True
    assert synth.cli(["--to", str(tmp_path / "b")]) == 1
    assert seen["real_durations"] is False
    assert "stopped here" in capsys.readouterr().err
