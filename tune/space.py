"""Search spaces: a YAML file, validated, compiled into an Optuna define-by-run function.

A space file names a base preset and config overrides, the parameters to search (dotted
config keys with a distribution), values derived from them, the metric, the ASHA and
sampler settings, the resources per trial, and optional smaller ``budgets``::

    name: attn
    preset: submission2
    metric: val_pr_auc_macro          # mode follows: max for AUCs, min for losses
    num_samples: 48
    max_concurrent_trials: 4
    resources: {cpu: 4, gpu: 0.5}
    asha: {max_t: 120, grace_period: 10, reduction_factor: 3}
    sampler: {name: tpe, seed: 0}
    params:
      model.attention.heads: {type: choice, values: [1, 2, 4, 8],
                              when: {model.attention.enabled: true}}
      model.segments: {type: choice, values: [8, 16, 32]}
      augment.mixup_alpha: {type: uniform, low: 0.0, high: 2.0}
    derived:
      model.segment_frames: {divide: data.input_frames, by: model.segments}
    budgets:
      quick: {preset: quick, num_samples: 8, asha: {max_t: 4, grace_period: 1}}

Every mistake raises :class:`SpaceError` with one line naming the file, the field and the fix.
Each trial trains ``optim.epochs = asha.max_t`` epochs; ASHA may stop it earlier.
"""

from __future__ import annotations

import difflib
import importlib.resources
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from moodtheme.config import PRESETS, Config, ConfigError, build_config, flatten, valid_keys

PARAM_TYPES = ("choice", "int", "uniform", "loguniform")
SAMPLERS = ("tpe", "random")
# Metrics that moodtheme.train reports every epoch (heads: whole, attention, segment).
METRIC_PATTERN = re.compile(r"^(train_loss|val_loss|val_(\w+_)?(roc_auc_macro|pr_auc_macro))$")
# Past this many corner combinations, check each parameter's corners one at a time.
MAX_CORNER_COMBINATIONS = 4096

_TOP_KEYS = (
    "name",
    "description",
    "preset",
    "overrides",
    "metric",
    "mode",
    "num_samples",
    "max_concurrent_trials",
    "resources",
    "asha",
    "sampler",
    "noise_seeds",
    "params",
    "derived",
    "budgets",
)
_BUDGET_KEYS = (
    "preset",
    "overrides",
    "num_samples",
    "max_concurrent_trials",
    "resources",
    "asha",
    "noise_seeds",
    "params",
)


class SpaceError(ValueError):
    """A mistake in a search-space file; the message names the file, the field and the fix."""


# ----------------------------------------------------------------------------- pieces


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution; ``when`` makes it conditional."""

    key: str
    type: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def active(self, chosen: Mapping[str, Any]) -> bool:
        return all(chosen.get(key) in allowed for key, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (or Ray's captor of one) for this parameter's value."""
        if self.type == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(
            self.key, self.low, self.high, step=self.step, log=self.type == "loguniform"
        )

    def corners(self) -> list[Any]:
        """The values that bound this parameter: every choice, or both ends of a range."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            step = int(self.step or 1)
            top = int(self.low) + (int(self.high) - int(self.low)) // step * step
            return sorted({int(self.low), top})
        return [self.low, self.high]


@dataclass(frozen=True)
class Derived:
    """``key = divide // by``: e.g. segment length at a fixed total input length."""

    key: str
    divide: str
    by: str


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Asha:
    max_t: int
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int = 0


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

    def derive(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        base = self.fixed_values() if self.derived else {}
        out = {}
        for d in self.derived:
            out[d.key] = int(_lookup(d.divide, chosen, base)) // int(_lookup(d.by, chosen, base))
        return out

    def trial_overrides(self, chosen: Mapping[str, Any]) -> dict[str, Any]:
        """All overrides of one trial: the shared ones, the sampled ones, the derived ones."""
        return {**self.fixed_overrides(), **chosen, **self.derive(chosen)}

    def trial_config(self, chosen: Mapping[str, Any]) -> Config:
        return build_config(self.preset, self.trial_overrides(chosen))

    def example_overrides(self) -> dict[str, Any]:
        """One trial's sampled and derived values (the first corner of the space)."""
        chosen = _corner_combinations(self.params)[0]
        return {**chosen, **self.derive(chosen)}

    def make_sampler(self) -> Any:
        import optuna

        if self.sampler.name == "random":
            return optuna.samplers.RandomSampler(seed=self.sampler.seed)
        return optuna.samplers.TPESampler(seed=self.sampler.seed)

    def with_overrides(self, extra: Mapping[str, Any]) -> SearchSpace:
        """A copy with more fixed overrides (``--data``, ``--set``), validated again."""
        space = replace(self, overrides={**self.overrides, **extra})
        _check_space(space, _Where(self.source))
        return space


def _lookup(key: str, chosen: Mapping[str, Any], base: Mapping[str, Any]) -> Any:
    return chosen[key] if key in chosen else base[key]


# ----------------------------------------------------------------------------- loading


def bundled_spaces() -> dict[str, Path]:
    """The spaces shipped with the package, by name: ``{"attn": .../attn.yaml, ...}``."""
    folder = importlib.resources.files("search_spaces")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml")
    }


