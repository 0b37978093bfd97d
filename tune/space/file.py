"""The whole space file: its top-level keys and its budgets, in pydantic."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic import model_validator as block_validator

from tune.space.errors import fail_at, problem, shown
from tune.space.fields import (
    BudgetName,
    Integer,
    Name,
    Overrides,
    Preset,
    VaryingKey,
    type_names,
    value_problem,
    value_types,
)
from tune.space.schema import (
    MAX_CHECKED_VALUES,
    MAX_CONCURRENT,
    MAX_NOISE_SEEDS,
    MAX_SAMPLES,
    Asha,
    Block,
    ChoiceSpec,
    DerivedSpec,
    FloatSpec,
    ParamSpec,
    Resources,
    SamplerSpec,
    Spec,
    default_mode,
)

_MERGED_BLOCKS = ("overrides", "resources", "asha", "params")


class BudgetBlock(Block):
    """A smaller version of the space. Only the keys are checked here: the values are
    checked once merged with the top level (:meth:`SpaceFile.budget_input`)."""

    FORM: ClassVar[str] = "a mapping (num_samples, asha, ...)"
    preset: Any = None
    overrides: Any = None
    num_samples: Any = None
    max_concurrent_trials: Any = None
    resources: Any = None
    asha: Any = None
    noise_seeds: Any = None
    params: Any = None


class SpaceFile(Block):
    """A space file as written; :func:`tune.space.load.load_space` compiles it."""

    FORM: ClassVar[str] = "a mapping of keys (name, preset, params, ...)"
    NULL_IS_DEFAULT: ClassVar[tuple[str, ...]] = (
        "overrides",
        "resources",
        "sampler",
        "derived",
        "budgets",
    )
    name: Name | None = None
    description: Annotated[str, Field(max_length=2000)] = ""
    preset: Preset = "quick"
    overrides: Overrides = {}
    metric: Annotated[str, Field(max_length=100)] = "val_pr_auc_macro"
    mode: Literal["min", "max"] | None = None
    num_samples: Annotated[Integer, Field(ge=1, le=MAX_SAMPLES)] = 10
    max_concurrent_trials: Annotated[Integer, Field(ge=1, le=MAX_CONCURRENT)] = 1
    resources: Resources = Resources()
    asha: Asha = Field(description="give asha: {max_t: EPOCHS}, the epoch budget of a trial")
    sampler: SamplerSpec = SamplerSpec()
    noise_seeds: Annotated[Integer, Field(ge=0, le=MAX_NOISE_SEEDS)] = 0
    params: dict[VaryingKey, ParamSpec] = Field(
        description="give params: {config.key: {type: choice, values: [...]}, ...}"
    )
    derived: dict[VaryingKey, DerivedSpec] = {}
    budgets: dict[BudgetName, BudgetBlock] = {}

    @field_validator("mode")
    @classmethod
    def _follows_metric(cls, mode: str | None, info: ValidationInfo) -> str | None:
        metric = info.data.get("metric")
        if mode is not None and metric is not None and mode != default_mode(metric):
            raise problem(
                f"'{mode}' would optimise {metric} the wrong way; use mode: {default_mode(metric)}"
            )
        return mode

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, Spec]) -> dict[str, Spec]:
        if not params:
            raise problem("expected a mapping of config keys to distributions, with one at least")
        total = sum(spec.value_count() for spec in params.values())
        if total > MAX_CHECKED_VALUES:
            raise problem(
                f"the parameters hold {total} values to check; narrow the int ranges to hold "
                f"at most {MAX_CHECKED_VALUES} in all"
            )
        _conditions_name_earlier_choices(params)
        _values_fit_their_keys(params)
        return params

    @field_validator("derived")
    @classmethod
    def _integer_keys(cls, derived: dict[str, DerivedSpec]) -> dict[str, DerivedSpec]:
        for key in derived:
            if int not in value_types(key):
                fail_at(
                    (key,),
                    f"{key} takes {type_names(value_types(key))}; a derived value is an integer",
                )
        return derived

    @block_validator(mode="after")
    def _budgets_narrow_params(self) -> SpaceFile:
        for name, block in self.budgets.items():
            for key in block.params if isinstance(block.params, Mapping) else ():
                if key not in self.params:
                    fail_at(
                        ("budgets", name, "params", str(key)),
                        "a budget may only narrow parameters listed in params; add it there first",
                    )
        return self

    def budget_input(self, name: str) -> dict[str, Any]:
        """The file as budget ``name`` sees it, to validate again: each key the budget gives
        replaces the top-level one; overrides, resources, asha and params are merged."""
        merged = {key: getattr(self, key) for key in type(self).model_fields if key != "budgets"}
        block = self.budgets[name]
        for key in block.model_fields_set:
            value, top = getattr(block, key), merged[key]
            if value is None:  # written with no value: the top level's stands
                continue
            if key in _MERGED_BLOCKS and isinstance(value, Mapping):
                value = {
                    **(dataclasses.asdict(top) if dataclasses.is_dataclass(top) else top),
                    **value,
                }
            merged[key] = value
        return merged


def _conditions_name_earlier_choices(params: Mapping[str, Spec]) -> None:
    earlier: dict[str, Spec] = {}
    for key, spec in params.items():
        for cond, allowed in (spec.when or {}).items():
            parent = earlier.get(cond)
            if parent is None:
                fail_at(
                    (key, "when", cond),
                    "a condition must name a parameter listed above this one in params",
                )
            if not isinstance(parent, ChoiceSpec):
                fail_at((key, "when", cond), "a condition may only test a 'choice' parameter")
            for value in allowed:
                if value not in parent.values:
                    fail_at(
                        (key, "when", cond),
                        f"{shown(value)} is not among its choices {shown(list(parent.values))}",
                    )
        earlier[key] = spec


def _values_fit_their_keys(params: Mapping[str, Spec]) -> None:
    """Each value written in a parameter, checked strictly against its config key's type
    and bounds: Optuna hands it to the trial as it is."""
    for key, spec in params.items():
        if isinstance(spec, FloatSpec) and float not in value_types(key):
            fail_at(
                (key, "type"),
                f"{key} takes {type_names(value_types(key))}, but a {spec.type} parameter "
                "draws floats; use type: int or choice",
            )
        for loc, value in spec.written_values():
            if why := value_problem(key, value):
                fail_at((key, *loc), f"{why}; change this value")
