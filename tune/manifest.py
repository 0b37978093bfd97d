"""``search.json``: what a search was started with, so ``--resume`` continues exactly that.

Tune's own state (``tuner.pkl``, the searcher) restores the trials; the manifest adds what
Tune does not know: the trials' fixed overrides (the data root included), where the MLflow
runs are, and the *definition*: the space file and its hash, budget, ``--set``, metric and
data. A resume compares the definition it is given with the recorded one and refuses any
difference in one line, so an edited space file or a forgotten ``--data`` cannot turn into a
mix of two searches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "search.json"


class ManifestError(RuntimeError):
    """A missing, unreadable or mismatching manifest; the message says what to do."""


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(exp_dir: str, record: Mapping[str, Any]) -> None:
    text = json.dumps(dict(record), indent=2, default=str)
    if _is_uri(exp_dir):
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(f"{exp_dir}/{MANIFEST}")
        with fs.open_output_stream(path) as out:
            out.write(text.encode())
    else:
        tmp = Path(exp_dir, MANIFEST + ".tmp")
        tmp.write_text(text)
        tmp.replace(Path(exp_dir, MANIFEST))


def read_manifest(exp_dir: str) -> dict[str, Any]:
    """The manifest of the search at ``exp_dir``; a missing or damaged one is an error (a
    resume without it would start a new MLflow parent run and orphan the trials' runs)."""
    where = f"{exp_dir}/{MANIFEST}"
    try:
        if _is_uri(exp_dir):
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(where)
            with fs.open_input_stream(path) as f:
                text = f.read().decode()
        else:
            text = Path(where).read_text()
        record = json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ManifestError(
            f"{where} is missing or unreadable ({type(err).__name__}); the search cannot be "
            "resumed safely: start it again under a new --name"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("fixed"), dict):
        raise ManifestError(f"{where} is not a search manifest; start again under a new --name")
    return record


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: started with X, now Y`` for every key of ``current`` that differs from the
    recorded definition (a key the recorded one lacks is not compared)."""
    return [
        f"{key}: started with {recorded[key]!r}, now {value!r}"
        for key, value in current.items()
        if key in recorded and _plain(recorded[key]) != _plain(value)
    ]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _is_uri(path: str) -> bool:
    return "://" in path
