"""Tracking off the critical path: a trial's MLflow events are journaled, then sent.

An :class:`Outbox` is one trial's journal: the events that make its child run (``open``:
find or create the run and log its params; ``running``; ``metrics`` of one step; ``tags``;
``finish`` with the trial's state), in order, and how many of them MLflow acknowledged. The
trial writes the journal into every checkpoint it reports (:data:`OUTBOX_FILE`), so a retry,
a resume, or the driver once the trial has ended finds what is still to send.

A :class:`Courier` sends outboxes from a background thread and waits for it at most a few
seconds, so a dead server or a locked sqlite store costs a trial or the driver at most that
per event; after a failure it stops trying for a while and the events wait in the journal.

Sending again is safe, so nothing is lost and nothing doubles: the run is found by its
``tune_trial_id`` tag before one is created; params and tags are the same values again; a
metric is sent with the timestamp it was journaled with, and MLflow's SQL store keeps one
row per (key, step, timestamp, value).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tune.tracking import Tracker, bounded_http

OUTBOX_FILE = "mlflow_outbox.json"
WAIT_S = 3.0  # the most a trial or the driver waits for MLflow per event
PAUSE_S = 20.0  # after a failed delivery, events only go to the journal for this long

_log = logging.getLogger(__name__)


class Outbox:
    """One trial's MLflow events and how many of them MLflow has acknowledged."""

    def __init__(
        self,
        trial_id: str,
        events: Iterable[Mapping[str, Any]] = (),
        acked: int = 0,
        run_id: str | None = None,
    ) -> None:
        self.trial_id = trial_id
        self.events: list[dict[str, Any]] = [dict(e) for e in events]
        self.acked = acked
        self.run_id = run_id
        self._lock = threading.Lock()

    # -- journal

    def open(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        always_params: bool = True,
    ) -> None:
        """The trial's child run: found again, or created with ``tags``; ``params`` logged
        (on a run found again too, unless ``always_params`` is False)."""
        params = {str(k): v for k, v in params.items()}
        self._add(kind="open", name=name, params=params, tags=dict(tags),
                  always_params=always_params)  # fmt: skip

    def running(self) -> None:
        self._add(kind="running")

    def metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        values = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._add(kind="metrics", step=int(step), ts=int(time.time() * 1000), metrics=values)

    def tags(self, tags: Mapping[str, Any]) -> None:
        self._add(kind="tags", tags={k: str(v) for k, v in tags.items()})

    def finish(self, state: str) -> None:
        self._add(kind="finish", state=state)

    def _add(self, **event: Any) -> None:
        with self._lock:
            self.events.append(event)

    @property
    def pending(self) -> int:
        return len(self.events) - self.acked

    # -- files

    def to_json(self) -> str:
        with self._lock:
            record = {"trial_id": self.trial_id, "run_id": self.run_id, "acked": self.acked,
                      "events": self.events}  # fmt: skip
            return json.dumps(record)

    def save(self, folder: Path) -> None:
        path = Path(folder) / OUTBOX_FILE
        path.unlink(missing_ok=True)  # it may be a hard link into another checkpoint
        path.write_text(self.to_json())

    @classmethod
    def from_json(cls, text: str) -> Outbox:
        record = json.loads(text)
        return cls(record["trial_id"], record["events"], int(record["acked"]), record["run_id"])

    # -- delivery (in the courier's thread)

    def deliver(self, tracker: Tracker, parent_id: str) -> None:
        """Send every event not yet acknowledged, in order; raises on the first failure."""
        while self.acked < len(self.events):
            event = self.events[self.acked]
            self._send(tracker, parent_id, event)
            with self._lock:
                self.acked += 1

    def _send(self, tracker: Tracker, parent_id: str, event: Mapping[str, Any]) -> None:
        kind = event["kind"]
        if kind == "open":
            found = tracker.find_child(parent_id, self.trial_id, attempts=1)
            if found is None or event.get("always_params", True):
                self.run_id = found or tracker.create_child(
                    parent_id, self.trial_id, event["name"], event["tags"], attempts=1
                )
                tracker.log_params(self.run_id, event["params"], attempts=1)
            else:
                self.run_id = found
            return
        if self.run_id is None:  # a journal without its open event (not written by a trial)
            self.run_id = tracker.find_child(parent_id, self.trial_id, attempts=1)
            if self.run_id is None:
                self.run_id = tracker.create_child(
                    parent_id, self.trial_id, self.trial_id, {}, attempts=1
                )
        if kind == "running":
            tracker.reopen(self.run_id, attempts=1)
        elif kind == "metrics":
            tracker.log_metrics(
                self.run_id, event["metrics"], event["step"], timestamp=event["ts"], attempts=1
            )
        elif kind == "tags":
            tracker.set_tags(self.run_id, event["tags"], attempts=1)
        elif kind == "finish":
            tracker.finish(self.run_id, event["state"], attempts=1)
        else:
            raise ValueError(f"unknown outbox event {kind!r}")


