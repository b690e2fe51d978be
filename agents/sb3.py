"""Stable-Baselines3 agents for the two environments, and the adapters that put a trained
split-routing agent behind the RoutingPolicy interface.

PPO drives split routing (continuous logits per path), DQN path selection (one of K paths
per flow). Both take a plain dict of hyperparameters (from Hydra) and an MLP feature
extractor; TensorBoard logging is SB3's own.

Both also run a graph policy on the graph view of their environment (:mod:`envs.graph`):
:class:`GraphActorCriticPolicy` for PPO (link features and the link graph in, one cost per
link out) and :class:`GraphQPolicy` for DQN (link features, the link graph and each action's
path in, one Q-value per action from the same per-path scorer). Their GNN feature extractors
and heads have no weight that depends on the topology, so a policy trained on one network
routes another (:meth:`SB3GraphSplitPolicy.on`, :meth:`GraphQPolicy.on`), and one policy can
learn on several networks at once (:class:`RotatesTopologies`: :class:`RotatingPPO`,
:class:`RotatingDQN`, each rollout on the next network's environments).

With ``rounds`` > 0 the PPO graph policy refines its link costs before it acts, as the
gradient GNN does (:class:`agents.gnn.CostRefinement`): it routes the latest matrix with
them exactly as the environment would (:func:`link_cost_ratios`), reads the utilization,
and adjusts, ``rounds`` times. Its observation then carries the candidate paths and the
latest demands (``envs.graph.graph_wrapped(env, paths=True)``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from envs.backend import TwinBackend
from envs.graph import COST_SPAN, FlowGraphObservation, LinkCosts, LinkGraphObservation
from envs.path_selection import PathSelectionEnv
from envs.split_routing import SplitRoutingObservation, ratios_from_action
from topologies import PathSet, Routing

from .gnn import CostRefinement, LinkMessagePassing, table_link_loads, table_path_costs

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "dqn": DQN}


# ---------------------------------------------------------------------------- graph policy
class LinkGraphExtractor(BaseFeaturesExtractor):
    """GNN features extractor: the graph observation -> link embeddings (B, E, hidden).

    Every observation in a batch comes from one topology, so the first one's edges serve all."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 3) -> None:
        super().__init__(observation_space, features_dim=hidden)
        self.gnn = LinkMessagePassing(observation_space["links"].shape[-1], hidden, layers)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.gnn(observations["links"], observations["link_graph"][0].long())


def link_cost_ratios(action: torch.Tensor, table: torch.Tensor, action_scale: float) -> torch.Tensor:
    """Torch twin of :class:`envs.graph.LinkCosts` followed by the environment's softmax:
    (B, E) link-cost actions in [-1, 1] and the (P, K, L) link table -> (B, P, K) split ratios."""
    num_links = action.shape[-1]
    present = table[..., 0] < num_links                                           # (P, K): slot holds a path
    costs = table_path_costs((action.clamp(-1.0, 1.0) + 1.0) / 2.0, table)
    cheapest = costs.masked_fill(~present, torch.inf).amin(dim=-1, keepdim=True)
    logits = -action_scale * (costs - cheapest).clamp_max(COST_SPAN)
    return torch.softmax(logits.masked_fill(~present, -torch.inf), dim=-1)


