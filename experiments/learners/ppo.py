"""``agent.algorithm=ppo``: split routing learnt by PPO, with an MLP on the flat observation
(acting per path, or with one cost per link: ``agent.actions=link_costs``) or the graph policy
(``agent.policy=graph``: one cost per link, weights that fit any topology)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import DictConfig

from . import register
from .sb3_training import SB3Config, SB3Learner

if TYPE_CHECKING:
    from experiments.data import RunData

ACTIONS = ("slots", "link_costs")  # one logit per pair and path, or one cost per link (envs.graph.LinkCostActions)
ADVANTAGES = ("gae", "group")      # SB3's, from the critic; or each env's reward less the others' on one matrix


@dataclass
class PPOConfig(SB3Config):
    CHOICES = {"actions": ACTIONS, "advantage": ADVANTAGES}
    algorithm: str = "ppo"
    actions: str = "slots"
    advantage: str = "gae"
    log_std_final: Optional[float] = None  # the log std falls linearly to it over training instead of being learned


@register
class PPOLearner(SB3Learner):
    algorithm = "ppo"
    env_kind = "split_routing"
    schemas = {"mlp": PPOConfig, "graph": PPOConfig}

    def check(self, cfg: DictConfig) -> None:
        super().check(cfg)
        agent = cfg.agent
        if agent.actions == "link_costs" and agent.policy != "mlp":
            raise ValueError("agent.actions=link_costs is for PPO's MLP policy (the graph policy acts with link "
                             f"costs already), not agent.policy={agent.policy}")
        if agent.advantage != "group":
            return
        gamma = agent.hyperparameters.get("gamma", 0.99)  # SB3's default
        if gamma != 0:
            raise ValueError(f"agent.advantage=group compares one step's rewards, so it needs "
                             f"agent.hyperparameters.gamma=0, got {gamma}")
        if cfg.env.n_envs < 2:
            raise ValueError(f"agent.advantage=group compares environments on the same matrix: env.n_envs must be "
                             f">= 2, got {cfg.env.n_envs}")

    def policy_options(self, cfg: DictConfig) -> dict[str, Any]:
        """The graph policy also gets the environment's ``action_scale``: its refinement rounds route as the env does."""
        options = super().policy_options(cfg)
        if cfg.agent.policy == "graph":
            options["action_scale"] = cfg.env.action_scale
        return options

    def model_options(self, cfg: DictConfig) -> dict[str, Any]:
        return {"advantage": cfg.agent.advantage}

    def wrapper(self, cfg: DictConfig) -> Callable | None:
        from envs.graph import LinkCostActions, graph_wrapped

        wrapper = None
        if cfg.agent.policy == "graph":  # a refining graph policy routes inside itself: it observes the paths too
            wrapper = functools.partial(graph_wrapped, paths=cfg.agent.policy_options.get("rounds", 0) > 0)
        if cfg.agent.actions == "link_costs":
            wrapper = LinkCostActions
        if cfg.agent.advantage == "group":  # every env on the same matrix at each step
            wrapper = functools.partial(shared_starts_then, cfg.seed, wrapper)
        return wrapper

    def callbacks(self, cfg: DictConfig) -> list:
        """``agent.log_std_final``: the log standard deviation falls linearly from the policy's
        ``log_std_init`` to it over training (agents.sb3.ExplorationDecay)."""
        if cfg.agent.log_std_final is None:
            return []
        from agents.sb3 import ExplorationDecay

        return [ExplorationDecay(cfg.agent.policy_options.get("log_std_init", 0.0), cfg.agent.log_std_final)]

    def routing_policy(self, cfg: DictConfig, data: RunData, model: Any):
        from agents.sb3 import SB3GraphSplitPolicy, SB3SplitPolicy

        if cfg.agent.policy == "graph":
            return SB3GraphSplitPolicy(model, data.pathset, cfg.env.history, cfg.env.action_scale,
                                       name=cfg.agent.name)
        return SB3SplitPolicy(model, data.pathset, cfg.env.history, cfg.env.action_scale, name=cfg.agent.name,
                              link_costs=cfg.agent.actions == "link_costs")

    def export_module(self, cfg: DictConfig, data: RunData, model: Any):
        """The policy with its loop through the network (it observes the utilization its previous
        routing caused) unrolled inside from the environment's reset state
        (experiments.export_ppo.UnrolledPPO): it reads the last env.history + 7 matrices (fewer
        decisions above env.history=5: experiments.export_ppo.unroll_for)."""
        from experiments.export_ppo import export_module

        return export_module(model, data.pathset, cfg.env.history, cfg.env.action_scale,
                             link_costs=cfg.agent.actions == "link_costs")

    def export_policy(self, cfg: DictConfig, data: RunData, model: Any):
        """The run's policy, a stateful adapter (it observes the utilization its previous answer
        caused), reset and stepped through the same windows as the export before each answer
        (experiments.export_ppo.UnrolledPolicy), so that parity compares like with like."""
        from experiments.export_ppo import UnrolledPolicy

        return UnrolledPolicy(self.routing_policy(cfg, data, model))


def shared_starts_then(schedule_seed: int, wrapper: Callable | None, env):
    """``env`` starting its episodes on the shared schedule, then wrapped by ``wrapper``."""
    from envs.split_routing import SharedStarts

    env = SharedStarts(env, schedule_seed)
    return env if wrapper is None else wrapper(env)
