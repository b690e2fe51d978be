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
from scipy.sparse import csr_matrix, diags

from topologies import PathSet

DENSE_LIMIT = 4_000_000  # a dense incidence matrix is used up to this many links × slots …
DENSE_MIN_FILL = 0.05    # … and only when at least this share of it is non-zero (BLAS beats sparse)
CHUNK_ELEMENTS = 1 << 23  # the drop fixed point handles at most this many hop × matrix values at once


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


UPSTREAM_LIMIT = 8  # build the upstream operator while it has at most this many entries per hop


def _upstream_operator(hop_link: np.ndarray, hop_first: np.ndarray, num_links: int) -> csr_matrix | None:
    """Sparse (H, E): entry (h, l) counts link l before hop h on h's path, so that
    ``operator @ per_link`` gives upstream sums in one product. Paths of L hops need
    L(L-1)/2 entries, so for long paths (None) the twin uses a running sum instead."""
    position = np.arange(len(hop_link)) - hop_first
    if position.sum() > UPSTREAM_LIMIT * len(hop_link):
        return None
    rows = np.repeat(np.arange(len(hop_link)), position)
    # for a hop at position p, the earlier hops are rows - 1 … rows - p
    back = np.arange(len(rows)) - np.repeat(np.cumsum(position) - position, position) + 1
    return csr_matrix((np.ones(len(rows)), (rows, hop_link[rows - back])), shape=(len(hop_link), num_links))


def _per_capacity(incidence: csr_matrix, capacities: np.ndarray) -> csr_matrix:
    """Rows of the incidence matrix divided by link capacity: slot rate -> utilization."""
    return (diags(1.0 / capacities) @ incidence).tocsr()


