"""nvidia-smi sampled in the background: GPU utilisation and memory over time, and the
memory each process holds on each GPU, so a phase's figures can be read off afterwards.

``utilization.gpu`` is the share of the sample period in which some kernel ran: a
launch-bound step keeps it high while most of the chip idles, so read it together with the
samples/s. A process's ``used_memory`` is what the driver sees: the CUDA context plus
PyTorch's cached blocks, i.e. what decides whether packed trials fit.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

GPU_QUERY = "index,uuid,utilization.gpu,memory.used,memory.total,clocks.sm"
APP_QUERY = "gpu_uuid,pid,used_memory"


@dataclass
class Sample:
    time: float
    gpus: list[dict[str, str]]
    apps: list[dict[str, str]]


@dataclass
class Monitor:
    """Samples every ``period`` seconds until :meth:`stop`; a no-op without nvidia-smi."""

    period: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    available: bool = field(default_factory=lambda: shutil.which("nvidia-smi") is not None)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Monitor:
        if self.available:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.time()
            gpus = query("--query-gpu=" + GPU_QUERY, GPU_QUERY)
            apps = query("--query-compute-apps=" + APP_QUERY, APP_QUERY)
            self.samples.append(Sample(started, gpus, apps))
            self._stop.wait(max(0.0, self.period - (time.time() - started)))

    def window(self, start: float, end: float) -> dict[str, float | int | None]:
        """Utilisation and memory of GPU 0 between two ``time.time()`` instants."""
        chosen = [s for s in self.samples if start <= s.time <= end and s.gpus]
        util = [_number(s.gpus[0].get("utilization.gpu")) for s in chosen]
        util = [u for u in util if u is not None]
        used = [_number(s.gpus[0].get("memory.used")) for s in chosen]
        used = [u for u in used if u is not None]
        return {
            "samples": len(chosen),
            "gpu_util_mean_pct": round(sum(util) / len(util), 1) if util else None,
            "gpu_util_max_pct": max(util) if util else None,
            "gpu_memory_used_max_mib": max(used) if used else None,
        }

    def peak_memory_by_pid(self, start: float, end: float) -> dict[int, float]:
        """Most memory each process held on any GPU between two instants (MiB)."""
        peaks: dict[int, float] = {}
        for s in self.samples:
            if start <= s.time <= end:
                for app in s.apps:
                    pid, used = _number(app.get("pid")), _number(app.get("used_memory"))
                    if pid is not None and used is not None:
                        peaks[int(pid)] = max(peaks.get(int(pid), 0.0), used)
        return peaks

    def gpu_index_of_pid(self) -> dict[int, str]:
        """The GPU index (by uuid) each process was seen on."""
        index_of = {g.get("uuid"): g.get("index") for s in self.samples for g in s.gpus}
        seen: dict[int, str] = {}
        for s in self.samples:
            for app in s.apps:
                pid = _number(app.get("pid"))
                if pid is not None:
                    seen[int(pid)] = str(index_of.get(app.get("gpu_uuid"), "?"))
        return seen

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["time", *GPU_QUERY.split(","), "apps(pid:MiB)"])
            for s in self.samples:
                apps = " ".join(f"{a.get('pid')}:{a.get('used_memory')}" for a in s.apps)
                for gpu in s.gpus:
                    out.writerow([f"{s.time:.2f}", *gpu.values(), apps])


def query(argument: str, fields: str) -> list[dict[str, str]]:
    try:
        done = subprocess.run(
            ["nvidia-smi", argument, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    names = fields.split(",")
    rows = csv.reader(io.StringIO(done.stdout), skipinitialspace=True)
    return [dict(zip(names, row, strict=False)) for row in rows if len(row) == len(names)]


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None
