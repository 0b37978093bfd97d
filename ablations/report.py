"""From effects to files people can read: :func:`write_report` writes

- ``report.md``: a methods section (:mod:`ablations.methods`), then per headline metric one
  row per ablation (Δ with its interval, probability of improvement, Holm-adjusted p, minimum
  detectable effect, verdict), the seeds each ablation got and why it stopped, the planted
  groups, the per-tag cells that survive Benjamini-Hochberg, and each ablation's details;
- ``results.csv``: one row per trial (arm, seed, status, error, metrics, run directory);
- ``effects.csv``: one row per ablation and metric, every number of the report;
- ``per_tag.csv`` and ``per_tag_q.csv``: per-tag PR-AUC difference and its BH q-value;
- ``effects.png`` and ``per_tag_heatmap.png`` (:mod:`ablations.figures`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations.effects import METRIC_LABELS, OK, Effect, MetricEffect, TrialResult
from ablations.families import Conclusions
from ablations.figures import plot_effects, plot_per_tag, short_tag
from ablations.methods import methods_section
from ablations.stats import ALPHA, METRICS, NO_EFFECT, Estimate, Metric
from ablations.suite import Plan, format_overrides

TOP_TAGS = 5


# ----------------------------------------------------------------------------- tables


def results_table(
    plan: Plan, trials: Sequence[TrialResult], planned: Sequence[tuple[str, int]] | None = None
) -> pd.DataFrame:
    """One row per planned trial (default: all of ``plan``'s); one that never reported is
    listed as missing."""
    seen = {(t.arm, t.seed): t for t in trials}
    rows = []
    for arm, seed in plan.trials() if planned is None else planned:
        t = seen.get((arm, seed))
        row: dict[str, Any] = {
            "arm": arm,
            "roles": " ".join(plan.arms[arm].roles),
            "seed": seed,
            "run_seed": plan.run_seed(arm, seed),
            "status": t.status if t else "missing",
            "error": (t.error or "") if t else "",
            "run_dir": str(t.run_dir) if t and t.run_dir else "",
        }
        row.update(t.metrics if t else {})
        rows.append(row)
    return pd.DataFrame(rows)


def _metric_columns(row: MetricEffect) -> dict[str, Any]:
    low, high = row.interval()
    return {
        "reference_mean": row.reference.mean,
        "variant_mean": row.variant.mean,
        "delta": row.delta,
        "delta_low": low,
        "delta_high": high,
        "se_seeds": float(row.test.se_seeds),
        "se_tracks": float(row.test.se_tracks),
        "p": row.p_value,
        "p_holm": row.p_adjusted,
        "verdict": row.verdict,
        "p_improvement": row.improvement.value,
        "p_improvement_low": row.improvement.low,
        "p_improvement_high": row.improvement.high,
        "mde": row.mde,
        "equivalence_p_holm": row.equivalence_adjusted,
        "rules_out_min_effect": row.ruled_out,
        "seeds_for_min_effect": row.seeds_needed,
        "seeds_only_low": row.seeds_only.low,
        "seeds_only_high": row.seeds_only.high,
        "tracks_only_low": row.tracks_low,
        "tracks_only_high": row.tracks_high,
    }


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
                "stopped": e.stop or "",
            }
            if e.status == OK:
                row.update(_metric_columns(e.metrics[metric]))
                for group, found in e.groups.items():
                    g, column = found[metric], group.replace(" - ", "_minus_")
                    low, high = g.interval()
                    row.update(
                        {
                            f"{column}_delta": g.delta,
                            f"{column}_low": low,
                            f"{column}_high": high,
                            f"{column}_p_holm": g.p_adjusted,
                        }
                    )
            rows.append(row)
    return pd.DataFrame(rows)


def per_tag_tables(
    effects: Sequence[Effect], tags: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Δ PR-AUC, BH q-value), ablations x tags."""
    cells = [(e.name, e.tags) for e in effects if e.status == OK and e.tags is not None]
    names, columns = [name for name, _ in cells], list(tags)
    unadjusted = np.full(len(columns), np.nan)
    delta = pd.DataFrame([c.delta for _, c in cells], index=names, columns=columns)
    q = [unadjusted if c.q_value is None else c.q_value for _, c in cells]
    return delta, pd.DataFrame(q, index=names, columns=columns)


# ----------------------------------------------------------------------------- report.md


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:+.{digits}f}" if math.isfinite(x) else "n/a"


