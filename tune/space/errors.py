"""One-line errors of a space file: ``<file>: <field path>: <problem and fix>``.

The field path is a location tuple: pydantic's ``loc`` for the file's schema, or the place
the drawable-values check was looking at. Nothing here reads an error's text to find a key.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

T = TypeVar("T")
Loc = Sequence[str | int]

# Values echoed in a message are shortened: a file may hold a 200 KB string, and a message is
# one line a person reads.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 6, 4, 2
# A ConfigError's text is embedded whole only up to this many characters.
MAX_EMBEDDED = 300


class SpaceError(ValueError):
    """A mistake in a search-space file; the message names the file, the field and the fix."""


def shown(value: Any) -> str:
    """A short repr of a value from the file, for a message."""
    return _SHORT.repr(value)


def shortened(text: str) -> str:
    return text if len(text) <= MAX_EMBEDDED else text[: MAX_EMBEDDED - 3] + "..."


def field_path(loc: Loc) -> str:
    """("params", "model.segments", "values", 2) -> "params.model.segments.values[2]"."""
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping's key (the key itself precedes)
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def space_error(path: Path | str, loc: Loc, problem: str) -> SpaceError:
    where = field_path(loc)
    return SpaceError(f"{path}: {where}: {problem}" if where else f"{path}: {problem}")


def fail_at(loc: Loc, problem: str) -> NoReturn:
    """Raise, from inside a pydantic validator, an error at ``loc`` below the value being
    validated; pydantic prepends the value's own location."""
    error = PydanticCustomError("space", "{problem}", {"problem": problem})
    raise ValidationError.from_exception_data(
        "space", [InitErrorDetails(type=error, loc=tuple(loc), input=None)]
    )


def problem(message: str) -> PydanticCustomError:
    """An error to raise from a validator at the value's own location."""
    return PydanticCustomError("space", "{problem}", {"problem": message})


def validated(path: Path | str, adapter: TypeAdapter[T], raw: Any, prefix: Loc = ()) -> T:
    """``raw`` validated by ``adapter``; the first error becomes a one-line SpaceError located
    at ``prefix`` + pydantic's loc."""
    try:
        return adapter.validate_python(raw)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        raise space_error(path, (*prefix, *first["loc"]), _describe(first)) from None


def pydantic_words(error: Mapping[str, Any]) -> str:
    """What one of pydantic's own errors (a bound, a type, a literal) says, as a clause."""
    return error["msg"][0].lower() + error["msg"][1:]


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "space":  # ours: the message already says what to do
        return error["ctx"]["problem"]
    return f"{pydantic_words(error)}, got {shown(error['input'])}"
