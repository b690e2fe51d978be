"""Trained SB3 models behind rlte's interfaces: a split-routing agent as a
:class:`agents.policy.RoutingPolicy` (:class:`SB3SplitPolicy`; a PPO graph policy,
:class:`SB3GraphSplitPolicy`) and a DQN graph policy as a path-selection chooser
(:class:`SB3GraphPathChooser`). The graph adapters route any topology with the weights
trained on one (their ``on`` methods; no retraining)."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from envs.backend import TwinBackend
from envs.graph import FlowGraphObservation, LinkCosts, LinkGraphObservation
from envs.path_selection import PathSelectionEnv
from envs.split_routing import SplitRoutingObservation, ratios_from_action
from topologies import PathSet, Routing

from .policies import GraphActorCriticPolicy, GraphQPolicy


def _graph_network(policy: BaseAlgorithm | nn.Module, expected: type, adapter: str):
    """The policy network of a model (or the network itself), refused unless it is ``expected``."""
    network = policy.policy if isinstance(policy, BaseAlgorithm) else policy
    if not isinstance(network, expected):
        raise TypeError(f"{adapter} needs a {expected.__name__}, got {type(network).__name__}")
    return network


class SB3SplitPolicy:
    """A split-routing agent as a RoutingPolicy.

    The agent observes the utilization its own previous routing caused on the latest
    matrix, so this adapter is stateful: it remembers the last ratios it returned (an equal
    split before the first call; :meth:`reset` restores that).
    """

    clairvoyant = False

    def __init__(self, model: BaseAlgorithm | BasePolicy, pathset: PathSet, history: int, action_scale: float,
                 name: str = "ppo", *, link_costs: bool = False,
                 encoder: SplitRoutingObservation | LinkGraphObservation | None = None) -> None:
        self.model, self.pathset, self.history, self.name = model, pathset, history, name
        self.action_scale = action_scale
        # what the model was trained to observe; anything with encode(demands, utilization)
        self.encoder = encoder or SplitRoutingObservation(pathset, history)
        self.backend = TwinBackend(pathset)
        # a model trained under envs.graph.LinkCostActions answers with one cost per link
        self.link_costs = LinkCosts(pathset) if link_costs else None
        self.reset()

    def reset(self) -> None:
        self._last = Routing.uniform(self.pathset).ratios

    def route(self, history: np.ndarray) -> np.ndarray:
        demands = self.pathset.demands(history[-self.history:])
        utilization = self.backend.utilization(demands[-1], self._last)
        self._last = ratios_from_action(self._slot_action(demands, utilization), self.pathset.mask, self.action_scale)
        return self._last

    def _slot_action(self, demands: np.ndarray, utilization: np.ndarray) -> np.ndarray:
        """The split-routing action (one logit per slot) for this demand window and utilization."""
        action, _ = self.model.predict(self.encoder.encode(demands, utilization), deterministic=True)
        return action if self.link_costs is None else self.link_costs.slot_logits(action)


class SB3GraphSplitPolicy(SB3SplitPolicy):
    """A PPO graph policy as a RoutingPolicy, on its training topology or, through
    :meth:`on`, any other (the same weights; no retraining)."""

    def __init__(self, policy: GraphActorCriticPolicy | BaseAlgorithm, pathset: PathSet, history: int,
                 action_scale: float, name: str = "ppo_gnn") -> None:
        network = _graph_network(policy, GraphActorCriticPolicy, "SB3GraphSplitPolicy")
        if network.rounds and network.action_scale != action_scale:
            raise ValueError(f"this policy refines its actions for action_scale={network.action_scale}, "
                             f"not {action_scale}")
        graph = LinkGraphObservation(pathset, history, paths=network.rounds > 0)
        actions = LinkCosts(pathset).space
        super().__init__(network.on(graph.space, actions), pathset, history, action_scale, name,
                         link_costs=True, encoder=graph)

    def on(self, pathset: PathSet, name: str | None = None) -> "SB3GraphSplitPolicy":
        """The same weights routing another topology's path set."""
        return SB3GraphSplitPolicy(self.model, pathset, self.history, self.action_scale, name or self.name)


class SB3GraphPathChooser:
    """A DQN graph policy as a path-selection chooser (:mod:`agents.flows`), on its training
    topology or, through :meth:`on`, any other (the same weights; no retraining). It encodes
    the environment's state itself, so it plays the plain environment."""

    def __init__(self, policy: GraphQPolicy | BaseAlgorithm, pathset: PathSet) -> None:
        network = _graph_network(policy, GraphQPolicy, "SB3GraphPathChooser")
        self.encoder = FlowGraphObservation(pathset)
        self.policy = network.on(self.encoder.space)

    def on(self, pathset: PathSet) -> "SB3GraphPathChooser":
        return SB3GraphPathChooser(self.policy, pathset)

    def __call__(self, env: PathSelectionEnv, observation: np.ndarray) -> int:
        action, _ = self.policy.predict(self.encoder.encode(env), deterministic=True)
        return int(action)
