"""Joining or starting Ray, and what its nodes offer."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the search; the message says what to change."""


def connect(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> bool:
    """Join the cluster at ``address`` ('auto' or host:port), else start Ray locally.

    Returns whether this call started Ray (and so should stop it). An already initialised
    Ray session (tests share one per module) is reused as it is.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        # "local" always starts a fresh instance: a bare ray.init() would join whatever
        # cluster last ran on this machine, or hang on one that died.
        address = "local"
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise ClusterError(
            f"cannot join the Ray cluster at {address} ({err}); start it with "
            "'ray start --head' or drop --address to run locally"
        ) from None
    keep_token_private()
    return True


def token_path() -> Path:
    """Where Ray reads (and a local ``ray.init`` writes) the cluster's auth token."""
    configured = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(configured) if configured else Path.home() / ".ray" / "auth_token"


def keep_token_private(path: Path | None = None) -> bool:
    """Make the auth token readable by its owner only; True when its mode was changed.

    Ray writes the file with the process umask, usually leaving it readable by every user of
    the machine, and whoever holds the token runs code on every node of the cluster. A file
    of another user is left alone (it is theirs to fix)."""
    path = path or token_path()
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_uid != os.getuid() or not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return False
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    logging.getLogger(__name__).warning("made the Ray auth token %s owner-only (0600)", path)
    return True


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def node_resources() -> list[dict[str, float]]:
    """Total resources of every alive node (CPU, GPU, memory, custom)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def fits_somewhere(request: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Whether one node alone can host a trial asking for ``request`` (Ray places a trial's
    resources on a single node)."""
    return any(
        all(node.get(key, 0.0) + 1e-9 >= amount for key, amount in request.items() if amount > 0)
        for node in nodes
    )


def node_request(resources: Mapping[str, float]) -> dict[str, float]:
    """A trial's ``{"cpu": 1, "gpu": 0.5}`` in the node resource names (``CPU``, ``GPU``)."""
    return {key.upper() if key in ("cpu", "gpu") else key: v for key, v in resources.items()}


def describe_nodes(nodes: Sequence[Mapping[str, float]]) -> str:
    def one(n: Mapping[str, float]) -> str:
        return f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU"

    return f"{len(nodes)} node(s): " + "; ".join(one(n) for n in nodes)
