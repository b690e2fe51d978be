"""Evaluate routing policies on a traffic sequence: through the fluid twin, or measured on a
live backend (the emulated network) with the twin's prediction beside each measurement."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from envs.backend import Backend
from envs.twin import FluidTwin
from topologies import PathSet, lift_ratios

from .lp import optimal_mlu
from .policy import RoutingPolicy


@dataclass(frozen=True)
class PolicyScores:
    mlu: np.ndarray              # (T,) MLU per evaluated matrix
    normalized_mlu: np.ndarray   # (T,) MLU / optimal MLU
    decision_time_s: np.ndarray  # (T,) time to produce each routing (0 for static policies)
    drop_fraction: np.ndarray | None = None  # (T,) share of offered traffic dropped (with_drops=True)
    # measured on a live backend: mlu and drop_fraction are what it measured, and this is
    # what the twin predicted for the same routings (÷ the optimum, as normalized_mlu)
    twin_normalized_mlu: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        x = self.normalized_mlu
        summary = {"median": float(np.median(x)), "p90": float(np.percentile(x, 90)), "max": float(x.max()),
                   "mean": float(x.mean()), "decision_time_s": float(np.mean(self.decision_time_s))}
        if self.drop_fraction is not None:
            summary["mean_drop_fraction"] = max(0.0, float(np.mean(self.drop_fraction)))
        if self.twin_normalized_mlu is not None:
            summary["twin_median"] = float(np.median(self.twin_normalized_mlu))
        return summary


def first_index(policies: Sequence[RoutingPolicy]) -> int:
    """The first matrix index every policy has enough history for."""
    return max((p.history - (1 if p.clairvoyant else 0) for p in policies), default=0)


def history_for(policy: RoutingPolicy, matrices: np.ndarray, t: int) -> np.ndarray:
    """The matrices ``policy`` may see when routing matrix ``t`` (oldest first)."""
    end = t + 1 if policy.clairvoyant else t
    start = end - max(policy.history, 1)
    if start < 0:
        raise ValueError(f"policy {policy.name!r} needs {policy.history} matrices of history before index {t}")
    return matrices[start:end]


def decide(policy: RoutingPolicy, matrices: np.ndarray, indices: np.ndarray,
           progress: Callable[[str, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``policy``'s split ratios for ``matrices[indices]``, each from the history before it
    (T, P, K; a static policy routes once: (P, K)), and the time each decision took (T,). A
    stateful policy (with ``reset()``) is reset first."""
    if hasattr(policy, "reset"):
        policy.reset()
    if policy.history == 0 and not policy.clairvoyant:
        start = time.perf_counter()
        ratios = policy.route(matrices[:0])
        times = np.full(len(indices), (time.perf_counter() - start) / len(indices))
        if progress:
            progress(policy.name, len(indices))
        return ratios, times
    per_matrix, times = [], np.empty(len(indices))
    for i, t in enumerate(indices):
        history = history_for(policy, matrices, int(t))
        start = time.perf_counter()
        per_matrix.append(policy.route(history))
        times[i] = time.perf_counter() - start
        if progress:
            progress(policy.name, 1)
    return np.stack(per_matrix), times


def evaluate_policies(
    policies: Sequence[RoutingPolicy],
    matrices: np.ndarray,
    indices: Sequence[int],
    *,
    optimal: np.ndarray | None = None,
    progress: Callable[[str, int], None] | None = None,
    with_drops: bool = False,
    backend: Backend | None = None,
) -> tuple[np.ndarray, dict[str, PolicyScores]]:
    """MLU of every policy on ``matrices[indices]``, normalized by the exact optimum.

    Returns (optimal MLU per index, scores by policy name). ``progress(name, n)`` is
    called as work completes (n units: one per matrix per policy, plus the optimum).
    ``with_drops`` also runs the twin's tail-drop model (slower on overloaded networks).
    Stateful policies (with a ``reset()`` method) are reset before they start.

    With a ``backend`` (e.g. :class:`envs.mininet_backend.MininetBackend`), every routing is
    also run there, one matrix at a time: the scores' MLU and drops are what it measured and
    ``twin_normalized_mlu`` what the twin predicted. Its path set must hold every policy's
    paths (build it on :func:`topologies.union_pathsets` of theirs); ratios are lifted onto it.
    ``progress`` then counts measured runs (the decisions take a fraction of one).
    """
    matrices = np.asarray(matrices)
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise ValueError("no traffic matrices to evaluate")
    if optimal is None:
        topology = policies[0].pathset.topology
        optimal = np.empty(len(indices))
        for i, t in enumerate(indices):
            optimal[i] = optimal_mlu(topology, matrices[t])[0]
            if progress:
                progress("optimum", 1)
    twins: dict[int, FluidTwin] = {}
    scores: dict[str, PolicyScores] = {}
    for policy in policies:
        pathset: PathSet = policy.pathset
        twin = twins.setdefault(id(pathset), FluidTwin(pathset))
        ratios, times = decide(policy, matrices, indices, None if backend else progress)
        drops = None
        if with_drops and backend is None:  # a backend measures the drops itself
            result = twin.evaluate(matrices[indices], ratios)
            mlu = np.asarray(result.mlu, dtype=np.float64)
            offered = result.demands.sum(-1)
            drops = np.divide(result.drops, offered, out=np.zeros_like(offered), where=offered > 0)
        else:
            mlu = np.asarray(twin.mlu(matrices[indices], ratios), dtype=np.float64)
        if backend is None:
            scores[policy.name] = PolicyScores(mlu, mlu / optimal, times, drops)
            continue
        measured_mlu, measured_drops = measure(backend, pathset, matrices[indices], ratios,
                                               progress and functools.partial(progress, policy.name, 1))
        scores[policy.name] = PolicyScores(measured_mlu, measured_mlu / optimal, times, measured_drops,
                                           twin_normalized_mlu=mlu / optimal)
    return optimal, scores


def measure(backend: Backend, pathset: PathSet, matrices: np.ndarray, ratios: np.ndarray,
            on_run: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run each matrix (T, N, N) with its ratios over ``pathset`` (T, P, K, or one (P, K) for
    all) on ``backend``; the measured MLU (T,) and share of the offered traffic dropped (T,).
    ``on_run()`` is called after each run."""
    mlu, drops = np.empty(len(matrices)), np.empty(len(matrices))
    per_matrix = np.broadcast_to(ratios, (len(matrices), *np.shape(ratios)[-2:]))
    for i, (matrix, routing) in enumerate(zip(matrices, per_matrix)):
        lifted = routing if pathset is backend.pathset else lift_ratios(routing, pathset, backend.pathset)
        measurement = backend.run(pathset.demands(matrix), lifted)
        mlu[i] = measurement.mlu
        drops[i] = max(0.0, 1.0 - measurement.delivered_fraction)
        if on_run:
            on_run()
    return mlu, drops
