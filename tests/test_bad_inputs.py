"""Every bad input is refused up front, in one line that names the file and says what to do:
a bad --sample, a bad file read by a DataLoader worker, a bad file the preflight sample would
miss, a damaged run folder on --resume or predict, and a disk that fills while checkpointing."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from moodtheme import rundir, train
from moodtheme.config import build_config
from moodtheme.data.jamendo import read_split
from moodtheme.data.melspec import MelspecDataset, MelspecError, make_loader
from moodtheme.errors import TrainingError
from tune.preflight import PreflightError, check_data

REPO = Path(__file__).resolve().parents[1]
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, cwd=REPO
    )


def assert_one_line_error(stderr: str, *names: str) -> str:
    """stderr is exactly one ``error: ...`` line naming each of ``names``, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def tiny_dataset(root: Path, tracks: int = 40, frames: int = 64) -> Path:
    """ROOT/NN/ID.npy for ``tracks`` good tracks, all in the train TSV of split 0 (validation
    and test hold the first two again)."""
    split = root / "splits" / "split-0"
    split.mkdir(parents=True)
    rows = []
    for i in range(tracks):
        folder = root / f"{i % 100:02d}"
        folder.mkdir(exist_ok=True)
        mel = np.random.default_rng(i).normal(size=(96, frames)).astype(np.float32)
        np.save(folder / f"{i}.npy", mel)
        rows.append(
            f"track_{i}\tartist_{i}\talbum_{i}\t{i % 100:02d}/{i}.mp3\t30\tmood/theme---happy\n"
        )
    for subset, chosen in (("train", rows), ("validation", rows[:2]), ("test", rows[:2])):
        (split / f"autotagging_moodtheme-{subset}.tsv").write_text(HEADER + "".join(chosen))
    return root


def crop16(mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mel[:, :16]


# ----------------------------------------------------------------------------- check --sample


@pytest.mark.parametrize("sample", ["-1", "0"])
def test_check_refuses_a_sample_below_one(tmp_path, sample):
    root = tiny_dataset(tmp_path / "data", tracks=3)
    done = run_cli("moodtheme.data", "check", "--data", str(root), "--sample", sample)
    assert done.returncode == 2
    assert "all OK" not in done.stdout
    assert_one_line_error(done.stderr, f"--sample {sample}", "'all'")


def test_check_sample_all_checks_every_file(tmp_path):
    from moodtheme.data.check import cli

    root = tiny_dataset(tmp_path / "data", tracks=3)
    assert cli(["--data", str(root), "--sample", "all", "--quiet"]) == 0
    with pytest.raises(ValueError, match="sample=0"):
        from moodtheme.data.check import check_dataset

        check_dataset(root, 0, sample=0)


# ----------------------------------------------------------------------------- worker errors


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_file_read_by_a_worker_reports_as_without_workers(tmp_path, workers):
    root = tiny_dataset(tmp_path / "data", tracks=6)
    (root / "03" / "3.npy").write_text("hello")
    table = read_split(root / "splits" / "split-0" / "autotagging_moodtheme-train.tsv")
    messages = []
    for n in (0, workers):
        loader = make_loader(MelspecDataset(root, table, crop16), 2, False, n, seed=0)
        with pytest.raises(MelspecError) as caught:
            list(loader)
        messages.append(str(caught.value))
    plain, from_worker = messages
    assert "\n" not in from_worker and "Traceback" not in from_worker
    assert from_worker == plain
    assert plain.startswith(f"unreadable melspec {root / '03' / '3.npy'}: ")


@pytest.mark.slow
def test_train_cli_reports_a_worker_read_bad_file_in_one_line(tmp_path):
    root = tiny_dataset(tmp_path / "data", tracks=8, frames=700)
    np.save(root / "05" / "5.npy", np.zeros((40, 700), np.float32))
    done = run_cli(
        "moodtheme.train",
        "--data",
        str(root),
        "--out",
        str(tmp_path / "run"),
        "optim.epochs=1",
        "optim.switch_epoch=null",
        "optim.batch_size=4",
        "data.num_workers=1",
        "run.progress=false",
    )
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done.stderr, "wrong-shape melspec", str(root / "05" / "5.npy"))


# ----------------------------------------------------------------------------- preflight


def test_preflight_finds_a_bad_file_its_content_sample_misses(tmp_path):
    root = tiny_dataset(tmp_path / "data", tracks=40)
    bad = root / "17" / "17.npy"
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated: the header promises more
    config = build_config("quick", {"data.root": str(root)})
    with pytest.raises(PreflightError) as caught:
        check_data(config, sample=2)
    message = str(caught.value)
    assert "\n" not in message
    assert "1 files are bad" in message and str(bad) in message and "truncated" in message
    assert f"python -m moodtheme.data check --data {root}" in message


