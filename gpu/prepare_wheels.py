"""Bring the wheels the GPU machine lacks: ``python gpu/prepare_wheels.py [--split]``.

Run it with the project's own environment (``.venv/bin/python``), in the checkout that the
device tool sends, since the wheels must lie in that checkout's ignored ``.whl/`` folder.
For every package in gpu/wheels.txt it downloads the CPython 3.12 manylinux x86_64 wheel of
the version this environment runs (so the device runs what CI tests), slims Ray (its Java
jars, RLlib, Serve, LLM and dashboard front end: Ray Tune needs none of them), checks that
every requirement of every wheel is either brought or on the device image
(gpu/device_packages.txt), and that one device call carrying them stays under 64 MiB
together with the checkout. It prints each wheel's size and the payload, and writes
``.whl/manifest.json``. A second run reuses the wheels already there.

With ``--split``, Ray goes to ``.whl/`` and the rest to ``.whl2/``, for two calls on the warm
machine (docs/benchmarks.md, "GPU pool"); use it only if one call does not fit.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

if __package__ in (None, ""):  # run as a script: python gpu/prepare_wheels.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu.payload import SPLIT_FOLDER, WHEEL_FOLDER, PayloadError, check, mib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WHEEL_LIST = HERE / "wheels.txt"
DEVICE_PACKAGES = HERE / "device_packages.txt"
MANIFEST = "manifest.json"
# Ray folders that a Python-only Ray Tune run never imports (measured in issue 18: the
# 79.3 MB wheel is 44.3 MB without the first four); the dashboard's web front end is not
# served either, since tune.ray_adapter.connect starts Ray with include_dashboard=False.
RAY_SLIM = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/")
# The device image: CPython 3.12 on x86_64 Linux (glibc of Ubuntu 24.04, 2.39).
PYTHON_VERSION = "3.12"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (5, 12, 17, 24, 27, 28, 31, 34, 35, 39)] + [
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
    "manylinux2014_x86_64",
]
MARKER_ENV = {
    "python_version": PYTHON_VERSION,
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}


class WheelError(RuntimeError):
    """A wheel cannot be brought or would not install there; the message says what to do."""


@dataclass(frozen=True)
class Wanted:
    name: str  # canonical
    extras: tuple[str, ...]
    version: str


def read_wheel_list(path: Path = WHEEL_LIST) -> tuple[list[Wanted], set[str]]:
    """The wanted packages (versions from this environment unless pinned) and the names of
    requirements deliberately not brought."""
    wanted, skipped = [], set()
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-"):
            skipped.add(canonicalize_name(line[1:]))
            continue
        req = Requirement(line)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        try:
            version = pinned[0] if pinned else importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise WheelError(
                f"{path}:{number}: {req.name} is not installed in {sys.executable}; run with "
                f"the project's .venv/bin/python or pin it as {req.name}==VERSION"
            ) from None
        wanted.append(Wanted(canonicalize_name(req.name), tuple(sorted(req.extras)), version))
    return wanted, skipped


def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    words = " ".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    return {canonicalize_name(word) for word in words.split()}


def wheel_identity(path: Path) -> tuple[str, str]:
    name, version, _, _ = parse_wheel_filename(path.name)
    return canonicalize_name(name), str(version)


def download(want: Wanted, into: Path) -> Path:
    """pip's cp312 manylinux wheel of ``want`` (no dependencies: those are checked below)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        *platforms,
        "--dest",
        str(into),
        f"{want.name}=={want.version}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    found = [p for p in into.glob("*.whl") if wheel_identity(p) == (want.name, want.version)]
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise WheelError(
            f"pip found no cp312 manylinux wheel of {want.name}=={want.version}: {last}"
        )
    return found[0]


def slim(wheel: Path, prefixes: tuple[str, ...]) -> int:
    """Rewrite ``wheel`` without the files under ``prefixes`` (and their RECORD lines).
    Returns how many files went; 0 leaves the file untouched."""
    with zipfile.ZipFile(wheel) as source:
        dropped = [i for i in source.infolist() if i.filename.startswith(prefixes)]
        if not dropped:
            return 0
        tmp = wheel.with_suffix(".slim")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for info in source.infolist():
                if info.filename.startswith(prefixes):
                    continue
                data = source.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    kept = [
                        line for line in data.decode().splitlines() if not line.startswith(prefixes)
                    ]
                    data = ("\n".join(kept) + "\n").encode()
                target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    tmp.replace(wheel)
    return len(dropped)