class RefiningLinkExtractor(BaseFeaturesExtractor):
    """The graph observation with paths -> per link (B, E, hidden + 1): the embedding after the
    last refinement round and the refined link-cost action (the policy's mean).

    A first guess of every link's action comes from one pass of message passing; then
    ``rounds`` times the latest matrix is routed with those actions through a twin built
    from the observation's link table (what :class:`envs.graph.LinkCostActions` and the
    environment would do), and :class:`CostRefinement` moves each pre-tanh action by a step
    in [-1, 1]. Link capacities come from the features' capacity column (utilization up to
    one scale, which the refinement only reads relative to peaks)."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 3, rounds: int = 5,
                 action_scale: float = 3.0) -> None:
        super().__init__(observation_space, features_dim=hidden + 1)
        link_features = observation_space["links"].shape[-1]
        self.gnn = LinkMessagePassing(link_features, hidden, layers)
        self.first = PerLink(hidden)
        self.refinement = CostRefinement(link_features, hidden, layers, rounds)
        self.action_scale = action_scale

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        links, edges = observations["links"], observations["link_graph"][0].long()
        demands, num_links = observations["demands"], links.shape[1]
        slots = observations["paths"][0].long()                                        # (P·K, L)
        table = slots.view(demands.shape[-1], -1, slots.shape[-1])                     # (P, K, L)
        capacity = links[..., -2].clamp_min(torch.finfo(links.dtype).tiny)   # LinkGraphObservation's layout

        def utilization(ratios: torch.Tensor) -> torch.Tensor:
            return table_link_loads(demands[..., None] * ratios, table, num_links) / capacity

        present = (table[..., 0] < num_links).to(links.dtype)
        equal_peak = utilization((present / present.sum(dim=-1, keepdim=True)).expand(len(links), -1, -1))
        equal_peak = equal_peak.amax(dim=1, keepdim=True).clamp_min(torch.finfo(links.dtype).tiny)
        h = self.gnn(links, edges)
        pre_tanh, h = self.refinement(
            links, edges, h, self.first(h),
            lambda z: utilization(link_cost_ratios(torch.tanh(z), table, self.action_scale)), equal_peak,
            lambda z, step: z + step)
        return torch.cat([h, torch.tanh(pre_tanh)[..., None]], dim=-1)


class LinkHeads(nn.Module):
    """Actor and critic bodies on link embeddings: the actor keeps one latent per link, the
    critic pools the links (mean and max) into one latent per observation."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.latent_dim_pi = self.latent_dim_vf = hidden
        self.actor = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.critic = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh())

    def forward(self, links: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(links), self.forward_critic(links)

    def forward_actor(self, links: torch.Tensor) -> torch.Tensor:
        return self.actor(links)

    def forward_critic(self, links: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([links.mean(dim=1), links.amax(dim=1)], dim=-1))


class RefinedLinkHeads(LinkHeads):
    """Heads on :class:`RefiningLinkExtractor`'s output: the actor passes the refined action
    through (its last channel is the mean, :class:`LastChannel`), the critic pools every channel."""

    def __init__(self, hidden: int) -> None:
        super().__init__(hidden + 1)
        self.actor = nn.Identity()


class LastChannel(nn.Module):
    """(B, E, C) -> (B, E): the last channel (the refined action, used as the Gaussian mean)."""

    def forward(self, links: torch.Tensor) -> torch.Tensor:
        return links[..., -1]


class PerLink(nn.Module):
    """(B, E, H) -> (B, E): one output per link, the same weights for every link."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, 1)

    def forward(self, links: torch.Tensor) -> torch.Tensor:
        return self.linear(links).squeeze(-1)


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


def _graph_network(policy: BaseAlgorithm | nn.Module, expected: type, adapter: str):
    """The policy network of a model (or the network itself), refused unless it is ``expected``."""
    network = policy.policy if isinstance(policy, BaseAlgorithm) else policy
    if not isinstance(network, expected):
        raise TypeError(f"{adapter} needs a {expected.__name__}, got {type(network).__name__}")
    return network


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
        keys = {"links", "link_graph"} | ({"paths", "demands"} if rounds else set())
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != keys:
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


# ---------------------------------------------------------------------------- graph Q-network
class PathGraphExtractor(LinkGraphExtractor):
    """GNN features extractor for path selection: link embeddings pooled over each action's
    path (mean and max), beside that action's own features -> (B, K · per_action)."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 3) -> None:
        super().__init__(observation_space, hidden, layers)
        k, action_features = observation_space["actions"].shape
        self.per_action = 2 * hidden + action_features
        self._features_dim = k * self.per_action

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        links = super().forward(observations)                                           # (B, E, H)
        on_path = observations["paths"]                                               # (B, K, E)
        mean = on_path @ links / on_path.sum(dim=-1, keepdim=True).clamp_min(1.0)
        # max over the path's links; a finished episode has no path (all zeros) and gets 0
        peak = torch.where(on_path[..., None] > 0, links[:, None], -torch.inf).amax(dim=2)
        peak = torch.where(torch.isfinite(peak), peak, 0.0)
        return torch.cat([mean, peak, observations["actions"]], dim=-1).flatten(1)


class PerAction(nn.Module):
    """(B, K · D) -> (B, K): one score per action from that action's D features, the same MLP
    for every action (so Q-values do not depend on which slot a path sits in, nor on K: a
    topology whose pairs have fewer candidate paths gets fewer scores from the same weights)."""

    def __init__(self, per_action: int, net_arch: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.per_action = per_action
        self.score = nn.Sequential(*create_mlp(per_action, 1, net_arch, activation_fn))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.score(features.view(features.shape[0], -1, self.per_action)).squeeze(-1)


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
        expected = {"links", "link_graph", "paths", "actions"}
        if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != expected:
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


# ---------------------------------------------------------------------------- n-step replay
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


class GroupBaselinePPO(PPO):
    """PPO whose advantage is each environment's reward minus the mean reward the other
    environments got at the same step (REINFORCE's leave-one-out baseline, Kool et al. 2019;
    GRPO's group baseline without its scaling), instead of the reward minus the critic's value.

    Split routing with ``gamma`` 0 is a contextual bandit: an action's return is its one
    reward, and most of a reward's spread is how hard the matrix is, not the action. With every
    environment on the same matrix at each step (:class:`envs.split_routing.SharedStarts`), the
    other environments' rewards estimate the matrix's expected reward under the policy without
    a critic's error. The critic is still trained (its loss and explained variance are logged)
    but not used. Refused for ``gamma`` other than 0 or fewer than 2 environments; a step on
    which the environments report different matrices (``info["tm_index"]``) stops training."""

    def __init__(self, policy, env, *args: Any, **kwargs: Any) -> None:
        super().__init__(policy, env, *args, **kwargs)
        if self.gamma != 0:
            raise ValueError(f"the group baseline compares one step's rewards, so it needs gamma 0 (a bandit: "
                             f"routing does not change later traffic), got gamma={self.gamma}")
        if self.n_envs < 2:
            raise ValueError(f"the group baseline compares environments on the same matrix: n_envs must be >= 2, "
                             f"got {self.n_envs}")

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        matrices = {info.get("tm_index") for info in infos}
        if len(matrices) > 1:
            raise RuntimeError(f"the group baseline needs every environment on the same matrix at each step "
                               f"(wrap them in envs.split_routing.SharedStarts), but one step saw tm_index "
                               f"{sorted(matrices, key=str)}")
        super()._update_info_buffer(infos, dones)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        collected = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if collected:
            rollout_buffer.advantages = group_advantages(rollout_buffer.rewards)
        return collected


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


class RotatingPPO(RotatesTopologies, PPO):
    """PPO over several topologies' environments (:class:`RotatesTopologies`)."""

    buffer_attribute = "rollout_buffer"

    def _new_buffer(self, env: VecEnv) -> Any:
        return self.rollout_buffer_class(self.n_steps, env.observation_space, env.action_space, device=self.device,
                                         gamma=self.gamma, gae_lambda=self.gae_lambda, n_envs=self.n_envs,
                                         **self.rollout_buffer_kwargs)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        self._next_station()
        return super().collect_rollouts(self.env, callback, self.rollout_buffer, n_rollout_steps)


class RotatingGroupBaselinePPO(RotatingPPO, GroupBaselinePPO):
    """:class:`GroupBaselinePPO` over several topologies' environments (:class:`RotatesTopologies`)."""


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


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """(steps, envs) rewards -> each minus the mean of the other envs' rewards at its step."""
    rewards = np.asarray(rewards, dtype=np.float64)
    envs = rewards.shape[1]
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (envs - 1)
    return (rewards - others).astype(np.float32)


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
