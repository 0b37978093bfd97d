"""What the suite contains: the references, the ablations, the A/A control and the budgets.

An :class:`Ablation` is a named config override of a :class:`Reference`: the reference holds
the component, the variant takes it out (or swaps it). Most ablations share the submission 2
reference; per-class early stopping belongs to submission 1, and ImageNet pretraining needs a
reference that uses it, so each ablation names its own. `ablations.suite` turns a selection
of them into arms and trials.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Overrides = Mapping[str, Any]
BUDGETS = ("quick", "full")
Direction = Literal["lower", "higher"]


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
    at the quick budget (a CPU-sized stand-in for a paper-scale component). ``quick_budget``
    adds to the quick budget's settings for both arms of this comparison (an effect that needs
    more epochs to appear). ``expected`` states, per planted tag group of the synthetic data,
    the direction of the effect the data was built to show: the suite tests these in advance-
    stated hypotheses as a confirmatory family of their own (ablations.families).
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
    quick_budget: Overrides = field(default_factory=dict)
    expected: Mapping[str, Direction] = field(default_factory=dict)

    def variant_overrides(self, budget: str) -> Overrides:
        if budget == "quick" and self.quick_variant is not None:
            return self.quick_variant
        return self.variant

    def budget_changes(self, budget: str) -> Overrides:
        return self.quick_budget if budget == "quick" else {}

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
# budget is sized for a 2-core CPU (docs/ablations.md, "Budgets"): the small CNN on the whole
# default synthetic dataset, 6 epochs, with the components that slow learning at such a
# budget (mixup, SpecAugment, the optimizer switch, encoder dropout) off in the shared
# reference; the ablations of those components give their reference the component back.
BUDGET_SETTINGS: dict[str, Overrides] = {
    "quick": {
        "model.backbone": "small_cnn",
        "model.width_mult": 1.0,
        "model.attention.attention_dropout": 0.0,
        "model.attention.hidden_dropout": 0.0,
        "augment.mixup_alpha": 0.0,
        "augment.specaugment_p": 0.0,
        "optim.epochs": 6,
        "optim.switch_epoch": None,
        "data.limit_tracks": None,
    },
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
            # The attention head reads the synthetic data's long-range relation after about
            # 800-1800 steps of batch 8, depending on the seed (docs/ablations.md, "Proof").
            quick_budget={"optim.epochs": 18},
            expected={"long_range": "lower", "long_range - local": "lower"},
        ),
        Ablation(
            "mixup",
            component="mixup",
            change="mixup off (alpha = 0)",
            reference="submission2",
            variant={"augment.mixup_alpha": 0.0},
            quick_reference_overrides={"augment.mixup_alpha": 1.0},
        ),
        Ablation(
            "specaugment",
            component="SpecAugment",
            change="SpecAugment off (no time or frequency masks)",
            reference="submission2",
            variant={"augment.specaugment_p": 0.0},
            quick_reference_overrides={"augment.specaugment_p": 0.5},
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
            quick_reference_overrides={"model.backbone": "mobilenet_v2", "model.width_mult": 0.25},
            quick_variant={"model.backbone": "resnext_tiny_shallow", "model.width_mult": 1.0},
        ),
        Ablation(
            "optimizer-switch",
            component="Adam-to-SGD switch",
            change="Adam throughout, no switch to SGD",
            reference="submission2",
            variant={"optim.switch_epoch": None},
            # Two epochs of SGD at the end: the switch at 1e-3, then the drop to 1e-4.
            quick_reference_overrides={"optim.switch_epoch": 4},
        ),
        Ablation(
            "imagenet-pretraining",
            component="ImageNet pretraining",
            change="backbone trained from scratch instead of from ImageNet weights",
            reference="submission2",
            reference_overrides={"model.pretrained": "imagenet"},
            variant={"model.pretrained": "none"},
            # ImageNet weights exist for the full-width MobileNetV2 only.
            quick_reference_overrides={
                "model.pretrained": "imagenet",
                "model.backbone": "mobilenet_v2",
                "model.width_mult": 1.0,
            },
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
