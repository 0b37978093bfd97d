"""The end of a search: the trial table (CSV), the top-k, Optuna parameter importances and
a plot of the learning curves beside the importances."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tune.ray_adapter import INFO_FIELDS, TrialRecord
from tune.trial import KEPT_PREFIX

TRIALS_CSV = "trials.csv"
IMPORTANCES_CSV = "importances.csv"
PLOT_PNG = "search.png"
STATE_RANK = {"completed": 0, "stopped_early": 1, "unfinished": 2, "errored": 3}


@dataclass
class Summary:
    table: pd.DataFrame  # one row per trial, best first
    importances: pd.DataFrame  # param, importance (empty when they cannot be computed)
    importance_note: str
    files: list[Path]


def trial_table(records: Sequence[TrialRecord], metric: str, mode: str) -> pd.DataFrame:
    """One row per trial, best first: state, epochs trained, the metric at the last epoch (the
    value ASHA and Optuna saw), its best over epochs, the final scores, the parameters, the
    checkpoint. Completed trials rank above early-stopped ones, then by the metric."""
    rows = []
    for r in records:
        curve = _curve(r, metric)
        row: dict[str, Any] = {
            "trial_id": r.trial_id,
            "name": r.name,
            "state": r.state,
            "epochs": int(r.last.get("epoch", 0) or 0),
            metric: r.last.get(metric, math.nan),
            f"best_{metric}": (max if mode == "max" else min)(curve) if curve else math.nan,
        }
        row.update({k: v for k, v in r.last.items() if k.startswith(KEPT_PREFIX)})
        row.update({f"param.{k}": v for k, v in dict(r.spec.overrides).items()})
        row.update({k: r.last.get(k) for k in INFO_FIELDS if k in r.last})
        row["checkpoint"] = r.checkpoint
        row["error"] = r.error
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Trials trained to the end rank first: ASHA compared the others at a smaller budget.
    table["_rank"] = table["state"].map(STATE_RANK).fillna(len(STATE_RANK))
    ordered = table.sort_values(
        ["_rank", metric], ascending=[True, mode == "min"], na_position="last", kind="stable"
    )
    return ordered.drop(columns="_rank").reset_index(drop=True)


def _curve(record: TrialRecord, metric: str) -> list[float]:
    h = record.history
    if h.empty or metric not in h or "epoch" not in h:
        return []
    per_epoch = h.dropna(subset=[metric]).groupby("epoch")[metric].last()
    return [float(v) for v in per_epoch.values]


def param_importances(study_url: str | None, study_name: str | None) -> tuple[pd.DataFrame, str]:
    """Optuna's importances over the study's completed trials (the ones trained to the end:
    ASHA's pruned trials do not count), or an empty table and why; the note says how many
    trials are behind them."""
    empty = pd.DataFrame(columns=["param", "importance"])
    if not study_url or not study_name:
        return empty, "no Optuna study (fixed list of trials)"
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name, storage=study_url)
        states = [t.state for t in study.trials]
        done = states.count(optuna.trial.TrialState.COMPLETE)
        pruned = states.count(optuna.trial.TrialState.PRUNED)
        if done < 2:
            return empty, (
                f"{done} completed trial(s) ({pruned} pruned); importances need 2 at least"
            )
        values = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        return empty, f"importances unavailable: {err}"
    table = pd.DataFrame({"param": list(values), "importance": list(values.values())})
    return table, f"from {done} completed trials; the {pruned} pruned ones are not used"


def write_summary(
    records: Sequence[TrialRecord],
    metric: str,
    mode: str,
    out_dir: Path,
    study_url: str | None = None,
    study_name: str | None = None,
) -> Summary:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = trial_table(records, metric, mode)
    importances, note = param_importances(study_url, study_name)
    table.to_csv(out_dir / TRIALS_CSV, index=False)
    files = [out_dir / TRIALS_CSV]
    # Fixed trials (run_trials, the ablation suite) have no searcher, so an importances file
    # would only ever be empty; their plot shows the learning curves alone.
    searched = study_url is not None
    if searched:
        importances.to_csv(out_dir / IMPORTANCES_CSV, index=False)
        files.append(out_dir / IMPORTANCES_CSV)
    plot_search(records, metric, importances if searched else None, out_dir / PLOT_PNG)
    files.append(out_dir / PLOT_PNG)
    return Summary(table=table, importances=importances, importance_note=note, files=files)


def plot_search(
    records: Sequence[TrialRecord], metric: str, importances: pd.DataFrame | None, path: Path
) -> None:
    """Learning curves of every trial and, for a search (``importances`` not None), a bar
    chart of Optuna's parameter importances beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if importances is None:
        fig, curves = plt.subplots(figsize=(7, 4))
        bars = None
    else:
        fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=(3, 2))
    styles = {"completed": "-", "stopped_early": "--", "errored": ":", "unfinished": "-."}
    for r in records:
        curve = _curve(r, metric)
        if curve:
            curves.plot(range(1, len(curve) + 1), curve, styles.get(r.state, "-"), marker=".", lw=1)
    curves.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    curves.set_xlabel("epoch")
    curves.set_ylabel(metric)
    curves.set_title("trials" if bars is None else "trials (dashed: stopped early by ASHA)")
    if bars is not None and importances.empty:
        bars.text(0.5, 0.5, "no importances", ha="center", va="center")
        bars.set_axis_off()
    elif bars is not None:
        ordered = importances.sort_values("importance")
        bars.barh(ordered["param"], ordered["importance"])
        bars.set_xlabel("Optuna importance")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Short headers for the terminal table, explained by table_legend().
