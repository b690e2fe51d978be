"""Learning on several topologies in turn: :class:`RotatesTopologies`, a mixin for SB3
algorithms whose policy's weights fit any topology (:mod:`agents.sb3.policies`), one rollout
on each network's environments in turn (:class:`agents.sb3.ppo.RotatingPPO`,
:class:`agents.sb3.dqn.RotatingDQN`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv


@dataclass
class _Station:
    """One environment of a :class:`RotatesTopologies` model and what its rollouts need kept."""

    env: VecEnv
    buffer: Any
    label: str  # the topology's name, in its episode statistics
    last_obs: Any = None
    last_episode_starts: np.ndarray | None = None


def _topology_label(env: VecEnv, index: int) -> str:
    """The name of the topology ``env``'s environments run on (rlte's environments have one)."""
    try:
        return str(env.get_attr("topology", indices=[0])[0].name)
    except AttributeError:
        return f"environment {index}"


class RotatesTopologies:
    """Mixin for SB3 algorithms: rollouts visit the model's own environment and each of
    ``also_on`` in turn, one rollout each (PPO: ``n_steps`` per environment, then an update on
    it; DQN: ``train_freq`` steps, then its gradient steps on that environment's replay
    buffer). For the graph policies on several topologies: their spaces differ in size only,
    and none of their weights' shapes depends on them (:class:`GraphActorCriticPolicy`,
    :class:`GraphQPolicy`).

    Each environment keeps its own buffer (rollout or replay; a replay buffer of the full
    ``buffer_size`` each) and last observation; the policy and its optimizer are shared.
    Saving, and the end of :meth:`learn`, see the model's own environment, so a saved or
    trained model is the one-topology model it would otherwise be (``PPO.load`` /
    ``DQN.load`` read it). SB3's episode statistics (``rollout/ep_rew_mean``) pool the
    topologies; ``rollout/ep_rew_mean/<label>`` has each one's own (``also_labels``, else
    each environment's topology name)."""

    buffer_attribute: str  # where the algorithm keeps its buffer: rollout_buffer or replay_buffer

    def __init__(self, policy, env, *args: Any, also_on: Sequence[VecEnv] = (),
                 also_labels: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(policy, env, *args, **kwargs)
        if also_labels is not None and len(also_labels) != len(also_on):
            raise ValueError(f"also_labels names {len(also_labels)} environments, also_on has {len(also_on)}")
        for i, other in enumerate(also_on):
            if other.num_envs != self.n_envs:
                raise ValueError(f"every topology's environments share the model's rollout size: also_on[{i}] has "
                                 f"{other.num_envs} environments, the model {self.n_envs}")
            if not (isinstance(other.observation_space, type(self.observation_space))
                    and isinstance(other.action_space, type(self.action_space))):
                raise ValueError(f"also_on[{i}] has {type(other.observation_space).__name__} observations and "
                                 f"{type(other.action_space).__name__} actions; the model's environment has "
                                 f"{type(self.observation_space).__name__} and {type(self.action_space).__name__}")
        self._stations = [_Station(self.env, getattr(self, self.buffer_attribute), _topology_label(self.env, 0))] + [
            _Station(other, self._new_buffer(other),
                     _topology_label(other, i + 1) if also_labels is None else str(also_labels[i]))
            for i, other in enumerate(also_on)]
        self._at = 0  # the station whose environment, buffer and spaces the model holds now
        self._rollouts = 0

    def _new_buffer(self, env: VecEnv) -> Any:
        """An empty buffer of the algorithm's kind for ``env``'s spaces."""
        raise NotImplementedError

    def _visit(self, index: int) -> None:
        if index == self._at:
            return
        here, there = self._stations[self._at], self._stations[index]
        here.last_obs, here.last_episode_starts = self._last_obs, self._last_episode_starts
        if there.last_obs is None:  # first visit: SB3's _setup_learn reset only the model's own env
            there.last_obs, there.last_episode_starts = there.env.reset(), np.ones(self.n_envs, dtype=bool)
        self.env = there.env
        setattr(self, self.buffer_attribute, there.buffer)
        self._last_obs, self._last_episode_starts = there.last_obs, there.last_episode_starts
        self.observation_space, self.action_space = there.env.observation_space, there.env.action_space
        self.policy.observation_space, self.policy.action_space = self.observation_space, self.action_space
        self._at = index

    def _next_station(self) -> None:
        """Before each rollout: move on to the next environment."""
        self._visit(self._rollouts % len(self._stations))
        self._rollouts += 1

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        for info in infos:
            if "episode" in info:  # SB3's Monitor: the episode just ended on this topology
                self.logger.record_mean(f"rollout/ep_rew_mean/{self._stations[self._at].label}", info["episode"]["r"])

    def learn(self, *args: Any, **kwargs: Any):
        try:
            return super().learn(*args, **kwargs)
        finally:
            self._visit(0)

    def save(self, *args: Any, **kwargs: Any) -> None:
        at = self._at  # a checkpoint taken mid-rollout holds the model's own spaces, not a visited one's
        self._visit(0)
        try:
            super().save(*args, **kwargs)
        finally:
            self._visit(at)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_stations", "_at", "_rollouts"]
