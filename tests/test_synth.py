"""The synthetic dataset: real on-disk format, real label statistics, determinism, the cache,
and a statistical check that the planted structure is what planted.json says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from moodtheme.data import synth
from moodtheme.data.jamendo import SUBSETS, read_split, split_tsv

REPO = Path(__file__).resolve().parents[1]
SEGMENTS, SEGMENT_FRAMES = 8, 32  # the quick preset's view: 8 segments of 32 frames


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # min_positives=0 lets a 40-track dataset exist; the default scale keeps lengths varied.
    root = tmp_path_factory.mktemp("tiny") / "data"
    return synth.generate(root, tracks=40, seed=5, design=synth.Design(min_positives=0))


@pytest.fixture(scope="module")
def probe_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Through the CLI, as a user would; scale 0.01 clips every track to 256 frames (fast).
    root = tmp_path_factory.mktemp("probe") / "data"
    argv = ["--to", str(root), "--tracks", "600", "--scale", "0.01", "--seed", "0"]
    assert synth.cli(argv) == 0
    return root


@dataclass
class Probe:
    planted: dict
    tags: list[str]
    track_ids: list[str]
    labels: np.ndarray  # N x 56 bool
    spectra: np.ndarray  # N x 8 x 96: mean dB per 32-frame segment of the centre 256 frames

    def y(self, tag: str) -> np.ndarray:
        return self.labels[:, self.tags.index(tag)]

    def carriers(self, tag: str) -> np.ndarray:
        decoys = {t for subset in self.planted["decoys"].values() for t in subset[tag]}
        return self.y(tag) | np.array([t in decoys for t in self.track_ids])


def centre_segments(mel: np.ndarray) -> np.ndarray:
    frames = SEGMENTS * SEGMENT_FRAMES
    start = (mel.shape[1] - frames) // 2
    crop = mel[:, start : start + frames]
    return crop.reshape(mel.shape[0], SEGMENTS, SEGMENT_FRAMES).mean(axis=2).T


@pytest.fixture(scope="module")
def probe(probe_root: Path) -> Probe:
    tables = [read_split(split_tsv(0, s, probe_root / "splits")) for s in SUBSETS]
    paths = [p for t in tables for p in t.paths]
    return Probe(
        planted=json.loads((probe_root / "planted.json").read_text()),
        tags=tables[0].tags,
        track_ids=[i for t in tables for i in t.track_ids],
        labels=np.concatenate([t.labels for t in tables]),
        spectra=np.stack([centre_segments(np.load(probe_root / p)) for p in paths]),
    )


def cv_auc(features: np.ndarray, y: np.ndarray) -> float:
    """Out-of-fold ROC-AUC of a logistic probe (5-fold, stratified)."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(probe, features, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ----------------------------------------------------------------------------- format


def test_files_have_the_real_on_disk_format(tiny: Path) -> None:
    n_files = 0
    for subset in SUBSETS:
        tsv = tiny / "splits" / "split-0" / f"autotagging_moodtheme-{subset}.tsv"
        raw = tsv.read_bytes()
        assert raw.startswith(b"TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\r\n")
        assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n")
        table = read_split(tsv)
        assert len(table) > 0
        for line, rel, track_id, seconds in zip(
            raw.decode().splitlines()[1:],
            table.paths,
            table.track_ids,
            table.durations,
            strict=True,
        ):
            number = int(track_id.removeprefix("track_"))
            assert line.split("\t")[3] == f"{number % 100:02d}/{number}.mp3"
            assert rel == f"{number % 100:02d}/{number}.npy"
            mel = np.load(tiny / rel, mmap_mode="r")
            n_files += 1
            assert mel.dtype == np.float32 and mel.ndim == 2 and mel.shape[0] == 96
            frames = mel.shape[1]
            assert 256 <= frames <= 1024
            assert abs(seconds * synth.FRAMES_PER_SECOND - frames) <= 3, (rel, seconds, frames)
            values = np.asarray(mel)
            assert np.isfinite(values).all()
            assert -100.0 <= values.min() and values.max() <= 20.0
            # dB-like: a quiet floor far below the loud events.
            assert np.percentile(values, 95) - np.percentile(values, 5) > 20.0
    assert n_files == len(list(tiny.rglob("*.npy")))


def test_rows_are_real_rows_of_the_same_subset(tiny: Path) -> None:
    for subset in SUBSETS:
        real = read_split(split_tsv(0, subset))
        fake = read_split(split_tsv(0, subset, tiny / "splits"))
        where = {t: i for i, t in enumerate(real.track_ids)}
        assert set(fake.track_ids) <= set(where), f"{subset} has tracks of another subset"
        for i, track in enumerate(fake.track_ids):
            j = where[track]
            assert fake.artist_ids[i] == real.artist_ids[j]
            assert fake.album_ids[i] == real.album_ids[j]
            assert fake.paths[i] == real.paths[j]
            assert (fake.labels[i] == real.labels[j]).all()


