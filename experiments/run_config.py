"""What a run's config means, and what it refuses: the agent, environment, policy and backend
settings read off a composed Hydra config (``agent_policy``, ``policy_options``, ...) and
:func:`check_config`, which refuses a config whose parts do not go together before anything
trains or is written (`rlte train` and `rlte eval` both call it).
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from agents.policy import check_baseline_names
from envs.backend import BACKENDS
from envs.split_routing import check_spread_weight
from topologies import Topology

from .config_keys import check_known_keys
from .data import check_whole_number

AGENT_ENV = {"ppo": "split_routing", "gradient": "split_routing", "dqn": "path_selection"}
ACTIONS = ("slots", "link_costs")  # agent.actions: see agent_actions


# Whole-number settings: (smallest value, whether every config has it). A wrong one is refused
# naming its key, where int() would say only "invalid literal" or the run would fail later.
WHOLE_NUMBERS: dict[str, tuple[int, bool]] = {
    "eval.every": (1, True), "eval.periodic_matrices": (1, True), "eval.periodic_every": (1, True),
    "eval.validation": (0, False), "eval.guard_blocks": (2, False), "seed": (0, False), "paths": (1, False),
    "threads": (1, False),
    "env.history": (1, False), "env.episode_length": (1, False), "env.n_envs": (1, False),
    "env.flows_per_pair": (1, False), "agent.total_timesteps": (1, False), "agent.epochs": (1, False),
    "agent.batch_size": (1, False),
}


# Real-valued environment settings, refused naming their key when they are not numbers (the
# environment classes then check their ranges), where float() would say only "could not convert".
NUMBERS = ("env.action_scale", "env.bottleneck_weight", "env.utilization_norm")  # spread_weight: its own check
# Yes-or-no settings, refused naming their key when they are not true or false (a typed
# `eval.guard=no` is the string "no", which would count as yes).
SWITCHES = ("eval.with_baselines", "eval.guard", "eval.periodic_also_train_on")


def check_config(cfg: DictConfig, *, training: bool = True) -> None:
    """Refuse a config whose agent, environment, policy or backend do not go together, or
    (``training``: for `rlte train`, whose config is composed whole) that holds a setting no
    config file of its kind has. `rlte eval` may score on a live backend, and checks only the
    settings typed, not those of a run made before a key was renamed."""
    algorithm, kind = cfg.agent.algorithm, cfg.env.kind
    if algorithm not in AGENT_ENV:
        raise ValueError(f"unknown agent algorithm {algorithm!r}; choose one of {', '.join(AGENT_ENV)}")
    if AGENT_ENV[algorithm] != kind:
        raise ValueError(f"agent {algorithm!r} learns in env={AGENT_ENV[algorithm]}, not env={kind}")
    if agent_policy(cfg) not in ("mlp", "graph"):
        raise ValueError(f"agent.policy must be mlp or graph, got {agent_policy(cfg)!r}")
    if agent_actions(cfg) not in ACTIONS:
        raise ValueError(f"agent.actions must be one of {', '.join(ACTIONS)}, got {agent_actions(cfg)!r}")
    if agent_actions(cfg) == "link_costs" and (algorithm != "ppo" or agent_policy(cfg) != "mlp"):
        raise ValueError("agent.actions=link_costs is for PPO's MLP policy (the graph policy acts with link "
                         f"costs already), not agent.algorithm={algorithm} agent.policy={agent_policy(cfg)}")
    if cfg.agent.get("log_std_final") is not None and algorithm != "ppo":
        raise ValueError(f"agent.log_std_final schedules PPO's exploration noise; agent.algorithm={algorithm} has none")
    also = cfg.agent.get("also_train_on")
    if also and agent_policy(cfg) != "graph":
        raise ValueError("agent.also_train_on is for the graph policies (agent=gradient_gnn, ppo_gnn, dqn_gnn), "
                         f"whose weights fit any topology; not agent.algorithm={algorithm} agent.policy=mlp")
    if also is not None and not OmegaConf.is_list(also):
        raise ValueError(f"agent.also_train_on must be a list of {{topology, traffic, count, seed}}, got {also!r}")
    for key, (minimum, required) in WHOLE_NUMBERS.items():  # checked here, not found out after (or as) training
        value = OmegaConf.select(cfg, key)
        if value is not None or required:
            check_whole_number(key, value, minimum)
    for key in NUMBERS:
        value = OmegaConf.select(cfg, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
            raise ValueError(f"{key} must be a number, got {value!r}")
    for key in SWITCHES:
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    check_advantage(cfg)
    check_spread_setting(cfg)
    baseline_names(cfg)
    backend = cfg.backend.name
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if training:
        check_known_keys(cfg)
    if training and backend != "twin":
        raise ValueError(f"training runs in the twin (backend=twin): a step on {backend} takes seconds, so a run "
                         f"would take weeks; train in the twin, then score the run there: "
                         f"rlte eval run=<run directory> backend={backend}")


def check_spread_setting(cfg: DictConfig) -> None:
    """Refuse an ``env.spread_weight`` that is not a number >= 0, or that nothing would use."""
    weight = check_spread_weight(OmegaConf.select(cfg, "env.spread_weight", default=0.0), "env.spread_weight")
    if weight > 0 and cfg.env.kind != "split_routing":
        raise ValueError(f"env.spread_weight is split routing's reward; env={cfg.env.kind} has none (leave it at 0)")
    if weight > 0 and cfg.agent.algorithm == "gradient":
        raise ValueError("env.spread_weight shapes the environment's reward, and agent.algorithm=gradient does not "
                         "learn from it (it follows the twin's MLU gradient); leave it at 0")


def check_advantage(cfg: DictConfig) -> None:
    """Refuse an ``agent.advantage`` the agent cannot use, naming the setting that is wrong."""
    from agents.sb3 import ADVANTAGES

    advantage, algorithm = agent_advantage(cfg), cfg.agent.algorithm
    if advantage not in ADVANTAGES:
        raise ValueError(f"agent.advantage must be one of {', '.join(ADVANTAGES)}, got {advantage!r}")
    if advantage != "group":
        return
    if algorithm != "ppo":
        raise ValueError(f"agent.advantage=group is PPO's group baseline; agent.algorithm={algorithm} has no advantage")
    gamma = OmegaConf.select(cfg, "agent.hyperparameters.gamma", default=0.99)  # SB3's default
    if gamma != 0:
        raise ValueError(f"agent.advantage=group compares one step's rewards, so it needs "
                         f"agent.hyperparameters.gamma=0, got {gamma}")
    if OmegaConf.select(cfg, "env.n_envs", default=1) < 2:  # a whole number: check_config checked it
        raise ValueError(f"agent.advantage=group compares environments on the same matrix: env.n_envs must be "
                         f">= 2, got {cfg.env.get('n_envs')}")


def baseline_names(cfg: DictConfig) -> list[str] | None:
    """``eval.baselines``: the baselines the table scores, by name (None: every one), refused
    naming the unknown one and every known one (a live run's time grows with each)."""
    names = cfg.eval.get("baselines")
    if names is None:
        return None
    if not OmegaConf.is_list(names) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"eval.baselines must be a list of baseline names, got {names!r}")
    if cfg.env.kind == "path_selection":
        from agents.flows import BASELINE_CHOOSERS as known
    else:
        from agents.policy import BASELINES as known
    return check_baseline_names(list(names), list(known), f"{cfg.env.kind} baseline (eval.baselines)")


