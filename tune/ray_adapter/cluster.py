"""Joining or starting Ray, and what its nodes offer."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ray


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the search; the message says what to change."""


# ----------------------------------------------------------------------------- cluster


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