def resolve_space_file(name_or_path: Path | str) -> Path:
    """The space file ``name_or_path`` means: an existing file as given, else the bundled
    space of that name (``attn.yaml`` or ``attn``), from whatever folder this runs in."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_spaces()
    if path.parent == Path(".") and path.stem in bundled and path.suffix in ("", ".yaml"):
        return bundled[path.stem]
    names = ", ".join(f"{n}.yaml" for n in bundled)
    raise SpaceError(
        f"search space '{name_or_path}' is neither a file nor a bundled space; give a path to "
        f"a YAML file or one of the bundled ones: {names}"
    )


def load_space(
    path: Path | str, budget: str | None = None, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
    """Read and validate a space file (a path, or a bundled space's name: see
    :func:`resolve_space_file`); ``budget`` picks a ``budgets`` block (None: full)."""
    path = resolve_space_file(path)
    where = _Where(path)
    raw = _read_yaml(path)
    if not isinstance(raw, Mapping):
        where.fail("", "the file must hold a mapping of keys (name, preset, params, ...)")
    _known_keys(where, "", raw, _TOP_KEYS)
    budgets = raw.get("budgets") or {}
    if not isinstance(budgets, Mapping):
        where.fail("budgets", f"expected a mapping of budget names to blocks, got {budgets!r}")
    for name, block in budgets.items():
        if not isinstance(block, Mapping):
            where.fail(f"budgets.{name}", "expected a mapping (num_samples, asha, ...)")
        _known_keys(where, f"budgets.{name}.", block, _BUDGET_KEYS)

    full = _parse(where, raw, name=path.stem)
    _check_space(full, where)
    spaces = {"full": full}
    for name, block in budgets.items():
        spaces[name] = _apply_budget(where, full, raw, str(name), block)
    budget = budget or "full"
    if budget not in spaces:
        where.fail(
            "budgets",
            f"no budget '{budget}' (this file has {', '.join(spaces)}); "
            f"add a budgets.{budget} block or choose another budget",
        )
    space = spaces[budget]
    return space.with_overrides(overrides) if overrides else space


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML{at}: {problem}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(f"{path}: cannot read the file ({err})") from None


class _Where:
    """Builds the one-line messages: '<file>: <field>: <problem>'."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field_: str, message: str) -> None:
        prefix = f"{self.path}: {field_}: " if field_ else f"{self.path}: "
        raise SpaceError(prefix + message)


def _known_keys(where: _Where, prefix: str, block: Mapping[str, Any], allowed: Sequence[str]):
    for key in block:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            where.fail(f"{prefix}{key}", f"unknown key; {hint}")


