"""A space file's schema in pydantic: every block, its keys, their types and bounds, and the
rules that tie keys of one file together (conditions, steps, ASHA's rungs).

What only a built config can tell (a value the model refuses, a metric a model does not
report) is checked afterwards, over every value a trial can draw (tune.space.drawable).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    field_validator,
)
from pydantic import model_validator as block_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ArgsKwargs

from tune.space.errors import fail_at, problem, shown
from tune.space.fields import (
    ConfigKey,
    Integer,
    Number,
    Scalar,
    scalar,
)
from tune.space.params import Derived, Param

MAX_SAMPLES = 100_000
MAX_CONCURRENT = 1024
MAX_NOISE_SEEDS = 100
MAX_EPOCHS = 10_000
MAX_CPUS, MAX_GPUS = 1024, 64
# ASHA keeps the best 1/reduction_factor of the trials at each rung: past 100 it keeps one
# trial in a hundred, and near 1 Ray builds a rung per epoch ratio step (millions for 1.0001).
MAX_REDUCTION_FACTOR = 100
MAX_RUNGS = 32
MAX_SEED = 2**32 - 1  # numpy's seed range, and so Optuna's
MAX_CHOICES = 1000
# Every integer of an int range is checked against the config: wider ranges, and more values
# in all, are refused (a check takes well under a millisecond a value).
MAX_INT_VALUES = 10_000
MAX_CHECKED_VALUES = 20_000
_BLOCK = ConfigDict(extra="forbid", frozen=True)
_DATACLASS = ConfigDict(extra="forbid")  # frozen by the decorator


def default_mode(metric: str) -> str:
    """Losses are minimised, AUCs maximised."""
    return "min" if metric.endswith("loss") else "max"


def _known_keys(cls: type, fields: Mapping[str, Any], data: Any) -> Any:
    """A block's keys, checked before its values: a mapping, no unknown keys (with a
    suggestion), no missing required ones (with the field's description as the fix)."""
    if isinstance(data, ArgsKwargs | cls):  # built in Python, not read from a file
        return data
    if not isinstance(data, Mapping):
        raise problem(f"expected {cls.FORM}, got {shown(data)}")
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(fields)}"
            fail_at((str(key),), f"unknown key; {hint}")
    for name, field in fields.items():
        if field.is_required() and name not in data:
            fail_at((name,), f"missing; {field.description}")
    # A block key written with no value (``overrides:``) means its default, as it always has.
    null_is_default = getattr(cls, "NULL_IS_DEFAULT", ())
    return {k: v for k, v in data.items() if not (v is None and k in null_is_default)}


class Block(BaseModel):
    model_config = _BLOCK
    FORM: ClassVar[str] = "a mapping"
    NULL_IS_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @block_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return _known_keys(cls, cls.model_fields, data)


# ----------------------------------------------------------------------------- blocks
# Resources, Asha and SamplerSpec are the loaded space's own values too, so they are
# dataclasses (``dataclasses.replace`` works on them) that pydantic validates.


@pydantic_dataclass(frozen=True, config=_DATACLASS)
class DataBlock:
    FORM: ClassVar[str] = "a mapping"

    @block_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return _known_keys(cls, cls.__pydantic_fields__, data)


@pydantic_dataclass(frozen=True, config=_DATACLASS)
class Resources(DataBlock):
    """What each trial asks Ray for."""

    FORM: ClassVar[str] = "{cpu: N, gpu: N}"
    cpu: Annotated[Number, Field(gt=0, le=MAX_CPUS)] = 1.0
    gpu: Annotated[Number, Field(ge=0, le=MAX_GPUS)] = 0.0

    @field_validator("gpu")
    @classmethod
    def _fraction_or_whole(cls, gpu: float) -> float:
        if gpu > 1 and not gpu.is_integer():
            raise problem(f"{gpu:g}: ask for a fraction below 1 or a whole number of GPUs")
        return gpu


