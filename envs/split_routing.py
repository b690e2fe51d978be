"""Split routing (load balancing): every step the agent sets split ratios over the K
candidate paths of every origin–destination pair for the next traffic matrix.

Observation (flat, float32, in [0, 1]): the last ``history`` traffic matrices as pair
demands, divided by the largest demand in that window, then the link utilizations the
agent's previous routing caused on the most recent of them, divided by their maximum.
Both are scale-free: the min-MLU routing of a matrix does not change when it is scaled.

Action: one logit per (pair, path) slot in [-1, 1]; ratios are a softmax over the pair's
paths of ``action_scale × logit`` (masked slots get nothing), so ``action_scale=3`` lets a
path's share range over a factor e⁶ ≈ 400.

Reward: ``"normalized"`` is optimal MLU ÷ achieved MLU (1 is the optimum; needs the
optima, one per matrix, computed once by the caller), ``"mlu"`` is −MLU ÷ the MLU of an
equal split of the same matrix (scale-free too). ``spread_weight`` > 0 subtracts that
weight × the mean over links of the Fortz–Thorup cost of each link's utilization ÷ the
optimal MLU (:func:`topologies.fortz_thorup_cost`, what the balanced LP tie-break
minimizes): of two routings with the same MLU it prefers the one that keeps the other
links further from the bottleneck, room the next matrix may need. It needs the optima too.

An episode walks ``episode_length`` consecutive matrices from a start that is random
(``random_start``) or the first matrix with enough history; the end of an episode is a
time limit (``truncated``), never a terminal state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from topologies import PathSet, Routing, Topology, TrafficSequence, fortz_thorup_cost

from .backend import Backend
from .common import (check_optimal_mlu, equal_split_mlu, masked_softmax, resolve_backend, resolve_network,
                     scale_free)

REWARDS = ("normalized", "mlu")


class SplitRoutingObservation:
    """The observation encoding, shared by the environment and by deployed policies."""

    def __init__(self, pathset: PathSet, history: int) -> None:
        self.pathset, self.history = pathset, history
        self.size = history * pathset.num_pairs + pathset.topology.num_links

    def encode(self, window_demands: np.ndarray, utilization: np.ndarray) -> np.ndarray:
        """(h, P) pair demands, oldest first, and (E,) link utilization -> (h·P + E,) float32."""
        return np.concatenate([scale_free(np.asarray(window_demands)).ravel(),
                               scale_free(np.asarray(utilization))]).astype(np.float32)

    def split(self, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse layout of :meth:`encode`: (h, P) scaled demands and (E,) scaled utilization."""
        cut = self.history * self.pathset.num_pairs
        return observation[:cut].reshape(self.history, -1), observation[cut:]


def ratios_from_action(action: np.ndarray, mask: np.ndarray, action_scale: float) -> np.ndarray:
    """(P·K,) or (..., P·K) actions in [-1, 1] -> (..., P, K) split ratios."""
    action = np.asarray(action, dtype=np.float64)
    logits = np.clip(action, -1.0, 1.0).reshape(*action.shape[:-1], *mask.shape) * action_scale
    return masked_softmax(logits, mask)


