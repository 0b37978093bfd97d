"""The mission's commands work as written from any folder, and installed copies carry the
bundled search spaces."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tune.space import SpaceError, bundled_spaces, load_space, resolve_space_file

REPO = Path(__file__).resolve().parents[1]


def test_a_bundled_space_is_found_by_its_bare_name_from_any_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert set(bundled_spaces()) >= {"attn", "mobilenet", "smoke"}
    for name in ("attn.yaml", "attn"):
        assert resolve_space_file(name) == bundled_spaces()["attn"]
    assert load_space("attn.yaml", "quick").name == "attn"


def test_a_path_still_means_that_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    own = (REPO / "search_spaces" / "smoke.yaml").read_text().replace("name: smoke", "name: mine")
    Path("attn.yaml").write_text(own)
    assert resolve_space_file("attn.yaml") == Path("attn.yaml")
    assert load_space("attn.yaml").name == "mine"
    with pytest.raises(SpaceError, match="neither a file nor a bundled space"):
        resolve_space_file("elsewhere/attn.yaml")


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_mission_commands_start_from_another_folder(tmp_path):
    # The space resolves (it is read before --num-samples is checked), nothing trains.
    found = run_cli("tune.search", "--space", "attn.yaml", "--num-samples", "0", cwd=tmp_path)
    assert found.returncode == 2, found.stderr
    assert found.stderr.strip() == "error: --num-samples must be at least 1, got 0"
    missing = run_cli("tune.search", "--space", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "attn.yaml, mobilenet.yaml, smoke.yaml" in missing.stderr
    listed = run_cli("ablations.run", "--list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "self-attention" in listed.stdout


@pytest.mark.slow
def test_the_wheel_carries_the_bundled_spaces(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("moodtheme-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for space in ("attn", "mobilenet", "smoke"):
        assert f"search_spaces/{space}.yaml" in names
    assert "search_spaces/__init__.py" in names