@pydantic_dataclass(frozen=True, config=_DATACLASS)
class Asha(DataBlock):
    """ASHA's budget in epochs: a trial trains at most max_t, at least grace_period."""

    FORM: ClassVar[str] = "{max_t: EPOCHS, grace_period: N, reduction_factor: N}"
    max_t: Annotated[
        Integer, Field(ge=1, le=MAX_EPOCHS, description="give the epoch budget of a full trial")
    ]
    grace_period: Annotated[Integer, Field(ge=1)] = 1
    reduction_factor: Annotated[Number, Field(gt=1, le=MAX_REDUCTION_FACTOR)] = 3.0

    @field_validator("grace_period")
    @classmethod
    def _within_max_t(cls, grace: int, info: ValidationInfo) -> int:
        max_t = info.data.get("max_t")
        if max_t is not None and grace > max_t:
            raise problem(f"{grace} exceeds max_t={max_t}; lower it")
        return grace

    @field_validator("reduction_factor")
    @classmethod
    def _few_rungs(cls, factor: float, info: ValidationInfo) -> float:
        max_t, grace = info.data.get("max_t"), info.data.get("grace_period")
        if max_t is None or grace is None:
            return factor
        rungs = int(math.log(max_t / grace) / math.log(factor)) + 1  # as Ray counts them
        if rungs > MAX_RUNGS:
            raise problem(
                f"{factor:g} makes {rungs} ASHA rungs between grace_period={grace} and "
                f"max_t={max_t}; use 2 to 4 (at most {MAX_RUNGS} rungs)"
            )
        return factor


@pydantic_dataclass(frozen=True, config=_DATACLASS)
class SamplerSpec(DataBlock):
    """The Optuna sampler and its seed."""

    FORM: ClassVar[str] = "{name: tpe, seed: 0}"
    name: Literal["tpe", "random"] = "tpe"
    seed: Annotated[Integer, Field(ge=0, le=MAX_SEED)] = 0


# ----------------------------------------------------------------------------- parameters


