"""Playing whole path-selection episodes: how an agent, or a classic rule, routes a matrix's
flows one at a time, scored by the MLU it ends with (÷ the optimum of splittable routing,
which unsplittable flows can approach but not always reach)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from envs.path_selection import PathSelectionEnv, norm_order
from topologies import Routing

from .evaluation import PolicyScores
from .lp import check_tie_break, path_lp
from .policy import check_baseline_names

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


SHARE_DUST = 1e-3  # LP shares below this are the solver's tolerance, not a path the LP uses


class LPRounded:
    """The path LP's split, rounded to whole flows: each flow goes to the least-loaded (lowest
    bottleneck with the flow on it) of its pair's paths that are still short of their LP share.
    The split is the episode's own matrix's (it knows the matrix), or with ``previous`` the
    matrix before it, as LP-previous routes split traffic (before the first matrix, an equal
    split: every path is short, and least-loaded alone decides).

    ``tie_break`` (:func:`agents.lp.path_lp`) picks the split among the MLU-optimal ones.
    ``"balanced"`` (the default) and ``"min_load"`` are unique, the same with any HiGHS release,
    and split many pairs evenly, where least-loaded picks; ``"none"``, the solver's own vertex,
    is not unique, and puts nearly every pair whole on one path."""

    def __init__(self, tie_break: str = "balanced", *, previous: bool = False) -> None:
        check_tie_break(tie_break)  # here, not at the first episode
        self.tie_break, self.previous = tie_break, previous
        self._ratios = self._given = np.zeros((0, 0))

    def __call__(self, env: PathSelectionEnv, observation: np.ndarray) -> int:
        if env.routed == 0:  # a new episode: solve its matrix once
            self._ratios = self._split(env)
            self._given = np.zeros_like(self._ratios)
        pair, rate = env.current_flow
        # how far each path is behind its share once this flow is placed; they sum to the rate, so one is behind
        wanted = self._ratios[pair] * (self._given[pair].sum() + rate) - self._given[pair]
        short = env.pathset.mask[pair] & (wanted > SHARE_DUST * rate)
        path = int(np.argmin(np.where(short, env.candidate_bottlenecks(), np.inf)))
        self._given[pair, path] += rate
        return path

    def _split(self, env: PathSelectionEnv) -> np.ndarray:
        t = env.tm_index - 1 if self.previous else env.tm_index
        if t < 0:
            return Routing.uniform(env.pathset).ratios
        return path_lp(env.pathset, env.traffic.matrices[t], tie_break=self.tie_break).ratios


def from_model(model) -> Chooser:
    """An SB3 model's greedy action."""
    return lambda env, observation: int(model.predict(observation, deterministic=True)[0])


def play(env: PathSelectionEnv, choose: Chooser, tm_indices: Sequence[int], seed: int = 0) -> np.ndarray:
    """Final MLU of each matrix in ``tm_indices`` (flow order drawn from ``seed``)."""
    return play_episodes(env, choose, tm_indices, seed).final_mlu


@dataclass(frozen=True)
class Episodes:
    """What playing one episode per matrix gave, per matrix (T,)."""

    final_mlu: np.ndarray           # of the flows' routing, computed as the steps go (the twin's fluid model)
    measured_mlu: np.ndarray        # of that routing run on the environment's backend
    delivered_fraction: np.ndarray  # ditto
    decision_time_s: np.ndarray     # time spent choosing paths, all flows together


def play_episodes(env: PathSelectionEnv, choose: Chooser, tm_indices: Sequence[int], seed: int = 0,
                  on_episode: Callable[[], None] | None = None) -> Episodes:
    """Route each matrix in ``tm_indices`` flow by flow with ``choose`` (flow order drawn from
    ``seed``); its final MLU, what the environment's backend measured for the routing, and the
    time the choices took. ``on_episode()`` is called after each matrix."""
    count = len(tm_indices)
    final, measured, delivered, decided = np.empty(count), np.empty(count), np.empty(count), np.zeros(count)
    for i, t in enumerate(tm_indices):
        observation, _ = env.reset(seed=seed + i, options={"tm_index": int(t)})
        while True:
            start = time.perf_counter()
            action = choose(env, observation)
            decided[i] += time.perf_counter() - start
            observation, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                final[i], measured[i] = info["final_mlu"], info["measured_mlu"]
                delivered[i] = info["delivered_fraction"]
                break
        if on_episode:
            on_episode()
    return Episodes(final, measured, delivered, decided)


BASELINE_CHOOSERS: dict[str, Callable[[], Chooser]] = {
    "least_loaded": lambda: least_loaded, "least_4norm": lambda: LeastNormIncrease(4.0),
    "lp_rounded": LPRounded, "lp_previous_rounded": lambda: LPRounded(previous=True),
    "shortest_path": lambda: first_path,
}


def baseline_choosers(names: Sequence[str] | None = None) -> dict[str, Chooser]:
    """The classic rules every path-selection agent is compared with (``names``: only those, in
    that order; default every one of :data:`BASELINE_CHOOSERS`)."""
    names = list(BASELINE_CHOOSERS) if names is None else check_baseline_names(names, list(BASELINE_CHOOSERS))
    return {name: BASELINE_CHOOSERS[name]() for name in names}


def score_choosers(env: PathSelectionEnv, choosers: Mapping[str, Chooser], tm_indices: Sequence[int],
                   optimal_mlu: np.ndarray, seed: int = 0, progress: Callable[[str, int], None] | None = None,
                   measured: bool = False) -> dict[str, PolicyScores]:
    """Each chooser's final MLU on the matrices ``tm_indices`` (÷ their optima ``optimal_mlu``)
    and its time per matrix, as the split-routing policies are scored. ``measured`` (the env
    runs on a live backend): the MLU and drops are what the backend measured, beside the
    twin's MLU. ``progress(name, 1)`` is called after each matrix, as
    :func:`agents.evaluation.evaluate_policies` calls it."""
    scores = {}
    for name, choose in choosers.items():
        played = play_episodes(env, choose, tm_indices, seed=seed,
                               on_episode=progress and functools.partial(progress, name, 1))
        if measured:
            scores[name] = PolicyScores(played.measured_mlu, played.measured_mlu / optimal_mlu, played.decision_time_s,
                                        np.clip(1.0 - played.delivered_fraction, 0.0, None),
                                        twin_normalized_mlu=played.final_mlu / optimal_mlu)
        else:
            scores[name] = PolicyScores(played.final_mlu, played.final_mlu / optimal_mlu, played.decision_time_s)
    return scores