def _number(where: _Where, field_: str, value: Any, *, integer: bool = False) -> float:
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        where.fail(field_, f"expected {kind}, got {value!r}")
    if integer and not float(value).is_integer():
        where.fail(field_, f"expected {kind}, got {value!r}")
    if not math.isfinite(value):
        where.fail(field_, f"expected a finite number, got {value!r}")
    return int(value) if integer else float(value)


def _positive(where: _Where, field_: str, value: Any, *, integer: bool = False) -> float:
    number = _number(where, field_, value, integer=integer)
    if number <= 0:
        where.fail(field_, f"must be greater than 0, got {value!r}")
    return number


def _config_key(where: _Where, field_: str, key: Any) -> str:
    keys = valid_keys()
    if key not in keys:
        close = difflib.get_close_matches(str(key), keys, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see moodtheme/config.py for the keys"
        where.fail(field_, f"'{key}' is not a config key; {hint}")
    return str(key)


def _parse(where: _Where, raw: Mapping[str, Any], name: str) -> SearchSpace:
    space_name = raw.get("name", name)
    if not isinstance(space_name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", space_name):
        where.fail(
            "name", f"expected a short name of letters, digits, '-', '_', got {space_name!r}"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        where.fail("description", "expected a string")
    metric = raw.get("metric", "val_pr_auc_macro")
    if not isinstance(metric, str) or not METRIC_PATTERN.match(metric):
        where.fail(
            "metric",
            f"{metric!r} is not a metric the trainer reports; use val_pr_auc_macro, "
            "val_roc_auc_macro, val_loss or a per-head one such as val_attention_pr_auc_macro",
        )
    default_mode = "min" if metric.endswith("loss") else "max"
    mode = raw.get("mode", default_mode)
    if mode not in ("min", "max"):
        where.fail("mode", f"expected 'min' or 'max', got {mode!r}")
    if mode != default_mode:
        where.fail(
            "mode", f"'{mode}' would optimise {metric} the wrong way; use mode: {default_mode}"
        )
    params_raw = raw.get("params")
    if not isinstance(params_raw, Mapping) or not params_raw:
        where.fail(
            "params", "expected a mapping of config keys to distributions, with one at least"
        )
    return SearchSpace(
        name=space_name,
        source=where.path,
        budget="full",
        preset=_preset(where, "preset", raw.get("preset", "quick")),
        overrides=_overrides(where, "overrides", raw.get("overrides")),
        params=_params(where, "params", params_raw),
        derived=_derived(where, raw.get("derived")),
        metric=metric,
        mode=mode,
        num_samples=int(_positive(where, "num_samples", raw.get("num_samples", 10), integer=True)),
        max_concurrent_trials=int(
            _positive(
                where, "max_concurrent_trials", raw.get("max_concurrent_trials", 1), integer=True
            )
        ),
        resources=_resources(where, "resources", raw.get("resources"), Resources()),
        asha=_asha(where, "asha", raw.get("asha"), None),
        sampler=_sampler(where, raw.get("sampler")),
        description=description,
        noise_seeds=_count(where, "noise_seeds", raw.get("noise_seeds", 0)),
    )


def _count(where: _Where, field_: str, value: Any) -> int:
    number = _number(where, field_, value, integer=True)
    if number < 0:
        where.fail(field_, f"must be 0 or more, got {value!r}")
    return int(number)


def _preset(where: _Where, field_: str, value: Any) -> str:
    if value not in PRESETS:
        where.fail(field_, f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
    return str(value)


def _overrides(where: _Where, field_: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        where.fail(field_, "expected a mapping of dotted config keys to values")
    for key in value:
        _config_key(where, f"{field_}.{key}", key)
        if key == "optim.epochs":
            where.fail(f"{field_}.{key}", "the epoch budget is asha.max_t; set that instead")
    return dict(value)


def _params(where: _Where, field_: str, raw: Mapping[str, Any]) -> tuple[Param, ...]:
    params: list[Param] = []
    for key, spec in raw.items():
        params.append(_param(where, f"{field_}.{key}", key, spec, [p.key for p in params]))
    by_key = {p.key: p for p in params}
    for p in params:
        for cond_key, allowed in p.when.items():
            parent = by_key[cond_key]
            if parent.type != "choice":
                where.fail(
                    f"{field_}.{p.key}.when.{cond_key}",
                    "a condition may only test a 'choice' parameter",
                )
            missing = [v for v in allowed if v not in parent.values]
            if missing:
                where.fail(
                    f"{field_}.{p.key}.when.{cond_key}",
                    f"{missing[0]!r} is not among its choices {list(parent.values)}",
                )
    return tuple(params)


def _param(where: _Where, field_: str, key: Any, spec: Any, earlier: list[str]) -> Param:
    _config_key(where, field_, key)
    if key == "optim.epochs":
        where.fail(field_, "the epoch budget is asha.max_t; it cannot be searched")
    if not isinstance(spec, Mapping):
        where.fail(field_, "expected a mapping such as {type: choice, values: [1, 2]}")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        where.fail(f"{field_}.type", f"expected one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    allowed = {
        "choice": ("type", "values", "when"),
        "int": ("type", "low", "high", "step", "log", "when"),
        "uniform": ("type", "low", "high", "step", "when"),
        "loguniform": ("type", "low", "high", "when"),
    }[kind]
    _known_keys(where, f"{field_}.", spec, allowed)
    when = _when(where, f"{field_}.when", spec.get("when"), earlier)

    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list):
            where.fail(f"{field_}.values", "expected a list of values")
        if not values:
            where.fail(f"{field_}.values", "the list is empty; give at least one value")
        for v in values:
            if not (v is None or isinstance(v, bool | int | float | str)):
                where.fail(
                    f"{field_}.values", f"{v!r} is not a single value (number, string, bool)"
                )
        if len({repr(v) for v in values}) != len(values):
            where.fail(f"{field_}.values", "a value is listed twice; list each once")
        return Param(str(key), kind, values=tuple(values), when=when)

    integer = kind == "int"
    for bound in ("low", "high"):
        if bound not in spec:
            where.fail(f"{field_}.{bound}", f"missing; a '{kind}' parameter needs low and high")
    low = _number(where, f"{field_}.low", spec["low"], integer=integer)
    high = _number(where, f"{field_}.high", spec["high"], integer=integer)
    if low > high or (low == high and not integer):
        where.fail(f"{field_}", f"low={spec['low']} must be below high={spec['high']}; swap them")
    step = spec.get("step")
    if step is not None:
        step = _positive(where, f"{field_}.step", step, integer=integer)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        where.fail(f"{field_}.log", f"expected true or false, got {log!r}")
    if kind == "loguniform" or log:
        if low <= 0:
            where.fail(f"{field_}.low", f"a log scale needs low > 0, got {spec['low']}")
        if log and step not in (None, 1):
            where.fail(f"{field_}.step", "a log-scaled int takes no step; remove step")
    return Param(str(key), kind, low=low, high=high, step=step, log=bool(log), when=when)


def _when(where: _Where, field_: str, value: Any, earlier: list[str]) -> dict[str, tuple]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        where.fail(field_, "expected a mapping {parameter: value or [values]}")
    out = {}
    for key, allowed in value.items():
        if key not in earlier:
            where.fail(
                f"{field_}.{key}",
                "a condition must name a parameter listed above this one in params",
            )
        out[str(key)] = tuple(allowed) if isinstance(allowed, list) else (allowed,)
    return out


def _derived(where: _Where, value: Any) -> tuple[Derived, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        where.fail("derived", "expected a mapping {key: {divide: KEY, by: KEY}}")
    out = []
    for key, spec in value.items():
        field_ = f"derived.{key}"
        _config_key(where, field_, key)
        if not isinstance(spec, Mapping):
            where.fail(field_, "expected {divide: KEY, by: KEY}")
        _known_keys(where, f"{field_}.", spec, ("divide", "by"))
        for part in ("divide", "by"):
            if part not in spec:
                where.fail(f"{field_}.{part}", "missing; a derived value is {divide: KEY, by: KEY}")
            _config_key(where, f"{field_}.{part}", spec[part])
        out.append(Derived(str(key), str(spec["divide"]), str(spec["by"])))
    return tuple(out)


def _resources(where: _Where, field_: str, value: Any, base: Resources) -> Resources:
    if value is None:
        return base
    if not isinstance(value, Mapping):
        where.fail(field_, "expected {cpu: N, gpu: N}")
    _known_keys(where, f"{field_}.", value, ("cpu", "gpu"))
    cpu = _number(where, f"{field_}.cpu", value.get("cpu", base.cpu))
    gpu = _number(where, f"{field_}.gpu", value.get("gpu", base.gpu))
    if cpu <= 0:
        where.fail(f"{field_}.cpu", f"must be greater than 0, got {cpu:g}")
    if gpu < 0:
        where.fail(f"{field_}.gpu", f"must be 0 or more, got {gpu:g}")
    if gpu > 1 and not gpu.is_integer():
        where.fail(
            f"{field_}.gpu", f"{gpu:g}: ask for a fraction below 1 or a whole number of GPUs"
        )
    return Resources(cpu=cpu, gpu=gpu)


def _asha(where: _Where, field_: str, value: Any, base: Asha | None) -> Asha:
    if value is None and base is not None:
        return base
    if not isinstance(value, Mapping):
        where.fail(field_, "expected {max_t: EPOCHS, grace_period: N, reduction_factor: N}")
    _known_keys(where, f"{field_}.", value, ("max_t", "grace_period", "reduction_factor"))
    if base is None and "max_t" not in value:
        where.fail(f"{field_}.max_t", "missing; give the epoch budget of a full trial")
    max_t = int(
        _positive(where, f"{field_}.max_t", value.get("max_t", base and base.max_t), integer=True)
    )
    grace = int(
        _positive(
            where,
            f"{field_}.grace_period",
            value.get("grace_period", base.grace_period if base else 1),
            integer=True,
        )
    )
    factor = _number(
        where,
        f"{field_}.reduction_factor",
        value.get("reduction_factor", base.reduction_factor if base else 3),
    )
    if grace > max_t:
        where.fail(f"{field_}.grace_period", f"{grace} exceeds max_t={max_t}; lower it")
    if factor <= 1:
        where.fail(f"{field_}.reduction_factor", f"must be greater than 1, got {factor:g}")
    return Asha(max_t=max_t, grace_period=grace, reduction_factor=factor)


def _sampler(where: _Where, value: Any) -> SamplerSpec:
    if value is None:
        return SamplerSpec()
    if not isinstance(value, Mapping):
        where.fail("sampler", "expected {name: tpe, seed: 0}")
    _known_keys(where, "sampler.", value, ("name", "seed"))
    name = value.get("name", "tpe")
    if name not in SAMPLERS:
        where.fail("sampler.name", f"expected one of {', '.join(SAMPLERS)}, got {name!r}")
    seed = int(_number(where, "sampler.seed", value.get("seed", 0), integer=True))
    return SamplerSpec(name=name, seed=seed)


def _apply_budget(
    where: _Where, full: SearchSpace, raw: Mapping[str, Any], name: str, block: Mapping[str, Any]
) -> SearchSpace:
    prefix = f"budgets.{name}"
    params = {p.key: p for p in full.params}
    raw_params = block.get("params") or {}
    if not isinstance(raw_params, Mapping):
        where.fail(f"{prefix}.params", "expected a mapping of parameters to replace")
    earlier = [p.key for p in full.params]
    for key, spec in raw_params.items():
        if key not in params:
            where.fail(
                f"{prefix}.params.{key}",
                "a budget may only narrow parameters listed in params; add it there first",
            )
        params[key] = _param(where, f"{prefix}.params.{key}", key, spec, earlier)
    space = replace(
        full,
        budget=name,
        preset=_preset(where, f"{prefix}.preset", block.get("preset", full.preset)),
        overrides={
            **full.overrides,
            **_overrides(where, f"{prefix}.overrides", block.get("overrides")),
        },
        params=tuple(params[p.key] for p in full.params),
        noise_seeds=_count(
            where, f"{prefix}.noise_seeds", block.get("noise_seeds", full.noise_seeds)
        ),
        num_samples=int(
            _positive(
                where,
                f"{prefix}.num_samples",
                block.get("num_samples", full.num_samples),
                integer=True,
            )
        ),
        max_concurrent_trials=int(
            _positive(
                where,
                f"{prefix}.max_concurrent_trials",
                block.get("max_concurrent_trials", full.max_concurrent_trials),
                integer=True,
            )
        ),
        resources=_resources(where, f"{prefix}.resources", block.get("resources"), full.resources),
        asha=_asha(where, f"{prefix}.asha", block.get("asha"), full.asha),
    )
    _check_space(space, where)
    return space


# ----------------------------------------------------------------------------- cross-checks


def _check_space(space: SearchSpace, where: _Where) -> None:
    """Build the config at every corner of the space, so a bad combination fails now."""
    label = f" (budget '{space.budget}')" if space.budget != "full" else ""
    searched = {p.key for p in space.params}
    for key in space.overrides:
        if key in searched:
            where.fail(f"overrides.{key}", f"also listed in params{label}; keep one of the two")
    for d in space.derived:
        if d.key in searched or d.key in space.overrides:
            where.fail(f"derived.{d.key}", "also set in params or overrides; keep one of the three")
    fixed = space.fixed_values()
    for combo in _corner_combinations(space.params):
        _check_combination(space, where, combo, fixed, label)


def _corner_combinations(params: Sequence[Param]) -> list[dict[str, Any]]:
    options = [[*p.corners(), *([_ABSENT] if p.when else [])] for p in params]
    total = math.prod(len(o) for o in options)
    if total <= MAX_CORNER_COMBINATIONS:
        grid = itertools.product(*options)
    else:  # one parameter at a time, the others at their first corner
        firsts = [o[0] for o in options]
        grid = (
            tuple(v if j == i else firsts[j] for j in range(len(options)))
            for i, o in enumerate(options)
            for v in o
        )
    combos = []
    for values in grid:
        chosen = {p.key: v for p, v in zip(params, values, strict=True) if v is not _ABSENT}
        # Keep only combinations the define-by-run function can actually produce.
        if all((p.key in chosen) == p.active(chosen) for p in params):
            combos.append(chosen)
    return combos


_ABSENT = object()


def _check_combination(
    space: SearchSpace, where: _Where, chosen: dict[str, Any], flat: dict[str, Any], label: str
) -> None:
    for d in space.derived:
        numerator, denominator = _lookup(d.divide, chosen, flat), _lookup(d.by, chosen, flat)
        if not isinstance(numerator, int) or not isinstance(denominator, int) or denominator <= 0:
            where.fail(
                f"derived.{d.key}{label}",
                f"{d.divide}={numerator!r} and {d.by}={denominator!r} must be positive integers",
            )
        if numerator % denominator:
            where.fail(
                f"derived.{d.key}{label}",
                f"{d.divide}={numerator} is not divisible by {d.by}={denominator}; "
                f"choose values of {d.by} that divide {numerator}",
            )
    try:
        space.trial_config(chosen)
    except ConfigError as err:
        text = str(err)
        shown = ", ".join(f"{k}={v!r}" for k, v in chosen.items())
        searched = next((k for k in chosen if k in text), None)
        fixed = next((k for k in space.overrides if k in text), None)
        if searched is not None:
            where.fail(
                f"params.{searched}{label}",
                f"the combination {shown} gives an invalid config ({text}); "
                "narrow the parameter's range",
            )
        if fixed is not None:
            where.fail(f"overrides.{fixed}{label}", text)
        if "optim.epochs" in text:
            where.fail(
                f"asha.max_t{label}",
                f"every trial trains {space.asha.max_t} epochs, which the '{space.preset}' "
                f"preset does not allow ({text}); set the other key in overrides",
            )
        where.fail(f"preset{label}", f"{text}; fix it in overrides")
