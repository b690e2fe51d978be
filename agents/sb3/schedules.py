"""What changes over training: hyperparameters given as schedules (:func:`with_schedules`)
and PPO's exploration noise falling on one (:class:`ExplorationDecay`, a callback)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")  # hyperparameters SB3 accepts as schedules


def with_schedules(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """``hyperparameters`` with each ``"lin_<x>"`` value of a :data:`SCHEDULED` key turned into
    a schedule falling linearly from x to 0 over training (RL Baselines3 Zoo's spelling)."""
    resolved = dict(hyperparameters)
    for key in SCHEDULED:
        value = resolved.get(key)
        if not isinstance(value, str):
            continue
        try:
            start = float(value.removeprefix("lin_")) if value.startswith("lin_") else None
        except ValueError:
            start = None
        if start is None:
            raise ValueError(f"{key} must be a number or 'lin_<number>' (linear decay to 0), got {value!r}")
        resolved[key] = LinearSchedule(start, 0.0, 1.0)
    return resolved


class ExplorationDecay(BaseCallback):
    """PPO's exploration noise on a schedule instead of learned: every action's log standard
    deviation falls linearly from ``start`` to ``end`` over training (set before each rollout,
    and frozen, so the loss does not move it). Early steps explore widely; the last ones sample
    close to the mean that is scored."""

    def __init__(self, start: float, end: float) -> None:
        super().__init__()
        for name, value in (("start", start), ("end", end)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
                raise ValueError(f"ExplorationDecay {name} must be a finite number (a log standard deviation), "
                                 f"got {value!r}")
        self.start, self.end = float(start), float(end)

    def log_std(self, progress_remaining: float) -> float:
        """The scheduled log standard deviation when ``progress_remaining`` (1 -> 0) of training is left."""
        return self.end + (self.start - self.end) * progress_remaining

    def _on_training_start(self) -> None:
        log_std = getattr(self.model.policy, "log_std", None)
        if not isinstance(log_std, nn.Parameter):
            raise TypeError(f"ExplorationDecay needs a Gaussian policy with a log_std parameter (PPO on a Box "
                            f"action space, no gSDE), not {type(self.model.policy).__name__}")
        log_std.requires_grad_(False)  # each rollout's start sets it

    def _on_rollout_start(self) -> None:
        self.model.policy.log_std.data.fill_(self.log_std(self.model._current_progress_remaining))
        self.logger.record("train/log_std_scheduled", float(self.model.policy.log_std.data.mean()))

    def _on_step(self) -> bool:
        return True
