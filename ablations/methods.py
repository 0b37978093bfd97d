"""The report's methods section: what varied, what was paired, the tests, the corrections
and the power, written from the run's own plan and conclusions (docs/ablations.md explains
each choice)."""

from __future__ import annotations

from collections.abc import Sequence

from ablations.effects import METRIC_LABELS, OK, Effect
from ablations.families import Conclusions, Family
from ablations.stats import METRICS
from ablations.suite import Plan


def _varied(plan: Plan) -> str:
    augmented_eval = any(a.config.augment.augment_eval for a in plan.arms.values())
    return (
        "A seed (`run.seed`) sets the weight initialisation, the order of the training "
        "examples, every random augmentation draw (crop position, SpecAugment masks, mixup "
        "partners and weights) and dropout"
        + (
            ", and the augmentation of validation and test inputs in the arms that augment "
            "them (`augment.augment_eval`)"
            if augmented_eval
            else ""
        )
        + "; nothing else differs between two trials of an arm."
    )


def _paired(plan: Plan, effects: Sequence[Effect]) -> str:
    ok = [e for e in effects if e.status == OK]
    tracks = max((e.n_tracks for e in ok), default=0)
    replicate = [a.name for a in plan.arms.values() if a.seed_offset]
    text = (
        "Reference and variant are trained with the same seeds, so seed i of the variant "
        "draws its initialisation from the same random state and sees the same examples in "
        "the same order with the same augmentation as seed i of the reference: "
        "each seed gives one paired difference, and what the seed does to both arms alike "
        f"cancels. Every trial is scored on the same {tracks} test tracks."
    )
    if replicate:
        offset = plan.arms[replicate[0]].seed_offset
        text += (
            f" The A/A control ({', '.join(replicate)}) is the reference itself trained from "
            f"other seeds (run.seed {offset} + i): its pairs are unmatched on purpose, so that "
            "its Δ carries all of training's noise and no effect."
        )
    return text


def _family_sentence(family: Family, conclusions: Conclusions, what: str) -> str:
    looks = (
        f", multiplied by the {conclusions.looks} looks of adaptive seeding (Bonferroni)"
        if conclusions.looks > 1
        else ""
    )
    return (
        f"The {what} family is the {family.size} tests of this suite ({family.members}); "
        f"their p-values are {family.method}-adjusted over it{looks}, so the chance of any "
        f"false call in the family is at most {conclusions.alpha:.0%}."
    )


def methods_section(
    plan: Plan,
    effects: Sequence[Effect],
    conclusions: Conclusions,
    n_boot: int,
    seeds: str,
) -> list[str]:
    """Markdown lines of the report's methods section."""
    c = conclusions
    metrics = " and ".join(METRIC_LABELS[m] for m in METRICS)
    lines = [
        "## Methods",
        "",
        "**Design.** Each ablation trains a reference and a variant that takes one component "
        f"out (leave-one-component-out), and compares their test {metrics}. Seeds: {seeds}. "
        + _varied(plan),
        "",
        "**Pairing.** " + _paired(plan, effects),
        "",
        "**Effect and test.** Δ = variant − reference is the mean over seeds of the per-seed "
        "difference; a negative Δ means the component helps. Its standard error adds two "
        "noises: training noise, the spread of the per-seed differences (s/√n), and test-set "
        f"noise, the standard deviation of Δ over {n_boot} paired bootstrap resamples of the "
        "test tracks (each resample scores both arms and every seed on the same tracks; a tag "
        "without both classes in a resample drops out of it for both arms). The test is "
        "t = Δ / SE with n − 1 degrees of freedom, valid whatever the share of the two noises; "
        "intervals are the matching 95% t-intervals. With one seed training noise is "
        "unmeasured, and no effect is called.",
        "",
        "**Corrections.** "
        + _family_sentence(c.headline, c, "headline")
        + " A verdict says *helps* or *hurts* only when the adjusted p is at most "
        f"{c.alpha:g}.",
    ]
    if c.confirmatory is not None:
        lines += [
            "",
            f"- The confirmatory family is the {c.confirmatory.size} hypotheses stated before "
            "any training (each ablation's `expected` effect on a planted group of the "
            "synthetic data, with its direction), each tested one-sided; their p-values are "
            f"Holm-adjusted over it, so the chance of any false confirmation is at most "
            f"{c.alpha:.0%}. Everything else is exploratory.",
        ]
    if c.planted is not None:
        lines += ["", "- " + _family_sentence(c.planted, c, "planted-group")]
    if c.tags is not None:
        lines += [
            "",
            f"- The per-tag map is one family of {c.tags.size} cells ({c.tags.members}); "
            f"Benjamini-Hochberg keeps the expected share of false cells among those marked "
            f"at most {c.alpha:.0%} (each cell is tested like Δ, from its own per-seed "
            "differences and bootstrap error, on the final seeds).",
        ]
    lines += [
        "",
        f"**Power.** *MDE* is the smallest |Δ| that the test detects with {c.power:.0%} "
        f"probability at the level of Holm's first step, α / (tests × looks) = "
        f"{c.mde_level:.2g}, with the two noises as observed. A *no detectable effect* "
        f"rules out |Δ| ≥ {c.min_effect:g} (`--min-effect`) when two one-sided tests, "
        "adjusted like the verdicts, reject both Δ ≤ −min-effect and Δ ≥ min-effect. "
        "*Seeds for MDE = min-effect* is the fixed number of seeds (one look) whose MDE "
        "would reach it with this spread; *none* means the test set's own noise is the "
        "limit, and more seeds cannot get there.",
        "",
        "**Probability of improvement** (Bouthillier et al. 2021): the chance that, on a tag "
        "drawn at random, the run with the component scores higher than its paired run "
        "without it (ties count half); above 0.5 favours the component. Its 95% interval is "
        "a percentile bootstrap whose draws each take one resample of the test tracks and "
        "draw the seeds with replacement, whole seeds at once since one run scores every tag "
        "(rliable, Agarwal et al. 2021, resamples runs within each task instead); it covers "
        "training and test-set noise.",
        "",
    ]
    return lines
