"""A routing: split ratios over a :class:`PathSet`, shape (P, K), each row summing to 1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .paths import PathSet


class RoutingError(ValueError):
    """Split ratios that do not describe a routing; the message names the pair."""


def check_ratios(pathset: PathSet, ratios, *, atol: float = 1e-6) -> np.ndarray:
    """Validated (P, K) float array: finite, non-negative, zero on masked slots, rows summing to 1.

    Tiny negative values (> -atol, from solvers) are clipped to zero and rows are
    renormalized; anything further off raises :class:`RoutingError`.
    """
    ratios = np.array(ratios, dtype=np.float64)
    expected = (pathset.num_pairs, pathset.k)
    if ratios.shape != expected:
        raise RoutingError(f"split ratios have shape {ratios.shape}, expected {expected} (pairs × paths)")
    names = pathset.topology.node_names

    def pair_label(p: int) -> str:
        o, d = pathset.pairs[p]
        return f"pair {p} ({names[o]} -> {names[d]})"

    bad = ~np.isfinite(ratios).all(axis=1)
    if bad.any():
        raise RoutingError(f"{pair_label(int(np.argmax(bad)))} has non-finite split ratios")
    bad = (ratios < -atol).any(axis=1)
    if bad.any():
        raise RoutingError(f"{pair_label(int(np.argmax(bad)))} has a negative split ratio")
    bad = (~pathset.mask & (np.abs(ratios) > atol)).any(axis=1)
    if bad.any():
        raise RoutingError(f"{pair_label(int(np.argmax(bad)))} puts traffic on a path slot it does not have")
    ratios = np.where(pathset.mask, ratios.clip(min=0.0), 0.0)
    sums = ratios.sum(axis=1)
    bad = np.abs(sums - 1.0) > atol
    if bad.any():
        p = int(np.argmax(bad))
        raise RoutingError(f"{pair_label(p)} split ratios sum to {sums[p]:.6g}, not 1")
    return ratios / sums[:, None]


@dataclass(frozen=True, eq=False)
class Routing:
    """Validated split ratios over ``pathset``."""

    pathset: PathSet
    ratios: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        ratios = check_ratios(self.pathset, self.ratios)
        ratios.setflags(write=False)
        object.__setattr__(self, "ratios", ratios)

    @classmethod
    def uniform(cls, pathset: PathSet, name: str = "uniform") -> "Routing":
        """Equal split over every path of each pair."""
        return cls(pathset, pathset.mask / pathset.mask.sum(axis=1, keepdims=True), name)

    @classmethod
    def first_path(cls, pathset: PathSet, name: str = "first_path") -> "Routing":
        """Everything on path 0 of each pair (the shortest, for shortest-path path sets)."""
        ratios = np.zeros((pathset.num_pairs, pathset.k))
        ratios[:, 0] = 1.0
        return cls(pathset, ratios, name)

    @classmethod
    def ecmp(cls, pathset: PathSet, name: str = "ecmp") -> "Routing":
        """Per-hop equal split, as OSPF/ECMP routers do (see :func:`per_hop_ecmp_ratios`)."""
        return cls(pathset, per_hop_ecmp_ratios(pathset), name)


def per_hop_ecmp_ratios(pathset: PathSet) -> np.ndarray:
    """Split ratios of hop-by-hop ECMP: each router splits equally over its next hops.

    A path's share is the product of 1/(number of next hops) at each router along it.
    ``pathset`` must hold *all* equal-cost paths of each pair
    (:func:`~topologies.paths.equal_cost_paths`): then the next hops a router has
    toward the destination are exactly the links that the pair's paths leave it by.
    """
    src = pathset.topology.link_src
    ratios = np.zeros((pathset.num_pairs, pathset.k))
    for p, candidates in enumerate(pathset.paths):
        next_hops: dict[int, set[int]] = {}
        for path in candidates:
            for link in path:
                next_hops.setdefault(int(src[link]), set()).add(link)
        for k, path in enumerate(candidates):
            ratios[p, k] = np.prod([1.0 / len(next_hops[int(src[link])]) for link in path])
    total = ratios.sum(axis=1)
    if not np.allclose(total, 1.0):
        p = int(np.argmax(np.abs(total - 1.0)))
        raise RoutingError(f"pair {p}: paths are not a complete equal-cost set (ECMP shares sum to {total[p]:.4g})")
    return ratios
