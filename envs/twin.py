"""The fluid digital twin: what a routing does to traffic, computed in batches.

Model (flow level, steady state), for B traffic matrices at once:

* **Offered load** of link l: ``Σ_slots A[l, slot] · ratio[slot] · demand[pair(slot)]``.
  Utilization = offered load / capacity; **MLU** = max utilization (the TE objective;
  it may exceed 1).
* **Delay** of a path: Σ over its links of propagation delay + queueing delay. Queueing
  is the M/M/1 waiting time ``ρ/(1-ρ) · packet_bits / capacity`` with ρ the link's
  utilization, capped at ``buffer_s`` (a full buffer) and equal to it when ρ ≥ 1.
* **Throughput and drops**: tail-drop FIFO links in the fluid limit. A link whose
  *arriving* traffic L exceeds its capacity C forwards every flow in proportion
  C/L; traffic dropped upstream never arrives downstream. The pass fractions are the
  fixed point ``f_l = min(1, C_l / L_l(f))`` with ``L_l`` summing, over the paths
  through l, demand × the pass fractions of the links before l on that path; it is
  solved by iteration (exact after as many rounds as the longest path when link
  dependencies are acyclic). Drops on l are ``max(0, L_l − C_l)``; delivered =
  demand × product of pass fractions along the path.

``FluidTwin`` runs on numpy/scipy; ``envs.twin_torch.TorchFluidTwin`` runs the same code
on torch tensors (CPU or GPU) with gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from topologies import PathSet

DENSE_LIMIT = 4_000_000  # links × slots below which a dense incidence matrix is faster


@dataclass(frozen=True)
class QueueModel:
    """Queueing-delay parameters: mean packet size and the buffer, as its drain time."""

    packet_bits: float = 12_000.0
    buffer_s: float = 0.05


@dataclass
class TwinResult:
    """Everything the twin computes for a batch (arrays are numpy or torch, like the twin).

    Shapes: B matrices, P pairs, K paths per pair, E links.
    """

    demands: Any            # (B, P) bit/s
    link_loads: Any         # (B, E) offered load, bit/s
    utilization: Any        # (B, E) offered load / capacity
    mlu: Any                # (B,)
    path_delay: Any         # (B, P, K) seconds, nan on masked slots
    pair_delay: Any         # (B, P) split-weighted mean delay, seconds
    carried_loads: Any      # (B, E) traffic a link forwards (≤ capacity)
    link_drops: Any         # (B, E) bit/s dropped at each link
    delivered: Any          # (B, P) bit/s reaching the destination
    throughput: Any         # (B,) total delivered bit/s
    drops: Any              # (B,) total dropped bit/s
    converged: bool         # whether the drop fixed point converged


def _ndim(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


class FluidTwin:
    """Batched fluid evaluation of routings over one :class:`PathSet` (numpy + scipy sparse)."""

    xp: Any = np

    def __init__(self, pathset: PathSet, queue: QueueModel | None = None, *, dense_limit: int = DENSE_LIMIT,
                 max_iterations: int = 200, tolerance: float = 1e-12) -> None:
        self.pathset = pathset
        self.queue = queue or QueueModel()
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        topo = pathset.topology
        self.num_links, self.num_pairs, self.k = topo.num_links, pathset.num_pairs, pathset.k
        self.dense = topo.num_links * pathset.num_slots <= dense_limit
        hop_link, hop_slot = pathset.hop_link, pathset.hop_slot
        first_hop = np.zeros(pathset.num_slots, dtype=np.int64)
        # index of the first hop of each slot (slots are contiguous in hop order)
        starts = np.flatnonzero(np.r_[True, hop_slot[1:] != hop_slot[:-1]])
        first_hop[hop_slot[starts]] = starts
        hop_to_link = csr_matrix((np.ones(len(hop_link)), (hop_link, np.arange(len(hop_link)))),
                                 shape=(topo.num_links, len(hop_link)))
        self._setup(
            incidence=pathset.incidence,
            hop_to_link=hop_to_link,
            capacities=np.array(topo.capacities),
            delays=np.array(topo.delays),
            mask=np.array(pathset.mask),
            pairs=np.array(pathset.pairs),
            hop_link=np.array(hop_link),
            hop_slot=np.array(hop_slot),
            hop_first=first_hop[hop_slot],
        )

    # ------------------------------------------------------------------ backend hooks
    def _setup(self, *, incidence: csr_matrix, hop_to_link: csr_matrix, **arrays: np.ndarray) -> None:
        """Store operators and index arrays in this backend's types (overridden by torch)."""
        for key, value in arrays.items():
            setattr(self, f"_{key}", value)
        self._A = incidence.toarray() if self.dense else incidence
        self._AT = self._A.T if self.dense else incidence.T.tocsr()
        self._HL = hop_to_link

    def _asarray(self, x) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def _scalar(self, x) -> float:
        return float(x)

    def _slots_to_links(self, x):
        """(B, S) per-slot quantities summed onto links: (B, E)."""
        return x @ self._AT if self.dense else (self._A @ x.T).T

    def _links_to_slots(self, y):
        """(B, E) per-link quantities summed along each path: (B, S)."""
        return y @ self._A if self.dense else (self._AT @ y.T).T

    def _hops_to_links(self, h):
        """(B, H) per-hop quantities summed per link: (B, E)."""
        return (self._HL @ h.T).T

    # ------------------------------------------------------------------ inputs
    def demands(self, matrices) -> Any:
        """(B, N, N) or (N, N) traffic matrices -> (B, P) pair demands."""
        m = self._asarray(matrices)
        n = self.pathset.topology.num_nodes
        if m.ndim not in (2, 3) or tuple(m.shape[-2:]) != (n, n):
            raise ValueError(f"traffic matrices must be (N, N) or (B, N, N) with N={n}, got {tuple(m.shape)}")
        if m.ndim == 2:
            m = m[None]
        return m[:, self._pairs[:, 0], self._pairs[:, 1]]

    def _ratios(self, ratios, batch: int):
        r = self._asarray(ratios)
        shape = (self.num_pairs, self.k)
        if tuple(r.shape[-2:]) != shape or r.ndim not in (2, 3) or (r.ndim == 3 and r.shape[0] != batch):
            raise ValueError(f"split ratios must be {shape} or ({batch}, *{shape}), got {tuple(r.shape)}")
        return r

    # ------------------------------------------------------------------ evaluation
    def link_loads_from_demands(self, demands, ratios):
        """(B, P) demands and (P, K) or (B, P, K) ratios -> (B, E) offered link loads."""
        if ratios.ndim == 2 and demands.shape[0] > 1:
            # One routing for the whole batch: fold ratios into a (P, E) pair-to-link matrix once.
            pair_to_link = self._links_to_slots_matrix(ratios)
            return demands @ pair_to_link
        slot_rates = (ratios * demands[:, :, None]).reshape(demands.shape[0], -1)
        return self._slots_to_links(slot_rates)

    def _links_to_slots_matrix(self, ratios):
        """(P, E): fraction of pair p's demand that crosses link e under ``ratios``."""
        if self.dense:
            return (self._A.reshape(self.num_links, self.num_pairs, self.k) * ratios).sum(-1).T
        scaled = self._A.multiply(ratios.reshape(1, -1)).tocsc()
        pair_of_slot = csr_matrix((np.ones(self.num_pairs * self.k),
                                   (np.arange(self.num_pairs * self.k), np.repeat(np.arange(self.num_pairs), self.k))),
                                  shape=(self.num_pairs * self.k, self.num_pairs))
        return (scaled @ pair_of_slot).T.toarray()

    def link_loads(self, matrices, ratios):
        """Offered load per link, (B, E) (or (E,) for one (N, N) matrix)."""
        single = _ndim(matrices) == 2
        d = self.demands(matrices)
        loads = self.link_loads_from_demands(d, self._ratios(ratios, d.shape[0]))
        return loads[0] if single else loads

    def mlu(self, matrices, ratios):
        """Maximum link utilization per matrix, (B,) (or a scalar for one (N, N) matrix)."""
        single = _ndim(matrices) == 2
        d = self.demands(matrices)
        util = self.link_loads_from_demands(d, self._ratios(ratios, d.shape[0])) / self._capacities
        peak = self.xp.amax(util, -1)
        return peak[0] if single else peak

    def evaluate(self, matrices, ratios) -> TwinResult:
        """Loads, utilization, MLU, delays, throughput and drops for a batch (always batched)."""
        xp = self.xp
        d = self.demands(matrices)
        batch = d.shape[0]
        r = self._ratios(ratios, batch)
        r_b = r if r.ndim == 3 else r[None]
        slot_rates = (r_b * d[:, :, None]).reshape(batch, -1)
        loads = self._slots_to_links(slot_rates)
        util = loads / self._capacities
        rho = xp.clip(util, 0.0, 1.0 - 1e-12)
        queueing = xp.clip(rho / (1.0 - rho) * (self.queue.packet_bits / self._capacities), None, self.queue.buffer_s)
        queueing = xp.where(util >= 1.0, self.queue.buffer_s, queueing)
        path_delay = self._links_to_slots(self._delays + queueing).reshape(batch, self.num_pairs, self.k)
        path_delay = xp.where(self._mask, path_delay, float("nan"))
        pair_delay = (xp.where(self._mask, path_delay, 0.0) * r_b).sum(-1)
        arrivals, log_pass, converged = self._tail_drop(slot_rates)
        link_arrivals = self._hops_to_links(arrivals)
        link_drops = xp.clip(link_arrivals - self._capacities, 0.0, None)
        delivered_slots = slot_rates * xp.exp(self._links_to_slots(log_pass))
        delivered = delivered_slots.reshape(batch, self.num_pairs, self.k).sum(-1)
        return TwinResult(
            demands=d, link_loads=loads, utilization=util, mlu=xp.amax(util, -1),
            path_delay=path_delay, pair_delay=pair_delay,
            carried_loads=link_arrivals - link_drops, link_drops=link_drops,
            delivered=delivered, throughput=delivered.sum(-1), drops=d.sum(-1) - delivered.sum(-1),
            converged=converged,
        )

    def _tail_drop(self, slot_rates):
        """Fixed point of per-link pass fractions; returns (per-hop arrivals, log pass per link, converged)."""
        xp = self.xp
        log_pass = xp.zeros_like(slot_rates[:, :1]) * self._capacities  # (B, E) zeros, right type
        converged = False
        for iteration in range(self.max_iterations):
            per_hop = log_pass[:, self._hop_link]
            before = xp.cumsum(per_hop, -1) - per_hop   # sum over all earlier hops (any slot)
            upstream = before - before[:, self._hop_first]  # … restricted to this slot's earlier hops
            arrivals = slot_rates[:, self._hop_slot] * xp.exp(upstream)
            link_arrivals = self._hops_to_links(arrivals)
            updated = -xp.log(xp.clip(link_arrivals / self._capacities, 1.0, None))
            change = self._scalar(xp.amax(xp.abs(updated - log_pass)))
            if iteration > 2 * self.max_iterations // 3:
                updated = 0.5 * (updated + log_pass)  # damp rare oscillations (cyclic dependencies)
            log_pass = updated
            if change <= self.tolerance:
                converged = True
                break
        return arrivals, log_pass, converged
