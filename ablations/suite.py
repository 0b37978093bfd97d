"""The leave-one-component-out suite: references, ablations and the trials they need.

An :class:`Ablation` is a named config override of a :class:`Reference`: the reference holds
every component, the variant takes one out (or swaps it). Most ablations share the
submission 2 reference; per-class early stopping belongs to submission 1, and ImageNet
pretraining needs a reference that uses it, so each ablation names its own.

:func:`plan_suite` turns a selection of ablations into *arms* (distinct configs) and trials
(arm x seed). Two ablations whose configs coincide share an arm, so the common reference is
trained once per seed; reference and variant use the same seeds, hence the same data order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moodtheme.config import Config, ConfigError, build_config, with_overrides

Overrides = Mapping[str, Any]
BUDGETS = ("quick", "full")


class SuiteError(ValueError):
    """A user-facing mistake in the ablation selection; the message lists what is valid."""


@dataclass(frozen=True)
class Reference:
    """A full recipe, per budget: the preset it starts from and the overrides on top."""

    name: str
    description: str
    presets: Mapping[str, str]
    overrides: Mapping[str, Overrides] = field(default_factory=dict)


@dataclass(frozen=True)
class Ablation:
    """One component taken out of (or swapped in) its reference.

    ``reference_overrides`` make sure the reference really has the component (most presets
    already do); ``variant`` is what changes. The ``quick_*`` fields, when given, replace them
    at the quick budget (a CPU-sized stand-in for a paper-scale component).
    """

    name: str
    component: str
    change: str
    reference: str
    variant: Overrides
    reference_overrides: Overrides = field(default_factory=dict)
    quick_variant: Overrides | None = None
    quick_reference_overrides: Overrides | None = None
    replicate: bool = False  # an A/A control: the variant is the reference, other seeds

    def variant_overrides(self, budget: str) -> Overrides:
        if budget == "quick" and self.quick_variant is not None:
            return self.quick_variant
        return self.variant

    def reference_changes(self, budget: str) -> Overrides:
        if budget == "quick" and self.quick_reference_overrides is not None:
            return self.quick_reference_overrides
        return self.reference_overrides


# The submission 1 recipe at the quick budget: the quick preset's sizes, submission 1's
# whole-input model, AMSGrad with reduce-on-plateau and per-class early stopping on val loss.
_QUICK_SUBMISSION1: Overrides = {
    "model.arch": "whole",
    "model.attention.enabled": False,
    "optim.optimizer": "amsgrad",
    "optim.switch_epoch": None,
    "optim.scheduler": "plateau",
    "early_stopping.mode": "per_class",
    "early_stopping.monitor": "val_loss",
}

# Run-wide settings of each budget, applied under every reference's own overrides. The quick
# budget is sized so that `all` (9 arms x 3 seeds = 27 one-CPU trials) finishes well under 30
# minutes on 2 CPU cores: 3 epochs (the switch to SGD before the last, so the optimizer-switch
# ablation changes something) over at most 320 tracks per split (docs/ablations.md).
BUDGET_SETTINGS: dict[str, Overrides] = {
    "quick": {"optim.epochs": 3, "optim.switch_epoch": 2, "data.limit_tracks": 320},
    "full": {},
}

REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        Reference(
            "submission2",
            "Submission 2: MobileNetV2 over segments, 2-layer self-attention plus the "
            "segment-average head; Adam, then SGD with reloads of the best model.",
            presets={"quick": "quick", "full": "submission2"},
        ),
        Reference(
            "submission1",
            "Submission 1: MobileNetV2 on the whole input; AMSGrad, reduce-on-plateau, "
            "per-class early stopping on validation loss.",
            presets={"quick": "quick", "full": "submission1"},
            overrides={"quick": _QUICK_SUBMISSION1},
        ),
    )
}

ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "self-attention",
            component="self-attention",
            change="self-attention off: only submission 2's segment-average head is left",
            reference="submission2",
            # The authors kept the best attention head; without one, the remaining head.
            variant={"model.attention.enabled": False, "early_stopping.head": "combined"},
        ),
        Ablation(
            "mixup",
            component="mixup",
            change="mixup off (alpha = 0)",
            reference="submission2",
            variant={"augment.mixup_alpha": 0.0},
        ),
        Ablation(
            "specaugment",
            component="SpecAugment",
            change="SpecAugment off (no time or frequency masks)",
            reference="submission2",
            variant={"augment.specaugment_p": 0.0},
        ),
        Ablation(
            "random-crop",
            component="random crop/scale",
            change="random crop and random resized crop off (the centre crop instead)",
            reference="submission2",
            # The authors' submission 2 reads every track's first frames, so it never crops at
            # random: the reference takes random crops, as submission 1 and the paper do.
            reference_overrides={"data.window": "random"},
            variant={"data.window": "centre", "augment.resized_crop_p": 0.0},
        ),
        Ablation(
            "eval-augmentation",
            component="augmented evaluation inputs",
            change="clean validation and test inputs instead of the training augmentation "
            "(the authors' submission 2 augmented both)",
            reference="submission2",
            reference_overrides={"augment.augment_eval": True},
            variant={"augment.augment_eval": False},
        ),
        Ablation(
            "per-class-early-stopping",
            component="per-class early stopping",
            change="joint early stopping (one best epoch for all tags) on the submission 1 recipe",
            reference="submission1",
            reference_overrides={"early_stopping.mode": "per_class"},
            variant={"early_stopping.mode": "joint"},
        ),
        Ablation(
            "backbone",
            component="MobileNetV2 backbone",
            change="ResNeXt-50 32x4d backbone instead of MobileNetV2 "
            "(quick budget: resnext_tiny_shallow, the same grouped-convolution blocks, one per stage)",
            reference="submission2",
            reference_overrides={"model.backbone": "mobilenet_v2"},
            variant={"model.backbone": "resnext50_32x4d", "model.width_mult": 1.0},
            quick_variant={"model.backbone": "resnext_tiny_shallow", "model.width_mult": 1.0},
        ),
        Ablation(
            "optimizer-switch",
            component="Adam-to-SGD switch",
            change="Adam throughout, no switch to SGD",
            reference="submission2",
            variant={"optim.switch_epoch": None},
        ),
        Ablation(
            "imagenet-pretraining",
            component="ImageNet pretraining",
            change="backbone trained from scratch instead of from ImageNet weights",
            reference="submission2",
            reference_overrides={"model.pretrained": "imagenet"},
            variant={"model.pretrained": "none"},
            # ImageNet weights exist for the full-width MobileNetV2 only.
            quick_reference_overrides={"model.pretrained": "imagenet", "model.width_mult": 1.0},
        ),
    )
}


# A calibration control, not in `all`: the reference under another name, from other seeds
# (the same seeds would reproduce it exactly on a CPU): a true null with all of training's
# noise, on which the suite must call no effect (tests/test_ablations_aa.py).
REPLICATE_SEED_OFFSET = 1000
CONTROLS: dict[str, Ablation] = {
    "a-a-control": Ablation(
        "a-a-control",
        component="the name alone (A/A control)",
        change="the reference itself under another name, trained from other seeds "
        f"(run.seed {REPLICATE_SEED_OFFSET} + i for seed i): any effect found is a false one",
        reference="submission2",
        variant={},
        replicate=True,
    )
}


def select(names: Iterable[str]) -> list[Ablation]:
    """The ablations ``names`` asks for, in suite order, then the controls asked for;
    ``all`` means every ablation (not the controls)."""
    names = list(names)
    if not names:
        raise SuiteError(f"name at least one ablation, or 'all'. {_valid_names()}")
    unknown = [n for n in names if n != "all" and n not in ABLATIONS and n not in CONTROLS]
    if unknown:
        raise SuiteError(f"unknown ablation {', '.join(map(repr, unknown))}. {_valid_names()}")
    wanted = set(ABLATIONS) | set(names) if "all" in names else set(names)
    return [a for name, a in {**ABLATIONS, **CONTROLS}.items() if name in wanted]


def _valid_names() -> str:
    return (
        f"Valid names: all, {', '.join(ABLATIONS)}, and the control {', '.join(CONTROLS)} "
        "(see python -m ablations.run --list)."
    )


def describe(budget: str = "quick") -> str:
    """The suite as text, for ``--list``: each ablation, its reference and its overrides."""
    lines = []
    for a in (*ABLATIONS.values(), *CONTROLS.values()):
        lines.append(f"{a.name:<26} {a.change}")
        changes = a.reference_changes(budget)
        ref = a.reference + (f" + {format_overrides(changes)}" if changes else "")
        lines.append(f"{'':<26} reference: {ref}")
        lines.append(f"{'':<26} variant:   {format_overrides(a.variant_overrides(budget))}")
    lines.append("")
    for r in REFERENCES.values():
        lines.append(f"reference {r.name}: {r.description}")
    return "\n".join(lines)


def format_overrides(overrides: Overrides) -> str:
    """``{"optim.lr": 0.001}`` -> ``optim.lr=0.001``, values as JSON (``null``, ``false``)."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


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


