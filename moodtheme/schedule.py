"""The optimiser and its schedule: Adam (or AMSGrad) first, then, from ``switch_epoch``,
SGD with Nesterov momentum and reloads of the best model (submission 2's recipe)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from moodtheme.config import OptimConfig


@dataclass(frozen=True)
class ScheduleStep:
    """What happens before an epoch: reload the best model, then train at ``lr`` (with a new
    SGD optimiser when ``switch`` is set, else the current one with its momentum)."""

    lr: float
    switch: bool


@dataclass(frozen=True)
class OptimizerSchedule:
    """Adam until ``switch_epoch``; then reload the best model and go on with SGD at
    ``sgd_lr``; every ``lr_drop_every`` epochs after that, reload it again and drop the lr to
    the next of ``lr_drops``. ``switch_epoch=None`` keeps the first optimiser throughout."""

    optimizer: str  # adam, amsgrad or sgd
    lr: float
    weight_decay: float
    switch_epoch: int | None
    sgd_lr: float
    sgd_momentum: float
    sgd_weight_decay: float
    lr_drop_every: int
    lr_drops: Sequence[float]

    @classmethod
    def from_config(cls, o: OptimConfig) -> OptimizerSchedule:
        return cls(
            o.optimizer,
            o.lr,
            o.weight_decay,
            o.switch_epoch,
            o.sgd_lr,
            o.sgd_momentum,
            o.sgd_weight_decay,
            o.lr_drop_every,
            tuple(o.lr_drops),
        )

    def first_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return self.sgd(params, self.lr)
        return torch.optim.Adam(
            params, lr=self.lr, weight_decay=self.weight_decay, amsgrad=self.optimizer == "amsgrad"
        )

    def sgd(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=self.sgd_momentum,
            nesterov=True,
            weight_decay=self.sgd_weight_decay,
        )

    def switched_after(self, epoch: int) -> bool:
        """Whether the optimiser trained at ``epoch`` (1-based) was the SGD of the switch."""
        return self.switch_epoch is not None and epoch > self.switch_epoch

    def step_before(self, epoch: int) -> ScheduleStep | None:
        """The switch or lr drop due before ``epoch`` (1-based), if any."""
        if not self.switched_after(epoch):
            return None
        since = epoch - 1 - self.switch_epoch
        if since == 0:
            return ScheduleStep(self.sgd_lr, switch=True)
        drop = since // self.lr_drop_every
        if since % self.lr_drop_every == 0 and 1 <= drop <= len(self.lr_drops):
            return ScheduleStep(self.lr_drops[drop - 1], switch=False)
        return None


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def plateau_scheduler(
    optimizer: torch.optim.Optimizer, o: OptimConfig
) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """Submission 1's: divide the lr when the validation loss stops falling."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=o.plateau_factor, patience=o.plateau_patience
    )