def read_outbox(checkpoint: str | Path | None) -> Outbox | None:
    """The journal a trial left in a checkpoint (a folder, or a URI such as s3://...)."""
    if not checkpoint:
        return None
    where = f"{str(checkpoint).rstrip('/')}/{OUTBOX_FILE}"
    try:
        if "://" in where:
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(where)
            with fs.open_input_stream(path) as f:
                return Outbox.from_json(f.read().decode())
        return Outbox.from_json(Path(where).read_text())
    except (OSError, ValueError, KeyError):
        return None


class Courier:
    """Sends outboxes from one background thread; callers wait at most ``wait_s``."""

    def __init__(self, tracker: Tracker, parent_id: str, pause_s: float = PAUSE_S) -> None:
        self.tracker = tracker
        self.parent_id = parent_id
        self.pause_s = pause_s
        self.outboxes: dict[str, Outbox] = {}
        self.failure: str | None = None
        self._warned = False
        self._failed_at = self._started_at = -float("inf")
        self._thread: threading.Thread | None = None

    def add(self, outbox: Outbox) -> Outbox:
        self.outboxes[outbox.trial_id] = outbox
        return outbox

    @property
    def pending(self) -> int:
        return sum(o.pending for o in self.outboxes.values())

    def send(self, wait_s: float = WAIT_S, force: bool = False) -> bool:
        """Start a delivery unless one is under way or MLflow failed less than ``pause_s``
        ago (``force`` ignores the pause); wait for it at most ``wait_s``. True when nothing
        is left to send."""
        if self.pending == 0:
            return True
        now = time.monotonic()
        busy = self._thread is not None and self._thread.is_alive()
        if busy and now - self._started_at > wait_s:  # stuck on MLflow: do not wait again
            return False
        if not busy and (force or now - self._failed_at >= self.pause_s):
            self._start()
        if self._thread is not None:
            self._thread.join(max(0.0, wait_s - (time.monotonic() - self._started_at)))
        if self._thread is not None and self._thread.is_alive():
            self.failure = self.failure or f"no answer in {wait_s:g} s"
        return self.pending == 0

    def drain(self, wait_s: float = WAIT_S * 3) -> bool:
        """Send everything, however long it takes while MLflow keeps taking events; give
        up once ``wait_s`` passes without progress. True when nothing is left."""
        if self.pending == 0:
            return True
        if self._thread is None or not self._thread.is_alive():
            self._start()
        thread, left = self._thread, self.pending
        while thread.is_alive():
            thread.join(wait_s)
            if thread.is_alive() and self.pending >= left:
                self.failure = self.failure or f"no answer in {wait_s:g} s"
                break
            left = self.pending
        return self.pending == 0

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._deliver, daemon=True, name="mlflow")
        self._started_at = time.monotonic()
        self._thread.start()

    def _deliver(self) -> None:
        self.failure = None
        try:
            with bounded_http():
                for outbox in list(self.outboxes.values()):
                    outbox.deliver(self.tracker, self.parent_id)
        except Exception as err:  # noqa: BLE001 - any MLflow failure: the journal keeps it
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            if not self._warned:
                self._warned = True
                _log.warning(
                    "MLflow at %s did not take the tracking events (%s); they are kept and "
                    "sent when it answers again",
                    self.tracker.uri,
                    first,
                )
            self.failure = first
            self._failed_at = time.monotonic()


def attempt(func: Any, *args: Any, wait_s: float = WAIT_S * 2) -> bool:
    """Run one MLflow call in the background, wait for it at most ``wait_s``; False (and a
    warning) when it failed or is still waiting on MLflow. For the search's own run, whose
    artifacts a resume logs again."""
    outcome: dict[str, BaseException | None] = {}

    def call() -> None:
        try:
            with bounded_http():
                func(*args)
            outcome["error"] = None
        except Exception as err:  # noqa: BLE001
            outcome["error"] = err

    thread = threading.Thread(target=call, daemon=True, name="mlflow")
    thread.start()
    thread.join(wait_s)
    error = outcome.get("error", TimeoutError(f"no answer in {wait_s:g} s"))
    if error is not None:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        _log.warning("MLflow call %s failed (%s)", getattr(func, "__name__", func), first)
        return False
    return True


def settle(
    courier: Courier,
    trial_id: str,
    name: str,
    checkpoint: str | Path | None,
    state: str,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Outbox:
    """Queue an ended trial's remaining events: what its last checkpoint's outbox still
    holds, then ``tags`` and its end (``state``; ``unfinished`` ends nothing). A trial that
    left no journal gets its run found, or created with ``params``. Sending is left to the
    caller (:meth:`Courier.send`)."""
    outbox = read_outbox(checkpoint)
    if outbox is None:
        outbox = Outbox(trial_id)
        outbox.open(name, params or {}, {}, always_params=False)
    if tags:
        outbox.tags(tags)
    if state != "unfinished":
        outbox.finish(state)
    return courier.add(outbox)
