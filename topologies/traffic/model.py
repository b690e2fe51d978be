"""Traffic matrix sequences."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model import Topology, TopologyError


class TrafficError(ValueError):
    """Invalid traffic (or a file of it); the message names the problem."""


@dataclass(frozen=True, eq=False)
class TrafficSequence:
    """T traffic matrices over N nodes, in bit/s: ``matrices[t, i, j]`` is i→j demand at step t.

    The diagonal is forced to zero (traffic that never enters the network).
    ``interval_s`` is the time between matrices when the sequence is a time series.
    """

    name: str
    matrices: np.ndarray
    interval_s: float | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        m = np.array(self.matrices, dtype=np.float64, copy=True)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[1] != m.shape[2] or m.shape[0] == 0:
            raise TrafficError(f"traffic {self.name!r}: expected shape (T, N, N) with T >= 1, got {np.shape(self.matrices)}")
        if not np.isfinite(m).all():
            t = int(np.argwhere(~np.isfinite(m))[0][0])
            raise TrafficError(f"traffic {self.name!r}: matrix {t} has non-finite values")
        if (m < 0).any():
            t = int(np.argwhere(m < 0)[0][0])
            raise TrafficError(f"traffic {self.name!r}: matrix {t} has negative demand")
        idx = np.arange(m.shape[1])
        m[:, idx, idx] = 0.0
        m.setflags(write=False)
        object.__setattr__(self, "matrices", m)
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def num_nodes(self) -> int:
        return self.matrices.shape[1]

    def __len__(self) -> int:
        return self.matrices.shape[0]

    def __getitem__(self, index) -> "TrafficSequence | np.ndarray":
        """An int gives one N×N matrix; a slice or index array gives a sub-sequence."""
        if isinstance(index, (int, np.integer)):
            return self.matrices[index]
        return TrafficSequence(self.name, self.matrices[index], self.interval_s, self.notes)

    def scaled(self, factor: float | np.ndarray, note: str | None = None) -> "TrafficSequence":
        """Every matrix × ``factor`` (a scalar, or one factor per matrix)."""
        factor = np.asarray(factor, dtype=np.float64)
        if factor.ndim == 1:
            if len(factor) != len(self):
                raise TrafficError(f"{len(factor)} scale factors for {len(self)} matrices")
            factor = factor[:, None, None]
        if not (np.isfinite(factor).all() and (factor >= 0).all()):
            raise TrafficError("scale factors must be finite and non-negative")
        return TrafficSequence(self.name, self.matrices * factor, self.interval_s,
                               self.notes + ((note,) if note else ()))

    def mean(self) -> np.ndarray:
        return self.matrices.mean(axis=0)

    def check_topology(self, topology: Topology) -> None:
        """Raise unless these matrices fit ``topology`` (same number of nodes)."""
        if self.num_nodes != topology.num_nodes:
            raise TopologyError(f"traffic {self.name!r} is {self.num_nodes}x{self.num_nodes} but topology "
                                f"{topology.name!r} has {topology.num_nodes} nodes")
