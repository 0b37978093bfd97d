"""Which weights a run keeps: the best epoch by one monitored score (joint), and, for
per-class early stopping, each tag's epoch of lowest validation loss (submission 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class BestEpoch:
    """The epoch with the best ``metric`` so far; stop after ``patience`` epochs without a
    better one (None: never)."""

    metric: str
    higher_is_better: bool
    patience: int | None = None
    best_score: float = -math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record an epoch's metrics; True when it is the new best."""
        value = metrics[self.metric]
        score = value if self.higher_is_better else -value
        if score > self.best_score:
            self.best_score, self.best_epoch, self.epochs_since_best = score, epoch, 0
            return True
        self.epochs_since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.epochs_since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in asdict(self).items()
            if k not in ("metric", "higher_is_better", "patience")
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.epochs_since_best = int(state["epochs_since_best"])


@dataclass
class PerTagBestEpoch:
    """Each tag's epoch of lowest validation loss: per-class early stopping keeps one weights
    file per epoch that is still some tag's best, and predicts each tag from its own."""

    n_tags: int
    best_loss: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.best_loss = self.best_loss or [math.inf] * self.n_tags
        self.best_epoch = self.best_epoch or [0] * self.n_tags

    def update(self, epoch: int, losses: np.ndarray) -> bool:
        """Record an epoch's per-tag losses; True when some tag is best at this epoch."""
        improved = losses < np.asarray(self.best_loss)
        if not improved.any():
            return False
        self.best_loss = np.where(improved, losses, self.best_loss).tolist()
        self.best_epoch = np.where(improved, epoch, self.best_epoch).tolist()
        return True

    def kept_epochs(self) -> list[int]:
        return sorted(set(self.best_epoch))

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": list(self.best_loss), "best_epoch": list(self.best_epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_loss = [float(v) for v in state["best_loss"]]
        self.best_epoch = [int(v) for v in state["best_epoch"]]
