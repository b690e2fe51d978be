"""Playing whole path-selection episodes: how an agent, or a classic rule, routes a matrix's
flows one at a time, scored by the MLU it ends with (÷ the optimum of splittable routing,
which unsplittable flows can approach but not always reach)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from envs.path_selection import PathSelectionEnv

from .lp import path_lp

Chooser = Callable[[PathSelectionEnv, np.ndarray], int]


def least_loaded(env: PathSelectionEnv, observation: np.ndarray) -> int:
    """Greedy: the path whose busiest link would be least utilized with this flow on it."""
    return int(np.argmin(env.candidate_bottlenecks()))


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
