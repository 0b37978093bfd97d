"""Reading a space file's YAML: small, plain, and each key once.

A space file is a few hundred bytes of mappings, lists and scalars, so the reader refuses
what such a file never needs and what makes a hostile one expensive: files over
:data:`MAX_BYTES`, aliases (an alias bomb expands a few lines into gigabytes), nesting
deeper than :data:`MAX_DEPTH`, and a key written twice (YAML would keep the last silently).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tune.space.errors import SpaceError, space_error

MAX_BYTES = 256 * 1024
MAX_DEPTH = 20
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a space file may not use."""


class _SpaceLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases, with a depth limit, and reading ``1e-4`` as a
    number (YAML 1.1 reads it as a string; YAML 1.2 and people read it as 0.0001)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                problem=f"the alias *{event.anchor} is refused (space files take no aliases); "
                "write the value out",
                problem_mark=event.start_mark,
            )
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(
                problem=f"nested deeper than {MAX_DEPTH} levels; a space file needs a few",
                problem_mark=self.peek_event().start_mark,
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_space_file(path: Path) -> Any:
    """The file's YAML as plain Python values; SpaceError for anything refused."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # never more: the file may be huge or endless
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the file ({err.strerror or err})") from None
    if len(data) > MAX_BYTES:
        raise SpaceError(
            f"{path}: larger than {MAX_BYTES // 1024} KiB; a space file is a page of YAML, "
            "is this the right file?"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not UTF-8 text; is this a space file?") from None
    loader = _SpaceLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_keys(loader, path, node, ())
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        raise _yaml_error(path, err) from None
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise SpaceError(
            f"{path}: nested too deeply to read; a space file needs a few levels"
        ) from None
    finally:
        loader.dispose()


def _yaml_error(path: Path, err: yaml.MarkedYAMLError) -> SpaceError:
    mark = err.problem_mark or err.context_mark
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    what = err.problem or err.context or "unreadable"
    return SpaceError(
        f"{path}: {at}{what if isinstance(err, _Refused) else 'not valid YAML: ' + what}"
    )


def _check_keys(loader: _SpaceLoader, path: Path, node: Node, loc: tuple[str | int, ...]) -> None:
    """Refuse a key written twice (after YAML typing: ``1`` and ``1.0`` are one key),
    non-scalar keys and merge keys, naming where they are."""
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            _check_keys(loader, path, item, (*loc, i))
    if not isinstance(node, MappingNode):
        return
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            raise space_error(
                path, loc, f"line {line}: merge keys (<<) are refused; write the keys out"
            )
        if not isinstance(key_node, ScalarNode):
            raise space_error(
                path, loc, f"line {line}: a key must be a name, not a list or mapping"
            )
        key = loader.construct_object(key_node)
        if key in seen:
            lines = f"lines {seen[key]} and {line}" if seen[key] != line else f"line {line}"
            raise space_error(
                path,
                (*loc, str(key)),
                f"written twice ({lines}; YAML would keep the last silently); keep one",
            )
        seen[key] = line
        _check_keys(loader, path, value_node, (*loc, str(key)))
