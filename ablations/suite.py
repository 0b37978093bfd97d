"""The suite's plan: which arms (distinct configs) and trials (arm x seed) a selection of
ablations (`ablations.catalog`) needs.

Two ablations whose configs coincide share an arm, so a common reference is trained once per
seed; reference and variant use the same seeds, hence the same data order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ablations.catalog import (
    ABLATIONS,
    BUDGET_SETTINGS,
    BUDGETS,
    CONTROLS,
    REFERENCES,
    REPLICATE_SEED_OFFSET,
    Ablation,
    Overrides,
    Reference,
    SuiteError,
    describe,
    format_overrides,
    select,
)
from moodtheme.config import Config, ConfigError, build_config, with_overrides

__all__ = [
    "ABLATIONS",
    "BUDGETS",
    "BUDGET_SETTINGS",
    "CONTROLS",
    "REFERENCES",
    "Ablation",
    "Arm",
    "Comparison",
    "Plan",
    "SuiteError",
    "config_key",
    "describe",
    "format_overrides",
    "plan_suite",
    "probe_model",
    "reference_config",
    "select",
]


# ----------------------------------------------------------------------------- planning


@dataclass
class Arm:
    """One distinct config of the suite, trained once per seed."""

    name: str
    config: Config
    roles: list[str] = field(default_factory=list)  # "self-attention:variant", ...
    seed_offset: int = 0  # seed i trains with run.seed seed_offset + i (an A/A replicate)

    @property
    def key(self) -> str:
        return config_key(self.config) + (f"+{self.seed_offset}" if self.seed_offset else "")


@dataclass
class Comparison:
    """An ablation resolved to its two arms, or the reason it cannot run."""

    ablation: Ablation
    reference: str | None = None
    variant: str | None = None
    skipped: str | None = None


@dataclass
class Plan:
    budget: str
    seeds: list[int]
    arms: dict[str, Arm]
    comparisons: list[Comparison]

    def trials(self, counts: Mapping[str, int] | None = None) -> list[tuple[str, int]]:
        """(arm name, seed) for every arm some comparison still needs. ``counts`` gives each
        ablation's number of seeds (adaptive seeding; default: all of ``seeds``); an arm
        shared by several ablations is trained as far as the most-seeded one needs."""
        needed: dict[str, int] = {}
        for c in self.comparisons:
            if c.skipped:
                continue
            n = len(self.seeds) if counts is None else counts.get(c.ablation.name, 0)
            for arm in (c.reference, c.variant):
                assert arm is not None
                needed[arm] = max(needed.get(arm, 0), n)
        return [(name, s) for name in self.arms for s in self.seeds[: needed.get(name, 0)]]

    def run_seed(self, arm: str, seed: int) -> int:
        """The ``run.seed`` that seed ``seed`` of ``arm`` trains with."""
        return self.arms[arm].seed_offset + seed

    def trial_config(self, arm: str, seed: int) -> Config:
        return with_overrides(self.arms[arm].config, {"run.seed": self.run_seed(arm, seed)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "seeds": self.seeds,
            "arms": {
                n: {"roles": a.roles, "seed_offset": a.seed_offset, "config": a.config.to_dict()}
                for n, a in self.arms.items()
            },
            "comparisons": [
                {
                    "ablation": c.ablation.name,
                    "reference": c.reference,
                    "variant": c.variant,
                    "skipped": c.skipped,
                }
                for c in self.comparisons
            ],
        }


def config_key(config: Config) -> str:
    """A short hash of everything in ``config`` but the seed: equal keys, same arm."""
    tree = config.to_dict()
    tree["run"] = {k: v for k, v in tree["run"].items() if k != "seed"}
    tree.pop("preset", None)
    return hashlib.sha1(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:10]


def reference_config(
    reference: Reference, budget: str, base: Overrides, extra: Overrides | None = None
) -> Config:
    """The reference at ``budget``: its preset, the budget's settings, its own overrides, an
    ablation's ``extra`` budget settings, then the run-wide ``base`` overrides (``--set``)."""
    config = build_config(reference.presets[budget], BUDGET_SETTINGS[budget])
    for overrides in (reference.overrides.get(budget, {}), extra or {}, base):
        if overrides:
            config = with_overrides(config, dict(overrides))
    return config


Probe = Callable[[Config], "str | None"]


