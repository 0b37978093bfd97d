"""From finished trials to effects, and from effects to files people can read.

:func:`compute_effects` pairs each ablation's reference and variant trials by seed and runs
the statistics of :mod:`ablations.stats` on them; :func:`write_report` writes

- ``results.csv``: one row per trial (arm, seed, status, error, metrics, run directory);
- ``effects.csv``: one row per ablation and metric, every number of the report;
- ``per_tag.csv``: per-tag PR-AUC difference, ablations x tags;
- ``report.md``: the tables, verdicts and the tags each ablation moves most;
- ``effects.png``: the differences with their confidence intervals;
- ``per_tag_heatmap.png``: ablations x tags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations.stats import (
    HELPS,
    HURTS,
    METRICS,
    NO_EFFECT,
    BootstrapResult,
    Estimate,
    Metric,
    contrast_bootstrap,
    mean_ci,
    paired_bootstrap,
    paired_difference,
    verdict,
)
from ablations.suite import Comparison, Plan, format_overrides
from moodtheme.evaluate import per_tag_auc

OK, FAILED, SKIPPED, UNFINISHED = "ok", "failed", "skipped", "unfinished"
METRIC_LABELS: dict[Metric, str] = {"pr_auc": "PR-AUC-macro", "roc_auc": "ROC-AUC-macro"}
TOP_TAGS = 5


@dataclass
class TrialResult:
    """One (arm, seed) trial as the runner saw it end; ``run_dir`` holds fit's outputs."""

    arm: str
    seed: int
    status: str  # OK, FAILED or UNFINISHED (an interrupted run)
    run_dir: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """(test ground truth, test predictions) written by ``moodtheme.train.fit``."""
        assert self.run_dir is not None
        return (
            np.load(self.run_dir / "test_groundtruth.npy"),
            np.load(self.run_dir / "test_predictions.npy"),
        )