def reference_config(reference: Reference, budget: str, base: Overrides) -> Config:
    """The reference at ``budget``: its preset, the budget's settings, its own overrides,
    then the run-wide ``base`` overrides."""
    config = build_config(reference.presets[budget], BUDGET_SETTINGS[budget])
    for overrides in (reference.overrides.get(budget, {}), base):
        if overrides:
            config = with_overrides(config, dict(overrides))
    return config


Probe = Callable[[Config], "str | None"]


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
    arms: dict[str, Arm] = {}
    by_key: dict[str, str] = {}
    probed: dict[str, str | None] = {}
    comparisons = []

    def arm_for(config: Config, name: str, role: str, seed_offset: int = 0) -> str:
        key = Arm(name, config, seed_offset=seed_offset).key
        if key not in by_key:
            if name in arms:  # a name already taken by a different config
                name = f"{name}-{key[:6]}"
            arms[name] = Arm(name, config, seed_offset=seed_offset)
            by_key[key] = name
        arms[by_key[key]].roles.append(role)
        return by_key[key]

    for ablation in ablations:
        reference = REFERENCES[ablation.reference]
        # A base override that breaks a reference is the user's to fix: ConfigError goes up.
        shared = reference_config(reference, budget, base)
        try:
            ref_config = with_overrides(shared, ablation.reference_changes(budget))
            same = config_key(ref_config) == config_key(shared)
            ref_name = reference.name if same else f"{ablation.name}-reference"
            var_config = with_overrides(ref_config, ablation.variant_overrides(budget))
        except ConfigError as err:
            comparisons.append(Comparison(ablation, skipped=f"invalid config: {err}"))
            continue
        if config_key(ref_config) == config_key(var_config) and not ablation.replicate:
            comparisons.append(
                Comparison(
                    ablation,
                    skipped="the variant equals its reference under these settings "
                    f"({format_overrides(ablation.variant_overrides(budget))} changes nothing)",
                )
            )
            continue
        reasons = []
        if probe is not None:
            for config in (ref_config, var_config):
                key = config_key(config)
                if key not in probed:
                    probed[key] = probe(config)
                if probed[key]:
                    reasons.append(probed[key])
        if reasons:
            comparisons.append(Comparison(ablation, skipped="; ".join(dict.fromkeys(reasons))))
            continue
        comparisons.append(
            Comparison(
                ablation,
                reference=arm_for(ref_config, ref_name, f"{ablation.name}:reference"),
                variant=arm_for(
                    var_config,
                    ablation.name,
                    f"{ablation.name}:variant",
                    REPLICATE_SEED_OFFSET if ablation.replicate else 0,
                ),
            )
        )
    return Plan(budget, list(range(seeds)), arms, comparisons)


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