def check_spread_weight(weight: object, name: str = "spread_weight") -> float:
    """``weight`` as a float, refused with an error naming ``name`` unless a finite number >= 0."""
    if (isinstance(weight, bool) or not isinstance(weight, (int, float, np.number))
            or not np.isfinite(weight) or weight < 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
    return float(weight)


class SplitRoutingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(
        self,
        topology: Topology | str = "abilene",
        traffic: TrafficSequence | np.ndarray | str = "abilene-train",
        *,
        k: int = 4,
        metric: str = "hop",
        history: int = 3,
        reward: str = "mlu",
        optimal_mlu: np.ndarray | None = None,
        spread_weight: float = 0.0,
        episode_length: int | None = 128,
        random_start: bool = True,
        action_scale: float = 3.0,
        backend: str | Backend = "twin",
        pathset: PathSet | None = None,
        traffic_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(history, (int, np.integer)) or history < 1:
            raise ValueError(f"history (matrices observed) must be an integer >= 1, got {history!r}")
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}")
        spread_weight = check_spread_weight(spread_weight)
        if not action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {action_scale!r}")
        self.topology, self.traffic, self.pathset = resolve_network(topology, traffic, k, metric, pathset,
                                                                    traffic_options)
        self.history, self.reward_kind, self.action_scale = int(history), reward, float(action_scale)
        length = len(self.traffic)
        if length <= self.history:
            raise ValueError(f"traffic {self.traffic.name!r} has {length} matrices; history={self.history} "
                             f"needs at least {self.history + 1}")
        self.optimal_mlu = check_optimal_mlu(optimal_mlu, length)
        if reward == "normalized" and self.optimal_mlu is None:
            raise ValueError("reward='normalized' needs optimal_mlu, one per traffic matrix "
                             "(agents.lp.optimal_mlu; `rlte train` computes and caches them)")
        if spread_weight > 0 and self.optimal_mlu is None:
            raise ValueError("spread_weight > 0 charges utilization relative to the optimal MLU: it needs "
                             "optimal_mlu, one per traffic matrix (`rlte train` computes and caches them)")
        self.spread_weight = spread_weight
        available = length - self.history
        if episode_length is not None and (not isinstance(episode_length, (int, np.integer)) or episode_length < 1):
            raise ValueError(f"episode_length must be a positive integer or None, got {episode_length!r}")
        self.episode_length = available if episode_length is None else min(int(episode_length), available)
        self.random_start = random_start
        self.backend, self._owns_backend = resolve_backend(backend, self.pathset)
        self.demands = self.pathset.demands(self.traffic.matrices)  # (T, P)
        self.encoder = SplitRoutingObservation(self.pathset, self.history)
        self._equal = Routing.uniform(self.pathset).ratios
        self._equal_mlu = equal_split_mlu(self.pathset, self.demands)  # reward="mlu" reference, per matrix
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.encoder.size,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.pathset.num_slots,), dtype=np.float32)
        self._t = self._end = self.history
        self._utilization = np.zeros(self.topology.num_links)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        last_start = len(self.traffic) - self.episode_length
        start = self.episode_start(self.np_random)
        if options and "start" in options:
            start = int(options["start"])
            if not self.history <= start <= last_start:
                raise ValueError(f"start must be in [{self.history}, {last_start}], got {start}")
        self._t, self._end = start, start + self.episode_length
        # before the agent acts, the network ran an equal split
        self._utilization = self.backend.utilization(self.demands[start - 1], self._equal)
        return self._observation(), {"tm_index": start}

    def step(self, action):
        ratios = self.ratios(action)
        t = self._t
        measured = self.backend.run(self.demands[t], ratios)
        self._utilization = measured.utilization
        info = {"tm_index": t, "mlu": measured.mlu, "offered_bps": measured.offered_bps,
                "delivered_bps": measured.delivered_bps, "drops_bps": measured.drops_bps}
        if self.optimal_mlu is not None:  # (no NaN placeholders when unknown: they never compare equal)
            info.update(optimal_mlu=float(self.optimal_mlu[t]), normalized_mlu=measured.mlu / self.optimal_mlu[t])
        if self.reward_kind == "normalized":
            reward = self.optimal_mlu[t] / measured.mlu if measured.mlu > 0 else 1.0
        else:
            reference = self._equal_mlu[t]
            reward = -measured.mlu / reference if reference > 0 else 0.0
        if self.spread_weight > 0:
            spread = float(fortz_thorup_cost(measured.utilization / self.optimal_mlu[t]).mean())
            info["spread_cost"] = spread
            reward -= self.spread_weight * spread
        self._t += 1
        truncated = self._t >= self._end
        return self._observation(), float(reward), False, truncated, info

    # ------------------------------------------------------------------ helpers
    def episode_start(self, rng: np.random.Generator) -> int:
        """Where an episode starts: drawn from ``rng`` among the matrices with enough history
        and enough after them (``random_start``), else the first with enough history."""
        if not self.random_start:
            return self.history
        return int(rng.integers(self.history, len(self.traffic) - self.episode_length + 1))

    def ratios(self, action: np.ndarray) -> np.ndarray:
        """The split ratios (P, K) an action stands for."""
        return ratios_from_action(action, self.pathset.mask, self.action_scale)

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()
        super().close()

    def _observation(self) -> np.ndarray:
        t = self._t
        return self.encoder.encode(self.demands[t - self.history:t], self._utilization)


class SharedStarts(gym.Wrapper):
    """Start every episode where a schedule of its own says, whatever seed the environment was
    reset with: split-routing environments wrapped with the same ``schedule_seed`` and reset
    together (as a vector env's are: their episodes all last ``episode_length`` steps) route the
    same traffic matrix at every step. That is what a group baseline compares
    (:class:`agents.sb3.GroupBaselinePPO`). A seeded reset restarts the schedule, so runs repeat;
    a start named in the reset's options wins over the schedule's."""

    def __init__(self, env: gym.Env, schedule_seed: int) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, SplitRoutingEnv):
            raise TypeError(f"SharedStarts needs a SplitRoutingEnv underneath, got {type(env.unwrapped).__name__}")
        if not isinstance(schedule_seed, (int, np.integer)) or isinstance(schedule_seed, bool):
            raise ValueError(f"schedule_seed must be an integer, got {schedule_seed!r}")
        self.schedule_seed = int(schedule_seed)
        self._schedule = np.random.default_rng(self.schedule_seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._schedule = np.random.default_rng(self.schedule_seed)
        # drawn even when the caller names the start, so environments on one schedule stay in step
        start = self.env.unwrapped.episode_start(self._schedule)
        return self.env.reset(seed=seed, options={"start": start, **(options or {})})