def test_generation_is_byte_identical_for_a_seed(tiny: Path, tmp_path: Path) -> None:
    again = synth.generate(
        tmp_path / "again", tracks=40, seed=5, design=synth.Design(min_positives=0)
    )
    assert files_of(again) == files_of(tiny)
    other = synth.generate(
        tmp_path / "other", tracks=40, seed=6, design=synth.Design(min_positives=0)
    )
    assert files_of(other)["planted.json"] != files_of(tiny)["planted.json"]


# ----------------------------------------------------------------------------- labels


def test_every_tag_has_positives_in_every_subset(probe: Probe, probe_root: Path) -> None:
    assert probe.planted["tracks"] == {"train": 332, "validation": 127, "test": 141}
    start = 0
    for subset in SUBSETS:
        size = probe.planted["tracks"][subset]
        counts = probe.labels[start : start + size].sum(axis=0)
        start += size
        short = [t for t, c in zip(probe.tags, counts, strict=True) if c < 3]
        assert not short, f"{subset}: tags with < 3 positives: {short}"


def test_label_statistics_follow_the_real_split(probe: Probe) -> None:
    real = read_split(split_tsv(0, "train")).labels
    fake = probe.labels[: probe.planted["tracks"]["train"]]
    real_freq, fake_freq = real.mean(axis=0), fake.mean(axis=0)
    ranks = [np.argsort(np.argsort(f)) for f in (real_freq, fake_freq)]
    assert np.corrcoef(*ranks)[0, 1] > 0.8
    top5_real = set(np.argsort(-real_freq)[:5])
    assert top5_real <= set(np.argsort(-fake_freq)[:10])
    assert abs(fake.sum(axis=1).mean() - real.sum(axis=1).mean()) < 0.3


def test_planted_json_names_disjoint_roles_and_real_decoys(probe: Probe) -> None:
    planted = probe.planted
    assert planted["version"] == 1 and planted["seed"] == 0
    assert planted["frames_per_second"] == 46.875
    local, long_range = set(planted["local"]), set(planted["long_range"])
    assert len(local) == 16 and len(long_range) == 8 and not local & long_range
    assert local | long_range | set(planted["unplanted"]) == set(probe.tags)
    assert planted["long_range_kinds"] == {t: "order" for t in long_range}
    for key in ("gain_db", "freq_shift_bins", "time_stretch", "noise_floor_db"):
        low, high = planted["nuisance"][key]
        assert low < high
    # Planted tags are frequent real tags, long-range ones the most frequent.
    real_rank = list(np.argsort(-read_split(split_tsv(0, "train")).labels.sum(axis=0)))
    assert all(real_rank.index(probe.tags.index(t)) < 24 for t in local | long_range)
    assert all(real_rank.index(probe.tags.index(t)) < 12 for t in long_range)
    share = planted["design"]["decoy_share"]
    for tag in long_range:
        y, carriers = probe.y(tag), probe.carriers(tag)
        decoy = carriers & ~y
        assert not (decoy & y).any()
        observed = decoy.sum() / (~y).sum()
        assert abs(observed - share) < 0.06, (tag, observed)


# ----------------------------------------------------------------------------- planted effects


def signature_response(probe: Probe, signature: dict) -> np.ndarray:
    """Per-segment activity in a signature's bins, widened by the nuisance shift: N x 8."""
    shift = int(np.ceil(max(abs(b) for b in probe.planted["nuisance"]["freq_shift_bins"])))
    bins = sorted({int(round(b)) + d for b in signature["bins"] for d in range(-shift, shift + 1)})
    activity = probe.spectra - np.median(probe.spectra, axis=1, keepdims=True)
    return activity[:, :, bins].mean(axis=2)


