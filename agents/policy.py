"""One interface for every way of routing: "given the traffic history, give a routing".

A :class:`RoutingPolicy` owns a :class:`PathSet` and returns split ratios (P, K) from
the last ``history`` traffic matrices (oldest first). Static routings ignore the
history; oracles are ``clairvoyant``: the matrix they route is the last one they see.
Baselines, LPs and (later) learned agents all implement it, so evaluation treats them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from topologies import PathSet, Routing, Topology, equal_cost_paths, k_shortest_paths

from .lp import path_lp


@runtime_checkable
class RoutingPolicy(Protocol):
    name: str
    pathset: PathSet
    history: int        # how many past matrices ``route`` needs (0: none)
    clairvoyant: bool   # True: the last matrix given is the one being routed (oracles)

    def route(self, history: np.ndarray) -> np.ndarray:
        """(h, N, N) matrices, oldest first -> (P, K) split ratios."""
        ...


@dataclass
class StaticPolicy:
    """A fixed routing, whatever the traffic."""

    name: str
    routing: Routing
    history: int = 0
    clairvoyant: bool = False

    @property
    def pathset(self) -> PathSet:
        return self.routing.pathset

    def route(self, history: np.ndarray) -> np.ndarray:
        return self.routing.ratios


@dataclass
class LPPolicy:
    """The path LP on the most recent matrix it sees.

    With ``clairvoyant=True`` that matrix is the one being routed (the oracle); else it
    is the previous one ("LP on the previous TM", what operators run today).
    """

    name: str
    pathset: PathSet
    clairvoyant: bool = False
    tie_break: str = "none"  # see agents.lp.path_lp
    history: int = field(default=1, init=False)

    def route(self, history: np.ndarray) -> np.ndarray:
        return path_lp(self.pathset, history[-1], tie_break=self.tie_break).ratios


def shortest_path(topology: Topology, metric: str = "hop") -> StaticPolicy:
    """Everything on one shortest path per pair."""
    return StaticPolicy("shortest_path" if metric == "hop" else f"shortest_path_{metric}",
                        Routing.first_path(k_shortest_paths(topology, 1, metric)))


def ecmp(topology: Topology) -> StaticPolicy:
    """Hop-by-hop equal split over all hop-shortest paths."""
    return StaticPolicy("ecmp", Routing.ecmp(equal_cost_paths(topology, "hop")))


def ospf(topology: Topology) -> StaticPolicy:
    """OSPF with ECMP on the topology's IGP weights, or inverse capacity when it has none."""
    metric = "weight" if topology.has_weights else "invcap"
    return StaticPolicy("ospf", Routing.ecmp(equal_cost_paths(topology, metric), name=f"ospf-{metric}"))


def lp_on_mean(pathset: PathSet, training: np.ndarray, *, tie_break: str = "min_load",
               name: str = "lp_mean") -> StaticPolicy:
    """One LP routing for the mean of the training matrices, used for every matrix."""
    ratios = path_lp(pathset, np.asarray(training).mean(axis=0), tie_break=tie_break).ratios
    return StaticPolicy(name, Routing(pathset, ratios, name))


# Every baseline by name, built from (topology, training matrices, K-shortest path set).
BASELINES: dict[str, Callable[[Topology, np.ndarray, PathSet], RoutingPolicy]] = {
    "shortest_path": lambda topology, training, paths: shortest_path(topology),
    "shortest_path_latency": lambda topology, training, paths: shortest_path(topology, "latency"),
    "ecmp": lambda topology, training, paths: ecmp(topology),
    "ospf": lambda topology, training, paths: ospf(topology),
    "lp_paths": lambda topology, training, paths: LPPolicy("lp_paths", paths, clairvoyant=True),
    "lp_previous": lambda topology, training, paths: LPPolicy("lp_previous", paths, tie_break="min_load"),
    "lp_mean": lambda topology, training, paths: lp_on_mean(paths, training, tie_break="min_load"),
    "lp_previous_balanced": lambda topology, training, paths: LPPolicy("lp_previous_balanced", paths,
                                                                       tie_break="balanced"),
    "lp_mean_balanced": lambda topology, training, paths: lp_on_mean(paths, training, tie_break="balanced",
                                                                     name="lp_mean_balanced"),
}


def check_baseline_names(names: Sequence[str], known: Sequence[str], what: str = "baseline") -> list[str]:
    """``names`` as a list, refused (naming the first unknown one and every known one) unless
    each is in ``known`` exactly once."""
    names = list(names)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"each {what} may be named once, got {names}")
    return names


def baseline_policies(topology: Topology, training: np.ndarray, *, k: int = 4, metric: str = "hop",
                      names: Sequence[str] | None = None) -> list:
    """The standard comparison set (``names``: only those, in that order; default every one of
    :data:`BASELINES`): classic routings, the LP oracle and the two LP practices a learned
    policy must beat (plus their load-balancing tie-break variants)."""
    names = list(BASELINES) if names is None else check_baseline_names(names, list(BASELINES))
    paths = k_shortest_paths(topology, k, metric)
    return [BASELINES[name](topology, training, paths) for name in names]
