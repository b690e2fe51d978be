"""Stable-Baselines3 agents for the two environments, and the adapter that puts a trained
split-routing agent behind the RoutingPolicy interface.

PPO drives split routing (continuous logits per path), DQN path selection (one of K paths
per flow). Both take a plain dict of hyperparameters (from Hydra) and an MLP feature
extractor; TensorBoard logging is SB3's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from envs.backend import TwinBackend
from envs.split_routing import SplitRoutingObservation, ratios_from_action
from topologies import PathSet, Routing

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN}


def make_model(algorithm: str, env, hyperparameters: Mapping[str, Any], *, net_arch: list[int],
               seed: int, tensorboard_log: str | None = None, device: str = "cpu",
               policy_options: Mapping[str, Any] | None = None) -> BaseAlgorithm:
    """An untrained SB3 model with an MLP of ``net_arch`` hidden widths (``policy_options``:
    more policy keyword arguments, e.g. ``log_std_init`` for PPO)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    policy_kwargs = {"net_arch": list(net_arch), **dict(policy_options or {})}
    return ALGORITHMS[algorithm]("MlpPolicy", env, seed=seed, verbose=0, device=device,
                                 tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs,
                                 **dict(hyperparameters))


def load_model(algorithm: str, path: str) -> BaseAlgorithm:
    return ALGORITHMS[algorithm].load(path, device="cpu")


class SB3SplitPolicy:
    """A split-routing agent as a RoutingPolicy.

    The agent observes the utilization its own previous routing caused on the latest
    matrix, so this adapter is stateful: it remembers the last ratios it returned (an equal
    split before the first call; :meth:`reset` restores that).
    """

    clairvoyant = False

    def __init__(self, model: BaseAlgorithm, pathset: PathSet, history: int, action_scale: float,
                 name: str = "ppo") -> None:
        self.model, self.pathset, self.history, self.name = model, pathset, history, name
        self.action_scale = action_scale
        self.encoder = SplitRoutingObservation(pathset, history)
        self.backend = TwinBackend(pathset)
        self.reset()

    def reset(self) -> None:
        self._last = Routing.uniform(self.pathset).ratios

    def route(self, history: np.ndarray) -> np.ndarray:
        demands = self.pathset.demands(history[-self.history:])
        utilization = self.backend.utilization(demands[-1], self._last)
        action, _ = self.model.predict(self.encoder.encode(demands, utilization), deterministic=True)
        self._last = ratios_from_action(action, self.pathset.mask, self.action_scale)
        return self._last
