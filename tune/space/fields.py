"""The value types of a space file and which config keys it may set or search.

Each type refuses what YAML would let through silently: ``true`` where a number belongs,
``"8"`` where an integer belongs, ``.nan``, a config key that does not exist. Errors are
raised from pydantic validators, so their location is pydantic's ``loc``.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from moodtheme.config import PRESETS, Config, valid_keys
from tune.space.errors import fail_at, problem, pydantic_words, shown

# Keys a space file may not set, and where their value comes from instead.
SET_ELSEWHERE = {
    "preset": "the preset is the top-level 'preset' key; set that instead",
    "optim.epochs": "the epoch budget is asha.max_t; set that instead",
    "data.root": "the data folder comes from --data, which a search records for --resume; "
    "pass that instead",
}
_SCORED_ON = "trials scored on different data cannot be compared"
_HOW_IT_RUNS = "it sets how a trial runs, not what it learns"
# Keys the same for every trial: they may be set in overrides, never searched or derived.
SAME_FOR_EVERY_TRIAL = {
    "data.split": _SCORED_ON,
    "data.splits_dir": _SCORED_ON,
    "data.limit_tracks": _SCORED_ON,
    "model.num_tags": "the tags are the task; trials with other tags cannot be compared",
    "run.seed": "seed-to-seed variation is measured with noise_seeds, not searched",
    "data.num_workers": _HOW_IT_RUNS,
    "run.device": _HOW_IT_RUNS,
    "run.amp": _HOW_IT_RUNS,
    "run.channels_last": _HOW_IT_RUNS,
    "run.deterministic": _HOW_IT_RUNS,
    "run.threads": _HOW_IT_RUNS,
    "run.progress": _HOW_IT_RUNS,
}
_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,99}")


# ----------------------------------------------------------------------------- numbers


def _whole(value: Any) -> int:
    # 4.0 is 4 (as before); true, "4" and 4.5 are not integers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem(f"expected an integer, got {shown(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise problem(f"expected an integer, got {shown(value)}")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem(f"expected a number, got {shown(value)}")
    if not math.isfinite(value):
        raise problem(f"expected a finite number, got {value}")
    return float(value)


def scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, bool | int | float | str):
        raise problem(f"{shown(value)} is not a single value (a number, text, true, false, null)")
    if isinstance(value, float) and not math.isfinite(value):
        raise problem(f"expected a finite number, got {value}")
    return value


Integer = Annotated[int, BeforeValidator(_whole)]
Number = Annotated[float, BeforeValidator(_number)]
Scalar = Annotated[Any, BeforeValidator(scalar)]


# ----------------------------------------------------------------------------- names


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise problem(
            "expected a short name of letters, digits, '.', '-' and '_' (it names a results "
            f"folder), got {shown(value)}"
        )
    return value


def _budget_name(value: Any) -> str:
    if _name(value) == "full":
        raise problem("'full' is the top level of the file; give this budget another name")
    return value


def _preset(value: Any) -> str:
    if not isinstance(value, str) or value not in PRESETS:
        raise problem(f"unknown preset {shown(value)}; choose one of {', '.join(PRESETS)}")
    return value


Name = Annotated[str, BeforeValidator(_name)]
BudgetName = Annotated[str, BeforeValidator(_budget_name)]
Preset = Annotated[str, BeforeValidator(_preset)]


# ----------------------------------------------------------------------------- config keys


@functools.cache
def _config_keys() -> tuple[str, ...]:
    return tuple(valid_keys())


def _config_key(value: Any) -> str:
    if not isinstance(value, str):
        raise problem(f"expected a dotted config key such as optim.lr, got {shown(value)}")
    if value not in _config_keys():
        close = difflib.get_close_matches(value, _config_keys(), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see moodtheme/config.py for the keys"
        raise problem(f"{shown(value)} is not a config key; {hint}")
    return value


def _settable(key: str) -> str:
    if key in SET_ELSEWHERE:
        raise problem(SET_ELSEWHERE[key])
    return key


def _varying(key: str) -> str:
    if key in SAME_FOR_EVERY_TRIAL:
        raise problem(
            f"cannot vary between trials: {SAME_FOR_EVERY_TRIAL[key]}; set it in overrides"
        )
    return key


ConfigKey = Annotated[str, BeforeValidator(_config_key)]
OverrideKey = Annotated[str, BeforeValidator(_config_key), AfterValidator(_settable)]
VaryingKey = Annotated[OverrideKey, AfterValidator(_varying)]


# ----------------------------------------------------------------------------- config values


@functools.cache
def _config_field(key: str) -> tuple[TypeAdapter[Any], frozenset[type]]:
    """A strict validator of one config key's values, and the Python types it takes."""
    section: Any = Config
    *parents, leaf = key.split(".")
    for part in parents:
        section = section.model_fields[part].annotation
    field = section.model_fields[leaf]
    annotation = (
        Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    return TypeAdapter(annotation, config=ConfigDict(strict=True)), frozenset(
        _value_types(field.annotation)
    )


def _value_types(annotation: Any) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(v) for v in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_value_types(a) for a in typing.get_args(annotation)))
    return {origin or annotation}


def value_types(key: str) -> frozenset[type]:
    return _config_field(key)[1]


def type_names(kinds: frozenset[type]) -> str:
    return " or ".join(sorted("null" if k is type(None) else k.__name__ for k in kinds))


def value_problem(key: str, value: Any) -> str | None:
    """Why config key ``key`` cannot take ``value``, checked strictly (``true`` is no
    integer, ``"8"`` no number, as pydantic's lax mode would allow), or None."""
    adapter, kinds = _config_field(key)
    if isinstance(value, bool) and bool not in kinds:
        return f"{key} takes {type_names(kinds)}, not true/false"
    try:
        adapter.validate_python(value)
    except ValidationError as err:
        return f"{key} cannot be {shown(value)}: {pydantic_words(err.errors()[0])}"
    return None


def _override_values(overrides: Mapping[str, Any]) -> Mapping[str, Any]:
    for key, value in overrides.items():
        # Lists (optim.lr_drops, the crop ranges) are left to the config's own validation.
        if not isinstance(value, list | dict) and (why := value_problem(key, value)):
            fail_at((key,), f"{why}; fix the override")
    return overrides


Overrides = Annotated[dict[OverrideKey, Any], AfterValidator(_override_values)]
# The same check for overrides given outside the file (--set).
OVERRIDES: TypeAdapter[dict[str, Any]] = TypeAdapter(Overrides)
