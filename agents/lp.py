"""Min-MLU linear programs solved with HiGHS: over candidate paths, and the exact optimum.

* :func:`path_lp` — the best split ratios over a :class:`PathSet` for one traffic matrix.
* :func:`mcf_optimum` — the exact multicommodity-flow optimum (any paths), in the
  source-aggregated edge formulation: one flow variable per (origin, link).

Numerics: capacities in bit/s (~1e10) next to demands (~1e6) make HiGHS return wrong
"optimal" answers. Both LPs therefore divide demands by the largest demand and
capacities by the largest capacity, so every coefficient is at most 1, and the MLU
they report is recomputed from the solution's own link loads, not read off the solver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np
from scipy import sparse

from topologies import PathSet, Topology, TrafficSequence


class LPError(RuntimeError):
    """The solver did not return an optimal solution."""


@dataclass(frozen=True)
class LPSolution:
    mlu: float                  # max link utilization of the solution, in the topology's units
    link_loads: np.ndarray      # (E,) bit/s
    ratios: np.ndarray | None   # (P, K) split ratios (path LP only)
    solve_time_s: float         # HiGHS run time (model build excluded)
    build_time_s: float


def _solve(cost, matrix: sparse.csc_matrix, row_lower, row_upper, col_lower, col_upper, *,
           time_limit_s: float | None = None, solver: str = "choose") -> tuple[highspy.Highs, np.ndarray, float]:
    """Solve min cost·x subject to row and column bounds; raise LPError unless optimal."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("solver", solver)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = matrix.shape[1], matrix.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, col_lower, col_upper
    lp.row_lower_, lp.row_upper_ = row_lower, row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = matrix.indptr, matrix.indices, matrix.data
    h.passModel(lp)
    start = time.perf_counter()
    h.run()
    elapsed = time.perf_counter() - start
    status = h.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise LPError(f"HiGHS: {h.modelStatusToString(status)}")
    return h, np.array(h.getSolution().col_value), elapsed


