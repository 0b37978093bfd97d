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
from typing import TYPE_CHECKING, Any

from moodtheme.config import ConfigError, build_config
from tune.space.errors import Loc, shortened, shown, space_error
from tune.space.params import Param

if TYPE_CHECKING:
    from tune.space.search_space import SearchSpace

# Reported every epoch, but not a measure of the model: no search metric.
NOT_SCORES = ("lr", "epoch_seconds")
_FIRST = "first"  # the point where every parameter has its first value


def check(space: SearchSpace) -> None:
    """Raise SpaceError, located in the file, at the first value a trial could draw that
    gives no valid trial."""
    _no_key_set_twice(space)
    points = list(_points(space))
    fixed = space.fixed_values()
    for chosen, _ in points:
        _check_derived(space, fixed, chosen)
    heads: dict[tuple[str, ...], tuple[dict[str, Any], Any]] = {}
    for chosen, varied in points:
        config = _build(space, chosen, varied)
        heads.setdefault(config.model.head_names(), (chosen, varied))
    _check_metric(space, heads)


def _fail(space: SearchSpace, loc: Loc, problem: str) -> None:
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


def _points(space: SearchSpace) -> Iterator[tuple[dict[str, Any], Any]]:
    """(the sampled values, what was varied to reach them), each distinct point once."""
    seen: set[tuple[Any, ...]] = set()

    def fresh(chosen: dict[str, Any]) -> bool:
        marker = tuple((k, type(v), v) for k, v in chosen.items())
        if marker in seen:
            return False
        seen.add(marker)
        return True

    first = space.realize({})
    if fresh(first):
        yield first, _FIRST
    for param in space.params:
        context = _activating(space, param)
        if param.key not in space.realize(context):
            _fail(space, ("params", param.key, "when"), "no trial can meet these conditions")
        for value in param.drawable():
            chosen = space.realize({**context, param.key: value})
            if fresh(chosen):
                yield chosen, (param, value)
    for chosen in space.corner_combinations():
        if fresh(chosen):
            yield chosen, chosen


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


def _shown_point(chosen: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={shown(v)}" for k, v in chosen.items()) or "no parameters"


# ----------------------------------------------------------------------------- checks


def _check_derived(space: SearchSpace, fixed: Mapping[str, Any], chosen: Mapping[str, Any]) -> None:
    values = {**fixed, **chosen}
    for d in space.derived:
        top, bottom = values[d.divide], values[d.by]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (top, bottom)):
            _fail(
                space,
                ("derived", d.key),
                f"{d.divide}={shown(top)} and {d.by}="
                f"{shown(bottom)} must be integers; divide integer keys",
            )
        if bottom <= 0 or top % bottom:
            _fail(
                space,
                ("derived", d.key),
                f"{d.divide}={top} is not divisible by "
                f"{d.by}={bottom}; choose values of {d.by} that divide {top}",
            )


def _build(space: SearchSpace, chosen: dict[str, Any], varied: Any) -> Any:
    try:
        return space.trial_config(chosen)
    except ConfigError as err:
        text = _config_text(err)
    if varied == _FIRST:
        loc, problem = _first_breaking_step(space, chosen)
        _fail(space, loc, problem)
    if isinstance(varied, tuple):
        param, value = varied
        _fail(
            space,
            ("params", param.key),
            f"the value {shown(value)} gives an invalid "
            f"config ({text}); narrow the parameter's range",
        )
    first = space.realize({})
    last = [k for k, v in chosen.items() if first.get(k) != v] or list(chosen)
    _fail(
        space,
        ("params", last[-1]),
        f"the combination {_shown_point(chosen)} gives an "
        f"invalid config ({text}), though each value does alone; narrow one of them",
    )


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
        except (ArithmeticError, TypeError, ValueError):  # checked at full points only
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


def _check_metric(space: SearchSpace, heads: Mapping[tuple[str, ...], tuple[dict, Any]]) -> None:
    # The trainer's module owns the metric names; it imports torch, so only a space that
    # passed every other check pays for that import.
    from moodtheme.inference import epoch_metric_names

    reported = {
        names: [m for m in epoch_metric_names(names) if m not in NOT_SCORES] for names in heads
    }
    everywhere = [
        m for m in next(iter(reported.values())) if all(m in r for r in reported.values())
    ]
    for names, (chosen, varied) in heads.items():
        if space.metric in reported[names]:
            continue
        if not any(space.metric in r for r in reported.values()):
            _fail(
                space,
                ("metric",),
                f"{shown(space.metric)} is not a metric the trainer "
                f"reports for this space's models; use one of {', '.join(everywhere)}",
            )
        where = (
            f"{varied[0].key}={shown(varied[1])}"
            if isinstance(varied, tuple)
            else (_shown_point(chosen))
        )
        _fail(
            space,
            ("metric",),
            f"{shown(space.metric)} is not reported by trials with "
            f"{where} (a model with heads {', '.join(names)}); use a metric every trial "
            f"reports: {', '.join(everywhere)}",
        )
