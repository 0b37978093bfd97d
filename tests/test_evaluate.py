import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from moodtheme.evaluate import (
    METRIC_NAMES,
    EvaluationError,
    apply_thresholds,
    auc_metrics,
    compute_metrics,
    main,
    optimal_thresholds,
    per_tag_auc,
    per_tag_table,
    write_results_tsv,
)

REPO = Path(__file__).resolve().parents[1]
MEDIAEVAL = REPO.parent / "shared" / "data" / "mediaeval2019"
SUBMISSIONS = MEDIAEVAL / "submissions"
needs_shared = pytest.mark.skipif(
    not (MEDIAEVAL / "groundtruth.npy").exists(),
    reason=f"official MediaEval 2019 data not found at {MEDIAEVAL}",
)

# (official scores table, row name, predictions, decisions)
RUNS = {
    "AMLAG-1": ("AMLAG.tsv", "submission1", "AMLAG/submission1/predictions.npy",
                "AMLAG/submission1/decisions.npy"),
    "AMLAG-2": ("AMLAG.tsv", "submission2", "AMLAG/submission2/predictions.npy",
                "AMLAG/submission2/decisions.npy"),
    "vggish": ("baseline.tsv", "vggish", "baseline/vggish_predictions.npy",
               "baseline/vggish_decisions.npy"),
    "popular": ("baseline.tsv", "popular", "baseline/popular_predictions.npy",
                "baseline/popular_decisions.npy"),
}  # fmt: skip