def _single_matrix(matrix, num_nodes: int) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)  # a copy: callers' (often read-only) data stays untouched
    if m.shape != (num_nodes, num_nodes):
        raise ValueError(f"traffic matrix must be {num_nodes}x{num_nodes}, got {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("traffic matrix must be finite and non-negative")
    return m


TIE_BREAKS = ("none", "min_load", "balanced")
# Fortz–Thorup link cost φ(u) as (slope, u where the piece starts, φ there); u relative to the optimal MLU.
_FORTZ_THORUP = [(1.0, 0.0, 0.0), (3.0, 1 / 3, 1 / 3), (10.0, 2 / 3, 4 / 3), (70.0, 0.9, 11 / 3)]


def path_lp(pathset: PathSet, matrix, *, tie_break: str = "none", time_limit_s: float | None = None) -> LPSolution:
    """Split ratios over ``pathset`` minimising the MLU of ``matrix`` (N×N, bit/s).

    The min-MLU LP is degenerate: only the bottleneck is pinned down, every other pair
    can route anywhere, and which optimal vertex a solver returns decides how the routing
    behaves on the *next* matrix. ``tie_break`` picks among MLU-optimal routings
    (MLU within 1e-6 of optimal) by a second solve:

    * ``"none"``: whatever vertex HiGHS returns;
    * ``"min_load"``: least total link load (traffic × hops) — shortest among optimal;
    * ``"balanced"``: least Σ φ(u_e), Fortz–Thorup's convex piecewise-linear link cost of
      the utilization relative to the optimum — spreads load away from busy links.

    Pairs without demand get path 0.
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; use one of {', '.join(TIE_BREAKS)}")
    build_start = time.perf_counter()
    topo = pathset.topology
    demand = pathset.demands(_single_matrix(matrix, topo.num_nodes))
    capacities = topo.capacities
    ratios = np.zeros((pathset.num_pairs, pathset.k))
    ratios[:, 0] = 1.0
    active_pairs = np.flatnonzero(demand > 0)
    if len(active_pairs) == 0:
        return LPSolution(0.0, np.zeros(topo.num_links), ratios, 0.0, time.perf_counter() - build_start)

    d_scale, c_scale = demand.max(), capacities.max()
    slot_mask = np.zeros_like(pathset.mask)
    slot_mask[active_pairs] = pathset.mask[active_pairs]
    slots = np.flatnonzero(slot_mask.ravel())
    slot_pair = slots // pathset.k
    n = len(slots)
    per_unit_load = pathset.incidence[:, slots].multiply(demand[slot_pair]).tocsc()  # (E, n) bit/s at ratio 1
    pair_row = np.searchsorted(active_pairs, slot_pair)
    split_rows = sparse.csc_matrix((np.ones(n), (pair_row, np.arange(n))), shape=(len(active_pairs), n))
    ones, zeros = np.ones(len(active_pairs)), np.zeros(n)

    # Phase 1: min θ  s.t.  Σ_s A[e,s] d'(s) x_s − C'_e θ ≤ 0,  Σ_k x_pk = 1.
    capacity_rows = sparse.hstack([per_unit_load / d_scale,
                                   sparse.csc_matrix(-(capacities / c_scale).reshape(-1, 1))], format="csc")
    model = sparse.vstack([capacity_rows, sparse.hstack([split_rows, sparse.csc_matrix((len(active_pairs), 1))])],
                          format="csc")
    build_time = time.perf_counter() - build_start
    _, x, elapsed = _solve(np.r_[zeros, 1.0], model,
                           np.r_[np.full(topo.num_links, -np.inf), ones], np.r_[np.zeros(topo.num_links), ones],
                           np.zeros(n + 1), np.r_[np.ones(n), np.inf], time_limit_s=time_limit_s)
    x = x[:n]

    if tie_break != "none":
        # Phase 2: utilization scaled by the optimum, so every link's bound is 1 + slack.
        theta = float((per_unit_load @ x / capacities).max())
        utilization = sparse.diags(1.0 / (capacities * theta)) @ per_unit_load
        num_links = topo.num_links
        if tie_break == "min_load":
            _, x, extra = _solve(np.asarray(per_unit_load.sum(axis=0)).ravel() / d_scale,
                                 sparse.vstack([utilization, split_rows], format="csc"),
                                 np.r_[np.full(num_links, -np.inf), ones], np.r_[np.full(num_links, 1 + 1e-6), ones],
                                 zeros, np.ones(n), time_limit_s=time_limit_s)
        else:
            # Fortz–Thorup: min Σ_e φ(u_e), φ convex piecewise linear in the utilization
            # relative to the optimum; variables (x, φ) with rows φ_e ≥ slope·u_e − intercept.
            pieces = [(slope, slope * start - phi_start) for slope, start, phi_start in _FORTZ_THORUP]
            blocks, lower = [], []
            for slope, intercept in pieces:
                blocks.append(sparse.hstack([-slope * utilization, sparse.identity(num_links)]))
                lower.append(np.full(num_links, -intercept))
            model = sparse.vstack(blocks + [sparse.hstack([utilization, sparse.csc_matrix((num_links, num_links))]),
                                            sparse.hstack([split_rows, sparse.csc_matrix((len(active_pairs), num_links))])],
                                  format="csc")
            k_rows = len(pieces) * num_links
            solution = _solve(np.r_[zeros, np.ones(num_links)], model,
                              np.r_[np.concatenate(lower), np.full(num_links, -np.inf), ones],
                              np.r_[np.full(k_rows, np.inf), np.full(num_links, 1 + 1e-6), ones],
                              np.zeros(n + num_links), np.r_[np.ones(n), np.full(num_links, np.inf)],
                              time_limit_s=time_limit_s)
            _, x, extra = solution[0], solution[1][:n], solution[2]
        elapsed += extra

    flat = np.zeros(pathset.num_slots)
    flat[slots] = np.clip(x, 0.0, None)
    chosen = flat.reshape(pathset.num_pairs, pathset.k)[active_pairs]
    ratios[active_pairs] = chosen / chosen.sum(axis=1, keepdims=True)
    loads = pathset.incidence @ (ratios * demand[:, None]).ravel()
    return LPSolution(float((loads / capacities).max()), loads, ratios, elapsed, build_time)


def mcf_optimum(topology: Topology, matrix, *, time_limit_s: float | None = None,
                solver: str = "choose") -> LPSolution:
    """The exact minimum MLU of ``matrix`` over all routings (fractional multicommodity flow)."""
    build_start = time.perf_counter()
    m = _single_matrix(matrix, topology.num_nodes)
    np.fill_diagonal(m, 0.0)
    capacities = topology.capacities
    num_nodes, num_links = topology.num_nodes, topology.num_links
    sources = np.flatnonzero(m.sum(axis=1) > 0)
    if len(sources) == 0:
        return LPSolution(0.0, np.zeros(num_links), None, 0.0, time.perf_counter() - build_start)
    d_scale, c_scale = m.max(), capacities.max()
    s = len(sources)
    # Node-link incidence: +1 where a link leaves a node, -1 where it enters.
    node_link = sparse.csr_matrix(
        (np.r_[np.ones(num_links), -np.ones(num_links)],
         (np.r_[topology.link_src, topology.link_dst], np.r_[np.arange(num_links), np.arange(num_links)])),
        shape=(num_nodes, num_links))
    conservation = sparse.kron(sparse.identity(s, format="csr"), node_link, format="csr")
    conservation = sparse.hstack([conservation, sparse.csr_matrix((s * num_nodes, 1))], format="csr")
    capacity_rows = sparse.hstack([sparse.kron(np.ones((1, s)), sparse.identity(num_links), format="csr"),
                                   sparse.csr_matrix(-(capacities / c_scale).reshape(-1, 1))], format="csr")
    supply = -m[sources] / d_scale                      # destination t receives d_st
    supply[np.arange(s), sources] = m[sources].sum(axis=1) / d_scale  # origin sends its total
    rhs = supply.ravel()
    matrix_all = sparse.vstack([conservation, capacity_rows], format="csc")
    row_lower = np.r_[rhs, np.full(num_links, -np.inf)]
    row_upper = np.r_[rhs, np.zeros(num_links)]
    n = s * num_links + 1
    cost = np.zeros(n)
    cost[-1] = 1.0
    build_time = time.perf_counter() - build_start
    _, x, elapsed = _solve(cost, matrix_all, row_lower, row_upper, np.zeros(n), np.full(n, np.inf),
                           time_limit_s=time_limit_s, solver=solver)
    loads = x[:-1].reshape(s, num_links).clip(min=0.0).sum(axis=0) * d_scale
    return LPSolution(float((loads / capacities).max()), loads, None, elapsed, build_time)


def optimal_mlu(topology: Topology, matrices) -> np.ndarray:
    """The exact optimum MLU of each matrix, shape (T,)."""
    matrices = np.asarray(matrices)
    if matrices.ndim == 2:
        matrices = matrices[None]
    return np.array([mcf_optimum(topology, m).mlu for m in matrices])


SCALE_MODES = ("each", "peak", "mean")


def optimal_scale_factor(topology: Topology, sequence: TrafficSequence, target: float,
                         mode: str = "peak") -> np.ndarray:
    """Factor(s) that make the optimal MLU of ``sequence`` equal ``target`` (MLU is linear in demand).

    ``mode``: ``"each"`` one factor per matrix (every optimum becomes ``target``);
    ``"peak"`` one factor so the largest optimum equals ``target`` (keeps the sequence's
    shape); ``"mean"`` one factor so the mean optimum equals it.
    """
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target MLU must be positive, got {target!r}")
    if mode not in SCALE_MODES:
        raise ValueError(f"unknown scaling mode {mode!r}; use one of {', '.join(SCALE_MODES)}")
    sequence.check_topology(topology)
    optimum = optimal_mlu(topology, sequence.matrices)
    if (optimum <= 0).any():
        raise ValueError(f"matrix {int(np.argmin(optimum))} of {sequence.name!r} has no demand; cannot scale it")
    reference = {"each": optimum, "peak": optimum.max(), "mean": optimum.mean()}[mode]
    return np.asarray(target / reference)


def scale_to_optimal_mlu(topology: Topology, sequence: TrafficSequence, target: float,
                         mode: str = "peak") -> TrafficSequence:
    """``sequence`` scaled so its optimal MLU is ``target`` (see :func:`optimal_scale_factor`)."""
    factor = optimal_scale_factor(topology, sequence, target, mode)
    return sequence.scaled(factor, note=f"scaled so the {mode} optimal MLU is {target:g}")