def check_same_topology(cfg: DictConfig, trained_on: Topology, scored_on: Topology) -> None:
    """Refuse to score weights that fit only the topology they were trained on on another one
    (graph policies have no weight whose shape depends on the topology)."""
    if agent_policy(cfg) != "graph" and trained_on.fingerprint() != scored_on.fingerprint():
        raise ValueError(f"agent {cfg.agent.name} (agent.policy={agent_policy(cfg)}) has weights for "
                         f"{trained_on.name} only, not {scored_on.name}: only graph policies (agent.policy=graph: "
                         "gradient_gnn, ppo_gnn, dqn_gnn) route topologies they were not trained on")


def agent_policy(cfg: DictConfig) -> str:
    """``mlp`` (flat observation, one logit per path) or ``graph`` (envs.graph view, GNN policy;
    for the gradient learner, agents.gnn.LinkGNN)."""
    return str(cfg.agent.get("policy", "mlp"))


def agent_actions(cfg: DictConfig) -> str:
    """How PPO's MLP acts in split routing: ``slots`` (one logit per pair and path) or
    ``link_costs`` (one cost per link, envs.graph.LinkCostActions: 30 numbers on Abilene
    instead of 528)."""
    return str(cfg.agent.get("actions", "slots"))


def agent_advantage(cfg: DictConfig) -> str:
    """PPO's advantage: ``gae`` (SB3's, from the critic) or ``group`` (each env's reward minus
    the others' on the same matrix, agents.sb3.GroupBaselinePPO; needs gamma 0 and n_envs >= 2)."""
    return str(cfg.agent.get("advantage", "gae"))


def policy_options(cfg: DictConfig) -> dict[str, Any]:
    """The SB3 policy's keyword arguments from ``agent.policy_options`` (the PPO graph policy
    also gets the environment's ``action_scale``: its refinement rounds route as the env does)."""
    options = OmegaConf.to_container(cfg.agent.get("policy_options") or OmegaConf.create())
    if cfg.agent.algorithm == "ppo" and agent_policy(cfg) == "graph":
        options["action_scale"] = float(cfg.env.action_scale)
    return options