def _mean(e: Estimate) -> str:
    if not math.isfinite(e.low):
        return f"{e.mean:.4f}"
    return f"{e.mean:.4f} ± {(e.high - e.low) / 2:.4f}"


def _delta(row: MetricEffect | Any) -> str:
    low, high = row.interval()
    if not math.isfinite(low):
        return f"{_fmt(row.delta)} (1 seed)"
    return f"{_fmt(row.delta)} [{low:+.4f}, {high:+.4f}]"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _verdict(e: Effect, row: MetricEffect, min_effect: float) -> str:
    component = e.comparison.ablation.component
    if row.verdict != NO_EFFECT:
        return f"**{component} {row.verdict}**"
    if not math.isfinite(row.p_value):
        return f"no detectable effect of {component} (1 seed: training noise unmeasured)"
    ruled = "rules out" if row.ruled_out else "cannot rule out"
    return f"no detectable effect of {component}; {ruled} |Δ| ≥ {min_effect:g}"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _metric_section(effects: Sequence[Effect], metric: Metric, c: Conclusions) -> list[str]:
    rows = []
    for e in effects:
        if e.status != OK:
            rows.append([e.name, "", "", "", "", "", "", "", f"**{e.status}**"])
            continue
        row = e.metrics[metric]
        poi = row.improvement
        rows.append(
            [
                e.name,
                str(len(e.seeds)),
                _mean(row.reference),
                _mean(row.variant),
                _delta(row),
                f"{poi.value:.2f} [{poi.low:.2f}, {poi.high:.2f}]",
                _p(row.p_adjusted),
                f"{row.mde:.4f}" if math.isfinite(row.mde) else "n/a",
                _verdict(e, row, c.min_effect),
            ]
        )
    header = [
        "ablation",
        "seeds",
        "reference",
        "variant",
        "Δ [95% CI]",
        "P(component improves) [95%]",
        "p (Holm)",
        f"MDE ({c.power:.0%})",
        "verdict",
    ]
    return [f"## {METRIC_LABELS[metric]}", ""] + _markdown_table(header, rows) + [""]


def _seeds_needed(n: int | None, seeds: int) -> str:
    if seeds < 2:
        return "n/a (1 seed)"
    return "none" if n is None else str(n)


def _seeds_section(effects: Sequence[Effect], c: Conclusions) -> list[str]:
    rows = []
    for e in effects:
        needed = [
            _seeds_needed(e.metrics[m].seeds_needed, int(e.metrics[m].test.n))
            for m in METRICS
            if e.status == OK
        ]
        rows.append([e.name, str(len(e.seeds)), e.stop or "", " / ".join(needed) or "n/a"])
    header = [
        "ablation",
        "seeds paired",
        "why it stopped",
        f"seeds for MDE = {c.min_effect:g} ({' / '.join(METRIC_LABELS[m] for m in METRICS)})",
    ]
    return ["## Seeds", ""] + _markdown_table(header, rows) + [""]


def _planted_section(ok: Sequence[Effect]) -> list[str]:
    columns = list(dict.fromkeys(g for e in ok for g in e.groups))
    if not columns:
        return []
    lines = [
        "## Planted tag groups",
        "",
        "PR-AUC-macro over each group of planted tags only (synthetic data): Δ [95% CI] "
        "and Holm-adjusted p (planted-group family). *a − b* is the difference between the "
        "two groups' Δ on the same seeds and resamples: whether the effect is specific to one "
        "group.",
        "",
    ]
    rows = [
        [e.name]
        + [
            f"{_delta(e.groups[g]['pr_auc'])}, p {_p(e.groups[g]['pr_auc'].p_adjusted)}"
            if g in e.groups
            else "n/a"
            for g in columns
        ]
        for e in ok
    ]
    return lines + _markdown_table(["ablation", *(f"Δ {g}" for g in columns)], rows) + [""]


def _confirmatory_section(ok: Sequence[Effect]) -> list[str]:
    rows = [
        [
            e.name,
            f"Δ {c.group} {c.direction}",
            _delta(c.finding),
            _p(c.p_one_sided),
            _p(c.p_adjusted),
            "confirmed" if c.confirmed else "not confirmed",
        ]
        for e in ok
        for c in e.confirmations
    ]
    if not rows:
        return []
    header = ["ablation", "hypothesis (PR-AUC)", "Δ [95% CI]", "one-sided p", "Holm p", "verdict"]
    intro = [
        "## Confirmatory hypotheses",
        "",
        "Stated before any training: the planted effects the synthetic data was built to show "
        "(`expected` in ablations/catalog.py), each tested one-sided, Holm over this family.",
        "",
    ]
    return intro + _markdown_table(header, rows) + [""]


