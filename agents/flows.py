"""Playing whole path-selection episodes: how an agent, or a classic rule, routes a matrix's
flows one at a time, scored by the MLU it ends with (÷ the optimum of splittable routing,
which unsplittable flows can approach but not always reach)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from envs.path_selection import PathSelectionEnv, norm_order

from .evaluation import PolicyScores
from .lp import path_lp

Chooser = Callable[[PathSelectionEnv, np.ndarray], int]


def least_loaded(env: PathSelectionEnv, observation: np.ndarray) -> int:
    """Greedy: the path whose busiest link would be least utilized with this flow on it."""
    return int(np.argmin(env.candidate_bottlenecks()))


class LeastNormIncrease:
    """Greedy: the path that raises the ``order``-norm of the link utilizations least.
    Least-loaded looks only at the path's busiest link; this charges every link the flow
    loads, the busy ones most (and tends to least-loaded as ``order`` grows)."""

    def __init__(self, order: float = 4.0) -> None:
        self.order = norm_order(order)

    def __call__(self, env: PathSelectionEnv, observation: np.ndarray) -> int:
        return int(np.argmin(env.candidate_congestion_increases(self.order)))


def first_path(env: PathSelectionEnv, observation: np.ndarray) -> int:
    """Shortest path, whatever the load."""
    return 0


class LPRounded:
    """The path LP's split for the episode's matrix, rounded to whole flows: each flow goes
    to the path whose LP share of the pair is furthest ahead of what it has received."""

    def __init__(self) -> None:
        self._ratios = self._given = np.zeros((0, 0))

    def __call__(self, env: PathSelectionEnv, observation: np.ndarray) -> int:
        if env.routed == 0:  # a new episode: solve its matrix once
            self._ratios = path_lp(env.pathset, env.traffic.matrices[env.tm_index]).ratios
            self._given = np.zeros_like(self._ratios)
        pair, rate = env.current_flow
        wanted = self._ratios[pair] * (self._given[pair].sum() + rate) - self._given[pair]
        path = int(np.argmax(np.where(env.pathset.mask[pair], wanted, -np.inf)))
        self._given[pair, path] += rate
        return path


def from_model(model) -> Chooser:
    """An SB3 model's greedy action."""
    return lambda env, observation: int(model.predict(observation, deterministic=True)[0])


def play(env: PathSelectionEnv, choose: Chooser, tm_indices: Sequence[int], seed: int = 0) -> np.ndarray:
    """Final MLU of each matrix in ``tm_indices`` (flow order drawn from ``seed``)."""
    final = np.empty(len(tm_indices))
    for i, t in enumerate(tm_indices):
        observation, _ = env.reset(seed=seed + i, options={"tm_index": int(t)})
        while True:
            observation, _, terminated, truncated, info = env.step(choose(env, observation))
            if terminated or truncated:
                final[i] = info["final_mlu"]
                break
    return final


def baseline_choosers() -> dict[str, Chooser]:
    """The classic rules every path-selection agent is compared with."""
    return {"least_loaded": least_loaded, "least_4norm": LeastNormIncrease(4.0), "lp_rounded": LPRounded(),
            "shortest_path": first_path}


def score_choosers(env: PathSelectionEnv, choosers: Mapping[str, Chooser], tm_indices: Sequence[int],
                   optimal_mlu: np.ndarray, seed: int = 0) -> dict[str, PolicyScores]:
    """Each chooser's final MLU on the matrices ``tm_indices`` (÷ their optima ``optimal_mlu``)
    and its mean time per matrix, as the split-routing policies are scored."""
    scores = {}
    for name, choose in choosers.items():
        start = time.perf_counter()
        final = play(env, choose, tm_indices, seed=seed)
        per_matrix = (time.perf_counter() - start) / len(tm_indices)
        scores[name] = PolicyScores(final, final / optimal_mlu, np.full(len(tm_indices), per_matrix))
    return scores
