"""PPO's split-routing policies (``agent.algorithm=ppo``) as exportable modules for
:mod:`experiments.export`: the pair-demand history -> split ratios, with the policy's loop
through the network unrolled inside.

What PPO observes when it routes matrix t (:class:`envs.split_routing.SplitRoutingEnv`):
the pair demands of the ``history`` (H) matrices before t, divided by the window's largest,
and the link utilization that its own routing of matrix t - 1 caused on matrix t - 1,
divided by its largest; at an episode's first step (``reset``) that utilization is an equal
split's. The graph policy observes the same two things per link
(:class:`envs.graph.LinkGraphObservation`: each window matrix's equal-split utilization over
the window's largest, the capacity share, that utilization), and with refinement rounds
also the latest demands and the candidate paths, which are the path set's. Everything else
in a decision (clipping the mean action, link costs -> a softmin over path costs, or slot
logits -> a softmax) is a fixed function. So a decision is a function of the demands alone,
back to the episode's start.

:class:`UnrolledPPO` makes U = :func:`unroll_for` (H) decisions in a row (:data:`UNROLL`,
8, for the default H = 3), one per matrix, from the environment's reset state, over the
last H + U - 1 matrices (the manifest's history), and answers the last: decision j routes
with the demands of matrices j .. j + H - 1 of its input and the utilization decision j - 1
caused on matrix j + H - 1 (an equal split's for j = 0). It is deterministic: the policy's
mean action, as evaluation uses.

The run's policy (``Run.policy``, :class:`agents.sb3.SB3SplitPolicy`) is stateful instead: it
remembers its last answer between calls and observes what that answer does to the latest
matrix, so in ``rlte eval`` (reset once, then every ``eval.every``-th matrix) each decision
hangs on every earlier one, and on the routing of a matrix ``eval.every`` before; no graph of
a bounded history holds that. :class:`UnrolledPolicy` steps that same adapter as the graph
does, and is what export's parity check holds the graph to (Learner.export_policy).
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from agents.sb3 import GraphActorCriticPolicy, LinkGraphExtractor, RefiningLinkExtractor
from envs.graph import COST_SPAN
from topologies import PathSet

from .data import HISTORY_PAD
from .export import DenseLinkGraph, ExportError

# Decisions an export makes in a row from the environment's reset state. The loop forgets that
# state fast (measured on Abilene's held-out week, against the policy routing every matrix in
# turn: the link-cost MLP after 250k steps within 9e-8 after 8 decisions, 1e-4 after 4; the
# graph policy after 40k steps within 1.3e-4 after 8), so the answer is the policy's
# steady-state decision, as in most of each training episode, not its first.
UNROLL = 8


def unroll_for(history: int) -> int:
    """Decisions an export of a policy observing ``history`` matrices makes: :data:`UNROLL`, or
    fewer where the input would outgrow the history every held-out window carries
    (:data:`experiments.data.HISTORY_PAD`), so that export's parity check scores every window."""
    return max(1, min(UNROLL, HISTORY_PAD - history + 1))