def test_preflight_passes_a_sound_dataset(tmp_path):
    root = tiny_dataset(tmp_path / "data", tracks=5)
    assert check_data(build_config("quick", {"data.root": str(root)}), sample=2) == root


# ----------------------------------------------------------------------------- run folders


@pytest.fixture
def run_folder(small_synth, tmp_path):
    """A run folder as a first epoch leaves it, for the quick preset on the small synthetic
    set: config.json, checkpoint.pt (weights of a stand-in model) and best.pt."""
    config = build_config("quick", {"data.root": str(small_synth), "data.limit_tracks": 8})
    run = rundir.RunDir(tmp_path / "run")
    run.write_config(config)
    parts = {"optimizer": {}, "trainer": {"history": [{}]}, "best": {}}
    rundir.save_checkpoint(run.checkpoint, config=config, model=torch.nn.Linear(2, 2), **parts)
    rundir.save_weights(torch.nn.Linear(2, 2), run.best)
    return run


def resume(run: rundir.RunDir, capsys) -> str:
    assert train.main(["--out", str(run.path), "--resume"]) == 2
    return assert_one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(("text", "said"), [("{", "not valid JSON"), ("[]", "holds a JSON list")])
def test_resume_refuses_a_damaged_config(run_folder, capsys, text, said):
    run_folder.config.write_text(text)
    line = resume(run_folder, capsys)
    assert str(run_folder.config) in line and said in line and "--out" in line


def test_resume_cli_refuses_a_damaged_config_without_a_traceback(run_folder):
    run_folder.config.write_text('{"data": {"root": ')
    done = run_cli("moodtheme.train", "--out", str(run_folder.path), "--resume")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, str(run_folder.config), "not valid JSON")


@pytest.mark.parametrize("part", ["trainer", "rng", "model"])
def test_resume_refuses_a_checkpoint_missing_a_part(run_folder, capsys, part):
    saved = torch.load(run_folder.checkpoint, weights_only=True)
    del saved[part]
    torch.save(saved, run_folder.checkpoint)
    line = resume(run_folder, capsys)
    assert f"{run_folder.checkpoint} has no '{part}" in line and "without --resume" in line


def test_resume_refuses_weights_of_another_model(run_folder, capsys):
    line = resume(run_folder, capsys)  # the fixture's weights are a stand-in Linear(2, 2)
    assert "checkpoint.pt: the saved weights do not fit the model" in line
    assert "missing" in line and "unexpected (e.g. weight)" in line


def test_predict_refuses_a_run_without_kept_weights(run_folder):
    run_folder.best.unlink()
    done = run_cli("moodtheme.predict", str(run_folder.path))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, str(run_folder.path), "checkpoint/best.pt", "--resume")


# ----------------------------------------------------------------------------- disk full


def fill_disk_midway(monkeypatch):
    """torch.save writes part of the file, then the disk is full."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save)
    return real_save


def point_temp_file_at_dev_full(monkeypatch, path: Path) -> None:
    """The kernel's own ENOSPC: the temporary file is a link to /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    path.with_suffix(path.suffix + ".tmp").symlink_to("/dev/full")


@pytest.mark.parametrize("fill", [fill_disk_midway, point_temp_file_at_dev_full])
def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, fill):
    config = build_config("quick")
    model = torch.nn.Linear(3, 2)
    path = tmp_path / rundir.CHECKPOINT_FILE
    rundir.save_checkpoint(path, config=config, model=model, trainer={"history": [1]})
    before = path.read_bytes()

    with torch.no_grad():
        model.weight.add_(1.0)
    if fill is fill_disk_midway:
        fill(monkeypatch)
    else:
        fill(monkeypatch, path)
    with pytest.raises(TrainingError) as caught:
        rundir.save_checkpoint(path, config=config, model=model, trainer={"history": [1, 2]})
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "No space left on device" in message
    assert "--resume" in message
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert rundir.load_checkpoint(path)["trainer"] == {"history": [1]}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_saving_still_replaces_the_checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    rundir.save_weights(torch.nn.Linear(3, 2), path)
    model = torch.nn.Linear(3, 2)
    rundir.save_weights(model, path)
    assert torch.equal(torch.load(path, weights_only=True)["weight"], model.weight)
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == '["w.pt"]'
