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

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

import clarabel
import highspy
import numpy as np
from scipy import sparse

from topologies import FORTZ_THORUP_PIECES, PathSet, Topology, TrafficSequence


class LPError(RuntimeError):
    """The solver did not return an optimal solution."""


@dataclass(frozen=True)
class LPSolution:
    mlu: float                  # max link utilization of the solution, in the topology's units
    link_loads: np.ndarray      # (E,) bit/s
    ratios: np.ndarray | None   # (P, K) split ratios (path LP only)
    solve_time_s: float         # HiGHS run time (model build excluded)
    build_time_s: float


_banner_lock = threading.Lock()
_banner_printed = False  # by this process's HiGHS, into /dev/null


@contextlib.contextmanager
def _stdout_discarded():
    """File descriptor 1 points at /dev/null inside (C code writes there, not to sys.stdout)."""
    try:
        sys.stdout.flush()  # Python's pending output goes out first, to where it belongs
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to keep clean
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _highs() -> highspy.Highs:
    """A HiGHS solver that prints nothing.

    ``output_flag`` silences the solver's log, but highspy 1.16 prints its banner ("Running
    HiGHS ...  Copyright ...") to the C stdout while ``highspy.Highs()`` is being built, before
    any option can be set, once per process: the first solver is built with stdout discarded.
    """
    global _banner_printed
    with _banner_lock:
        if _banner_printed:
            h = highspy.Highs()
        else:
            with _stdout_discarded():
                h = highspy.Highs()
            _banner_printed = True
    h.setOptionValue("output_flag", False)
    return h


def _solve(cost, matrix: sparse.csc_matrix, row_lower, row_upper, col_lower, col_upper, *,
           time_limit_s: float | None = None, solver: str = "choose") -> tuple[np.ndarray, float]:
    """Solve min cost·x subject to row and column bounds: (x, seconds); LPError unless optimal."""
    h = _highs()
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
    return np.array(h.getSolution().col_value), elapsed


