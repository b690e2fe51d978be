"""What an environment needs from a network: apply split ratios to a traffic matrix and
measure what happened. The twin answers now; the Mininet backend (issue #4) answers the
same call with real packets, so environments, agents and spaces stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from topologies import PathSet

from .twin import FluidTwin


@dataclass(frozen=True)
class Measurement:
    """What one traffic matrix did under one routing."""

    utilization: np.ndarray  # (E,) offered load / capacity per link (can exceed 1)
    mlu: float               # max of utilization
    offered_bps: float       # total demand
    delivered_bps: float     # what reached its destination (tail drop on overloaded links)

    @property
    def drops_bps(self) -> float:
        return self.offered_bps - self.delivered_bps


@runtime_checkable
class Backend(Protocol):
    name: str
    pathset: PathSet

    def run(self, demands: np.ndarray, ratios: np.ndarray) -> Measurement:
        """Pair demands (P,) in bit/s routed with split ratios (P, K)."""
        ...


class TwinBackend:
    """The fluid twin: instant and exact to its model."""

    name = "twin"

    def __init__(self, pathset: PathSet) -> None:
        self.pathset = pathset
        self.twin = FluidTwin(pathset)

    def run(self, demands: np.ndarray, ratios: np.ndarray) -> Measurement:
        result = self.twin.evaluate(None, ratios, demands=demands)  # always batched: take row 0
        return Measurement(utilization=result.utilization[0], mlu=float(result.mlu[0]),
                           offered_bps=float(np.sum(demands)), delivered_bps=float(result.throughput[0]))

    def utilization(self, demands: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """Link utilization only (cheaper than :meth:`run`: no delays or drops)."""
        return self.twin.link_loads(None, ratios, demands=demands) / self.pathset.topology.capacities


BACKENDS = ("twin", "mininet")


def make_backend(name: str, pathset: PathSet) -> Backend:
    if name == "twin":
        return TwinBackend(pathset)
    if name == "mininet":
        raise NotImplementedError("the Mininet backend is not built yet (issue #4); use backend='twin'")
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
