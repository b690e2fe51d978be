"""The graph policies' building blocks: GNN feature extractors and the heads on them.

Link features and the link graph in (:mod:`envs.graph`), link embeddings out
(:class:`LinkGraphExtractor`), then per-link action means and a pooled value
(:class:`LinkHeads`, :class:`PerLink`) for PPO, or each action's path pooled
(:class:`PathGraphExtractor`) and scored by one shared MLP (:class:`PerAction`) for DQN.
None of their weights depends on the topology (nor on K), so a policy built from them
routes any network.

:class:`RefiningLinkExtractor` refines its link costs before it acts, as the gradient GNN
does (:class:`agents.gnn.CostRefinement`): it routes the latest matrix with them exactly as
the environment would (:func:`link_cost_ratios`), reads the utilization, and adjusts,
``rounds`` times. Its observation carries the candidate paths and the latest demands
(``envs.graph.graph_wrapped(env, paths=True)``).
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from torch import nn

from envs.graph import COST_SPAN

from ..gnn import CostRefinement, LinkAdjacency, LinkMessagePassing, table_link_loads, table_path_costs


# ---------------------------------------------------------------------------- split routing (PPO)
class LinkGraphExtractor(BaseFeaturesExtractor):
    """GNN features extractor: the graph observation -> link embeddings (B, E, hidden).

    Every observation in a batch comes from one topology, so the first one's link graph serves all."""

    def __init__(self, observation_space: spaces.Dict, hidden: int = 64, layers: int = 3) -> None:
        super().__init__(observation_space, features_dim=hidden)
        self.gnn = LinkMessagePassing(observation_space["links"].shape[-1], hidden, layers)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.gnn(observations["links"], link_graph(observations))


def link_graph(observations: dict[str, torch.Tensor]) -> LinkAdjacency | torch.Tensor:
    """The batch's link graph: its first observation's ``link_ends`` (O(links)), or the (2, M)
    edge list that a model saved before them observed (SB3 rebuilds it with those spaces)."""
    if "link_ends" in observations:
        return LinkAdjacency(observations["link_ends"][0], num_nodes=None)
    return observations["link_graph"][0].long()


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
        links, edges = observations["links"], link_graph(observations)
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


# ---------------------------------------------------------------------------- path selection (DQN)
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
