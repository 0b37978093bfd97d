"""One trial inside a Ray worker: `moodtheme.train.fit` driven through its epoch callback.

Each epoch the callback checks that the metric is finite, journals the epoch's metrics in the
trial's MLflow outbox (`tune.outbox`), and reports them to Ray Tune with a checkpoint: a copy
of the trainer's checkpoint directory plus ``trial.json`` (the MLflow run id and the epoch)
and the outbox, so a retried or resumed trial continues both the training and the same
MLflow run. The outbox is sent once the checkpoint is reported (an epoch MLflow has seen is
never trained again), waiting for MLflow a few seconds at most; what it could not send, the
driver sends when the trial ends.

The last epoch is reported after `fit` returns, together with the kept model's scores
(``kept_*``: the trainer's validation and test scores of the weights early stopping kept,
measured once after training; not to be confused with the per-epoch ``val_*`` metrics) and a checkpoint that also
holds the run's outputs (predictions, ground truth, thresholds, final_metrics.json): that is
what the ablation suite reads. Reporting it late means an ASHA stop at the last rung can
never cut the final evaluation short.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune import ray_adapter
from tune.outbox import WAIT_S, Courier, Outbox, read_outbox
from tune.spec import spec_of
from tune.tracking import Tracker

TRIAL_FILE = "trial.json"
# Prefix of the kept model's scores in a trial's last report (kept_test_pr_auc_macro, ...).
KEPT_PREFIX = "kept_"


class TrialMetricError(RuntimeError):
    """The searched metric is missing or not finite: the trial ends as errored."""


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one search shares; sent once to the workers."""

    preset: str
    fixed: Mapping[str, Any]
    metric: str
    gpu_fraction: float = 0.0
    tracker: Tracker | None = None
    parent_run_id: str | None = None
    # The tracker's credentials: pickled with the context into Ray's object store (memory),
    # never with the tracker itself, which Tune also writes to disk with its callbacks.
    tracking_auth: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.tracker is not None and self.tracker.auth and not self.tracking_auth:
            object.__setattr__(self, "tracking_auth", dict(self.tracker.auth))

    def open_tracker(self) -> Tracker | None:
        """The tracker, with its credentials, in a trial's process; None when not tracked."""
        if self.tracker is None or not self.parent_run_id:
            return None
        self.tracker.auth = dict(self.tracking_auth)
        return self.tracker


