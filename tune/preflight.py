"""Checks run before any trial starts: storage writable, data present and sound, tracking
store reachable, and a cluster node big enough for one trial. Each failure is one line
that says what to fix."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from moodtheme.config import Config

DATA_SAMPLE = 16


class PreflightError(RuntimeError):
    """A precondition of the search does not hold; the message says what to fix."""


def is_uri(storage: str) -> bool:
    return "://" in storage and urlparse(storage).scheme not in ("", "file")


def check_storage(storage: str) -> str:
    """Create the results location if needed and prove it writable. Returns it as Ray wants
    it: an absolute path, or the URI unchanged."""
    probe = f".preflight-{uuid.uuid4().hex}"
    if not is_uri(storage):
        root = Path(storage.removeprefix("file://")).expanduser().resolve()
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / probe).write_text("ok")
            (root / probe).unlink()
        except OSError as err:
            raise PreflightError(
                f"storage {root} is not writable ({err.strerror or err}); "
                "pass --storage with a directory you can write to"
            ) from None
        return str(root)
    try:
        import pyarrow.fs

        fs, path = pyarrow.fs.FileSystem.from_uri(storage)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path.rstrip('/')}/{probe}") as out:
            out.write(b"ok")
        fs.delete_file(f"{path.rstrip('/')}/{probe}")
    except Exception as err:  # pyarrow raises OSError, ArrowInvalid, ... per backend
        raise PreflightError(
            f"storage {storage} is not writable ({str(err).splitlines()[0][:200]}); "
            "check the URI and the credentials, or pass a shared directory to --storage"
        ) from None
    return storage


def check_data(config: Config, sample: int = DATA_SAMPLE) -> Path:
    """The melspec root every trial will read (the cached synthetic set when data.root is
    unset: generated here, once, rather than by racing trials), checked before any trial
    starts: every file's header (missing, unreadable, truncated, wrong shape or dtype; a few
    hundred bytes a file, with a progress line), and the full content of ``sample`` files."""
    from moodtheme.data.check import check_dataset
    from moodtheme.data.loaders import resolve_data_root
    from moodtheme.errors import TrainingError

    try:
        root = resolve_data_root(config.data.root)
    except (TrainingError, ValueError, OSError) as err:  # synthetic data errors are ValueErrors
        raise PreflightError(f"data: {err}") from None
    splits_dir = Path(config.data.splits_dir) if config.data.splits_dir else None
    n_mels = config.data.n_mels
    try:
        headers = check_dataset(
            root,
            config.data.split,
            splits_dir=splits_dir,
            n_mels=n_mels,
            content=False,
            progress=True,
        )
        _refuse(root, headers, "files are bad")
        sampled = check_dataset(
            root, config.data.split, splits_dir=splits_dir, n_mels=n_mels, sample=sample
        )
        _refuse(root, sampled, f"of {sample} sampled files are bad")
    except (OSError, ValueError, RuntimeError) as err:
        raise PreflightError(f"data at {root}: {err}") from None
    return root


def _refuse(root: Path, problems: Sequence[object], what: str) -> None:
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        raise PreflightError(
            f"data at {root}: {len(problems)} {what} ({shown}); "
            f"run 'python -m moodtheme.data check --data {root}' for the full list"
        )


def check_resources(
    request: Mapping[str, float], nodes: Sequence[Mapping[str, float]], source: str
) -> None:
    """Stop at once if no single node can host one trial (Ray would leave it pending)."""
    from tune.ray_adapter import describe_nodes, fits_somewhere, node_request

    wanted = node_request(request)
    if fits_somewhere(wanted, nodes):
        return
    asked = ", ".join(f"{v:g} {k}" for k, v in wanted.items() if v)
    fix = (
        "set resources.gpu: 0 for CPU trials, or join a GPU cluster with --address"
        if wanted.get("GPU", 0) > max((n.get("GPU", 0) for n in nodes), default=0)
        else "lower resources.cpu, or join a bigger cluster with --address"
    )
    raise PreflightError(
        f"{source}: a trial asks for {asked} but the Ray cluster has no such node "
        f"({describe_nodes(nodes)}); {fix}"
    )


ADDRESS_PROBE_S = 3.0


def check_address(address: str | None, timeout_s: float = ADDRESS_PROBE_S) -> None:
    """Refuse, in seconds, an ``--address`` Ray could only fail on after minutes: it must be
    ``auto`` or ``host:port`` of a head that accepts a TCP connection."""
    if address is None or address == "auto":
        return
    import socket

    if "://" in address:
        raise PreflightError(
            f"--address {address}: give the head's host:port (the GCS port of ray start "
            "--head, 6379 by default) or auto, not a URL"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PreflightError(
            f"--address {address}: expected host:port, e.g. 10.0.0.5:6379, or auto"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise PreflightError(
            f"--address {address}: no Ray head answers there ({err.strerror or err}); start it "
            "with ray start --head, or drop --address to run locally"
        ) from None
