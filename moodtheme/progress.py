"""A one-line progress display shared by downloads, dataset checks and training epochs, and
the training run's log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """A single self-overwriting status line on stderr, throttled so it costs nothing."""

    def __init__(
        self,
        total: float | None,
        label: str = "",
        unit: str = "",
        done: float = 0.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = self.initial = done  # a resumed download's bytes do not count in the rate
        self.start = time.monotonic()
        self._last = 0.0
        # On a terminal redraw ~10 times a second; in a log, one line every ~10 seconds.
        self._every = 0.1 if self.stream.isatty() else 10.0
        self._end = "\r" if self.stream.isatty() else "\n"

    def _fmt(self, value: float) -> str:
        if self.unit != "B":
            return f"{value:,.0f}"
        for prefix in ("", "k", "M", "G"):
            if value < 1000 or prefix == "G":
                return f"{value:.1f} {prefix}B"
            value /= 1000
        raise AssertionError  # unreachable

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        unit = "" if self.unit == "B" else f" {self.unit}"
        text = f"{self.label} {self._fmt(self.done)}"
        if self.total:
            text += f"/{self._fmt(self.total)}{unit} {100 * self.done / self.total:5.1f}%"
        else:
            text += unit
        return f"{text}  {self._fmt((self.done - self.initial) / elapsed)}{unit}/s"

    def update(self, amount: float, suffix: str = "") -> None:
        self.done += amount
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self.stream.write(self.line() + suffix + self._end)
            self.stream.flush()

    def close(self, suffix: str = "") -> None:
        self.stream.write(self.line() + suffix + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Remove the line on a terminal (when a summary line replaces it)."""
        if self.stream.isatty():
            self.stream.write("\r\033[K")
            self.stream.flush()


class RunLog:
    """What a training run prints: one line per event and epoch, a progress bar per epoch;
    silent when ``enabled`` is False (trials in a search)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def bar(self, total: int, label: str) -> Progress | None:
        return Progress(total, label, "batches") if self.enabled else None

    def epoch_summary(self, epoch: int, epochs: int, m: dict[str, float], best: bool) -> None:
        self(
            f"epoch {epoch:3d}/{epochs}  train_loss {m['train_loss']:.4f}  "
            f"val_loss {m['val_loss']:.4f}  val ROC-AUC {m['val_roc_auc_macro']:.4f}  "
            f"PR-AUC {m['val_pr_auc_macro']:.4f}  lr {m['lr']:.1e}  "
            f"{m['epoch_seconds']:.1f}s{'  *best' if best else ''}"
        )
