"""A loaded, checked search space at one budget: the define-by-run function and the
overrides of each trial."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moodtheme.config import PRESETS, Config, build_config, flatten
from tune.space import drawable
from tune.space.errors import validated
from tune.space.fields import OVERRIDES
from tune.space.params import Derived, Param
from tune.space.schema import Asha, Resources, SamplerSpec

# Past this many corner combinations, only each parameter's own values are checked.
MAX_CORNER_COMBINATIONS = 4096


@dataclass(frozen=True)
class SearchSpace:
    """A validated space at one budget. ``suggest`` is the define-by-run function."""

    name: str
    source: Path
    budget: str
    preset: str
    overrides: Mapping[str, Any]
    params: tuple[Param, ...]
    derived: tuple[Derived, ...]
    metric: str
    mode: str
    num_samples: int
    max_concurrent_trials: int
    resources: Resources
    asha: Asha
    sampler: SamplerSpec
    description: str = ""
    # Extra seeds of the best configuration trained after the search, to measure how much the
    # metric moves between seeds and so whether the trials really differ (tune.seed_noise).
    noise_seeds: int = 0

    def fixed_overrides(self) -> dict[str, Any]:
        """Overrides every trial shares: the file's, plus the epoch budget."""
        return {**self.overrides, "optim.epochs": self.asha.max_t}

    def fixed_values(self) -> dict[str, Any]:
        """Every config key's value before sampling (dotted keys; not validated on its own,
        since a searched key's preset value may not fit the budget, e.g. the switch epoch)."""
        return {**Config().flat(), **flatten(PRESETS[self.preset]()), **self.fixed_overrides()}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: sample the active parameters; return the derived values.

        Optuna records the sampled parameters itself; the returned dict holds only what is
        computed from them, so Ray merges both into the trial's overrides.
        """
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.active(chosen):
                chosen[param.key] = param.suggest(trial)
        return self.derive(chosen)

    def realize(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """What :meth:`suggest` samples if the sampler proposes ``wanted`` (each other
        parameter at its first value): the active parameters only."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.active(chosen):
                chosen[param.key] = wanted.get(param.key, param.corners()[0])
        return chosen

    def corner_combinations(self) -> Iterator[dict[str, Any]]:
        """Every combination of the parameters' corners that a trial can draw, each once;
        nothing when there are more than MAX_CORNER_COMBINATIONS."""
        corners = [p.corners() for p in self.params]
        if math.prod(len(c) for c in corners) > MAX_CORNER_COMBINATIONS:
            return
        seen = set()
        for values in itertools.product(*corners):
            chosen = self.realize({p.key: v for p, v in zip(self.params, values, strict=True)})
            if (marker := tuple(chosen.items())) not in seen:
                seen.add(marker)
                yield chosen

    def derive(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        base = self.fixed_values() if self.derived else {}
        values = {**base, **chosen}
        return {d.key: int(values[d.divide]) // int(values[d.by]) for d in self.derived}

    def trial_overrides(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        """All overrides of one trial: the shared ones, the sampled ones, the derived ones."""
        return {**self.fixed_overrides(), **chosen, **self.derive(chosen)}

    def trial_config(self, chosen: Mapping[str, Any]) -> Config:
        return build_config(self.preset, self.trial_overrides(chosen))

    def example_overrides(self) -> dict[str, Any]:
        """One trial's sampled and derived values (the first corner of the space)."""
        chosen = self.realize({})
        return {**chosen, **self.derive(chosen)}

    def make_sampler(self) -> Any:
        import optuna

        if self.sampler.name == "random":
            return optuna.samplers.RandomSampler(seed=self.sampler.seed)
        return optuna.samplers.TPESampler(seed=self.sampler.seed)

    def with_overrides(self, extra: Mapping[str, Any]) -> SearchSpace:
        """A copy with more fixed overrides (``--data``, ``--set``), validated again."""
        checked = validated(self.source, OVERRIDES, dict(extra), prefix=("overrides",))
        space = replace(self, overrides={**self.overrides, **checked})
        drawable.check(space)
        return space
