"""A searched parameter and a derived value, as a loaded space holds them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution; ``when`` makes it conditional."""

    key: str
    type: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, chosen: Mapping[str, Any]) -> bool:
        return all(chosen.get(key) in allowed for key, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (or Ray's captor of one) for this parameter's value."""
        if self.type == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, self.low, self.high, step=self.step, log=self.type == "loguniform"
        )

    def corners(self) -> list[Any]:
        """The values that bound this parameter: every choice, or both ends of a range."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return sorted({int(self.low), int(self.high)})
        return [self.low, self.high]

    def drawable(self) -> list[Any]:
        """Every value a trial can draw: each choice and each integer of an int range (the
        loader caps their number), or both ends of a float range."""
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        return self.corners()


@dataclass(frozen=True)
class Derived:
    """``key = divide // by``: e.g. segment length at a fixed total input length."""

    key: str
    divide: str
    by: str