class _Arms:
    """The plan's arms: equal configs share one arm, and an arm that is a reference's plain
    recipe carries the reference's name, whichever role (say, a variant that turns a component
    off) first needs it."""

    def __init__(self, plain: Mapping[str, str]) -> None:
        self.plain = plain  # config key -> reference name
        self.arms: dict[str, Arm] = {}
        self.by_key: dict[str, str] = {}

    def arm(self, config: Config, name: str, role: str, seed_offset: int = 0) -> str:
        key = Arm(name, config, seed_offset=seed_offset).key
        name = self.plain.get(key, name) if not seed_offset else name
        if key not in self.by_key:
            if name in self.arms:  # a name already taken by a different config
                name = f"{name}-{key[:6]}"
            self.arms[name] = Arm(name, config, seed_offset=seed_offset)
            self.by_key[key] = name
        self.arms[self.by_key[key]].roles.append(role)
        return self.by_key[key]


def _arm_configs(
    ablation: Ablation, budget: str, base: Overrides, probe: Probe | None, probed: dict
) -> tuple[Config, Config] | str:
    """The ablation's reference and variant configs, or why the comparison cannot run."""
    reference = REFERENCES[ablation.reference]
    # A base override that breaks a reference is the user's to fix: ConfigError goes up.
    shared = reference_config(reference, budget, base, ablation.budget_changes(budget))
    try:
        ref_config = with_overrides(shared, ablation.reference_changes(budget))
        var_config = with_overrides(ref_config, ablation.variant_overrides(budget))
    except ConfigError as err:
        return f"invalid config: {err}"
    if config_key(ref_config) == config_key(var_config) and not ablation.replicate:
        return (
            "the variant equals its reference under these settings "
            f"({format_overrides(ablation.variant_overrides(budget))} changes nothing)"
        )
    reasons = []
    for config in (ref_config, var_config) if probe is not None else ():
        key = config_key(config)
        if key not in probed:
            probed[key] = probe(config)
        if probed[key]:
            reasons.append(probed[key])
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    return ref_config, var_config


def plan_suite(
    ablations: Sequence[Ablation],
    budget: str,
    seeds: int,
    base: Overrides | None = None,
    probe: Probe | None = None,
) -> Plan:
    """Arms and comparisons for ``ablations`` at ``budget``, seeds ``0..seeds-1``.

    ``base`` holds run-wide overrides (data root, budget settings, ``--set``), applied to every
    reference before the ablation's own overrides. ``probe(config)`` returns why a config cannot
    be built here (e.g. ImageNet weights missing offline) or None; a comparison whose reference
    or variant fails the probe is skipped with that reason, and the rest still run.
    """
    if budget not in BUDGETS:
        raise SuiteError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if seeds < 1:
        raise SuiteError(f"--seeds must be at least 1, not {seeds}")
    base = dict(base or {})
    arms = _Arms(
        {
            config_key(reference_config(REFERENCES[a.reference], budget, base)): a.reference
            for a in ablations
        }
    )
    probed: dict[str, str | None] = {}
    comparisons = []
    for ablation in ablations:
        configs = _arm_configs(ablation, budget, base, probe, probed)
        if isinstance(configs, str):
            comparisons.append(Comparison(ablation, skipped=configs))
            continue
        ref_config, var_config = configs
        offset = REPLICATE_SEED_OFFSET if ablation.replicate else 0
        comparisons.append(
            Comparison(
                ablation,
                reference=arms.arm(
                    ref_config, f"{ablation.name}-reference", f"{ablation.name}:reference"
                ),
                variant=arms.arm(var_config, ablation.name, f"{ablation.name}:variant", offset),
            )
        )
    return Plan(budget, list(range(seeds)), arms.arms, comparisons)


def probe_model(config: Config) -> str | None:
    """Why ``config``'s model cannot be built on this machine, or None when it can.

    Builds the model once on the CPU, which catches unknown backbones and, above all, ImageNet
    weights that are neither cached nor downloadable.
    """
    from moodtheme.models import PretrainedWeightsError, build_model

    try:
        build_model(config.model, config.data.input_frames, config.data.n_mels)
    except (PretrainedWeightsError, ConfigError) as err:
        return f"model.pretrained={config.model.pretrained}, model.backbone={config.model.backbone}: {err}"
    return None