def deterministic_errors() -> tuple[type[Exception], ...]:
    """Failures that a retry from the same checkpoint and seeds would repeat exactly."""
    from moodtheme.config import ConfigError
    from moodtheme.data.jamendo import SplitError
    from moodtheme.data.melspec import MelspecError
    from moodtheme.errors import TrainingError
    from moodtheme.models import PretrainedWeightsError

    return (
        ConfigError,
        SplitError,
        MelspecError,
        TrainingError,
        PretrainedWeightsError,
        TrialMetricError,
    )


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Ray Tune function trainable. A deterministic failure (:func:`deterministic_errors`)
    ends the trial errored at once, its reason in the last report; anything else raises, so
    Ray retries it from the last good checkpoint (a lost node, an OOM kill, an I/O error)."""
    try:
        _train_trial(config, context)
    except deterministic_errors() as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
        ray_adapter.report({ray_adapter.TRIAL_ERROR: f"{type(err).__name__}: {reason}"})


def _usable(checkpoint: Path) -> bool:
    from moodtheme.errors import TrainingError
    from moodtheme.rundir import load_checkpoint

    try:
        read_trial_file(checkpoint)
        load_checkpoint(checkpoint)
    except (OSError, ValueError, KeyError, TrainingError):
        return False
    return True


def _train_trial(config: dict[str, Any], context: TrialContext) -> None:
    from moodtheme.config import build_config
    from moodtheme.device import cap_gpu_memory
    from moodtheme.train import fit

    ray_adapter.quiet_trial_logs()
    # Ray's fractional GPUs are only a scheduling label: hold the trial to its share.
    cap_gpu_memory(context.gpu_fraction)

    trial_dir = ray_adapter.trial_dir()
    restored = ray_adapter.restore_checkpoint(trial_dir / "restored", _usable)
    saved = read_trial_file(restored) if restored else {}

    spec = spec_of(config)
    overrides, name = spec.overrides, spec.name or ray_adapter.trial_name()
    cfg = build_config(context.preset, {**context.fixed, **overrides})
    tracker = context.open_tracker()
    courier = None
    if tracker is not None:
        courier = Courier(tracker, str(context.parent_run_id))
        outbox = courier.add(_outbox(restored, name, cfg.flat(), dict(spec.tags)))
        courier.send()
    run_id = saved.get("mlflow_run_id") or (outbox.run_id if courier else None)

    where = {
        **ray_adapter.placement(),
        "mlflow_run_id": run_id or "",
        "restored_from_epoch": int(saved.get("epoch", 0)),
        "trial_name": name,
    }
    # Outside the trial folder: Ray syncs that folder while this one is being emptied.
    staging = Path(tempfile.mkdtemp(prefix="moodtheme-stage-"))
    last: dict[str, Any] = {}

    def on_epoch(report: Any) -> None:
        metrics = {k: float(v) for k, v in report.metrics.items()}
        metrics["epoch"] = int(report.epoch)
        value = metrics.get(context.metric)
        if value is None or not math.isfinite(value):
            raise TrialMetricError(
                f"epoch {report.epoch}: metric {context.metric} is {value}; the trial cannot "
                "be ranked (check the learning rate and the data)"
            )
        if courier is not None:
            outbox.metrics(metrics, step=report.epoch)
        checkpoint = _stage(report.checkpoint_dir, staging / f"epoch_{report.epoch:04d}")
        _write_trial_file(checkpoint, run_id, report.epoch, name, courier)
        last.clear()
        last.update(metrics=metrics, checkpoint=checkpoint)
        if report.epoch < cfg.optim.epochs:
            ray_adapter.report({**metrics, **where}, checkpoint_dir=checkpoint)
            shutil.rmtree(checkpoint, ignore_errors=True)
            if courier is not None:
                courier.send()

    run_dir = trial_dir / "run"
    result = fit(cfg, run_dir, callback=on_epoch, resume_from=restored)

    # The final report: the last epoch (held back above, or repeated after an early stop by
    # the trainer's own patience), the final scores, and a checkpoint with the outputs.
    metrics, checkpoint = _final_checkpoint(last, result, run_dir, staging, cfg.optim.epochs)
    kept = {f"{KEPT_PREFIX}{k}": float(v) for k, v in result.final_metrics.items()}
    if courier is not None:
        outbox.metrics(kept, step=metrics["epoch"])
    _write_trial_file(checkpoint, run_id, metrics["epoch"], name, courier)
    ray_adapter.report(
        {**metrics, **kept, **where, ray_adapter.FIT_FINISHED: 1, "best_epoch": result.best_epoch},
        checkpoint_dir=checkpoint,
    )
    shutil.rmtree(staging, ignore_errors=True)
    if courier is not None:
        courier.send(wait_s=2 * WAIT_S, force=True)


def _final_checkpoint(
    last: Mapping[str, Any], result: Any, run_dir: Path, staging: Path, epochs: int
) -> tuple[dict[str, Any], Path]:
    """The last epoch's metrics and a staged checkpoint that also holds the run's outputs."""
    from moodtheme.rundir import RUN_OUTPUTS, RunDir

    if not last:  # resumed after the last epoch: nothing trained, report what fit returned
        history = result.history[-1] if result.history else {}
        metrics = {k: float(v) for k, v in history.items()}
        metrics["epoch"] = int(metrics.get("epoch", epochs))
        checkpoint = _stage(RunDir(run_dir).checkpoints, staging / "final")
    else:
        metrics, checkpoint = dict(last["metrics"]), last["checkpoint"]
        if not checkpoint.exists():
            checkpoint = _stage(RunDir(run_dir).checkpoints, staging / "final")
    for output in RUN_OUTPUTS:
        if (run_dir / output).exists():
            shutil.copy2(run_dir / output, checkpoint / output)
    return metrics, checkpoint


def _outbox(
    restored: Path | None, name: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> Outbox:
    """The journal of the restored checkpoint, marked running again; else a new one that
    opens the trial's run."""
    found = read_outbox(restored) if restored else None
    if found is not None:
        found.running()
        return found
    outbox = Outbox(ray_adapter.trial_id())
    outbox.open(name, params, tags)
    return outbox


def _stage(source: Path, target: Path) -> Path:
    """A private copy of the trainer's checkpoint dir (hard links where possible: the
    trainer replaces files atomically, so a link keeps the epoch's version)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=_link_or_copy)
    return target


def _link_or_copy(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def _write_trial_file(
    checkpoint: Path, run_id: str | None, epoch: int, name: str, courier: Courier | None
) -> None:
    """``trial.json`` and, when tracked, the MLflow outbox as it stands."""
    path = checkpoint / TRIAL_FILE
    path.unlink(missing_ok=True)  # it may be a hard link into the trainer's directory
    path.write_text(json.dumps({"mlflow_run_id": run_id, "epoch": int(epoch), "trial_name": name}))
    if courier is not None:
        for outbox in courier.outboxes.values():
            outbox.save(checkpoint)


def read_trial_file(checkpoint: Path) -> dict[str, Any]:
    """The MLflow run id and epoch a trial checkpoint was written at."""
    return json.loads((Path(checkpoint) / TRIAL_FILE).read_text())
