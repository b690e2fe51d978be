"""Synthetic traffic models, all seeded and reproducible (numpy ``default_rng(seed)``).

Every generator returns a :class:`TrafficSequence` of ``count`` matrices whose mean
total demand is ``total_bps`` (default: 5% of the topology's summed link capacity;
scale to a target optimal MLU with ``agents.lp.scale_to_optimal_mlu``). Only
endpoint nodes (not transit switches of generated fabrics) send or receive.

* ``uniform``: every pair uniform in [0.5, 1.5] × the mean, independently per matrix.
* ``gravity``: ``out_i · in_j`` with node masses ~ Exp(1) fixed for the sequence, and
  per-pair lognormal noise (``noise`` = sigma) per matrix.
* ``bimodal``: each pair is large with probability ``p_large`` (mean 10, sd 2) else small
  (mean 1, sd 0.5), clipped at zero, independently per matrix.
* ``hotspot``: gravity plus ``hotspot_share`` of the traffic sent to ``hotspots`` randomly
  chosen destinations.
* ``diurnal``: a time series (5-minute steps): gravity structure × (1 + ``amplitude`` ·
  sin(2π t / ``period``)) × lognormal noise, with spikes: at each step, with probability
  ``spike_prob``, 10% of pairs are multiplied by ``spike_factor``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..generators import endpoint_mask
from ..model import Topology
from .model import TrafficError, TrafficSequence


def _setup(topology: Topology, count: int, total_bps: float | None) -> tuple[np.ndarray, float]:
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise TrafficError(f"count must be a positive integer, got {count!r}")
    if total_bps is not None and not total_bps > 0:
        raise TrafficError(f"total_bps must be positive, got {total_bps!r}")
    mask = endpoint_mask(topology)
    pair_mask = np.outer(mask, mask)
    np.fill_diagonal(pair_mask, False)
    if not pair_mask.any():
        raise TrafficError(f"topology {topology.name!r} has fewer than two endpoint nodes")
    return pair_mask, total_bps if total_bps is not None else 0.05 * float(topology.capacities.sum())


def _finish(name: str, raw: np.ndarray, pair_mask: np.ndarray, total: float, seed: int,
            interval_s: float | None = None) -> TrafficSequence:
    raw = raw * pair_mask
    mean_total = raw.sum(axis=(1, 2)).mean()
    return TrafficSequence(name, raw * (total / mean_total), interval_s,
                           (f"synthetic: {name}, seed {seed}, mean total {total:.3g} bit/s",))


def _lognormal(rng: np.random.Generator, sigma: float, shape) -> np.ndarray:
    # Mean-one lognormal noise.
    return rng.lognormal(-sigma * sigma / 2, sigma, shape) if sigma > 0 else np.ones(shape)


def uniform(topology: Topology, count: int = 1, seed: int = 0, *, total_bps: float | None = None) -> TrafficSequence:
    pair_mask, total = _setup(topology, count, total_bps)
    rng = np.random.default_rng(seed)
    n = topology.num_nodes
    return _finish("uniform", rng.uniform(0.5, 1.5, (count, n, n)), pair_mask, total, seed)


def _gravity_base(topology: Topology, rng: np.random.Generator) -> np.ndarray:
    n = topology.num_nodes
    return np.outer(rng.exponential(1.0, n), rng.exponential(1.0, n))


def gravity(topology: Topology, count: int = 1, seed: int = 0, *, total_bps: float | None = None,
            noise: float = 0.1) -> TrafficSequence:
    pair_mask, total = _setup(topology, count, total_bps)
    rng = np.random.default_rng(seed)
    base = _gravity_base(topology, rng)
    return _finish("gravity", base[None] * _lognormal(rng, noise, (count, *base.shape)), pair_mask, total, seed)


def bimodal(topology: Topology, count: int = 1, seed: int = 0, *, total_bps: float | None = None,
            p_large: float = 0.2) -> TrafficSequence:
    if not 0 <= p_large <= 1:
        raise TrafficError(f"p_large must be in [0, 1], got {p_large!r}")
    pair_mask, total = _setup(topology, count, total_bps)
    rng = np.random.default_rng(seed)
    shape = (count, topology.num_nodes, topology.num_nodes)
    large = rng.random(shape) < p_large
    raw = np.where(large, rng.normal(10.0, 2.0, shape), rng.normal(1.0, 0.5, shape)).clip(min=0)
    return _finish("bimodal", raw, pair_mask, total, seed)


def hotspot(topology: Topology, count: int = 1, seed: int = 0, *, total_bps: float | None = None,
            hotspots: int = 2, hotspot_share: float = 0.5, noise: float = 0.1) -> TrafficSequence:
    if not 0 <= hotspot_share < 1:
        raise TrafficError(f"hotspot_share must be in [0, 1), got {hotspot_share!r}")
    pair_mask, total = _setup(topology, count, total_bps)
    endpoints = np.flatnonzero(endpoint_mask(topology))
    if not 1 <= hotspots < len(endpoints):
        raise TrafficError(f"hotspots must be between 1 and {len(endpoints) - 1}, got {hotspots}")
    rng = np.random.default_rng(seed)
    base = _gravity_base(topology, rng) * pair_mask
    base /= base.sum()
    hot = np.zeros_like(base)
    hot[:, rng.choice(endpoints, hotspots, replace=False)] = 1.0
    hot *= pair_mask
    hot /= hot.sum()
    mix = (1 - hotspot_share) * base + hotspot_share * hot
    return _finish("hotspot", mix[None] * _lognormal(rng, noise, (count, *mix.shape)), pair_mask, total, seed)


def diurnal(topology: Topology, count: int = 288, seed: int = 0, *, total_bps: float | None = None,
            period: int = 288, amplitude: float = 0.5, noise: float = 0.1, spike_prob: float = 0.02,
            spike_factor: float = 3.0, interval_s: float = 300.0) -> TrafficSequence:
    if not 0 <= amplitude < 1:
        raise TrafficError(f"amplitude must be in [0, 1), got {amplitude!r}")
    if period < 1:
        raise TrafficError(f"period must be >= 1 step, got {period!r}")
    pair_mask, total = _setup(topology, count, total_bps)
    rng = np.random.default_rng(seed)
    base = _gravity_base(topology, rng)
    cycle = 1 + amplitude * np.sin(2 * np.pi * np.arange(count) / period)
    raw = base[None] * cycle[:, None, None] * _lognormal(rng, noise, (count, *base.shape))
    spikes = rng.random(count) < spike_prob
    for t in np.flatnonzero(spikes):
        raw[t] *= np.where(rng.random(base.shape) < 0.1, spike_factor, 1.0)
    return _finish("diurnal", raw, pair_mask, total, seed, interval_s)


MODELS: dict[str, Callable[..., TrafficSequence]] = {
    "uniform": uniform, "gravity": gravity, "bimodal": bimodal, "hotspot": hotspot, "diurnal": diurnal,
}
