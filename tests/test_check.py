import subprocess
import sys
from pathlib import Path

import numpy as np

from moodtheme.data.check import Problem, check_dataset, cli
from moodtheme.data.jamendo import read_split, split_tsv

REPO = Path(__file__).resolve().parents[1]
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def good(frames: int = 64) -> np.ndarray:
    return np.random.default_rng(frames).normal(size=(96, frames)).astype(np.float32)


def nan_late(path: Path) -> None:
    mel = good(20000)  # NaN past the first scan block
    mel[5, 19000] = np.nan
    np.save(path, mel)


def truncated(path: Path) -> None:
    np.save(path, good())
    path.write_bytes(path.read_bytes()[:500])


# track -> (writer, expected problem or None)
TRACKS = {
    "1": (lambda p: np.save(p, good()), None),
    "2": (lambda p: np.save(p, good(30)), "too-short"),
    "3": (lambda p: None, "missing"),
    "4": (lambda p: p.write_text("hello"), "unreadable"),
    "5": (truncated, "unreadable"),
    "6": (lambda p: np.save(p, good().T), "wrong-shape"),
    "7": (nan_late, "non-finite"),
    "8": (lambda p: np.save(p, np.full((96, 64), np.inf, np.float32)), "non-finite"),
    "9": (lambda p: np.save(p, good(100)), None),
}


def make_dataset(root: Path) -> Path:
    """ROOT/NN/ID.npy plus ROOT/splits/split-0 TSVs, one bad file of each kind."""
    subsets = {"train": ["1", "2", "3", "4", "5"], "validation": ["6", "7"], "test": ["8", "9"]}
    split = root / "splits" / "split-0"
    split.mkdir(parents=True)
    for subset, ids in subsets.items():
        rows = "".join(
            f"track_{i}\tartist\talbum\t0{i}/{i}.mp3\t30\tmood/theme---happy\n" for i in ids
        )
        (split / f"autotagging_moodtheme-{subset}.tsv").write_text(HEADER + rows)
    for track, (writer, _) in TRACKS.items():
        (root / f"0{track}").mkdir()
        writer(root / f"0{track}" / f"{track}.npy")
    return root


def expected_problems(root: Path) -> dict[Path, str]:
    return {root / f"0{t}/{t}.npy": kind for t, (_, kind) in TRACKS.items() if kind}


def test_check_dataset_finds_every_problem(tmp_path):
    root = make_dataset(tmp_path)
    problems = check_dataset(root, 0, min_frames=50)
    assert all(isinstance(p, Problem) for p in problems)
    assert {p.path: p.problem for p in problems} == expected_problems(root)
    assert len(problems) == 7
    late = next(p for p in problems if p.path.name == "7.npy")
    assert "frame 19000" in late.detail
    # Without a frame minimum the short track is fine.
    assert {p.path.name for p in check_dataset(root, 0)} == {f"{t}.npy" for t in "345678"}


def test_check_dataset_accepts_tables_and_samples(tmp_path):
    root = make_dataset(tmp_path)
    test = read_split(split_tsv(0, "test", root / "splits"))
    assert [p.path.name for p in check_dataset(root, test)] == ["8.npy"]
    assert [p.path.name for p in check_dataset(root, [test, test])] == ["8.npy"]
    sample = check_dataset(root, 0, sample=3, seed=1)
    assert sample == check_dataset(root, 0, sample=3, seed=1)
    assert len(sample) <= 3
    assert len({p.path for p in check_dataset(root, 0, sample=100)}) == 6


def test_cli_reports_each_problem_and_a_summary(tmp_path, capsys):
    root = make_dataset(tmp_path)
    assert cli(["--data", str(root), "--min-frames", "50", "--quiet"]) == 1
    out = capsys.readouterr().out.splitlines()
    for path, kind in expected_problems(root).items():
        assert sum(line.startswith(f"{kind}: {path} (") for line in out) == 1, (kind, path)
    assert out[-1] == (
        "9 files checked: 7 problems (1 missing, 2 non-finite, 1 too-short, 2 unreadable, "
        "1 wrong-shape)"
    )
    assert len(out) == 8


def test_cli_exits_zero_on_a_clean_dataset_and_shows_progress(tmp_path):
    root = make_dataset(tmp_path)
    for track, (_, kind) in TRACKS.items():
        if kind:
            np.save(root / f"0{track}/{track}.npy", good(80))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "moodtheme.data",
            "check",
            "--data",
            str(root),
            "--min-frames",
            "50",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "9 files checked: all OK"
    assert "checked 9/9 files" in result.stderr


def test_cli_usage_errors_are_one_line(tmp_path, capsys):
    assert cli(["--data", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli(["--data", str(tmp_path), "--splits-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none" in err and "Traceback" not in err