def _single_matrix(matrix, num_nodes: int) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)  # a copy: callers' (often read-only) data stays untouched
    if m.shape != (num_nodes, num_nodes):
        raise ValueError(f"traffic matrix must be {num_nodes}x{num_nodes}, got {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("traffic matrix must be finite and non-negative")
    return m


TIE_BREAKS = ("none", "min_load", "balanced")


@dataclass(frozen=True)
class _PathProblem:
    """The parts of a path LP shared by its phases: the variables are the split ratios of
    every path slot of a pair with demand."""

    slots: np.ndarray            # (n,) slot index of each variable
    active_pairs: np.ndarray     # pairs with demand, in order
    load: sparse.csc_matrix      # (E, n) bit/s each variable puts on each link at ratio 1
    splits: sparse.csc_matrix    # (pairs, n) rows Σ_k x_pk = 1
    capacities: np.ndarray

    @property
    def size(self) -> int:
        return len(self.slots)

    def split_bounds(self) -> np.ndarray:
        return np.ones(len(self.active_pairs))

    def utilization(self, x: np.ndarray) -> np.ndarray:
        return self.load @ x / self.capacities


def _path_problem(pathset: PathSet, demand: np.ndarray, active_pairs: np.ndarray) -> _PathProblem:
    slot_mask = np.zeros_like(pathset.mask)
    slot_mask[active_pairs] = pathset.mask[active_pairs]
    slots = np.flatnonzero(slot_mask.ravel())
    slot_pair = slots // pathset.k
    n = len(slots)
    load = pathset.incidence[:, slots].multiply(demand[slot_pair]).tocsc()
    splits = sparse.csc_matrix((np.ones(n), (np.searchsorted(active_pairs, slot_pair), np.arange(n))),
                               shape=(len(active_pairs), n))
    return _PathProblem(slots, active_pairs, load, splits, pathset.topology.capacities)


def _min_mlu(problem: _PathProblem, time_limit_s: float | None) -> tuple[np.ndarray, float]:
    """min θ  s.t.  Σ_s load'[e, s] x_s − C'_e θ ≤ 0,  Σ_k x_pk = 1  (demands ÷ their max,
    capacities ÷ theirs, so every coefficient is at most 1)."""
    n, num_links = problem.size, len(problem.capacities)
    load_scaled = problem.load / problem.load.max()
    theta = sparse.csc_matrix(-(problem.capacities / problem.capacities.max()).reshape(-1, 1))
    model = sparse.vstack([sparse.hstack([load_scaled, theta]),
                           sparse.hstack([problem.splits, sparse.csc_matrix((problem.splits.shape[0], 1))])],
                          format="csc")
    ones = problem.split_bounds()
    x, elapsed = _solve(np.r_[np.zeros(n), 1.0], model, np.r_[np.full(num_links, -np.inf), ones],
                        np.r_[np.zeros(num_links), ones], np.zeros(n + 1), np.r_[np.ones(n), np.inf],
                        time_limit_s=time_limit_s)
    return x[:n], elapsed


class _Program(NamedTuple):
    """min cost·v  s.t.  row_lower ≤ matrix·v ≤ row_upper,  col_lower ≤ v ≤ col_upper."""

    cost: np.ndarray
    matrix: sparse.csc_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray


# A tie-break may raise the MLU by this share, and the evenest split the tie-break's objective.
_OPTIMUM_SLACK = 1e-6


# Clarabel's settings, tried in turn: the defaults stalled (InsufficientProgress) on 2 of 120
# NSFNET gravity solves; with a smaller static regularization and more equilibration after
# them, none of 400 (200 matrices, both tie-breaks) failed
_CLARABEL_RETRIES = ({}, {"static_regularization_constant": 1e-7, "equilibrate_max_iter": 50})


def _least_squares(program: _Program, squares: int, time_limit_s: float | None = None) -> tuple[np.ndarray, float]:
    """min Σ v_i² over the first ``squares`` variables subject to ``program``'s constraints,
    by Clarabel's interior-point method: (v, seconds); LPError unless solved."""
    rows, cols = program.matrix, sparse.identity(program.matrix.shape[1], format="csc")
    equal = program.row_lower == program.row_upper
    upper, lower = ~equal & np.isfinite(program.row_upper), ~equal & np.isfinite(program.row_lower)
    col_upper, col_lower = np.isfinite(program.col_upper), np.isfinite(program.col_lower)
    # Clarabel's form: A v + s = b with s in cones: zeros for equalities, s ≥ 0 for the rest
    a = sparse.vstack([rows[equal], rows[upper], -rows[lower], cols[col_upper], -cols[col_lower]], format="csc")
    b = np.r_[program.row_upper[equal], program.row_upper[upper], -program.row_lower[lower],
              program.col_upper[col_upper], -program.col_lower[col_lower]]
    n = program.matrix.shape[1]
    p = sparse.csc_matrix((np.full(squares, 2.0), (np.arange(squares), np.arange(squares))), shape=(n, n))
    cones = [clarabel.ZeroConeT(int(equal.sum())), clarabel.NonnegativeConeT(len(b) - int(equal.sum()))]
    elapsed = 0.0
    for retry in _CLARABEL_RETRIES:
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        for key, value in retry.items():
            setattr(settings, key, value)
        if time_limit_s is not None:
            settings.time_limit = float(time_limit_s)
        start = time.perf_counter()
        solution = clarabel.DefaultSolver(p, program.cost, a, b, cones, settings).solve()
        elapsed += time.perf_counter() - start
        # AlmostSolved: within the reduced tolerances (on Abilene 4 of 4,032 solves, primal residual
        # 3.7e-8 against the full tolerance's 1e-8); the caller recomputes the MLU from the routing
        if solution.status in (clarabel.SolverStatus.Solved, clarabel.SolverStatus.AlmostSolved):
            return np.array(solution.x), elapsed
        if solution.status == clarabel.SolverStatus.MaxTime:
            break
    raise LPError(f"Clarabel: {solution.status}")


def _tie_break_program(problem: _PathProblem, x: np.ndarray, tie_break: str) -> _Program:
    """Among routings within 1e-6 of the optimal MLU of ``x``, the one ``tie_break`` prefers.

    Variables: the split ratios, then for ``balanced`` each link's utilization ÷ that optimum
    (u, bounded by 1 + 1e-6) and its Fortz–Thorup cost φ. u has rows of its own (u =
    relative·x) so that each cost piece's rows hold two entries instead of a copy of the load
    rows: the QP of :func:`_tie_break` on GEANT took 0.24 s instead of 2.1 s. (For ``min_load``
    the same form was slower: kdl 25 s instead of 16 s.)
    """
    n, num_links = problem.size, len(problem.capacities)
    relative = sparse.diags(1.0 / (problem.capacities * problem.utilization(x).max())) @ problem.load
    ones, u_bound = problem.split_bounds(), np.full(num_links, 1 + _OPTIMUM_SLACK)
    if tie_break == "min_load":  # least traffic × hops
        return _Program(np.asarray(problem.load.sum(axis=0)).ravel() / problem.load.max(),
                        sparse.vstack([relative, problem.splits], format="csc"),
                        np.r_[np.full(num_links, -np.inf), ones], np.r_[u_bound, ones], np.zeros(n), np.ones(n))
    # Fortz–Thorup: min Σ_e φ_e with φ_e ≥ slope·u_e − intercept for every piece
    pieces = [(slope, slope * start - phi_start) for slope, start, phi_start in FORTZ_THORUP_PIECES]
    identity, empty, zeros = sparse.identity(num_links), sparse.csc_matrix((num_links, num_links)), np.zeros(num_links)
    model = sparse.vstack([sparse.hstack([relative, -identity, empty])]
                          + [sparse.hstack([sparse.csc_matrix((num_links, n)), -slope * identity, identity])
                             for slope, _ in pieces]
                          + [sparse.hstack([problem.splits, sparse.csc_matrix((len(ones), 2 * num_links))])],
                          format="csc")
    piece_rows = len(pieces) * num_links
    return _Program(np.r_[np.zeros(n), zeros, np.ones(num_links)], model,
                    np.r_[zeros, np.repeat([-intercept for _, intercept in pieces], num_links), ones],
                    np.r_[zeros, np.full(piece_rows, np.inf), ones],
                    np.zeros(n + 2 * num_links), np.r_[np.ones(n), u_bound, np.full(num_links, np.inf)])


def _tie_break(problem: _PathProblem, x: np.ndarray, tie_break: str,
               time_limit_s: float | None) -> tuple[np.ndarray, float]:
    """The routing ``tie_break`` prefers among the MLU-optimal ones, made unique.

    The tie-break LP still has ties (paths of equal hop count, links on the same piece of
    the cost), and which of them the solver returns changes between HiGHS releases. So a
    third solve takes, among routings within 1e-6 of both optima, the evenest: least Σ x²,
    strictly convex, hence one answer whatever the solver or its version (a QP; HiGHS's QP
    solver fails on this face, Clarabel's interior-point method does not). Numerically the
    answer is as sharp as the QP's tolerance allows: two formulations of it agree to 1e-5 of
    a split on most Abilene matrices, to 0.006 on the worst, and to 0.04 where Clarabel
    stops at its reduced accuracy.
    """
    n = problem.size
    program = _tie_break_program(problem, x, tie_break)
    preferred, elapsed = _solve(*program, time_limit_s=time_limit_s)
    # the tie-break's objective divided by its optimum (positive: some pair has demand, and both
    # objectives grow with every loaded link) becomes one more row, bounded by 1 + slack
    best = float(program.cost @ preferred)
    evenest, more = _least_squares(_Program(np.zeros(len(program.cost)),
                                            sparse.vstack([program.matrix, sparse.csr_matrix(program.cost / best)],
                                                          format="csc"),
                                            np.r_[program.row_lower, -np.inf],
                                            np.r_[program.row_upper, 1 + _OPTIMUM_SLACK],
                                            program.col_lower, program.col_upper), n, time_limit_s)
    return evenest[:n], elapsed + more


def check_tie_break(tie_break: str) -> None:
    """Refuse a tie-break :func:`path_lp` does not know, naming the ones it does."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"unknown tie_break {tie_break!r}; use one of {', '.join(TIE_BREAKS)}")


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

    Both then split what they leave tied as evenly as it allows (see :func:`_tie_break`), so
    their routing is unique; ``"none"`` is not.

    Pairs without demand get path 0.
    """
    check_tie_break(tie_break)
    build_start = time.perf_counter()
    topo = pathset.topology
    demand = pathset.demands(_single_matrix(matrix, topo.num_nodes))
    ratios = np.zeros((pathset.num_pairs, pathset.k))
    ratios[:, 0] = 1.0
    active_pairs = np.flatnonzero(demand > 0)
    if len(active_pairs) == 0:
        return LPSolution(0.0, np.zeros(topo.num_links), ratios, 0.0, time.perf_counter() - build_start)
    problem = _path_problem(pathset, demand, active_pairs)
    build_time = time.perf_counter() - build_start
    x, elapsed = _min_mlu(problem, time_limit_s)
    if tie_break != "none":
        x, extra = _tie_break(problem, x, tie_break, time_limit_s)
        elapsed += extra
    flat = np.zeros(pathset.num_slots)
    flat[problem.slots] = np.clip(x, 0.0, None)
    chosen = flat.reshape(pathset.num_pairs, pathset.k)[active_pairs]
    ratios[active_pairs] = chosen / chosen.sum(axis=1, keepdims=True)
    loads = pathset.incidence @ (ratios * demand[:, None]).ravel()
    return LPSolution(float((loads / topo.capacities).max()), loads, ratios, elapsed, build_time)


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
    x, elapsed = _solve(cost, matrix_all, row_lower, row_upper, np.zeros(n), np.full(n, np.inf),
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


class Scaled(NamedTuple):
    sequence: TrafficSequence
    optimum: np.ndarray  # optimal MLU of every scaled matrix
    factor: np.ndarray   # scalar, or one factor per matrix for mode "each"


def scaled_with_optimum(topology: Topology, sequence: TrafficSequence, target: float,
                        mode: str = "peak") -> Scaled:
    """``sequence`` scaled so its optimal MLU is ``target``, with the scaled optimum and factor.

    MLU is linear in demand, so one optimum per matrix serves both. ``mode``: ``"each"``
    scales every matrix to exactly ``target``; ``"peak"`` applies one factor so the largest
    optimum equals ``target`` (keeps the sequence's shape); ``"mean"`` one factor so the
    mean optimum equals it.
    """
    if not (np.isfinite(target) and target > 0):
        raise ValueError(f"target MLU must be positive, got {target!r}")
    if mode not in SCALE_MODES:
        raise ValueError(f"unknown scaling mode {mode!r}; use one of {', '.join(SCALE_MODES)}")
    sequence.check_topology(topology)
    optimum = optimal_mlu(topology, sequence.matrices)
    if (optimum <= 0).any():
        raise ValueError(f"matrix {int(np.argmin(optimum))} of {sequence.name!r} has no demand; cannot scale it")
    factor = np.asarray(target / {"each": optimum, "peak": optimum.max(), "mean": optimum.mean()}[mode])
    return Scaled(sequence.scaled(factor, note=f"scaled so the {mode} optimal MLU is {target:g}"),
                  optimum * factor, factor)


def scale_to_optimal_mlu(topology: Topology, sequence: TrafficSequence, target: float,
                         mode: str = "peak") -> TrafficSequence:
    """``sequence`` scaled so its optimal MLU is ``target`` (see :func:`scaled_with_optimum`)."""
    return scaled_with_optimum(topology, sequence, target, mode).sequence
