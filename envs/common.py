"""Building blocks shared by the Gymnasium environments: resolving their parameters with
clear errors, and the scale-free encodings of traffic and utilization that make a policy
independent of the units (and the absolute level) of the traffic it sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from topologies import PathSet, Routing, Topology, TrafficSequence, k_shortest_paths, load_topology, load_traffic

from .backend import Backend, make_backend
from .twin import FluidTwin


def resolve_topology(topology: Topology | str) -> Topology:
    if isinstance(topology, Topology):
        return topology
    if isinstance(topology, str):
        return load_topology(topology)  # raises a clear error naming unknown topologies
    raise TypeError(f"topology must be a Topology or a name, got {type(topology).__name__}")


def resolve_traffic(traffic: TrafficSequence | np.ndarray | str, topology: Topology,
                    options: Mapping[str, Any] | None = None) -> TrafficSequence:
    """A sequence for ``topology``: a TrafficSequence, a (T, N, N) array, or a dataset/model name."""
    if isinstance(traffic, str):
        return load_traffic(traffic, topology, **dict(options or {}))
    sequence = traffic if isinstance(traffic, TrafficSequence) else TrafficSequence("custom", np.asarray(traffic))
    sequence.check_topology(topology)  # raises TrafficError naming both sizes
    return sequence


def resolve_pathset(topology: Topology, k: int, metric: str, pathset: PathSet | None) -> PathSet:
    if pathset is not None:
        if pathset.topology.fingerprint() != topology.fingerprint():
            raise ValueError("pathset was built for another topology")
        return pathset
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (candidate paths per pair) must be an integer >= 1, got {k!r}")
    return k_shortest_paths(topology, int(k), metric)


def resolve_network(topology: Topology | str, traffic: TrafficSequence | np.ndarray | str, k: int, metric: str,
                    pathset: PathSet | None, traffic_options: Mapping[str, Any] | None
                    ) -> tuple[Topology, TrafficSequence, PathSet]:
    """An environment's topology, traffic sequence and candidate paths, checked against each other."""
    topology = resolve_topology(topology)
    return topology, resolve_traffic(traffic, topology, traffic_options), resolve_pathset(topology, k, metric, pathset)


def resolve_backend(backend: str | Backend, pathset: PathSet) -> tuple[Backend, bool]:
    """The backend an environment runs on, and whether the environment made it (and so closes it)."""
    if isinstance(backend, str):
        return make_backend(backend, pathset), True
    return backend, False


def check_optimal_mlu(optimal_mlu, length: int) -> np.ndarray | None:
    if optimal_mlu is None:
        return None
    optimal = np.asarray(optimal_mlu, dtype=np.float64)
    if optimal.shape != (length,):
        raise ValueError(f"optimal_mlu must hold one value per traffic matrix ({length}), got shape {optimal.shape}")
    if not (np.isfinite(optimal).all() and (optimal > 0).all()):
        raise ValueError("optimal_mlu must be finite and positive")
    return optimal


def equal_split_mlu(pathset: PathSet, demands: np.ndarray) -> np.ndarray:
    """(T,) MLU of an equal split of every pair demand vector in ``demands`` (T, P): the
    scale-free reference both environments measure congestion against (one batched call)."""
    return np.asarray(FluidTwin(pathset).mlu(None, Routing.uniform(pathset).ratios, demands=demands), dtype=np.float64)


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, zero where ``mask`` is False."""
    logits = np.where(mask, logits, -np.inf)
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def scale_free(values: np.ndarray) -> np.ndarray:
    """``values / values.max()`` (zeros stay zeros): min-MLU routing does not depend on the
    traffic's scale, so neither should what a policy sees."""
    peak = float(np.max(values)) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)
