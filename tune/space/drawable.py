"""Every value a trial can draw, checked before any trial runs.

The points checked: the first value of every parameter; each parameter's every drawable
value (each choice, each integer of an int range, both ends of a float range) with the
others at their first value; and every combination of the parameters' corners (while there
are at most MAX_CORNER_COMBINATIONS). At each point the derived values must divide, the
config must build, and the model must report the space's metric.

A failure is located by what was varied, never by reading the config error's text: the
parameter whose value was changed, or, at the first point, the first of the overrides,
the epoch budget and the parameters whose addition breaks the config.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from moodtheme.config import Config, ConfigError, build_config
from tune.space.errors import Loc, shortened, shown, space_error
from tune.space.params import Param

if TYPE_CHECKING:
    from tune.space.search_space import SearchSpace

# Reported every epoch, but not a measure of the model: no search metric.


@dataclass(frozen=True)
class _Point:
    """Values a trial can draw, and how they were reached: every parameter at its first
    value, one parameter (``varied``) at ``value`` and the others at their first, or a
    combination of corners."""

    chosen: dict[str, Any]
    varied: Param | None = None
    value: Any = None
    combination: bool = False

    def __str__(self) -> str:
        if self.varied is not None:
            return f"{self.varied.key}={shown(self.value)}"
        return ", ".join(f"{k}={shown(v)}" for k, v in self.chosen.items()) or "no parameters"


def check(space: SearchSpace) -> None:
    """Raise SpaceError, located in the file, at the first value a trial could draw that
    gives no valid trial."""
    _no_key_set_twice(space)
    points = list(_points(space))
    fixed = space.fixed_values()
    for point in points:
        _check_derived(space, fixed, point.chosen)
    by_heads: dict[tuple[str, ...], _Point] = {}
    for point in points:
        by_heads.setdefault(_build(space, point).model.head_names(), point)
    _check_metric(space, by_heads)


def _fail(space: SearchSpace, loc: Loc, problem: str) -> NoReturn:
    prefix = ("budgets", space.budget) if space.budget != "full" else ()
    raise space_error(space.source, (*prefix, *loc), problem)


def _no_key_set_twice(space: SearchSpace) -> None:
    searched = {p.key for p in space.params}
    for key in space.overrides:
        if key in searched:
            _fail(space, ("overrides", key), "also listed in params; keep one of the two")
    for d in space.derived:
        if d.key in searched or d.key in space.overrides:
            _fail(space, ("derived", d.key), "also set in params or overrides; keep one")


# ----------------------------------------------------------------------------- points


def _points(space: SearchSpace) -> Iterator[_Point]:
    """The points to check, each distinct one once."""
    seen: set[tuple[Any, ...]] = set()

    def fresh(point: _Point) -> bool:
        marker = tuple((k, type(v), v) for k, v in point.chosen.items())
        if marker in seen:
            return False
        seen.add(marker)
        return True

    candidates = [_Point(space.realize({}))]
    for param in space.params:
        context = _activating(space, param)
        if param.key not in space.realize(context):
            _fail(space, ("params", param.key, "when"), "no trial can meet these conditions")
        candidates += [
            _Point(space.realize({**context, param.key: value}), param, value)
            for value in param.drawable()
        ]
    yield from filter(fresh, candidates)
    yield from filter(fresh, (_Point(c, combination=True) for c in space.corner_combinations()))


def _activating(space: SearchSpace, param: Param) -> dict[str, Any]:
    """Values of the parameters ``param`` depends on that make it active."""
    by_key = {p.key: p for p in space.params}
    wanted: dict[str, Any] = {}
    pending = [param]
    while pending:
        for key, allowed in pending.pop().when.items():
            if key not in wanted:
                wanted[key] = allowed[0]
                pending.append(by_key[key])
    return wanted


# ----------------------------------------------------------------------------- checks


def _check_derived(space: SearchSpace, fixed: Mapping[str, Any], chosen: Mapping[str, Any]) -> None:
    values = {**fixed, **chosen}
    for d in space.derived:
        top, bottom = values[d.divide], values[d.by]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (top, bottom)):
            _fail(
                space,
                ("derived", d.key),
                f"{d.divide}={shown(top)} and {d.by}={shown(bottom)} must be integers; "
                "divide integer keys",
            )
        if bottom <= 0 or top % bottom:
            _fail(
                space,
                ("derived", d.key),
                f"{d.divide}={top} is not divisible by {d.by}={bottom}; choose values of "
                f"{d.by} that divide {top}",
            )


def _build(space: SearchSpace, point: _Point) -> Config:
    try:
        return space.trial_config(point.chosen)
    except ConfigError as err:
        text = _config_text(err)
    if point.varied is not None:
        _fail(
            space,
            ("params", point.varied.key),
            f"the value {shown(point.value)} gives an invalid config ({text}); narrow the "
            "parameter's range",
        )
    if point.combination:
        first = space.realize({})
        changed = [k for k, v in point.chosen.items() if first.get(k) != v] or list(point.chosen)
        _fail(
            space,
            ("params", changed[-1]),
            f"the combination {point} gives an invalid config ({text}), though each value "
            "does alone; narrow one of them",
        )
    _fail(space, *_first_breaking_step(space, point.chosen))


def _config_text(err: ConfigError) -> str:
    return shortened(str(err).removeprefix("invalid config: "))


def _first_breaking_step(space: SearchSpace, chosen: Mapping[str, Any]) -> tuple[Loc, str]:
    """Add the overrides, the epoch budget and the parameters' first values to the preset
    one at a time: the first whose addition breaks the config is at fault."""
    steps: list[tuple[Loc, str, Any]] = [
        (("overrides", k), k, v) for k, v in space.overrides.items()
    ]
    steps.append((("asha", "max_t"), "optim.epochs", space.asha.max_t))
    steps += [(("params", k), k, v) for k, v in chosen.items()]
    applied: dict[str, Any] = {}
    for loc, key, value in steps:
        applied[key] = value
        try:
            derived = space.derive({k: v for k, v in applied.items() if k in chosen})
        except (ArithmeticError, TypeError, ValueError):  # checked at whole points only
            derived = {}
        try:
            build_config(space.preset, {**applied, **derived})
        except ConfigError as err:
            return loc, _step_problem(space, loc, value, _config_text(err))
    raise AssertionError("the first point's config failed, but no step of it does")


def _step_problem(space: SearchSpace, loc: Loc, value: Any, text: str) -> str:
    if loc[0] == "asha":
        return (
            f"every trial trains {value} epochs, which the '{space.preset}' preset does "
            f"not allow ({text}); set the other key in overrides"
        )
    if loc[0] == "params":
        return (
            f"its first value {shown(value)} gives an invalid config ({text}); narrow "
            "the parameter's range"
        )
    return f"{text}; change this override (it is applied to the '{space.preset}' preset)"


def _check_metric(space: SearchSpace, by_heads: Mapping[tuple[str, ...], _Point]) -> None:
    from moodtheme.metrics import TIMING_METRICS, epoch_metric_names

    not_scores = ("lr", *TIMING_METRICS)
    reported = {
        heads: [m for m in epoch_metric_names(heads) if m not in not_scores] for heads in by_heads
    }
    everywhere = [
        m for m in reported[next(iter(reported))] if all(m in r for r in reported.values())
    ]
    if not any(space.metric in r for r in reported.values()):
        _fail(
            space,
            ("metric",),
            f"{shown(space.metric)} is not a metric the trainer reports for this space's "
            f"models; use one of {', '.join(everywhere)}",
        )
    for heads, point in by_heads.items():
        if space.metric not in reported[heads]:
            _fail(
                space,
                ("metric",),
                f"{shown(space.metric)} is not reported by trials with {point} (a model with "
                f"heads {', '.join(heads)}); use a metric every trial reports: "
                f"{', '.join(everywhere)}",
            )
