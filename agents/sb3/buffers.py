"""Replay buffers SB3 lacks: n-step returns for dict observations (DQN on the graph view)."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples


class DictNStepReplayBuffer(DictReplayBuffer):
    """SB3's :class:`~stable_baselines3.common.buffers.NStepReplayBuffer` for dict observations
    (the graph view), which SB3 does not offer: each sample's reward is the discounted sum of
    up to ``n_steps`` rewards, cut at the episode's end, and its next observation and target
    discount (γ^steps taken) are those of the last step summed."""

    def __init__(self, *args, n_steps: int = 3, gamma: float = 0.99, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1, got {n_steps}")
        self.n_steps, self.gamma = n_steps, gamma

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> DictReplayBufferSamples:  # type: ignore[override]
        env_indices = np.random.randint(0, self.n_envs, size=batch_inds.shape)
        steps = (batch_inds[:, None] + np.arange(self.n_steps)) % self.buffer_size
        rewards = self._normalize_reward(self.rewards[steps, env_indices[:, None]], env)
        # the newest transition is followed by the oldest one in the ring: a cut there too
        # (its target still bootstraps unless it was a real end: dones × (1 − timeouts) below)
        newest = (self.pos - 1) % self.buffer_size
        at = (steps, env_indices[:, None])
        ends = (self.dones[at] > 0) | (self.timeouts[at] > 0) | (steps == newest)
        last_step = np.where(ends.any(axis=1), ends.argmax(axis=1), self.n_steps - 1)
        taken = np.arange(self.n_steps) <= last_step[:, None]
        returns = (rewards * self.gamma ** np.arange(self.n_steps) * taken).sum(axis=1, keepdims=True)
        last = (batch_inds + last_step) % self.buffer_size
        done = self.dones[last, env_indices] * (1 - self.timeouts[last, env_indices])
        observations = self._normalize_obs({key: obs[batch_inds, env_indices] for key, obs in self.observations.items()}, env)
        next_observations = self._normalize_obs({key: obs[last, env_indices] for key, obs in self.next_observations.items()}, env)
        return DictReplayBufferSamples(
            observations={key: self.to_torch(obs) for key, obs in observations.items()},
            actions=self.to_torch(self.actions[batch_inds, env_indices]),
            next_observations={key: self.to_torch(obs) for key, obs in next_observations.items()},
            dones=self.to_torch(done.reshape(-1, 1)),
            rewards=self.to_torch(returns.astype(np.float32)),
            discounts=self.to_torch((self.gamma ** taken.sum(axis=1, keepdims=True)).astype(np.float32)),
        )
