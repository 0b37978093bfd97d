import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moodtheme.data.jamendo import (
    BUNDLED_SPLITS,
    SplitError,
    labels_cli,
    load_tags,
    read_split,
    resolve_splits_dir,
    split_tsv,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def write_tsv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def test_bundled_tags_are_56_unique_moodtheme_tags_in_file_order():
    tags = load_tags()
    assert len(tags) == 56 == len(set(tags))
    assert tags[0] == "mood/theme---action" and tags[-1] == "mood/theme---uplifting"
    assert all(t.startswith("mood/theme---") for t in tags)
    shared_tags = SHARED / "data/mtg-jamendo/tags/moodtheme_split.txt"
    if shared_tags.is_file():
        assert tags == load_tags(shared_tags)


def test_read_split_test_table():
    table = read_split(split_tsv(0, "test"))
    assert len(table) == 4231
    assert table.track_ids[0] == "track_0003524" and table.paths[0] == "24/3524.npy"
    assert table.artist_ids[0] == "artist_000530" and table.album_ids[0] == "album_000552"
    assert table.durations[0] == pytest.approx(266.1)
    assert table.labels.dtype == bool and table.labels.shape == (4231, 56)
    assert table.labels.sum(axis=1).min() >= 1
    assert table.labels[0, table.tags.index("mood/theme---melodic")]
    assert table.labels[0].sum() == 1
    assert table.source == split_tsv(0, "test")


@pytest.mark.skipif(
    not (SHARED / "data/mediaeval2019/groundtruth.npy").is_file(),
    reason="../shared/data/mediaeval2019 is absent",
)
def test_labels_cli_reproduces_official_groundtruth(tmp_path):
    out = tmp_path / "labels.npy"
    tsv = split_tsv(0, "test")
    result = subprocess.run(
        [sys.executable, "-m", "moodtheme.data", "labels", str(tsv), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    got = np.load(out)
    expected = np.load(SHARED / "data/mediaeval2019/groundtruth.npy")
    assert got.dtype == expected.dtype == bool
    assert got.shape == expected.shape == (4231, 56)
    assert np.array_equal(got, expected)


def test_read_split_handles_crlf_and_variable_tag_count(tmp_path):
    tsv = tmp_path / "s.tsv"
    tsv.write_bytes(
        HEADER.replace("\n", "\r\n").encode()
        + b"track_1\ta\tb\t01/1.mp3\t30.5\tmood/theme---happy\tmood/theme---sad\r\n"
        + b"track_2\ta\tb\t02/2.mp3\t40\tmood/theme---action\r\n"
    )
    table = read_split(tsv)
    tags = table.tags
    assert table.paths == ["01/1.npy", "02/2.npy"]
    assert table.labels[0].nonzero()[0].tolist() == sorted(
        [tags.index("mood/theme---happy"), tags.index("mood/theme---sad")]
    )
    assert table.labels[1].nonzero()[0].tolist() == [tags.index("mood/theme---action")]


@pytest.mark.parametrize(
    "row, message",
    [
        ("track_1\ta\tb\t01/1.mp3\t30\tmood/theme---nope", "unknown tag 'mood/theme---nope'"),
        ("track_1\ta\tb\t01/1.mp3\t30\t", "unknown tag ''"),
        ("track_1\ta\tb\t01/1.mp3", "expected at least 5"),
        ("track_1\ta\tb\t01/1.mp3\tlong\tmood/theme---happy", "DURATION 'long'"),
        ("track_1\ta\tb\t../../etc/passwd\t30\tmood/theme---happy", "must be relative"),
        ("track_1\ta\tb\t/abs/1.mp3\t30\tmood/theme---happy", "must be relative"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, message):
    good = "track_0\ta\tb\t00/0.mp3\t30\tmood/theme---happy"
    tsv = write_tsv(tmp_path / "bad.tsv", [good, row])
    with pytest.raises(SplitError) as err:
        read_split(tsv)
    assert f"{tsv}:3:" in str(err.value)
    assert message in str(err.value)


def test_duplicate_track_and_bad_header_are_refused(tmp_path):
    row = "track_0\ta\tb\t00/0.mp3\t30\tmood/theme---happy"
    with pytest.raises(SplitError, match=r"dup.tsv:3: track track_0 already listed on line 2"):
        read_split(write_tsv(tmp_path / "dup.tsv", [row, row]))
    with pytest.raises(SplitError, match=r"head.tsv:1: header must start with TRACK_ID"):
        read_split(write_tsv(tmp_path / "head.tsv", [row], header="ID\tPATH\n"))
    with pytest.raises(SplitError, match=r"empty.tsv:1: header"):
        read_split(write_tsv(tmp_path / "empty.tsv", [], header=""))


def test_tag_list_errors_name_the_file(tmp_path):
    dup = tmp_path / "tags.txt"
    dup.write_text("mood/theme---a\nmood/theme---b\nmood/theme---a\n")
    with pytest.raises(
        SplitError, match=r"tags.txt:3: tag 'mood/theme---a' already listed on line 1"
    ):
        load_tags(dup)
    with pytest.raises(SplitError, match="cannot read"):
        load_tags(tmp_path / "missing.txt")


def test_custom_vocabulary_sets_the_columns(tmp_path):
    vocab = tmp_path / "tags.txt"
    vocab.write_text("mood/theme---sad\nmood/theme---happy\n")
    tsv = write_tsv(tmp_path / "s.tsv", ["t1\ta\tb\t00/1.mp3\t3\tmood/theme---happy"])
    table = read_split(tsv, load_tags(vocab))
    assert table.labels.tolist() == [[False, True]]


def test_subset_keeps_rows_in_the_order_given():
    table = read_split(split_tsv(0, "validation"))
    part = table.subset([5, 0, 2])
    assert len(part) == 3
    assert part.track_ids == [table.track_ids[i] for i in (5, 0, 2)]
    assert part.paths == [table.paths[i] for i in (5, 0, 2)]
    assert np.array_equal(part.labels, table.labels[[5, 0, 2]])
    assert np.array_equal(part.durations, table.durations[[5, 0, 2]])
    assert part.tags == table.tags and part.source == table.source
    part.labels[:] = False  # a copy: the parent table is untouched
    assert table.labels[5].any()
    with pytest.raises(IndexError):
        table.subset([len(table)])


def test_split_tsv_and_resolve_splits_dir(tmp_path):
    assert split_tsv(3, "train") == BUNDLED_SPLITS / "split-3/autotagging_moodtheme-train.tsv"
    with pytest.raises(ValueError, match="subset must be one of"):
        split_tsv(0, "valid")
    with pytest.raises(SplitError, match="split-7"):
        split_tsv(7, "test")
    assert resolve_splits_dir(None, None) == BUNDLED_SPLITS
    assert resolve_splits_dir(tmp_path, None) == BUNDLED_SPLITS
    (tmp_path / "splits").mkdir()
    assert resolve_splits_dir(tmp_path, None) == tmp_path / "splits"
    other = tmp_path / "other"
    other.mkdir()
    assert resolve_splits_dir(tmp_path, other) == other
    with pytest.raises(SplitError, match="not found"):
        resolve_splits_dir(tmp_path, tmp_path / "nope")


def test_labels_cli_reports_errors_in_one_line(tmp_path, capsys):
    tsv = write_tsv(tmp_path / "bad.tsv", ["t1\ta\tb\t00/1.mp3\t3\tmood/theme---zzz"])
    assert labels_cli([str(tsv), str(tmp_path / "out.npy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tsv}:2: unknown tag" in err
    assert "Traceback" not in err and not (tmp_path / "out.npy").exists()

    out = tmp_path / "labels.bin"  # written exactly where asked, no .npy appended
    good = write_tsv(tmp_path / "good.tsv", ["t1\ta\tb\t00/1.mp3\t3\tmood/theme---action"])
    assert labels_cli([str(good), str(out)]) == 0
    assert np.load(out).tolist() == [[True] + [False] * 55]
