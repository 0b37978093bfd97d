"""results.md: the GPU pool check's figures as the tables docs/benchmarks.md takes in."""

from __future__ import annotations

from typing import Any

GOAL_SAMPLES_PER_S = 330  # issue 18: one H200, submission 2, <= 30 s per paper epoch


def _cell(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:g}" if abs(value) < 1e4 else f"{value:.0f}"
    return f"{value}{unit}"


def _spread(values: list[Any]) -> str:
    values = [v for v in values if isinstance(v, int | float)]
    if not values:
        return "-"
    low, high = min(values), max(values)
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def packing_table(pools: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| trials/GPU | compile | exit | aggregate samples/s | window samples/s (lower bound) | "
        "overlap | per-trial samples/s | per-trial step ms | peak MiB per trial (nvidia-smi) | "
        "GPU util mean / max % | paper epoch s | placement |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in pools:
        trials = p.get("trials", [])
        rates = [t.get("samples_per_s") for t in trials]
        steps = [t.get("step_ms") for t in trials]
        states = {t["state"] for t in trials}
        lines.append(
            f"| {p['trials_per_gpu']} | {p['compile']} | {p['exit_code']} | "
            f"{_cell(p.get('aggregate_samples_per_s'))} | {_cell(p.get('window_samples_per_s'))} | "
            f"{_cell(p.get('overlap'))} | {_spread(rates)} | {_spread(steps)} | "
            f"{_spread([t.get('peak_memory_mib') for t in trials])} | "
            f"{_cell(p.get('gpu_util_mean_pct'))} / {_cell(p.get('gpu_util_max_pct'))} | "
            f"{_cell(p.get('paper_epoch_s'))} | "
            f"{'ok' if p.get('placement_ok') else 'CHECK'} ({', '.join(sorted(states))}) |"
        )
    return lines


def step_table(step: dict[str, Any]) -> list[str]:
    modes = step.get("steps", {}).get("modes", {})
    lines = [
        "| run.compile | samples/s per round | best ms/step | first step s (compile) | "
        "step peak extra MiB |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, m in modes.items():
        lines.append(
            f"| {mode} | {', '.join(f'{r:g}' for r in m.get('samples_per_s_rounds', []))} | "
            f"{_cell(m.get('ms_per_step_best'))} | {_cell(m.get('first_step_s'))} | "
            f"{_cell(m.get('step_peak_extra_mib'))} |"
        )
    loader = step.get("loader")
    if loader:
        lines.append(
            f"\nData path alone ({' + '.join(loader['streams'])}, "
            f"{loader['workers_per_loader']} workers per loader): "
            f"{loader['samples_per_s']} training samples/s."
        )
    dynamo = step.get("steps", {}).get("dynamo", {})
    if dynamo:
        lines.append(
            f"\ntorch.compile: {dynamo.get('stats', {}).get('unique_graphs', 0)} graph(s), "
            f"graph breaks {sum(dynamo.get('graph_break', {}).values())}, CUDA graph skips "
            f"{dynamo.get('inductor', {}).get('cudagraph_skips', 0)}."
        )
    return lines


def isolation_lines(iso: dict[str, Any], on_gpu: bool) -> list[str]:
    passed = (
        iso.get("hog_state") == "errored"
        and iso.get("hog_out_of_memory")
        and iso.get("others_completed")
    )
    # Without CUDA no memory cap exists: the run only shows the pipeline works.
    verdict = ("PASS" if passed else "FAIL") if on_gpu else "n/a without a GPU"
    return [
        f"{iso['trials_per_gpu']} trials at gpu {iso['gpu_share']}, one of them (the hog) at "
        f"batch {iso['hog_batch']}: {verdict}. Hog {iso.get('hog_state')}; the others "
        f"{'all completed' if iso.get('others_completed') else 'NOT all completed'}; "
        f"out of memory: {iso.get('hog_out_of_memory')}; stopped by the cap (the message "
        f"says 'allowed'): {iso.get('hog_stopped_by_cap')}; GPU ids = CUDA_VISIBLE_DEVICES: "
        f"{iso.get('placement_ok')}.",
        "",
        f"The hog's one-line reason: `{iso.get('hog_error') or '-'}`",
    ]


def goal_line(pools: list[dict[str, Any]]) -> str:
    rated = [p for p in pools if p.get("aggregate_samples_per_s")]
    if not rated:
        return "Goal: no pool was measured."
    best = max(rated, key=lambda p: p["aggregate_samples_per_s"])
    rate = best["aggregate_samples_per_s"]
    return (
        f"Goal ({GOAL_SAMPLES_PER_S} samples/s, 30 s per paper epoch): best {rate:g} samples/s "
        f"({best['trials_per_gpu']} trials per GPU, compile {best['compile']}), "
        f"{best.get('paper_epoch_s')} s per paper epoch: "
        f"{'met' if rate >= GOAL_SAMPLES_PER_S else f'{rate / GOAL_SAMPLES_PER_S:.0%} of it'}."
    )


def markdown(results: dict[str, Any]) -> str:
    env = results.get("environment", {})
    lines = [
        "# GPU pool check" + (" (dry run, CPU)" if results.get("dry_run") else ""),
        "",
        f"{results.get('started')}; {env.get('gpu') or 'no GPU'}; torch {env.get('torch')}, "
        f"Python {env.get('python')}, Ray {str(env.get('ray', '')).split(' ')[0]}, "
        f"{env.get('cpus')} CPUs; MPS control {'present' if env.get('mps_control') else 'absent'}; "
        f"{results.get('elapsed_s')} s in all.",
    ]
    data = results.get("data")
    if data:
        tracks = ", ".join(f"{n} {subset}" for subset, n in data["tracks"].items())
        lines += [
            "",
            f"Data: {tracks} tracks, {data['samples_per_epoch']} training samples per epoch "
            "(batch 8; the first epoch is a warm-up).",
        ]
    if results.get("packing"):
        lines += [
            "",
            "## Packing",
            "",
            *packing_table(results["packing"]),
            "",
            goal_line(results["packing"]),
        ]
    if results.get("isolation"):
        lines += [
            "",
            "## Isolation",
            "",
            *isolation_lines(results["isolation"], bool(env.get("gpu"))),
        ]
    if results.get("step"):
        lines += ["", "## Single-trial step", "", *step_table(results["step"])]
        lines.append(
            f"\nCompile mode kept for packing: {results.get('compile_winner') or 'none (no clear win)'}."
        )
    if results.get("pytest"):
        p = results["pytest"]
        lines += [
            "",
            f"pytest {' '.join(p['files'])}: exit {p['exit_code']}, {p.get('tests')} tests, "
            f"{p.get('failures')} failures, {p.get('errors')} errors, {p.get('skipped')} skipped.",
        ]
    if results.get("errors"):
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items())]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    lines.append(
        "Phase seconds: " + ", ".join(f"{k} {v}" for k, v in results.get("phases", {}).items())
    )
    return "\n".join(lines) + "\n"
