"""SB3 models from rlte's configuration: :func:`make_model` and :func:`load_model`.

PPO drives split routing (continuous logits per path), DQN path selection (one of K paths
per flow). Both take a plain dict of hyperparameters (from Hydra) and an MLP feature
extractor, or a graph policy (:mod:`agents.sb3.policies`) on the graph view of their
environment (:mod:`envs.graph`); TensorBoard logging is SB3's own. Keywords SB3 would
refuse deep inside its constructors are refused here first, by name (:func:`check_keywords`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from .buffers import DictNStepReplayBuffer
from .dqn import RotatingDQN
from .policies import GRAPH_POLICIES, POLICIES
from .ppo import GroupBaselinePPO, RotatingGroupBaselinePPO, RotatingPPO
from .schedules import with_schedules

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN}
ADVANTAGES = ("gae", "group")
# make_model's own arguments to the SB3 constructor, which agent.hyperparameters must not repeat
SET_BY_MAKE_MODEL = {"policy": "agent.policy", "env": "env", "seed": "seed", "verbose": "rlte",
                     "device": "rlte", "tensorboard_log": "the run directory", "policy_kwargs": "agent.policy_options"}


def accepted_keywords(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` takes: its ``__init__``'s and, where that passes
    ``**kwargs`` on, its bases' (SB3 policies extend one another that way)."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass in (object, nn.Module):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        accepted |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return accepted - {"self"}


def check_keywords(given: Mapping[str, Any], cls: type, setting: str, set_elsewhere: Mapping[str, str]) -> None:
    """Refuse a key of ``setting`` that ``cls`` does not take, or that rlte sets itself,
    naming it (where the constructor would raise a TypeError deep inside SB3)."""
    for key in given:
        if key in set_elsewhere:
            raise ValueError(f"{setting}.{key} is set by {set_elsewhere[key]}, not here")
    accepted = accepted_keywords(cls)
    if unknown := sorted(set(given) - accepted):
        options = sorted(accepted - set(set_elsewhere) - {"observation_space", "action_space", "lr_schedule",
                                                          "_init_setup_model"})
        raise ValueError(f"{setting}: {cls.__name__} takes no {', '.join(unknown)}; it takes {', '.join(options)}")


def make_model(algorithm: str, env, hyperparameters: Mapping[str, Any], *, net_arch: list[int] | None = None,
               seed: int, tensorboard_log: str | None = None, device: str = "cpu",
               policy_options: Mapping[str, Any] | None = None, policy: str = "mlp",
               advantage: str = "gae", also_on: Sequence[VecEnv] = (),
               also_labels: Sequence[str] | None = None) -> BaseAlgorithm:
    """An untrained SB3 model. ``policy="mlp"``: an MLP of ``net_arch`` hidden widths;
    ``policy="graph"``: :class:`GraphActorCriticPolicy` for PPO or :class:`GraphQPolicy` for
    DQN (on the graph-wrapped environment, :func:`envs.graph.graph_wrapped`;
    ``policy_options`` may set ``hidden`` and ``layers``; DQN's per-action scorer has
    ``net_arch`` hidden widths). ``policy_options``: more policy keyword arguments, e.g.
    ``log_std_init`` for PPO. ``hyperparameters`` may schedule rates (:func:`with_schedules`).
    ``advantage``: ``"gae"`` (SB3's, from the critic) or ``"group"`` (PPO only,
    :class:`GroupBaselinePPO`; its environments must share their matrices). ``also_on``: more
    topologies' environments for a graph policy to learn on, one rollout each in turn
    (:class:`RotatesTopologies`), their episode statistics filed under ``also_labels``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if advantage not in ADVANTAGES:
        raise ValueError(f"unknown advantage {advantage!r}; choose one of {', '.join(ADVANTAGES)}")
    if advantage == "group" and algorithm != "ppo":
        raise ValueError(f"the group advantage is PPO's (GroupBaselinePPO), not {algorithm}'s")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    policy_kwargs = dict(policy_options or {})
    uses_net_arch = policy == "mlp" or algorithm == "dqn"
    check_keywords(hyperparameters, ALGORITHMS[algorithm], "agent.hyperparameters", SET_BY_MAKE_MODEL)
    policy_class = GRAPH_POLICIES[algorithm] if policy == "graph" else ALGORITHMS[algorithm].policy_aliases["MlpPolicy"]
    check_keywords(policy_kwargs, policy_class, "agent.policy_options",
                   {"net_arch": "agent.net_arch"} if uses_net_arch else {})
    if uses_net_arch:
        policy_kwargs["net_arch"] = list(net_arch or [])
    resolved = with_schedules(hyperparameters)
    n_steps = resolved.get("n_steps", 1)
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a whole number >= 1, got {n_steps!r}")
    if algorithm == "dqn" and n_steps > 1 and isinstance(env.observation_space, spaces.Dict):
        # SB3 sets up n-step returns only for flat observations
        resolved.pop("n_steps")
        resolved["replay_buffer_class"] = DictNStepReplayBuffer
        resolved["replay_buffer_kwargs"] = {"n_steps": n_steps, "gamma": resolved.get("gamma", 0.99)}
    algorithm_class = GroupBaselinePPO if advantage == "group" else ALGORITHMS[algorithm]
    if also_on:
        if policy != "graph":
            raise ValueError(f"more topologies to learn on are for the graph policies, whose weights fit any "
                             f"topology; not algorithm={algorithm} policy={policy}")
        if algorithm == "dqn":
            algorithm_class = RotatingDQN
        else:
            algorithm_class = RotatingGroupBaselinePPO if advantage == "group" else RotatingPPO
        resolved["also_on"] = list(also_on)
        resolved["also_labels"] = also_labels
    return algorithm_class(policy_class, env, seed=seed, verbose=0, device=device,
                           tensorboard_log=tensorboard_log, policy_kwargs=policy_kwargs, **resolved)


def load_model(algorithm: str, path: str) -> BaseAlgorithm:
    return ALGORITHMS[algorithm].load(path, device="cpu")