def lagged(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """mean_s x[s] * y[s + k] for k = 1..7: how often y follows x k segments later."""
    return np.stack([(x[:, :-k] * y[:, k:]).mean(axis=1) for k in range(1, SEGMENTS)], axis=1)


def test_long_range_tags_are_carried_by_order_alone(probe: Probe) -> None:
    signatures = probe.planted["signatures"]["long_range"]
    motifs = {
        tag: (signature_response(probe, s["first"]), signature_response(probe, s["second"]))
        for tag, s in signatures.items()
    }
    ordered, orderless, ordered_carriers, orderless_carriers = [], [], [], []
    for tag, (first, second) in motifs.items():
        # Order-sensitive: first-then-second differs from second-then-first.
        with_order = np.concatenate([lagged(first, second), lagged(second, first)], axis=1)
        # Order-blind, yet strong: presence, peaks, distances, and which motifs of other
        # long-range tags share a segment with this tag's motifs.
        co_occurrence = [
            (mine * theirs).mean(axis=1)
            for other, pair in motifs.items()
            if other != tag
            for mine in (first, second)
            for theirs in pair
        ]
        without_order = np.column_stack(
            [
                first.mean(axis=1),
                second.mean(axis=1),
                first.max(axis=1),
                second.max(axis=1),
                lagged(first, second) + lagged(second, first),
                lagged(first, first),
                lagged(second, second),
                *co_occurrence,
            ]
        )
        y, carriers = probe.y(tag), probe.carriers(tag)
        ordered.append(cv_auc(with_order, y))
        orderless.append(cv_auc(without_order, y))
        ordered_carriers.append(cv_auc(with_order[carriers], y[carriers]))
        orderless_carriers.append(cv_auc(without_order[carriers], y[carriers]))
    summary = {
        "ordered": np.mean(ordered),
        "orderless": np.mean(orderless),
        "ordered, positives vs decoys": np.mean(ordered_carriers),
        "orderless, positives vs decoys": np.mean(orderless_carriers),
    }
    assert summary["ordered"] > 0.8, summary
    assert min(ordered) > 0.65, ordered
    assert summary["ordered, positives vs decoys"] > 0.85, summary
    # The orderless bound is 1 - decoy_share / 2 (presence); between positives and decoys, chance.
    assert summary["orderless"] < probe.planted["orderless_roc_auc_bound"], summary
    assert abs(summary["orderless, positives vs decoys"] - 0.5) < 0.08, summary


def test_segment_averaged_band_energies_see_local_tags_not_long_range_ones(probe: Probe) -> None:
    # Label-blind features: 24 bands of 4 mel bins, averaged over the 8 segments.
    bands = probe.spectra.reshape(len(probe.spectra), SEGMENTS, 24, 4).mean(axis=(1, 3))
    auc = {
        role: np.mean([cv_auc(bands, probe.y(t)) for t in probe.planted[role][:8]])
        for role in ("local", "long_range", "unplanted")
    }
    assert auc["local"] > 0.8, auc
    assert auc["long_range"] < 0.65, auc
    assert auc["local"] > auc["unplanted"] + 0.2, auc


# ----------------------------------------------------------------------------- CLI and cache


def test_cli_errors_are_one_line_and_name_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases = {
        ("--to", str(tmp_path / "full")): "not an empty folder",
        ("--to", str(tmp_path / "a"), "--tracks", "100"): "--tracks 100 is too small",
        ("--to", str(tmp_path / "b"), "--scale", "0"): "--scale 0.0",
        ("--to", str(tmp_path / "c"), "--tracks", "99999"): "only 17982 real tracks",
    }
    for argv, message in cases.items():
        assert synth.cli(list(argv)) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_a_design_that_lets_one_segment_see_the_order_is_refused(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="order_gap=40"):
        synth.generate(tmp_path / "out", design=synth.Design(order_gap=40))
    assert not (tmp_path / "out").exists()


def test_an_unknown_signature_layout_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(synth.SynthError, match="signature_layout='grid'.*'compact' or 'spread'"):
        synth.generate(tmp_path / "out", design=synth.Design(signature_layout="grid"))
    assert not (tmp_path / "out").exists()


def test_cache_key_changes_with_every_parameter() -> None:
    base = dict(tracks=1200, scale=0.06, seed=0, split=0)
    keys = {synth._cache_key(**base)}
    for name, value in (("tracks", 1000), ("scale", 0.05), ("seed", 1), ("split", 2)):
        keys.add(synth._cache_key(**{**base, name: value}))
    assert len(keys) == 5


def test_racing_processes_generate_the_cache_once(tmp_path: Path) -> None:
    code = (
        "import sys; from moodtheme.data.synth import cached_dataset; "
        "print(cached_dataset(tracks=400, scale=0.01, seed=1, cache_dir=sys.argv[1]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), results
    roots = {out.strip() for out, _ in results}
    assert len(roots) == 1
    assert sum("generating the synthetic dataset" in err for _, err in results) == 1
    root = Path(roots.pop())
    assert root.parent == tmp_path and root.name.startswith("synth-")
    assert (root / "planted.json").is_file()
    assert root.stat().st_mode & 0o755 == 0o755  # readable by every trial, whatever its user
    assert len(list(root.rglob("*.npy"))) == 400
    assert not list(tmp_path.glob(".synth-*"))  # no temporary folder left behind
    assert synth.cached_dataset(tracks=400, scale=0.01, seed=1, cache_dir=tmp_path) == root


@pytest.mark.slow
def test_default_dataset_is_small_enough_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODTHEME_CACHE", str(tmp_path))
    root = synth.default_dataset()
    assert root.parent == tmp_path
    planted = json.loads((root / "planted.json").read_text())
    assert sum(planted["tracks"].values()) == synth.DEFAULT_TRACKS
    assert 256 < planted["frames"]["median"] < 320
    size = sum(p.stat().st_size for p in root.rglob("*.npy"))
    assert size < 400e6
    assert synth.default_dataset() == root
