"""``agent.algorithm=dqn``: path selection (one of K paths per arriving flow) learnt by DQN,
with an MLP or the graph Q-network (``agent.policy=graph``: weights that fit any topology)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from . import register
from .sb3_training import SB3Config, SB3Learner

if TYPE_CHECKING:
    from experiments.data import RunData


@dataclass
class DQNConfig(SB3Config):
    algorithm: str = "dqn"


@register
class DQNLearner(SB3Learner):
    algorithm = "dqn"
    env_kind = "path_selection"
    schemas = {"mlp": DQNConfig, "graph": DQNConfig}

    def wrapper(self, cfg: DictConfig) -> Callable | None:
        from envs.graph import graph_wrapped

        return graph_wrapped if cfg.agent.policy == "graph" else None

    def chooser(self, cfg: DictConfig, data: RunData, model: Any) -> Callable:
        if cfg.agent.policy == "graph":
            from agents.sb3 import SB3GraphPathChooser

            return SB3GraphPathChooser(model, data.pathset)
        from agents.flows import from_model

        return from_model(model)

    def export_module(self, cfg: DictConfig, data: RunData, model: Any):
        raise ValueError("agent.algorithm=dqn cannot be exported: it chooses one path per flow (path selection), "
                         "not split ratios, and a bundle holds a split-routing policy (demand history -> split "
                         "ratios); export an agent.algorithm=gradient or ppo run")
