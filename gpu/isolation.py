"""A trial that needs more than its GPU share fails alone: N trials at ``gpu: 1/N``, one of
them (the hog) at a batch so large that it needs about 2.5 times its share's memory, yet less
than the card has free, so that the per-trial memory cap, not the card, is what stops it.

It runs as a fixed list through ``tune.search.run_trials`` (the ablation suite's entry
point): an Optuna search cannot be told which trial gets the big batch. The hog must end
errored with a one-line out-of-memory reason (``allowed`` in it: the cap's wording), the
others completed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gpu.packing import ERROR_FILE, SPACE_FILE, Workload, placement_ok

HOG_NAME = "hog"
HEADROOM = 2.5  # the hog needs about this many times its share
# A submission 2 trial's memory at batch 8 if nvidia-smi could not show it (a guess on the
# high side: a smaller guess gives a bigger hog, which only fails more surely).
ASSUMED_TRIAL_MIB = 3072.0


def hog_batch(
    batch: int, trial_mib: float | None, share_mib: float | None, train_tracks: int
) -> int:
    """A batch whose memory is about HEADROOM x the share, from the memory one trial at
    ``batch`` was seen to hold; without a GPU (no share, no cap), 4 x ``batch``. Never more
    than the training set, which a batch cannot outgrow."""
    if not share_mib:
        return min(4 * batch, train_tracks)
    seen = trial_mib or ASSUMED_TRIAL_MIB
    return min(math.ceil(batch * HEADROOM * share_mib / seen), train_tracks)


def run_isolation(
    budget: str,
    trials_per_gpu: int,
    work: Workload,
    storage: Path,
    batch: int,
    big_batch: int,
    fake_gpus: float | None = None,
) -> dict[str, Any]:
    """N - 1 ordinary trials and the hog, all at ``gpu: 1/N``. ``fake_gpus`` starts Ray with
    that many GPU labels (the dry run on a CPU: the trials share nothing real)."""
    from moodtheme.config import parse_overrides
    from tune.search import RunOptions, TrialSpec, run_trials
    from tune.space import Resources, load_space

    space = load_space(SPACE_FILE, budget)
    specs = [TrialSpec(f"ordinary{i}", {"run.seed": i}) for i in range(trials_per_gpu - 1)]
    specs.append(TrialSpec(HOG_NAME, {"run.seed": 99, "optim.batch_size": big_batch}))
    fixed = {
        **space.fixed_overrides(),
        "data.splits_dir": str(work.splits_dir),
        **parse_overrides(work.extra_overrides),
    }
    outcome = run_trials(
        specs,
        preset=space.preset,
        overrides=fixed,
        metric=space.metric,
        mode=space.mode,
        resources=Resources(cpu=space.resources.cpu, gpu=1 / trials_per_gpu),
        max_concurrent_trials=trials_per_gpu,
        options=RunOptions(
            name=f"isolation-{budget}",
            storage=str(storage),
            tracking=False,
            data=str(work.data_root),
            max_failures=0,
            num_gpus=fake_gpus,
            verbose=1,
        ),
    )
    trials = [
        {
            "name": r.name,
            "state": r.state,
            "error": r.error,  # the one line the search's table and summary show
            "full_error": _error_text(Path(r.path)),
            "batch": big_batch if r.name == HOG_NAME else batch,
            "gpu_ids": r.last.get("gpu_ids"),
            "cuda_visible_devices": r.last.get("cuda_visible_devices"),
        }
        for r in outcome.records
    ]
    for trial in trials:
        trial["placement_ok"] = placement_ok(trial)
    hog = next((t for t in trials if t["name"] == HOG_NAME), {})
    others = [t for t in trials if t["name"] != HOG_NAME]
    full = hog.get("full_error") or ""
    return {
        "trials_per_gpu": trials_per_gpu,
        "gpu_share": round(1 / trials_per_gpu, 4),
        "hog_batch": big_batch,
        "hog_state": hog.get("state"),
        "hog_error": hog.get("error") or "",
        "hog_out_of_memory": "out of memory" in full.lower(),
        "hog_stopped_by_cap": "allowed" in full,
        "others_completed": bool(others) and all(t["state"] == "completed" for t in others),
        "placement_ok": all(t["placement_ok"] for t in trials),
        "trials": trials,
    }


def _error_text(trial_path: Path) -> str:
    """The whole error Ray kept for a trial (its last line is what the tables show)."""
    path = trial_path / ERROR_FILE
    return path.read_text()[-4000:] if path.is_file() else ""