@dataclass
class Effect:
    """What one ablation did, or why there is nothing to say about it."""

    comparison: Comparison
    status: str
    reason: str | None = None
    seeds: list[int] = field(default_factory=list)
    reference: dict[Metric, Estimate] = field(default_factory=dict)
    variant: dict[Metric, Estimate] = field(default_factory=dict)
    difference: dict[Metric, Estimate] = field(default_factory=dict)
    bootstrap: dict[Metric, BootstrapResult] = field(default_factory=dict)
    verdict: dict[Metric, str] = field(default_factory=dict)
    tag_delta: np.ndarray | None = None  # per-tag PR-AUC, variant - reference, mean over seeds
    groups: dict[str, dict[Metric, BootstrapResult]] = field(default_factory=dict)
    contrasts: dict[str, dict[Metric, BootstrapResult]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.comparison.ablation.name


# ----------------------------------------------------------------------------- effects


def _first_error(trials: Sequence[TrialResult]) -> str:
    errors = [f"seed {t.seed}: {t.error}" for t in trials if t.error]
    return errors[0] if errors else "no trial finished"


def compute_effects(
    plan: Plan,
    trials: Sequence[TrialResult],
    tags: Sequence[str],
    tag_groups: Mapping[str, Sequence[str]] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> list[Effect]:
    """One :class:`Effect` per comparison of ``plan``, in suite order.

    Only seeds where both arms finished are paired. ``tag_groups`` (e.g. the synthetic
    dataset's planted ``local`` and ``long_range`` tags) get their own bootstrap, the macro
    average taken over the group's tags only.
    """
    by_arm: dict[str, dict[int, TrialResult]] = {}
    for t in trials:
        by_arm.setdefault(t.arm, {})[t.seed] = t
    index = {tag: i for i, tag in enumerate(tags)}
    groups = {
        name: [index[t] for t in members if t in index]
        for name, members in (tag_groups or {}).items()
    }
    effects = []
    for c in plan.comparisons:
        if c.skipped:
            effects.append(Effect(c, SKIPPED, reason=c.skipped))
            continue
        runs = {
            role: by_arm.get(arm, {})
            for role, arm in (("reference", c.reference), ("variant", c.variant))
        }
        done = {role: {s: t for s, t in r.items() if t.status == OK} for role, r in runs.items()}
        seeds = sorted(set(done["reference"]) & set(done["variant"]) & set(plan.seeds))
        if not seeds:
            effects.append(_no_pairs(c, runs, done, len(plan.seeds)))
            continue
        effect = Effect(c, OK, seeds=seeds)
        missing = [s for s in plan.seeds if s not in seeds]
        if missing:
            failed = [t for r in runs.values() for s, t in r.items() if s in missing and t.error]
            effect.notes.append(
                f"seeds {', '.join(map(str, missing))} left out (a trial did not finish"
                + (f": {_first_error(failed)})" if failed else ")")
            )
        _fill_effect(effect, done, seeds, groups, n_boot, confidence)
        effects.append(effect)
    return effects


def _no_pairs(
    c: Comparison,
    runs: dict[str, dict[int, TrialResult]],
    done: dict[str, dict[int, TrialResult]],
    n_seeds: int,
) -> Effect:
    """Why an ablation has no seed finished on both sides: failures, or an unfinished run."""
    for role, arm in (("variant", c.variant), ("reference", c.reference)):
        if done[role]:
            continue
        trials = list(runs[role].values())
        if len(trials) == n_seeds and all(t.status == FAILED for t in trials):
            return Effect(
                c, FAILED, reason=f"every {role} trial ({arm}) failed; {_first_error(trials)}"
            )
    if all(t.status == FAILED for r in runs.values() for t in r.values()) and any(runs.values()):
        return Effect(c, FAILED, reason="no seed finished for both the reference and the variant")
    return Effect(c, UNFINISHED, reason="its trials have not all finished; resume the suite")


def _fill_effect(
    effect: Effect,
    done: dict[str, dict[int, TrialResult]],
    seeds: list[int],
    groups: dict[str, list[int]],
    n_boot: int,
    confidence: float,
) -> None:
    arrays: dict[str, list[np.ndarray]] = {"reference": [], "variant": []}
    truth = None
    for role in arrays:
        for s in seeds:
            y, p = done[role][s].predictions()
            if truth is None:
                truth = y
            elif y.shape != truth.shape or not np.array_equal(y, truth):
                raise ValueError(
                    f"{done[role][s].run_dir}: test ground truth differs from the other trials'; "
                    "every trial of a suite must use the same data"
                )
            arrays[role].append(p)
    assert truth is not None
    ref, var = np.stack(arrays["reference"]), np.stack(arrays["variant"])
    for metric in METRICS:
        key = f"test_{metric}_macro"
        r = [done["reference"][s].metrics.get(key, math.nan) for s in seeds]
        v = [done["variant"][s].metrics.get(key, math.nan) for s in seeds]
        effect.reference[metric] = mean_ci(r, confidence)
        effect.variant[metric] = mean_ci(v, confidence)
        effect.difference[metric] = paired_difference(v, r, confidence)
    effect.bootstrap = paired_bootstrap(truth, ref, var, n_boot=n_boot, confidence=confidence)
    effect.verdict = {m: verdict(effect.difference[m], effect.bootstrap[m]) for m in METRICS}
    per_seed = [
        per_tag_auc(truth, var[i])[1] - per_tag_auc(truth, ref[i])[1] for i in range(len(seeds))
    ]
    effect.tag_delta = np.mean(per_seed, axis=0)
    for name, cols in groups.items():
        if cols:
            effect.groups[name] = paired_bootstrap(
                truth, ref, var, tags=cols, n_boot=n_boot, confidence=confidence
            )
    named = [(name, cols) for name, cols in groups.items() if cols]
    if len(named) == 2:  # e.g. long_range - local: is the effect specific to one group?
        (a, cols_a), (b, cols_b) = named
        effect.contrasts[f"{a} - {b}"] = contrast_bootstrap(
            truth, ref, var, cols_a, cols_b, n_boot=n_boot, confidence=confidence
        )


# ----------------------------------------------------------------------------- tables


def results_table(plan: Plan, trials: Sequence[TrialResult]) -> pd.DataFrame:
    """One row per trial of ``plan``: a trial that never reported is listed as missing."""
    seen = {(t.arm, t.seed): t for t in trials}
    rows = []
    for arm, seed in plan.trials():
        t = seen.get((arm, seed))
        row: dict[str, Any] = {
            "arm": arm,
            "roles": " ".join(plan.arms[arm].roles),
            "seed": seed,
            "status": t.status if t else "missing",
            "error": (t.error or "") if t else "",
            "run_dir": str(t.run_dir) if t and t.run_dir else "",
        }
        row.update(t.metrics if t else {})
        rows.append(row)
    return pd.DataFrame(rows)


def effects_table(effects: Sequence[Effect]) -> pd.DataFrame:
    """Every number of the report, one row per ablation and metric (NaN where none)."""
    rows = []
    for e in effects:
        for metric in METRICS:
            row: dict[str, Any] = {
                "ablation": e.name,
                "metric": METRIC_LABELS[metric],
                "status": e.status,
                "reason": e.reason or "",
                "seeds": len(e.seeds),
            }
            if e.status == OK:
                b = e.bootstrap[metric]
                row.update(
                    reference_mean=e.reference[metric].mean,
                    reference_low=e.reference[metric].low,
                    reference_high=e.reference[metric].high,
                    variant_mean=e.variant[metric].mean,
                    variant_low=e.variant[metric].low,
                    variant_high=e.variant[metric].high,
                    delta_mean=e.difference[metric].mean,
                    delta_low=e.difference[metric].low,
                    delta_high=e.difference[metric].high,
                    bootstrap_delta=b.delta,
                    bootstrap_low=b.low,
                    bootstrap_high=b.high,
                    bootstrap_p=b.p_value,
                    verdict=e.verdict[metric],
                )
                for group, results in {**e.groups, **e.contrasts}.items():
                    g, column = results[metric], group.replace(" - ", "_minus_")
                    row.update(
                        {
                            f"{column}_delta": g.delta,
                            f"{column}_low": g.low,
                            f"{column}_high": g.high,
                            f"{column}_p": g.p_value,
                        }
                    )
            rows.append(row)
    return pd.DataFrame(rows)


def per_tag_table(effects: Sequence[Effect], tags: Sequence[str]) -> pd.DataFrame:
    ok = [e for e in effects if e.status == OK and e.tag_delta is not None]
    return pd.DataFrame([e.tag_delta for e in ok], index=[e.name for e in ok], columns=list(tags))


# ----------------------------------------------------------------------------- report.md


def short_tag(tag: str) -> str:
    return tag.split("---")[-1]


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:+.{digits}f}" if math.isfinite(x) else "n/a"


def _estimate(e: Estimate, signed: bool = False) -> str:
    mean = _fmt(e.mean) if signed else f"{e.mean:.4f}"
    if not math.isfinite(e.low):
        return f"{mean} (1 seed)"
    return (
        f"{mean} [{e.low:+.4f}, {e.high:+.4f}]"
        if signed
        else f"{mean} ± {(e.high - e.low) / 2:.4f}"
    )


def _bootstrap(b: BootstrapResult) -> str:
    if not math.isfinite(b.low):
        return "n/a"
    return f"[{b.low:+.4f}, {b.high:+.4f}]"


def _p(b: BootstrapResult) -> str:
    if not math.isfinite(b.p_value):
        return "n/a"
    if b.p_value == 0:
        return f"< {1 / b.n_boot:.2g}"
    return f"{b.p_value:.3f}" if b.p_value >= 0.001 else "< 0.001"


def _verdict_words(e: Effect, metric: Metric) -> str:
    component = e.comparison.ablation.component
    word = e.verdict[metric]
    if word == NO_EFFECT:
        return f"no detectable effect of {component}"
    return f"{component} {word}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render_markdown(
    title: str,
    plan: Plan,
    effects: Sequence[Effect],
    trials: Sequence[TrialResult],
    tags: Sequence[str],
    settings: Mapping[str, str],
    n_boot: int,
    confidence: float = 0.95,
) -> str:
    pct = f"{confidence:.0%}"
    finished = sum(t.status == OK for t in trials)
    lines = [f"# Ablation report: {title}", ""]
    lines += [f"- **{k}:** {v}" for k, v in settings.items()]
    lines += [
        f"- **trials:** {finished} of {len(plan.trials())} finished",
        "",
        "Each ablation takes one component out of its reference (leave-one-component-out) and "
        "trains both with the same seeds, so every difference is paired: "
        "**Δ = variant − reference**. A negative Δ means the component helps.",
        "",
        f"- *reference*, *variant*: test metric, mean ± {pct} t-interval over seeds;",
        f"- *Δ seeds*: mean paired difference and its {pct} t-interval over seeds (training noise);",
        f"- *Δ tracks*: {pct} interval and p-value of a paired bootstrap over test tracks "
        f"({n_boot} resamples, every seed scored on the same resample; test-set noise);",
        "- *verdict*: an effect is called only when both intervals exclude zero on the same side "
        "(with a single seed, the bootstrap alone).",
        "",
    ]
    ok = [e for e in effects if e.status == OK]
    for metric in METRICS:
        lines += [f"## {METRIC_LABELS[metric]}", ""]
        rows = [
            [
                e.name,
                _estimate(e.reference[metric]),
                _estimate(e.variant[metric]),
                _estimate(e.difference[metric], signed=True),
                _bootstrap(e.bootstrap[metric]),
                _p(e.bootstrap[metric]),
                _verdict_words(e, metric),
            ]
            for e in ok
        ]
        rows += [[e.name, "", "", "", "", "", f"**{e.status}**"] for e in effects if e.status != OK]
        header = ["ablation", "reference", "variant", "Δ seeds", "Δ tracks", "p", "verdict"]
        lines += _markdown_table(header, rows) + [""]

    columns = list(dict.fromkeys(g for e in ok for g in (*e.groups, *e.contrasts)))
    if columns:
        lines += [
            "## Planted tag groups",
            "",
            "PR-AUC-macro over each group of planted tags only (synthetic data): Δ, its "
            f"{pct} interval and p-value from the paired bootstrap over test tracks. "
            "*a − b* is the difference between the two groups' Δ on the same resamples: "
            "whether the effect is specific to one group.",
            "",
        ]
        rows = []
        for e in ok:
            found = {**e.groups, **e.contrasts}
            rows.append(
                [e.name]
                + [
                    f"{_fmt(found[g]['pr_auc'].delta)} {_bootstrap(found[g]['pr_auc'])}, "
                    f"p {_p(found[g]['pr_auc'])}"
                    if g in found
                    else "n/a"
                    for g in columns
                ]
            )
        lines += _markdown_table(["ablation", *(f"Δ {g}" for g in columns)], rows) + [""]

    if ok:
        lines += [
            "## Figures",
            "",
            "![effects](effects.png)",
            "",
            "![per-tag](per_tag_heatmap.png)",
            "",
        ]

    lines += ["## Ablations", ""]
    for e in effects:
        a = e.comparison.ablation
        lines += [f"### {a.name}", "", f"{a.change}.", ""]
        if e.status != OK:
            lines += [f"**{e.status}:** {e.reason}", ""]
            continue
        ref_arm, var_arm = plan.arms[e.comparison.reference], plan.arms[e.comparison.variant]
        lines += [
            f"- arms: reference `{ref_arm.name}`, variant `{var_arm.name}`; "
            f"seeds {', '.join(map(str, e.seeds))}",
            f"- variant overrides: `{format_overrides(a.variant_overrides(plan.budget))}`",
        ]
        lines += [f"- note: {n}" for n in e.notes]
        if e.tag_delta is not None and np.isfinite(e.tag_delta).any():
            order = np.argsort(np.nan_to_num(e.tag_delta, nan=0.0))
            down = [i for i in order[:TOP_TAGS] if e.tag_delta[i] < 0]
            up = [i for i in order[::-1][:TOP_TAGS] if e.tag_delta[i] > 0]
            moved = ", ".join(f"{short_tag(tags[i])} {_fmt(e.tag_delta[i], 3)}" for i in down)
            lines.append(f"- tags the variant lowers most (Δ PR-AUC): {moved or 'none'}")
            moved = ", ".join(f"{short_tag(tags[i])} {_fmt(e.tag_delta[i], 3)}" for i in up)
            lines.append(f"- tags the variant raises most (Δ PR-AUC): {moved or 'none'}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


VERDICT_COLORS = {HELPS: "#2b6cb0", HURTS: "#c53030", NO_EFFECT: "#a0aec0"}


def plot_effects(effects: Sequence[Effect], path: Path) -> Path:
    """Horizontal bars of Δ per ablation and metric, with seed and track intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = [e.name for e in effects]
    y = np.arange(len(effects))[::-1]
    fig, axes = plt.subplots(
        1, 2, figsize=(12, 1.0 + 0.55 * len(effects)), sharey=True, squeeze=False
    )
    for ax, metric in zip(axes[0], METRICS, strict=True):
        for yi, e in zip(y, effects, strict=True):
            if e.status != OK:
                ax.text(0, yi, f"  {e.status}", va="center", ha="left", color="#718096", fontsize=9)
                continue
            d, b = e.difference[metric], e.bootstrap[metric]
            ax.barh(yi, d.mean, color=VERDICT_COLORS[e.verdict[metric]], height=0.6)
            if math.isfinite(d.low):
                ax.errorbar(
                    d.mean,
                    yi,
                    xerr=[[d.mean - d.low], [d.high - d.mean]],
                    fmt="none",
                    ecolor="black",
                    capsize=4,
                    lw=1.2,
                )
            if math.isfinite(b.low):
                ax.plot(
                    [b.low, b.high],
                    [yi - 0.22, yi - 0.22],
                    color="#dd6b20",
                    lw=2.5,
                    solid_capstyle="butt",
                )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"Δ {METRIC_LABELS[metric]} (variant − reference)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, names)
    handles = [
        Patch(color=c, label=f"component {v}" if v != NO_EFFECT else v)
        for v, c in VERDICT_COLORS.items()
    ]
    handles += [
        plt.Line2D([], [], color="black", marker="|", lw=1.2, label="95% CI over seeds"),
        plt.Line2D([], [], color="#dd6b20", lw=2.5, label="95% CI, bootstrap over tracks"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.1 / max(len(effects), 1), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_tag(
    table: pd.DataFrame, path: Path, marked: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """Heat map of per-tag Δ PR-AUC, ablations x tags; planted tags get a group suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = table.to_numpy(dtype=float)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0
    suffix = {tag: f" [{group}]" for group, members in (marked or {}).items() for tag in members}
    labels = [short_tag(t) + suffix.get(t, "") for t in table.columns]
    fig, ax = plt.subplots(figsize=(max(8, 0.22 * len(labels) + 3), 1.8 + 0.45 * len(table)))
    image = ax.imshow(
        values, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest"
    )
    ax.set_yticks(range(len(table)), list(table.index))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_title("per-tag Δ PR-AUC (variant − reference), mean over seeds")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- all files


def write_report(
    out_dir: Path,
    title: str,
    plan: Plan,
    trials: Sequence[TrialResult],
    effects: Sequence[Effect],
    tags: Sequence[str],
    settings: Mapping[str, str],
    n_boot: int,
    tag_groups: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Path]:
    """Write every report file into ``out_dir``; returns their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out_dir / "results.csv",
        "effects": out_dir / "effects.csv",
        "report": out_dir / "report.md",
    }
    results_table(plan, trials).to_csv(paths["results"], index=False)
    effects_table(effects).to_csv(paths["effects"], index=False)
    per_tag = per_tag_table(effects, tags)
    if len(per_tag):
        per_tag.to_csv(out_dir / "per_tag.csv", index_label="ablation")
        paths["per_tag"] = out_dir / "per_tag.csv"
        paths["heatmap"] = plot_per_tag(per_tag, out_dir / "per_tag_heatmap.png", tag_groups)
        paths["chart"] = plot_effects(effects, out_dir / "effects.png")
    paths["report"].write_text(
        render_markdown(title, plan, effects, trials, tags, settings, n_boot)
    )
    return paths
