"""PPO variants: the group baseline in place of the critic (:class:`GroupBaselinePPO`), and
learning on several topologies in turn (:class:`RotatingPPO`, :mod:`agents.sb3.rotation`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv

from .rotation import RotatesTopologies


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """(steps, envs) rewards -> each minus the mean of the other envs' rewards at its step."""
    rewards = np.asarray(rewards, dtype=np.float64)
    envs = rewards.shape[1]
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (envs - 1)
    return (rewards - others).astype(np.float32)


class GroupBaselinePPO(PPO):
    """PPO whose advantage is each environment's reward minus the mean reward the other
    environments got at the same step (REINFORCE's leave-one-out baseline, Kool et al. 2019;
    GRPO's group baseline without its scaling), instead of the reward minus the critic's value.

    Split routing with ``gamma`` 0 is a contextual bandit: an action's return is its one
    reward, and most of a reward's spread is how hard the matrix is, not the action. With every
    environment on the same matrix at each step (:class:`envs.split_routing.SharedStarts`), the
    other environments' rewards estimate the matrix's expected reward under the policy without
    a critic's error. The critic is still trained (its loss and explained variance are logged)
    but not used. Refused for ``gamma`` other than 0 or fewer than 2 environments; a step on
    which the environments report different matrices (``info["tm_index"]``) stops training."""

    def __init__(self, policy, env, *args: Any, **kwargs: Any) -> None:
        super().__init__(policy, env, *args, **kwargs)
        if self.gamma != 0:
            raise ValueError(f"the group baseline compares one step's rewards, so it needs gamma 0 (a bandit: "
                             f"routing does not change later traffic), got gamma={self.gamma}")
        if self.n_envs < 2:
            raise ValueError(f"the group baseline compares environments on the same matrix: n_envs must be >= 2, "
                             f"got {self.n_envs}")

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        matrices = {info.get("tm_index") for info in infos}
        if len(matrices) > 1:
            raise RuntimeError(f"the group baseline needs every environment on the same matrix at each step "
                               f"(wrap them in envs.split_routing.SharedStarts), but one step saw tm_index "
                               f"{sorted(matrices, key=str)}")
        super()._update_info_buffer(infos, dones)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        collected = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if collected:
            rollout_buffer.advantages = group_advantages(rollout_buffer.rewards)
        return collected


class RotatingPPO(RotatesTopologies, PPO):
    """PPO over several topologies' environments (:class:`RotatesTopologies`)."""

    buffer_attribute = "rollout_buffer"

    def _new_buffer(self, env: VecEnv) -> Any:
        return self.rollout_buffer_class(self.n_steps, env.observation_space, env.action_space, device=self.device,
                                         gamma=self.gamma, gae_lambda=self.gae_lambda, n_envs=self.n_envs,
                                         **self.rollout_buffer_kwargs)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        self._next_station()
        return super().collect_rollouts(self.env, callback, self.rollout_buffer, n_rollout_steps)


class RotatingGroupBaselinePPO(RotatingPPO, GroupBaselinePPO):
    """:class:`GroupBaselinePPO` over several topologies' environments (:class:`RotatesTopologies`)."""
