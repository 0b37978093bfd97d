"""Finding a space file, reading it and compiling it into a checked SearchSpace."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from tune.space import drawable
from tune.space.errors import SpaceError, validated
from tune.space.file import SpaceFile
from tune.space.reader import read_space_file
from tune.space.schema import default_mode
from tune.space.search_space import SearchSpace

_FILE = TypeAdapter(SpaceFile)


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
    """Read and check a space file (a path, or a bundled space's name: see
    :func:`resolve_space_file`); ``budget`` picks a ``budgets`` block (None: full).

    Every budget of the file is checked, whichever is asked for, so a mistake in one is
    found before a run needs it.
    """
    path = resolve_space_file(path)
    file = validated(path, _FILE, read_space_file(path))
    spaces = {"full": _compile(path, file, "full")}
    for name in file.budgets:
        block = validated(path, _FILE, file.budget_input(name), prefix=("budgets", name))
        spaces[name] = _compile(path, block, name)
    for space in spaces.values():
        drawable.check(space)
    budget = budget or "full"
    if budget not in spaces:
        raise SpaceError(
            f"{path}: budgets: no budget '{budget}' (this file has {', '.join(spaces)}); "
            f"add a budgets.{budget} block or choose another budget"
        )
    space = spaces[budget]
    return space.with_overrides(overrides) if overrides else space


def _compile(path: Path, file: SpaceFile, budget: str) -> SearchSpace:
    return SearchSpace(
        name=file.name or path.stem,
        source=path,
        budget=budget,
        preset=file.preset,
        overrides=dict(file.overrides),
        params=tuple(spec.param(key) for key, spec in file.params.items()),
        derived=tuple(spec.derived(key) for key, spec in file.derived.items()),
        metric=file.metric,
        mode=file.mode or default_mode(file.metric),
        num_samples=file.num_samples,
        max_concurrent_trials=file.max_concurrent_trials,
        resources=file.resources,
        asha=file.asha,
        sampler=file.sampler,
        description=file.description,
        noise_seeds=file.noise_seeds,
    )