_KEPT_COLUMNS = {
    f"{KEPT_PREFIX}val_pr_auc_macro": "kept val",
    f"{KEPT_PREFIX}test_pr_auc_macro": "kept test",
    f"{KEPT_PREFIX}test_local_pr_auc_macro": "test local",
    f"{KEPT_PREFIX}test_long_range_pr_auc_macro": "test long-range",
}


def top_k_text(table: pd.DataFrame, metric: str, k: int) -> str:
    """A fixed-width table of the k best trials, for the terminal (see :func:`table_legend`)."""
    if table.empty:
        return "(no trials)"
    kept = [c for c in _KEPT_COLUMNS if c in table]
    params = [c for c in table.columns if c.startswith("param.")]
    shown = table.head(k)[["name", "state", "epochs", metric, *kept, *params]]
    shown = shown.rename(columns={metric: "searched", **_KEPT_COLUMNS})
    shown = shown.rename(columns=lambda c: c.removeprefix("param."))
    shown.index = range(1, len(shown) + 1)
    return shown.to_string(float_format=lambda v: f"{v:.4g}")


def table_legend(table: pd.DataFrame, metric: str) -> list[str]:
    """What each score column of :func:`top_k_text` is, so nobody compares one with another."""
    lines = [
        f"searched: {metric} at the trial's last epoch, what ASHA and TPE compared "
        "(a stopped trial's after fewer epochs)",
    ]
    if f"{KEPT_PREFIX}test_pr_auc_macro" in table:
        lines.append(
            "kept val / kept test: PR-AUC-macro of the kept model (the epoch early stopping "
            "chose), scored once after training; completed trials only"
        )
    chance = [
        f"{label} {table[f'{KEPT_PREFIX}test_{group}_label_frequency'].dropna().iloc[0]:.3f}"
        for group, label in (("local", "local"), ("long_range", "long-range"))
        if f"{KEPT_PREFIX}test_{group}_label_frequency" in table
        and table[f"{KEPT_PREFIX}test_{group}_label_frequency"].notna().any()
    ]
    if chance:
        lines.append(
            "test local / long-range: the kept model's test PR-AUC over the planted tags of the "
            f"synthetic data; chance (their label frequency): {', '.join(chance)}"
        )
    return lines