def official_scores(table: str, row: str) -> dict[str, float]:
    with open(SUBMISSIONS / table, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = rows[0][1:]
    values = next(r[1:] for r in rows[1:] if r[0] == row)
    return {name: float(v) for name, v in zip(header, values, strict=True)}


def random_case(rng, n=300, tags=6, ties=False):
    y = rng.random((n, tags)) < 0.3
    y[0], y[1] = True, False  # every tag has both classes
    scores = rng.integers(0, 6, (n, tags)) / 5 if ties else rng.random((n, tags))
    return y, scores.astype(np.float32)


# ----------------------------------------------------------------------------- official scores


@needs_shared
@pytest.mark.parametrize("run", RUNS)
def test_reproduces_official_scores(run):
    table, row, predictions, decisions = RUNS[run]
    expected = official_scores(table, row)
    got = compute_metrics(
        np.load(MEDIAEVAL / "groundtruth.npy"),
        np.load(SUBMISSIONS / predictions),
        np.load(SUBMISSIONS / decisions),
    )
    assert list(got) == list(METRIC_NAMES)
    for name, value in expected.items():
        assert abs(got[name] - value) <= 1e-6 + 1e-12, (name, got[name], value)


@needs_shared
def test_cli_writes_the_official_results_file(tmp_path, capsys):
    out = tmp_path / "results.tsv"
    rc = main([
        str(MEDIAEVAL / "groundtruth.npy"),
        str(SUBMISSIONS / "baseline/vggish_predictions.npy"),
        "--decisions", str(SUBMISSIONS / "baseline/vggish_decisions.npy"),
        "--output", str(out),
    ])  # fmt: skip
    assert rc == 0
    official = (SUBMISSIONS / "baseline/vggish_results.tsv").read_text()
    assert out.read_text() == official
    assert capsys.readouterr().out == official


@needs_shared
def test_cli_module_entry_point_popular_baseline_auc_only():
    proc = subprocess.run(
        [sys.executable, "-m", "moodtheme.evaluate", str(MEDIAEVAL / "groundtruth.npy"),
         str(SUBMISSIONS / "baseline/popular_predictions.npy")],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [name for name, _ in lines] == [
        "ROC-AUC-macro", "PR-AUC-macro", "ROC-AUC-micro", "PR-AUC-micro"
    ]  # fmt: skip
    expected = official_scores("baseline.tsv", "popular")
    for name, value in lines:
        assert len(value.split(".")[1]) == 6
        assert abs(float(value) - expected[name]) <= 1e-6


@needs_shared
def test_apply_thresholds_reproduces_vggish_decisions():
    predictions = np.load(SUBMISSIONS / "baseline/vggish_predictions.npy")
    lines = (SUBMISSIONS / "baseline/vggish_thresholds.txt").read_text().splitlines()
    thresholds = np.array([float(line.split("\t")[1]) for line in lines])
    decisions = apply_thresholds(predictions, thresholds)
    assert decisions.dtype == bool
    np.testing.assert_array_equal(decisions, np.load(SUBMISSIONS / "baseline/vggish_decisions.npy"))


@needs_shared
def test_fast_auc_matches_sklearn_on_a_real_submission():
    y = np.load(MEDIAEVAL / "groundtruth.npy")
    p = np.load(SUBMISSIONS / "AMLAG/submission2/predictions.npy")
    fast = auc_metrics(y, p)
    official = compute_metrics(y, p)
    for name in fast:
        assert fast[name] == pytest.approx(official[name], abs=1e-12)


# ----------------------------------------------------------------------------- AUC details


@pytest.mark.parametrize("ties", [False, True])
def test_per_tag_auc_matches_sklearn_including_ties(ties):
    y, p = random_case(np.random.default_rng(1), ties=ties)
    roc, pr = per_tag_auc(y, p)
    np.testing.assert_allclose(roc, roc_auc_score(y, p, average=None), atol=1e-12)
    np.testing.assert_allclose(pr, average_precision_score(y, p, average=None), atol=1e-12)
    micro = auc_metrics(y, p)
    assert micro["ROC-AUC-micro"] == pytest.approx(roc_auc_score(y, p, average="micro"), abs=1e-12)
    assert micro["PR-AUC-micro"] == pytest.approx(
        average_precision_score(y, p, average="micro"), abs=1e-12
    )


def test_auc_metrics_skips_tags_without_both_classes():
    y, p = random_case(np.random.default_rng(2))
    y[:, 2] = False  # no positives
    y[:, 4] = True  # no negatives
    roc, pr = per_tag_auc(y, p)
    assert np.isnan(roc[[2, 4]]).all() and np.isnan(pr[[2, 4]]).all()
    assert np.isfinite(roc[[0, 1, 3, 5]]).all()
    kept = [0, 1, 3, 5]
    got = auc_metrics(y, p)
    expected = compute_metrics(y[:, kept], p[:, kept])
    for name in got:
        assert got[name] == pytest.approx(expected[name], abs=1e-12)
    with pytest.raises(EvaluationError, match=r"tag 2 \(calm\) has no positive"):
        auc_metrics(y, p, skip_empty=False, tags=["a", "b", "calm", "d", "e", "f"])


def test_auc_metrics_with_no_usable_tag_is_nan():
    y = np.zeros((5, 3), bool)
    got = auc_metrics(y, np.random.default_rng(0).random((5, 3)))
    assert set(got) == {"ROC-AUC-macro", "PR-AUC-macro", "ROC-AUC-micro", "PR-AUC-micro"}
    assert all(np.isnan(v) for v in got.values())


def test_auc_metrics_is_fast_on_a_validation_sized_split():
    rng = np.random.default_rng(3)
    y = rng.random((4000, 56)) < 0.05
    p = rng.random((4000, 56)).astype(np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        auc_metrics(y, p)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"auc_metrics took {best:.3f} s on 4000 x 56"


# ----------------------------------------------------------------------------- thresholds, table


def test_optimal_thresholds_maximise_f_score_per_tag():
    y, p = random_case(np.random.default_rng(4), n=200, tags=4)
    thresholds = optimal_thresholds(y, p)
    for i, t in enumerate(thresholds):
        assert t in p[:, i]  # a score of the curve, not an interpolated value
        candidates = np.unique(p[:, i])
        fired = p[:, i][:, None] >= candidates  # tracks x candidate thresholds
        hits = (fired & y[:, i][:, None]).sum(axis=0)
        f_scores = 2 * hits / (fired.sum(axis=0) + y[:, i].sum())
        assert f1_score(y[:, i], p[:, i] >= t) == pytest.approx(f_scores.max())


def test_optimal_threshold_of_a_tag_without_positives_never_fires():
    y, p = random_case(np.random.default_rng(5), tags=3)
    y[:, 1] = False
    thresholds = optimal_thresholds(y, p)
    assert thresholds[1] == np.inf
    assert not apply_thresholds(p, thresholds)[:, 1].any()
    assert np.isfinite(thresholds[[0, 2]]).all()


def test_apply_thresholds_is_strict_and_checks_shape():
    p = np.array([[0.2, 0.5], [0.7, 0.5]])
    np.testing.assert_array_equal(apply_thresholds(p, np.array([0.2, 0.4])), [[0, 1], [1, 1]])
    with pytest.raises(EvaluationError, match="one threshold per tag"):
        apply_thresholds(p, np.array([0.5, 0.5, 0.5]))


def test_per_tag_table():
    y, p = random_case(np.random.default_rng(6), tags=3)
    y[:, 2] = False
    d = p > 0.6
    table = per_tag_table(y, p, d, ["x", "y", "z"])
    assert list(table.columns) == ["tag", "ROC-AUC", "PR-AUC", "F-score", "precision", "recall",
                                   "positives"]  # fmt: skip
    assert table["tag"].tolist() == ["x", "y", "z"]
    assert table["positives"].tolist() == y.sum(axis=0).tolist()
    assert table.loc[0, "ROC-AUC"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert np.isnan(table.loc[2, "ROC-AUC"])
    prec, rec, f, _ = precision_recall_fscore_support(y, d, average=None, zero_division=0)
    np.testing.assert_allclose(table["F-score"], f)
    np.testing.assert_allclose(table["precision"], prec)
    np.testing.assert_allclose(table["recall"], rec)
    with pytest.raises(EvaluationError, match="2 tag names for 3"):
        per_tag_table(y, p, d, ["x", "y"])


def test_write_results_tsv_format(tmp_path):
    metrics = {"PR-AUC-micro": 0.5, "ROC-AUC-macro": 1 / 3}
    path = write_results_tsv(metrics, tmp_path / "r.tsv")
    assert path.read_text() == "ROC-AUC-macro\t0.333333\nPR-AUC-micro\t0.500000\n"


# ----------------------------------------------------------------------------- bad input


def test_zero_one_integer_ground_truth_is_accepted_as_bool():
    y, p = random_case(np.random.default_rng(7))
    d = p > 0.5
    assert compute_metrics(y.astype(np.int64), p, d.astype(np.uint8)) == compute_metrics(y, p, d)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda y, p, d: (y, p[:, :-1], d), r"predictions have shape \(300, 5\) but groundtruth"),
        (lambda y, p, d: (y, p, d[:-1]), r"decisions have shape \(299, 6\)"),
        (lambda y, p, d: (y, np.where(np.arange(6) == 3, np.nan, p), d), "NaN/inf.*tag 3"),
        (lambda y, p, d: (y, np.where(np.arange(6) == 1, np.inf, p), d), "NaN/inf.*tag 1"),
        (lambda y, p, d: (y * 0.5, p, d), r"groundtruth must be boolean \(or 0/1\), found 0.5"),
        (lambda y, p, d: (y, p, d.astype(float) * 2), "decisions must be boolean"),
        (lambda y, p, d: (y[:, 0], p[:, 0], None), "groundtruth must be 2-D"),
    ],
)
def test_bad_input_raises(mutate, message):
    y, p = random_case(np.random.default_rng(8))
    with pytest.raises(EvaluationError, match=message):
        compute_metrics(*mutate(y, p, p > 0.5))


def test_tag_without_positives_is_named():
    y, p = random_case(np.random.default_rng(9))
    y[:, 3] = False
    with pytest.raises(EvaluationError, match=r"tag 3 has no positive examples"):
        compute_metrics(y, p)
    tags = [f"mood/theme---t{i}" for i in range(6)]
    with pytest.raises(EvaluationError, match=r"tag 3 \(mood/theme---t3\) has no positive"):
        compute_metrics(y, p, tags=tags)


def _run_cli(capsys, *args):
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_reports_a_missing_file(tmp_path, capsys):
    y, p = random_case(np.random.default_rng(10))
    np.save(tmp_path / "gt.npy", y)
    rc, out, err = _run_cli(capsys, tmp_path / "gt.npy", tmp_path / "missing.npy")
    assert rc != 0 and out == ""
    assert err == f"error: predictions file not found: {tmp_path / 'missing.npy'}\n"


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    y, p = random_case(np.random.default_rng(11), tags=56)
    y[:, 5] = False
    p[0, 0] = np.nan
    np.save(tmp_path / "gt.npy", y)
    np.save(tmp_path / "nan.npy", p)
    rc, out, err = _run_cli(capsys, tmp_path / "gt.npy", tmp_path / "nan.npy")
    assert rc != 0 and out == "" and err.count("\n") == 1 and "NaN/inf" in err
    p[0, 0] = 0.5
    np.save(tmp_path / "ok.npy", p)
    rc, out, err = _run_cli(capsys, tmp_path / "gt.npy", tmp_path / "ok.npy")
    # 56 columns: the CLI names the tag from the bundled vocabulary.
    assert rc != 0 and "tag 5 (mood/theme---" in err and err.count("\n") == 1
    (tmp_path / "junk.npy").write_text("not numpy")
    rc, out, err = _run_cli(capsys, tmp_path / "gt.npy", tmp_path / "junk.npy")
    assert rc != 0 and f"{tmp_path / 'junk.npy'} is not a readable .npy" in err


def test_group_metrics_average_the_groups_tags_and_give_the_chance_level():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from moodtheme.evaluate import group_metrics

    rng = np.random.default_rng(0)
    truth = rng.random((200, 6)) < 0.2
    truth[:, 5] = False  # no positives: left out of the AUCs
    scores = rng.random((200, 6)) + truth * 0.5
    got = group_metrics(truth, scores, [1, 3, 5])
    assert got["pr_auc_macro"] == pytest.approx(
        np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in (1, 3)])
    )
    assert got["roc_auc_macro"] == pytest.approx(
        np.mean([roc_auc_score(truth[:, c], scores[:, c]) for c in (1, 3)])
    )
    assert got["label_frequency"] == pytest.approx(truth[:, [1, 3, 5]].mean())