def requirements(wheel: Path, extras: tuple[str, ...]) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on the device (with the extras asked for)."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(z.read(name).decode())
    applying = []
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        marker: Marker | None = req.marker
        if marker is None or any(
            marker.evaluate({**MARKER_ENV, "extra": extra}) for extra in ("", *extras)
        ):
            applying.append(req)
    return applying


def unmet(wheels: dict[str, Path], wanted: list[Wanted], skipped: set[str]) -> list[str]:
    """Requirements neither brought (at a fitting version), on the device, nor skipped."""
    on_device = device_packages()
    versions = {name: Version(wheel_identity(path)[1]) for name, path in wheels.items()}
    problems = []
    for want in wanted:
        for req in requirements(wheels[want.name], want.extras):
            dep = canonicalize_name(req.name)
            if dep in versions:
                if not req.specifier.contains(versions[dep], prereleases=True):
                    problems.append(f"{want.name} needs {req}, brought {dep} {versions[dep]}")
            elif dep not in on_device and dep not in skipped:
                problems.append(f"{want.name} needs {req}: neither brought nor on the device")
    return problems


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(split: bool = False, repo: Path = REPO) -> dict:
    wanted, skipped = read_wheel_list()
    folders = {WHEEL_FOLDER: repo / WHEEL_FOLDER, SPLIT_FOLDER: repo / SPLIT_FOLDER}

    def folder_of(name: str) -> Path:
        return folders[SPLIT_FOLDER if split and name != "ray" else WHEEL_FOLDER]

    wheels: dict[str, Path] = {}
    previous = folders[WHEEL_FOLDER] / MANIFEST
    slimmed: dict[str, int] = dict(
        json.loads(previous.read_text()).get("ray_bytes", {}) if previous.is_file() else {}
    )
    for want in wanted:
        folder = folder_of(want.name)
        folder.mkdir(exist_ok=True)
        here = next(
            (
                p
                for f in folders.values()
                for p in f.glob("*.whl")
                if wheel_identity(p) == (want.name, want.version)
            ),
            None,
        )
        if here is None:
            with tempfile.TemporaryDirectory() as tmp:
                fetched = download(want, Path(tmp))
                here = folder / fetched.name
                fetched.replace(here)
            print(f"downloaded {here.name} ({mib(here.stat().st_size)})", flush=True)
        elif here.parent != folder:
            here = here.replace(folder / here.name)
        if want.name == "ray":
            before = here.stat().st_size
            if slim(here, RAY_SLIM):
                slimmed["before_bytes"] = before
            slimmed["after_bytes"] = here.stat().st_size
        wheels[want.name] = here
    # One version of each package: a second one stops pip's whole install.
    for f in folders.values():
        for stray in f.glob("*.whl") if f.is_dir() else []:
            if stray not in wheels.values():
                print(f"removed {stray.name} (not in {WHEEL_LIST.name} at this version)")
                stray.unlink()
    problems = unmet(wheels, wanted, skipped)
    if problems:
        raise WheelError("; ".join(problems) + f"; add them to {WHEEL_LIST}")

    carry = [WHEEL_FOLDER, SPLIT_FOLDER] if split else [WHEEL_FOLDER]
    if not split and folders[SPLIT_FOLDER].is_dir():
        for leftover in folders[SPLIT_FOLDER].iterdir():
            leftover.unlink()
        folders[SPLIT_FOLDER].rmdir()
    payloads = [check(repo, [folder]) for folder in carry]
    manifest = {
        "python": PYTHON_VERSION,
        "ray_removed": list(RAY_SLIM),
        "ray_bytes": slimmed,
        "calls": [
            {"carry": [f], "bytes": p.total, "text": p.describe()}
            for f, p in zip(carry, payloads, strict=True)
        ],
        "wheels": [
            {
                "file": str(path.relative_to(repo)),
                "name": name,
                "version": wheel_identity(path)[1],
                "bytes": path.stat().st_size,
                "sha256": sha256(path),
            }
            for name, path in sorted(wheels.items())
        ],
    }
    (folders[WHEEL_FOLDER] / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--split", action="store_true", help=f"Ray in {WHEEL_FOLDER}/, the rest in {SPLIT_FOLDER}/"
    )
    args = parser.parse_args(argv)
    try:
        manifest = prepare(split=args.split)
    except (WheelError, PayloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for wheel in manifest["wheels"]:
        print(f"{wheel['bytes']:>11,d} B  {wheel['file']}")
    if manifest["ray_bytes"]:
        ray = manifest["ray_bytes"]
        before = f"{ray['before_bytes']:,d} B -> " if "before_bytes" in ray else ""
        print(f"ray slimmed: {before}{ray['after_bytes']:,d} B")
    for call in manifest["calls"]:
        print(f"call carrying {call['carry']}: {call['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