def _moved_tags(e: Effect, tags: Sequence[str]) -> list[str]:
    cells = e.tags
    if cells is None or not np.isfinite(cells.delta).any():
        return []
    q = cells.q_value if cells.q_value is not None else np.full(len(tags), np.nan)
    survive = np.nan_to_num(q, nan=1.0) <= ALPHA

    def text(i: int) -> str:
        return f"{short_tag(tags[i])} {_fmt(cells.delta[i], 3)}" + ("*" if survive[i] else "")

    order = np.argsort(np.nan_to_num(cells.delta, nan=0.0))
    down = [text(i) for i in order[:TOP_TAGS] if cells.delta[i] < 0]
    up = [text(i) for i in order[::-1][:TOP_TAGS] if cells.delta[i] > 0]
    kept = [text(i) for i in np.flatnonzero(survive)]
    return [
        f"- tags the variant lowers most (Δ PR-AUC; * survives BH): {', '.join(down) or 'none'}",
        f"- tags the variant raises most: {', '.join(up) or 'none'}",
        f"- tag cells surviving Benjamini-Hochberg at {ALPHA:.0%}: {', '.join(kept) or 'none'}",
    ]


def render_markdown(
    title: str,
    plan: Plan,
    effects: Sequence[Effect],
    conclusions: Conclusions,
    trials: Sequence[TrialResult],
    tags: Sequence[str],
    settings: Mapping[str, str],
    n_boot: int,
    planned: Sequence[tuple[str, int]] | None = None,
) -> str:
    finished = sum(t.status == OK for t in trials)
    total = len(plan.trials() if planned is None else planned)
    lines = [f"# Ablation report: {title}", ""]
    lines += [f"- **{k}:** {v}" for k, v in settings.items()]
    lines += [f"- **trials:** {finished} of {total} finished", ""]
    lines += methods_section(plan, effects, conclusions, n_boot, settings.get("seeds", ""))
    for metric in METRICS:
        lines += _metric_section(effects, metric, conclusions)
    lines += _seeds_section(effects, conclusions)
    ok = [e for e in effects if e.status == OK]
    lines += _confirmatory_section(ok)
    lines += _planted_section(ok)
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
            f"- variant overrides: `{format_overrides(a.variant_overrides(plan.budget)) or 'none'}`",
            *(f"- note: {n}" for n in e.notes),
            *_moved_tags(e, tags),
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- all files


def write_report(
    out_dir: Path,
    title: str,
    plan: Plan,
    trials: Sequence[TrialResult],
    effects: Sequence[Effect],
    conclusions: Conclusions,
    tags: Sequence[str],
    settings: Mapping[str, str],
    n_boot: int,
    tag_groups: Mapping[str, Sequence[str]] | None = None,
    planned: Sequence[tuple[str, int]] | None = None,
) -> dict[str, Path]:
    """Write every report file into ``out_dir``; returns their paths by name. ``planned``
    lists the trials the suite asked for (default: all of ``plan``'s)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out_dir / "results.csv",
        "effects": out_dir / "effects.csv",
        "report": out_dir / "report.md",
    }
    results_table(plan, trials, planned).to_csv(paths["results"], index=False)
    effects_table(effects).to_csv(paths["effects"], index=False)
    delta, q = per_tag_tables(effects, tags)
    if len(delta):
        delta.to_csv(out_dir / "per_tag.csv", index_label="ablation")
        q.to_csv(out_dir / "per_tag_q.csv", index_label="ablation")
        paths["per_tag"] = out_dir / "per_tag.csv"
        paths["per_tag_q"] = out_dir / "per_tag_q.csv"
        paths["heatmap"] = plot_per_tag(delta, q, out_dir / "per_tag_heatmap.png", tag_groups)
        paths["chart"] = plot_effects(effects, out_dir / "effects.png")
    paths["report"].write_text(
        render_markdown(title, plan, effects, conclusions, trials, tags, settings, n_boot, planned)
    )
    return paths