def _ndim(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


class FluidTwin:
    """Batched fluid evaluation of routings over one :class:`PathSet` (numpy + scipy sparse).

    ``dtype=np.float32`` roughly doubles throughput (the work is memory-bound) at float32
    precision; the default float64 matches the LPs to ~1e-12.
    """

    xp: Any = np

    def __init__(self, pathset: PathSet, queue: QueueModel | None = None, *, dtype=np.float64,
                 dense_limit: int = DENSE_LIMIT, max_iterations: int = 200, tolerance: float = 1e-12) -> None:
        self.pathset = pathset
        self.queue = queue or QueueModel()
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.dtype = dtype
        topo = pathset.topology
        self.num_links, self.num_pairs, self.k = topo.num_links, pathset.num_pairs, pathset.k
        self.num_nodes = topo.num_nodes
        cells = topo.num_links * pathset.num_slots
        self.dense = cells <= dense_limit and pathset.incidence.nnz >= DENSE_MIN_FILL * cells
        self._epsilon = 4 * self._machine_epsilon()
        # a float32 fixed point cannot settle below its own rounding: without this floor it
        # would run all max_iterations rounds (measured: 9x slower than float64 on kdl)
        self.tolerance = max(tolerance, 64 * self._machine_epsilon())
        hop_link, hop_slot = pathset.hop_link, pathset.hop_slot
        first_hop = np.zeros(pathset.num_slots, dtype=np.int64)
        # index of the first hop of each slot (slots are contiguous in hop order)
        starts = np.flatnonzero(np.r_[True, hop_slot[1:] != hop_slot[:-1]])
        first_hop[hop_slot[starts]] = starts
        hop_to_link = csr_matrix((np.ones(len(hop_link)), (hop_link, np.arange(len(hop_link)))),
                                 shape=(topo.num_links, len(hop_link)))
        upstream = _upstream_operator(hop_link, first_hop[hop_slot], topo.num_links)
        pair_flat = pathset.pairs[:, 0] * topo.num_nodes + pathset.pairs[:, 1]  # index into a flattened N×N
        self._setup(
            incidence=pathset.incidence,
            hop_to_link=hop_to_link,
            upstream=upstream,
            capacities=np.array(topo.capacities),
            delays=np.array(topo.delays),
            mask=np.array(pathset.mask),
            pair_flat=pair_flat,
            slot_flat=np.repeat(pair_flat, pathset.k),
            slot_pair=np.repeat(np.arange(pathset.num_pairs), pathset.k),
            hop_link=np.array(hop_link),
            hop_slot=np.array(hop_slot),
            hop_first=first_hop[hop_slot],
        )

    # ------------------------------------------------------------------ backend hooks
    def _setup(self, *, incidence: csr_matrix, hop_to_link: csr_matrix, upstream: csr_matrix | None,
               **arrays: np.ndarray) -> None:
        """Store operators and index arrays in this backend's types (overridden by torch)."""
        for key, value in arrays.items():
            setattr(self, f"_{key}", value.astype(self.dtype) if value.dtype.kind == "f" else value)
        incidence = incidence.astype(self.dtype)
        utilization = _per_capacity(incidence, arrays["capacities"]).astype(self.dtype)
        if self.dense:
            self._A = incidence.toarray()
            self._AT = np.ascontiguousarray(self._A.T)
            self._UT = np.ascontiguousarray(utilization.toarray().T)  # slot rate -> link utilization
        else:
            self._A, self._AT = incidence.tocsr(), incidence.T.tocsr()
            self._U = utilization.tocsr()
        self._HL = hop_to_link.astype(self.dtype)
        slots = len(arrays["slot_pair"])
        self._slot_to_pair = csr_matrix((np.ones(slots, dtype=self.dtype), (np.arange(slots), arrays["slot_pair"])),
                                        shape=(slots, self.num_pairs))
        self._UP = None if upstream is None else upstream.astype(self.dtype)

    def _asarray(self, x) -> np.ndarray:
        return np.asarray(x, dtype=self.dtype)

    def _machine_epsilon(self) -> float:
        return float(np.finfo(self.dtype).eps)

    def _scalar(self, x) -> float:
        return float(x)

    def _take(self, x, index):
        """Columns ``index`` of a 2-D array."""
        return np.take(x, index, axis=1)

    def _scale_in_place(self, x, factor):
        """x * factor, reusing x's memory where the backend allows (numpy: avoids page faults)."""
        return np.multiply(x, factor, out=x)

    def _slots_to_links(self, x):
        """(B, S) per-slot quantities summed onto links: (B, E)."""
        return x @ self._AT if self.dense else (self._A @ x.T).T

    def _slots_to_utilization(self, x):
        """(B, S) slot rates -> (B, E) link utilizations (capacities folded into the operator)."""
        return x @ self._UT if self.dense else (self._U @ x.T).T

    def _links_to_slots(self, y):
        """(B, E) per-link quantities summed along each path: (B, S)."""
        return y @ self._A if self.dense else (self._AT @ y.T).T

    def _hops_to_links_t(self, h):
        """(H, B) per-hop quantities summed per link: (E, B)."""
        return self._HL @ h

    def _upstream_t(self, log_pass):
        """(E, B) per-link values -> (H, B): at each hop, the sum over the links before it on its path."""
        if self._UP is not None:
            return self._UP @ log_pass
        per_hop = log_pass[self._hop_link]
        before = self.xp.cumsum(per_hop, 0) - per_hop  # sum over all earlier hops (any slot)
        return before - before[self._hop_first]        # … restricted to this slot's earlier hops

    # ------------------------------------------------------------------ inputs
    def _flat_matrices(self, matrices):
        """(B, N·N) view of (N, N) or (B, N, N) traffic matrices."""
        m = self._asarray(matrices)
        n = self.num_nodes
        if m.ndim not in (2, 3) or tuple(m.shape[-2:]) != (n, n):
            raise ValueError(f"traffic matrices must be (N, N) or (B, N, N) with N={n}, got {tuple(m.shape)}")
        return m.reshape(-1, n * n)

    def _traffic(self, matrices, demands):
        """(source (B, ·), its column of each pair or None, its column of each slot, single).

        Traffic comes either as N×N matrices or, with ``demands=``, as (P,) / (B, P) pair
        demands in the path set's pair order (cheaper for large networks with few pairs).
        """
        if (matrices is None) == (demands is None):
            raise ValueError("give either traffic matrices or demands=, not both or neither")
        if demands is None:
            return self._flat_matrices(matrices), self._pair_flat, self._slot_flat, _ndim(matrices) == 2
        d = self._asarray(demands)
        if d.ndim not in (1, 2) or d.shape[-1] != self.num_pairs:
            raise ValueError(f"demands must be ({self.num_pairs},) or (B, {self.num_pairs}), got {tuple(d.shape)}")
        return d.reshape(-1, self.num_pairs), None, self._slot_pair, d.ndim == 1

    def demands(self, matrices) -> Any:
        """(B, N, N) or (N, N) traffic matrices -> (B, P) pair demands."""
        return self._take(self._flat_matrices(matrices), self._pair_flat)

    def _ratios(self, ratios, batch: int):
        r = self._asarray(ratios)
        shape = (self.num_pairs, self.k)
        if tuple(r.shape[-2:]) != shape or r.ndim not in (2, 3) or (r.ndim == 3 and r.shape[0] != batch):
            raise ValueError(f"split ratios must be {shape} or ({batch}, *{shape}), got {tuple(r.shape)}")
        return r

    # ------------------------------------------------------------------ evaluation
    def _shared_loads(self, demands, ratios):
        """(B, P) demands under one (P, K) routing -> (B, E) loads, folding the routing into a
        pair-to-link matrix once (dense, or sparse: on large networks it is mostly zeros)."""
        if self.dense:
            return demands @ (self._A.reshape(self.num_links, self.num_pairs, self.k) * ratios).sum(-1).T
        pair_to_link = (self._A.multiply(ratios.reshape(1, -1)) @ self._slot_to_pair).tocsr()  # (E, P)
        return (pair_to_link @ demands.T).T

    def _loads(self, matrices, ratios, demands, *, utilization: bool):
        """(B, E) link loads (or utilizations) and whether the input was a single matrix."""
        source, pair_index, slot_index, single = self._traffic(matrices, demands)
        batch = source.shape[0]
        r = self._ratios(ratios, batch)
        if r.ndim == 2 and batch > 1:
            # One routing for the whole batch: fold it into a (P, E) pair-to-link matrix once.
            loads = self._shared_loads(source if pair_index is None else self._take(source, pair_index), r)
            return (loads / self._capacities if utilization else loads), single
        rates = self._scale_in_place(self._take(source, slot_index), r.reshape(-1, self.num_pairs * self.k))
        return (self._slots_to_utilization(rates) if utilization else self._slots_to_links(rates)), single

    def link_loads(self, matrices, ratios, *, demands=None):
        """Offered load per link, (B, E) (or (E,) for one matrix or demand vector)."""
        loads, single = self._loads(matrices, ratios, demands, utilization=False)
        return loads[0] if single else loads

    def mlu(self, matrices, ratios, *, demands=None):
        """Maximum link utilization per matrix, (B,) (or a scalar for one matrix or demand vector)."""
        util, single = self._loads(matrices, ratios, demands, utilization=True)
        peak = self.xp.amax(util, -1)
        return peak[0] if single else peak

    def evaluate(self, matrices, ratios, *, demands=None) -> TwinResult:
        """Loads, utilization, MLU, delays, throughput and drops for a batch (always batched)."""
        xp = self.xp
        source, pair_index, slot_index, _ = self._traffic(matrices, demands)
        batch = source.shape[0]
        d = source if pair_index is None else self._take(source, pair_index)
        r = self._ratios(ratios, batch)
        r_b = r if r.ndim == 3 else r[None]
        slot_rates = self._take(source, slot_index) * r_b.reshape(-1, self.num_pairs * self.k)
        loads = self._slots_to_links(slot_rates)
        util = loads / self._capacities
        rho = xp.clip(util, 0.0, 1.0 - self._epsilon)  # keeps 1 - rho > 0 in the dtype's precision
        queueing = xp.clip(rho / (1.0 - rho) * (self.queue.packet_bits / self._capacities), None, self.queue.buffer_s)
        queueing = xp.where(util >= 1.0, self.queue.buffer_s, queueing)
        path_delay = self._links_to_slots(self._delays + queueing).reshape(batch, self.num_pairs, self.k)
        path_delay = xp.where(self._mask, path_delay, float("nan"))
        pair_delay = (xp.where(self._mask, path_delay, 0.0) * r_b).sum(-1)
        link_arrivals, log_pass, converged = self._drops(slot_rates, loads, util)
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

    def _drops(self, slot_rates, loads, util):
        """(link arrivals, log pass fraction per link, converged). The fixed point runs only for
        matrices that overload some link (elsewhere everything offered arrives and passes), in
        chunks of at most CHUNK_ELEMENTS hop × matrix values to bound memory."""
        overloaded = (util > 1.0).any(-1)
        arrivals, log_pass = loads * 1.0, loads * 0.0
        if not bool(overloaded.any()):
            return arrivals, log_pass, True
        rows = self.xp.where(overloaded)[0]  # numpy and torch both return a tuple here
        step = max(1, CHUNK_ELEMENTS // max(1, len(self._hop_link)))
        converged = True
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            chunk_arrivals, chunk_log_pass, chunk_converged = self._tail_drop(slot_rates[chunk])
            arrivals[chunk], log_pass[chunk] = chunk_arrivals, chunk_log_pass
            converged &= chunk_converged
        return arrivals, log_pass, converged

    def _tail_drop(self, slot_rates):
        """Fixed point of per-link pass fractions; returns (link arrivals, log pass per link, converged).

        Works hop-major — arrays are (hops, batch) — so per-hop gathers take whole rows.
        """
        xp = self.xp
        hop_rates = slot_rates.T[self._hop_slot]             # (H, B) offered rate at every hop
        capacities = self._capacities[:, None]
        log_pass = xp.zeros_like(hop_rates[:1]) * capacities  # (E, B) zeros, right type
        converged = False
        for iteration in range(self.max_iterations):
            link_arrivals = self._hops_to_links_t(hop_rates * xp.exp(self._upstream_t(log_pass)))
            updated = -xp.log(xp.clip(link_arrivals / capacities, 1.0, None))
            change = self._scalar(xp.amax(xp.abs(updated - log_pass)))
            if iteration > 2 * self.max_iterations // 3:
                updated = 0.5 * (updated + log_pass)  # damp rare oscillations (cyclic dependencies)
            log_pass = updated
            if change <= self.tolerance:
                converged = True
                break
        return link_arrivals.T, log_pass.T, converged
