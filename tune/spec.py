"""What a trial is, as the rest of the project sees it: a name, dotted config overrides and
MLflow tags. The one place that knows how a trial travels through Ray Tune's config.

A search's trial arrives as Optuna's sampled overrides themselves; a fixed list's trial
(`tune.search.run_trials`, the ablation suite) as ``{"trial": {name, overrides, tags}}``, one
entry of a grid. :func:`spec_of` reads either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WRAPPER = "trial"  # the Tune config key of a fixed list's trial


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a name, dotted config overrides, MLflow tags. A search's trials have no
    name of their own (Tune names them)."""

    name: str
    overrides: Mapping[str, Any]
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_tune(self) -> dict[str, Any]:
        """This trial as one entry of a Tune grid (under :data:`WRAPPER`)."""
        return {"name": self.name, "overrides": dict(self.overrides), "tags": dict(self.tags)}


def spec_of(config: Mapping[str, Any]) -> TrialSpec:
    """The trial a Tune config describes: a fixed list's wrapped entry, or a search's sampled
    overrides (unnamed)."""
    wrapped = config.get(WRAPPER)
    if isinstance(wrapped, Mapping):
        return TrialSpec(
            str(wrapped["name"]), dict(wrapped["overrides"]), dict(wrapped.get("tags", {}))
        )
    return TrialSpec("", dict(config))