def _when(value: Any) -> dict[str, tuple[Any, ...]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise problem(f"expected a mapping {{parameter: value or [values]}}, got {shown(value)}")
    out = {}
    for key, allowed in value.items():
        if not isinstance(key, str):
            fail_at((str(key),), "a condition names a parameter listed above this one")
        allowed = tuple(allowed) if isinstance(allowed, list | tuple) else (allowed,)
        out[key] = tuple(scalar(v) for v in allowed)
    return out


# A condition: {parameter: value or [values]}; the parameter must have one of them.
When = Annotated[dict[str, tuple[Any, ...]] | None, PlainValidator(_when)]
_BOUND = "a range needs low and high"


class Spec(Block):
    FORM: ClassVar[str] = "a mapping such as {type: choice, values: [1, 2]}"
    type: str
    when: When = None

    def param(self, key: str) -> Param:
        fields = {name: getattr(self, name) for name in type(self).model_fields if name != "type"}
        return Param(key, self.type, **{**fields, "when": self.when or {}})

    def written_values(self) -> list[tuple[tuple[str | int, ...], Any]]:
        """The values written in the file that a trial can draw, with where they are."""
        raise NotImplementedError

    def value_count(self) -> int:
        """How many values a trial can draw, as the loader checks them."""
        return len(self.written_values())


class ChoiceSpec(Spec):
    type: Literal["choice"]
    values: list[Scalar] = Field(description="list the values to choose from")

    @field_validator("values")
    @classmethod
    def _each_once(cls, values: list[Any]) -> list[Any]:
        if not values:
            raise problem("the list is empty; give at least one value")
        if len(values) > MAX_CHOICES:
            raise problem(f"{len(values)} values; give at most {MAX_CHOICES}")
        first: dict[Any, int] = {}
        for j, v in enumerate(values):
            if v in first:  # after YAML typing, 1 == 1.0 == true
                i = first[v]
                same = "" if repr(v) == repr(values[i]) else f", which equals {shown(v)}"
                fail_at(
                    (j,),
                    f"{shown(v)} is listed twice (at [{i}] as {shown(values[i])}"
                    f"{same}); list each value once",
                )
            first[v] = j
        return values

    def param(self, key: str) -> Param:
        return Param(key, "choice", values=tuple(self.values), when=self.when or {})

    def written_values(self) -> list[tuple[tuple[str | int, ...], Any]]:
        return [(("values", i), v) for i, v in enumerate(self.values)]


def _step_problem(low: float, high: float, step: float) -> str | None:
    """Optuna quietly lowers ``high`` to the last step below it (as it computes it)."""
    span, q = Decimal(str(high)) - Decimal(str(low)), Decimal(str(step))
    if span % q == 0:
        return None
    top = (span // q) * q + Decimal(str(low))
    return (
        f"{step:g} does not divide high - low = {span}, so Optuna would quietly lower high to "
        f"{top}; make high - low a multiple of step"
    )


class RangeSpec(Spec):
    def written_values(self) -> list[tuple[tuple[str | int, ...], Any]]:
        return [(("low",), self.low), (("high",), self.high)]


class IntSpec(RangeSpec):
    type: Literal["int"]
    low: Integer = Field(description=_BOUND)
    high: Integer = Field(description=_BOUND)
    step: Annotated[Integer, Field(ge=1)] | None = None
    log: bool = Field(False, strict=True)

    @block_validator(mode="after")
    def _consistent(self) -> IntSpec:
        if self.low > self.high:
            fail_at(("high",), f"{self.high} is below low={self.low}; swap them")
        if self.log and self.low < 1:
            fail_at(("low",), f"a log scale needs low > 0, got {self.low}")
        if self.log and self.step not in (None, 1):
            fail_at(("step",), "a log-scaled int takes no step; remove step")
        if self.step and (why := _step_problem(self.low, self.high, self.step)):
            fail_at(("step",), why)
        if (count := self.value_count()) > MAX_INT_VALUES:
            fail_at(
                ("high",),
                f"the range holds {count} values and each is checked; narrow "
                f"it or add a step (at most {MAX_INT_VALUES})",
            )
        return self

    def value_count(self) -> int:
        return (self.high - self.low) // (self.step or 1) + 1


class FloatSpec(RangeSpec):
    low: Number = Field(description=_BOUND)
    high: Number = Field(description=_BOUND)

    @block_validator(mode="after")
    def _ordered(self) -> FloatSpec:
        if self.low >= self.high:
            fail_at(("high",), f"{self.high:g} is not above low={self.low:g}; swap them")
        return self


class UniformSpec(FloatSpec):
    type: Literal["uniform"]
    step: Annotated[Number, Field(gt=0)] | None = None

    @block_validator(mode="after")
    def _step_divides(self) -> UniformSpec:
        if self.step and (why := _step_problem(self.low, self.high, self.step)):
            fail_at(("step",), why)
        return self


class LogUniformSpec(FloatSpec):
    type: Literal["loguniform"]

    @block_validator(mode="after")
    def _positive(self) -> LogUniformSpec:
        if self.low <= 0:
            fail_at(("low",), f"a log scale needs low > 0, got {self.low:g}")
        return self


_SPECS: dict[str, type[Spec]] = {
    "choice": ChoiceSpec,
    "int": IntSpec,
    "uniform": UniformSpec,
    "loguniform": LogUniformSpec,
}


def _spec(value: Any) -> Spec:
    if isinstance(value, Spec):
        return value
    if not isinstance(value, Mapping):
        raise problem(f"expected {Spec.FORM}, got {shown(value)}")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in _SPECS:
        fail_at(("type",), f"expected one of {', '.join(_SPECS)}, got {shown(kind)}")
    return _SPECS[kind].model_validate(value)


ParamSpec = Annotated[Spec, PlainValidator(_spec)]


class DerivedSpec(Block):
    FORM: ClassVar[str] = "{divide: KEY, by: KEY}"
    divide: ConfigKey = Field(description="a derived value is {divide: KEY, by: KEY}")
    by: ConfigKey = Field(description="a derived value is {divide: KEY, by: KEY}")

    def derived(self, key: str) -> Derived:
        return Derived(key, self.divide, self.by)