def scale_free(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """:func:`envs.common.scale_free` per batch row: non-negative ``values`` over their largest
    along ``dims`` (all zeros stay zeros: 0 / tiny)."""
    peak = values.amax(dim=dims, keepdim=True)
    return values / peak.clamp_min(torch.finfo(values.dtype).tiny)


def link_cost_ratios(action: torch.Tensor, graph: DenseLinkGraph, action_scale: float) -> torch.Tensor:
    """(B, E) link-cost actions -> (B, P, K) split ratios: :class:`envs.graph.LinkCosts` then the
    environment's softmax, i.e. a softmin over each pair's path costs, their spread capped at
    ``COST_SPAN`` (:func:`agents.sb3.link_cost_ratios` on the dense incidence)."""
    cost = (action.clamp(-1.0, 1.0) + 1.0) / 2.0
    paths = (cost @ graph.incidence).view(-1, graph.num_pairs, graph.k)
    cheapest = paths.masked_fill(~graph.mask, float("inf")).amin(dim=-1, keepdim=True)
    logits = -action_scale * (paths - cheapest).clamp_max(COST_SPAN)
    return torch.softmax(logits.masked_fill(~graph.mask, float("-inf")), dim=-1)


def slot_ratios(action: torch.Tensor, graph: DenseLinkGraph, action_scale: float) -> torch.Tensor:
    """(B, P·K) slot-logit actions -> (B, P, K): :func:`envs.split_routing.ratios_from_action`."""
    logits = action.clamp(-1.0, 1.0).view(-1, graph.num_pairs, graph.k) * action_scale
    return torch.softmax(logits.masked_fill(~graph.mask, float("-inf")), dim=-1)


def equal_split(graph: DenseLinkGraph) -> torch.Tensor:
    """(P, K) float32 ratios of an equal split over each pair's paths (Routing.uniform)."""
    mask = graph.mask.double()
    return (mask / mask.sum(dim=-1, keepdim=True)).float()


def utilization(graph: DenseLinkGraph, demands: torch.Tensor, ratios: torch.Tensor,
                capacities: torch.Tensor) -> torch.Tensor:
    """(B, P) pair demands routed by (B, P, K) ratios -> (B, E) link loads over ``capacities``."""
    flows = (demands[:, :, None] * ratios).flatten(1)
    return (flows @ graph.incidence.T) / capacities


class FlatActor(nn.Module):
    """The MLP policy's mean action on :class:`envs.split_routing.SplitRoutingObservation`'s
    encoding: (B, H, P) demands and (B, E) utilization -> (B, A)."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, window: torch.Tensor, link_utilization: torch.Tensor) -> torch.Tensor:
        observation = torch.cat([scale_free(window.flatten(1), (1,)), scale_free(link_utilization, (1,))], dim=1)
        policy = self.policy
        latent = policy.mlp_extractor.forward_actor(policy.pi_features_extractor(observation))
        return policy.action_net(latent)  # the Gaussian's mean (DiagGaussianDistribution.mode)


class GraphActor(nn.Module):
    """The graph policy's mean action (one per link) on :class:`envs.graph.LinkGraphObservation`'s
    encoding, its GNN on the dense link graph; with refinement rounds, the refinement of
    :class:`agents.sb3.RefiningLinkExtractor` through the dense twin."""

    def __init__(self, policy: GraphActorCriticPolicy, graph: DenseLinkGraph) -> None:
        super().__init__()
        self.policy, self.graph = policy, graph
        self.register_buffer("equal", equal_split(graph))

    def features(self, window: torch.Tensor, link_utilization: torch.Tensor) -> torch.Tensor:
        """(B, H, P) demands and (B, E) utilization -> the (B, E, H + 2) link features."""
        graph, (batch, history, pairs) = self.graph, window.shape
        equal = (window.reshape(batch * history, pairs) @ graph.equal_utilization).reshape(batch, history, -1)
        share = graph.capacity_share.expand(batch, -1)
        return torch.cat([scale_free(equal, (1, 2)).transpose(1, 2), share[..., None],
                          scale_free(link_utilization, (1,))[..., None]], dim=-1)

    def forward(self, window: torch.Tensor, link_utilization: torch.Tensor) -> torch.Tensor:
        policy, graph = self.policy, self.graph
        links = self.features(window, link_utilization)
        extractor = policy.features_extractor
        h = graph.message_passing(extractor.gnn, links)
        if isinstance(extractor, RefiningLinkExtractor):  # its output: the embeddings and the refined mean
            refined = self.refine(extractor, links, scale_free(window, (1, 2))[:, -1], h)
            h = torch.cat([h, torch.tanh(refined)[..., None]], dim=-1)
        return policy.action_net(policy.mlp_extractor.forward_actor(h))

    def refine(self, extractor: RefiningLinkExtractor, links: torch.Tensor, latest: torch.Tensor,
               h: torch.Tensor) -> torch.Tensor:
        """RefiningLinkExtractor.forward after its first pass: the pre-tanh actions after its rounds.
        Its twin's capacities are the features' capacity column, and its demands the latest
        matrix's over the window's largest (what the observation carries)."""
        graph, tiny = self.graph, torch.finfo(links.dtype).tiny
        capacity = links[..., -2].clamp_min(tiny)
        equal = self.equal.expand(len(links), -1, -1)
        equal_peak = utilization(graph, latest, equal, capacity).amax(dim=1, keepdim=True).clamp_min(tiny)
        refinement, z = extractor.refinement, extractor.first(h)
        for _ in range(refinement.rounds):  # agents.gnn.CostRefinement, its move z + step
            routed = utilization(graph, latest, link_cost_ratios(torch.tanh(z), graph, extractor.action_scale),
                                 capacity)
            own_peak = routed.amax(dim=1, keepdim=True).clamp_min(tiny)
            state = torch.cat([links, (routed / equal_peak)[..., None], (routed / own_peak)[..., None], z[..., None],
                               h], dim=-1)
            h = graph.message_passing(refinement.net, state)
            z = z + torch.tanh(refinement.step(h).squeeze(-1))
        return z


class UnrolledPPO(nn.Module):
    """A trained PPO split-routing policy as an exportable module: (B, history + unroll - 1, P)
    pair demands, oldest first -> (B, P, K) split ratios for the next matrix, after ``unroll``
    decisions in a row from the environment's reset state (the module docstring)."""

    def __init__(self, actor: nn.Module, graph: DenseLinkGraph, history: int, unroll: int, action_scale: float,
                 link_costs: bool) -> None:
        super().__init__()
        if history < 1 or unroll < 1:
            raise ValueError(f"history and unroll must be >= 1, got {history} and {unroll}")
        self.actor, self.graph = actor, graph
        self.history, self.unroll, self.action_scale = history, unroll, float(action_scale)
        self.decode = link_cost_ratios if link_costs else slot_ratios
        self.register_buffer("equal", equal_split(graph))  # the reset state's routing

    def forward(self, demands: torch.Tensor) -> torch.Tensor:
        graph, batch, history = self.graph, demands.shape[0], self.history
        ratios = self.equal.expand(batch, -1, -1)
        for step in range(self.unroll):  # each decision routes the matrix after its window
            window = demands[:, step:step + history]
            caused = utilization(graph, window[:, -1], ratios, graph.capacities)
            ratios = self.decode(self.actor(window, caused).clamp(-1.0, 1.0), graph, self.action_scale)
        return ratios


def export_module(model: BaseAlgorithm, pathset: PathSet, history: int, action_scale: float, *,
                  link_costs: bool, unroll: int | None = None) -> UnrolledPPO:
    """A trained SB3 PPO model on ``pathset`` as :class:`UnrolledPPO` (its weights shared, not
    copied): the MLP policy acting per slot or (``link_costs``) per link, or the graph policy."""
    policy = getattr(model, "policy", None)
    if not isinstance(policy, ActorCriticPolicy):
        raise ExportError(f"a PPO export needs a trained Stable-Baselines3 PPO model, got {type(model).__name__}")
    if policy.squash_output:
        raise ExportError("this PPO policy squashes its actions (agent.policy_options.squash_output with use_sde), "
                          "which the export does not reproduce; export a policy trained without squash_output")
    graph = DenseLinkGraph(pathset)
    if isinstance(policy, GraphActorCriticPolicy):
        if not isinstance(policy.features_extractor, (LinkGraphExtractor, RefiningLinkExtractor)):
            raise ExportError(f"the graph policy's extractor {type(policy.features_extractor).__name__} has no "
                              f"dense export")
        actor, link_costs = GraphActor(policy, graph), True
    else:
        actor = FlatActor(policy)
    return UnrolledPPO(actor, graph, history, unroll or unroll_for(history), action_scale, link_costs).eval()


class UnrolledPolicy:
    """A stateful PPO RoutingPolicy (:class:`agents.sb3.SB3SplitPolicy`: it observes the
    utilization its own previous answer caused, and remembers that answer between calls) made
    to decide as :class:`UnrolledPPO` does, so that export's parity check compares like with
    like: each :meth:`route` resets the adapter to the environment's reset state and steps it
    through ``unroll`` windows in a row, one matrix apart, over the last history + unroll - 1
    matrices, and answers its last decision. It remembers nothing between calls."""

    clairvoyant = False

    def __init__(self, policy, unroll: int | None = None) -> None:
        self.policy, self.unroll = policy, unroll or unroll_for(policy.history)
        self.name, self.pathset = policy.name, policy.pathset
        self.history = policy.history + self.unroll - 1

    def route(self, history: np.ndarray) -> np.ndarray:
        if len(history) < self.history:
            raise ValueError(f"{self.name} unrolled reads the last {self.history} matrices, got {len(history)}")
        history = history[len(history) - self.history:]
        self.policy.reset()
        for step in range(self.unroll):
            ratios = self.policy.route(history[step:step + self.policy.history])
        self.policy.reset()
        return ratios


__all__ = ["UNROLL", "FlatActor", "GraphActor", "UnrolledPPO", "UnrolledPolicy", "equal_split", "export_module",
           "link_cost_ratios", "scale_free", "slot_ratios", "unroll_for", "utilization"]
