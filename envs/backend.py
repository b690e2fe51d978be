"""What an environment needs from a network: apply split ratios to a traffic matrix and
measure what happened. The twin answers instantly; the Mininet backend
(:mod:`envs.mininet_backend`) answers the same call with real packets, so environments,
agents and spaces stay the same.
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

    @property
    def delivered_fraction(self) -> float:
        """Share of the offered traffic that arrived (1 when nothing was offered: nothing was lost)."""
        return self.delivered_bps / self.offered_bps if self.offered_bps > 0 else 1.0


@runtime_checkable
class Backend(Protocol):
    name: str
    pathset: PathSet

    def run(self, demands: np.ndarray, ratios: np.ndarray) -> Measurement:
        """Pair demands (P,) in bit/s routed with split ratios (P, K)."""
        ...

    def utilization(self, demands: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """Link utilization (E,) only."""
        ...

    def close(self) -> None:
        ...


class TwinBackend:
    """The fluid twin: instant and exact to its model.

    ``load_factor`` scales every demand before it meets the links: the calibrated
    per-packet overhead that the emulation measures (headers the fluid model leaves
    out); 1 is the pure model.
    """

    name = "twin"

    def __init__(self, pathset: PathSet, load_factor: float = 1.0) -> None:
        if not load_factor > 0:
            raise ValueError(f"load_factor must be positive, got {load_factor!r}")
        self.pathset = pathset
        self.twin = FluidTwin(pathset)
        self.load_factor = float(load_factor)

    def run(self, demands: np.ndarray, ratios: np.ndarray) -> Measurement:
        demands = np.asarray(demands, dtype=np.float64) * self.load_factor
        result = self.twin.evaluate(None, ratios, demands=demands)  # always batched: take row 0
        return Measurement(utilization=result.utilization[0], mlu=float(result.mlu[0]),
                           offered_bps=float(np.sum(demands)), delivered_bps=float(result.throughput[0]))

    def utilization(self, demands: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """Link utilization only (cheaper than :meth:`run`: no delays or drops)."""
        demands = np.asarray(demands, dtype=np.float64) * self.load_factor
        return self.twin.link_loads(None, ratios, demands=demands) / self.pathset.topology.capacities

    def close(self) -> None:
        pass


BACKENDS = ("twin", "mininet")


def make_backend(name: str, pathset: PathSet, **options) -> Backend:
    """``options`` go to the backend's constructor (e.g. ``capacity_scale`` for mininet)."""
    if name == "twin":
        return TwinBackend(pathset, **options)
    if name == "mininet":
        from .mininet_backend import MininetBackend  # needs root and Mininet only when asked for

        return MininetBackend(pathset, **options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
