"""DQN learning on several topologies in turn (:class:`RotatingDQN`, :mod:`agents.sb3.rotation`)."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import DQN
from stable_baselines3.common.vec_env import VecEnv

from .rotation import RotatesTopologies


class RotatingDQN(RotatesTopologies, DQN):
    """DQN over several topologies' environments (:class:`RotatesTopologies`)."""

    buffer_attribute = "replay_buffer"

    def _new_buffer(self, env: VecEnv) -> Any:
        # each station's rollout adds to its buffer before the gradient steps sample from it,
        # so a newly visited topology's buffer is never empty when sampled
        return self.replay_buffer_class(self.buffer_size, env.observation_space, env.action_space, device=self.device,
                                        n_envs=self.n_envs, optimize_memory_usage=self.optimize_memory_usage,
                                        **self.replay_buffer_kwargs)

    def collect_rollouts(self, env, callback, train_freq, replay_buffer, *args: Any, **kwargs: Any):
        self._next_station()
        return super().collect_rollouts(self.env, callback, train_freq, self.replay_buffer, *args, **kwargs)
