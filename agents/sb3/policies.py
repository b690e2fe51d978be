"""The graph policies: SB3 policies built from :mod:`agents.sb3.layers`.

:class:`GraphActorCriticPolicy` for PPO on the graph view of split routing (link features
and the link graph in, one cost per link out) and :class:`GraphQPolicy` for DQN on the graph
view of path selection (link features, the link graph and each action's path in, one
Q-value per action from the same per-path scorer). No weight's shape depends on the
topology, so a policy trained on one network routes another (their ``on`` methods, and
:mod:`agents.sb3.adapters`), and one policy can learn on several networks at once
(:mod:`agents.sb3.rotation`).

With ``rounds`` > 0 the PPO graph policy refines its link costs before it acts
(:class:`agents.sb3.layers.RefiningLinkExtractor`); its observation then carries the
candidate paths and the latest demands (``envs.graph.graph_wrapped(env, paths=True)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from .layers import (LastChannel, LinkGraphExtractor, LinkHeads, PathGraphExtractor, PerAction, PerLink,
                     RefinedLinkHeads, RefiningLinkExtractor)


def legacy(keys: set[str]) -> set[str]:
    """The observation keys of a model saved before ``link_ends``: it observed the (2, M) edge
    list ``link_graph``. Such a model loads, and routes through :meth:`TopologyFreePolicy.on`
    with today's observation."""
    return keys - {"link_ends"} | {"link_graph"}


class TopologyFreePolicy:
    """What both graph policies share: a GNN extractor named by its few options (``hidden``
    width, ``layers`` depth, ...; SB3 saves them, not the extractor class), and the same
    weights in a policy for another topology's spaces."""

    # constructor parameters SB3 would save that these policies derive themselves
    derived_parameters: tuple[str, ...] = ("features_extractor_class", "features_extractor_kwargs")

    def _graph_extractor(self, extractor: type[BaseFeaturesExtractor], kwargs: dict[str, Any], **options: Any) -> None:
        self.extractor_options = options
        self.hidden, self.layers = options["hidden"], options["layers"]
        kwargs.update(features_extractor_class=extractor, features_extractor_kwargs=options)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in self.derived_parameters:
            data.pop(key, None)
        return {**data, **self.extractor_options}

    def _same_weights(self, observation_space: spaces.Dict, action_space: spaces.Space, **kwargs: Any):
        """These weights in a policy for other spaces (itself when they match)."""
        if observation_space == self.observation_space and action_space == self.action_space:
            return self
        other = type(self)(observation_space, action_space, lambda _: 0.0, **self.extractor_options, **kwargs)
        other.load_state_dict(self.state_dict())
        other.set_training_mode(False)
        return other


# ---------------------------------------------------------------------------- split routing (PPO)
class GraphActorCriticPolicy(TopologyFreePolicy, ActorCriticPolicy):
    """PPO policy for the graph view of split routing: GNN extractor, per-link action means,
    one shared log standard deviation, a pooled value. No parameter's shape depends on the
    topology, so the state dict loads into the policy of any other topology.

    ``rounds`` > 0: the means are refined through a twin inside the policy
    (:class:`RefiningLinkExtractor`; the observation needs ``paths``, and ``action_scale``
    must be the environment's)."""

    derived_parameters = (*TopologyFreePolicy.derived_parameters, "share_features_extractor", "net_arch")

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, lr_schedule, *,
                 hidden: int = 64, layers: int = 3, rounds: int = 0, action_scale: float = 3.0,
                 **kwargs: Any) -> None:
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        keys = {"links", "link_ends"} | ({"paths", "demands"} if rounds else set())
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) not in (keys, legacy(keys)):
            raise ValueError(f"GraphActorCriticPolicy with rounds={rounds} needs the graph observation of "
                             f"envs.graph.GraphObservation{'(paths=True)' if rounds else ''} (keys {sorted(keys)})")
        if action_space.shape != (observation_space["links"].shape[0],):
            raise ValueError(f"GraphActorCriticPolicy acts with one cost per link ({observation_space['links'].shape[0]}"
                             f"; envs.graph.LinkCostActions), got action shape {action_space.shape}")
        if rounds:
            self._graph_extractor(RefiningLinkExtractor, kwargs, hidden=hidden, layers=layers, rounds=rounds,
                                  action_scale=action_scale)
        else:
            self._graph_extractor(LinkGraphExtractor, kwargs, hidden=hidden, layers=layers)
        self.rounds, self.action_scale = rounds, action_scale
        kwargs["share_features_extractor"] = True
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = RefinedLinkHeads(self.hidden) if self.rounds else LinkHeads(self.hidden)

    def _build(self, lr_schedule) -> None:
        # ActorCriticPolicy._build would make E × (E·hidden) linear layers; these are per link
        self._build_mlp_extractor()
        self.action_net = LastChannel() if self.rounds else PerLink(self.hidden)
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        self.log_std = nn.Parameter(torch.full((1,), float(self.log_std_init)))
        if self.ortho_init:
            gains = {self.features_extractor: np.sqrt(2), self.mlp_extractor: np.sqrt(2), self.action_net: 0.01,
                     self.value_net: 1.0}
            if self.rounds:  # start near cost 1/2 everywhere and near-identity rounds, as PerLink's 0.01 does
                gains |= {self.features_extractor.first: 0.01, self.features_extractor.refinement.step: 0.01}
            for module, gain in gains.items():
                module.apply(lambda m, gain=gain: self.init_weights(m, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def on(self, observation_space: spaces.Dict, action_space: spaces.Box) -> "GraphActorCriticPolicy":
        """These weights in a policy for another topology's spaces (itself when they match)."""
        return self._same_weights(observation_space, action_space)


# ---------------------------------------------------------------------------- path selection (DQN)
class GraphQNetwork(QNetwork):
    """SB3's Q-network with :class:`PerAction` in place of one MLP over all features."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.q_net = PerAction(self.features_dim // int(self.action_space.n), self.net_arch, self.activation_fn)


class GraphQPolicy(TopologyFreePolicy, DQNPolicy):
    """DQN policy for the graph view of path selection (:class:`envs.graph.FlowGraphView`):
    :class:`PathGraphExtractor` and a per-action scorer. No parameter's shape depends on the
    topology or on K, so the state dict loads into the policy of any other topology."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Discrete, lr_schedule, *,
                 hidden: int = 64, layers: int = 3, **kwargs: Any) -> None:
        expected = {"links", "link_ends", "paths", "actions"}
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) not in (expected,
                                                                                                 legacy(expected)):
            raise ValueError("GraphQPolicy needs the graph observation of envs.graph.FlowGraphView")
        if not isinstance(action_space, spaces.Discrete) or action_space.n != observation_space["paths"].shape[0]:
            raise ValueError(f"GraphQPolicy picks one of the observation's {observation_space['paths'].shape[0]} "
                             f"paths, got action space {action_space}")
        self._graph_extractor(PathGraphExtractor, kwargs, hidden=hidden, layers=layers)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> GraphQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return GraphQNetwork(**net_args).to(self.device)

    def on(self, observation_space: spaces.Dict) -> "GraphQPolicy":
        """These weights in a policy for another topology's (or K's) observation space (itself when it matches)."""
        return self._same_weights(observation_space, spaces.Discrete(observation_space["paths"].shape[0]),
                                  net_arch=self.net_arch, activation_fn=self.activation_fn)


GRAPH_POLICIES: dict[str, type] = {"ppo": GraphActorCriticPolicy, "dqn": GraphQPolicy}
POLICIES = ("mlp", "graph")
