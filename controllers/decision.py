"""The one place a routing decision comes from inside the controller.

The controller asks a :class:`RoutingDecision` for split ratios whenever it needs a
routing (start-up, an operator's update, later every telemetry interval for learned
policies). Classic routings live here; an exported (ONNX) policy will implement the same
protocol, so shadow mode and fallback swap one object, not controller code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from topologies import PathSet, Routing


@dataclass(frozen=True)
class NetworkView:
    """What the controller knows when it decides."""

    pathset: PathSet
    link_up: np.ndarray                  # (E,) bool
    utilization: np.ndarray | None       # (E,) last polling interval, None before the first
    pair_rate_bps: np.ndarray | None     # (P,) measured traffic matrix (emulated bit/s)


@runtime_checkable
class RoutingDecision(Protocol):
    name: str

    def decide(self, view: NetworkView) -> np.ndarray:
        """Split ratios (P, K) over ``view.pathset``; failover masking is applied afterwards."""
        ...


class FirstPath:
    """Everything on each pair's first candidate (the shortest, for shortest-path path sets)."""

    name = "shortest_path"

    def decide(self, view: NetworkView) -> np.ndarray:
        return Routing.first_path(view.pathset).ratios.copy()


class EqualSplit:
    name = "equal_split"

    def decide(self, view: NetworkView) -> np.ndarray:
        return Routing.uniform(view.pathset).ratios.copy()


@dataclass
class FixedRatios:
    """Ratios set from outside (the HTTP API, an environment step); the controller validates them."""

    ratios: np.ndarray
    name: str = "api"

    def decide(self, view: NetworkView) -> np.ndarray:
        return np.array(self.ratios, dtype=np.float64)


DECISIONS = {"shortest_path": FirstPath, "equal_split": EqualSplit}


def make_decision(name: str) -> RoutingDecision:
    if name not in DECISIONS:
        raise ValueError(f"unknown initial routing {name!r}; choose one of {', '.join(DECISIONS)}")
    return DECISIONS[name]()
