"""The import direction the architecture promises: ablations -> tune -> moodtheme, never back,
the core free of Ray, Optuna and MLflow, and every Ray call inside tune.ray_adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Each module file of ``package`` -> the top-level-qualified modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in imported_modules(package).items()
        for name in sorted(names)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("moodtheme", ("tune", "ablations", "ray", "optuna", "mlflow")),
        ("tune", ("ablations",)),
        ("ablations", ("tune.ray_adapter", "ray", "optuna")),
    ],
)
def test_imports_flow_one_way(package, forbidden):
    assert offenders(package, forbidden) == []


def test_ray_is_called_only_from_the_adapter():
    outside = [o for o in offenders("tune", ("ray",)) if not o.startswith("tune/ray_adapter/")]
    assert outside == []


def test_the_checker_sees_an_offending_import(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "bad.py").write_text("from ray import tune\nimport os\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert offenders("pkg", ("ray",)) == ["pkg/bad.py imports ray", "pkg/bad.py imports ray.tune"]
