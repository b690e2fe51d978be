"""Graph neural routing: one set of weights for any topology.

:class:`LinkGNN` reads per-link features and the *link graph* (link a feeds link b when a
ends where b starts), passes messages along it in both directions, and gives every link a
positive cost. A pair's split ratios are a softmin over its candidate paths' summed costs.
No layer's size depends on the number of nodes, links or pairs, so a network trained on one
topology routes another unchanged: that is what :func:`train_gnn` and the cross-topology
report (``bench/gnn_generalization.py``) measure.

Link features (:func:`link_features`) are scale-free: for each of the last ``history``
matrices, the utilization it would cause under an equal split over the candidates, divided
by the largest such value in the window; plus the link's capacity over the largest capacity.
Training is the gradient learner's (:mod:`agents.gradient`): MLU of the next matrix, through
the differentiable twin, divided by its optimum.

With ``rounds`` > 0 the network also *refines* its costs: it routes the latest matrix with
the current costs through the twin, reads the utilization that causes (a second
message-passing network), and rescales the link costs relative to each other (a common
factor would only sharpen the softmin), ``rounds`` times. A learned local
search in a few steps: one pass of message passing must guess from equal-split loads which
links end up hot, a refinement round sees it. Still no weight depends on the topology (the
twin is the one of whatever path set is routed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from envs.graph import equal_split_utilization_matrix, link_ends
from envs.twin_torch import SparseProduct, TorchFluidTwin
from topologies import PathSet, Topology

from .gradient import (DemandHistoryPolicy, EpochCallback, TrainingState, load_network, normalized_mlu_loss,
                       save_network, training_samples)


class LinkAdjacency:
    """The link graph (:func:`envs.graph.link_graph_edges`: link a feeds link b when a ends where
    b starts and b is not a's reverse) as each link's endpoints and reverse
    (:func:`envs.graph.link_ends`), not its edge list.

    The edge list of a node with d links in and d out holds d·(d-1) edges, so message passing
    over it is quadratic in a hub's degree (ASN2k's hubs: 655,700 edges among 8,558 links). The
    links a link feeds are the links out of its head less its reverse, so a mean over them is a
    sum over the node (one pass over the links) less one term: linear in the links."""

    def __init__(self, ends: torch.Tensor | np.ndarray, num_nodes: int | None = None,
                 device: str | torch.device | None = None) -> None:
        """``ends``: (3, E) source node, destination node, reverse link or -1 (a graph
        observation's ``link_ends``); ``num_nodes``: at least every node named there."""
        ends = torch.as_tensor(ends, device=device).long()
        src, dst, reverse = ends[0], ends[1], ends[2]
        if num_nodes is None:
            num_nodes = int(torch.maximum(src.max(), dst.max())) + 1 if src.numel() else 0
        has_reverse = reverse >= 0
        out_degree, in_degree = (torch.bincount(nodes, minlength=num_nodes) for nodes in (src, dst))
        self.num_nodes, self.src, self.dst = num_nodes, src, dst
        self.reverse = torch.where(has_reverse, reverse, 0)  # a stand-in where there is none ...
        self.has_reverse = has_reverse.float()                # ... weighted 0
        # how many links each one feeds / is fed by (at least 1: a mean over none is 0)
        self.ahead_count = (out_degree[dst] - has_reverse.long()).clamp_min(1).float()
        self.behind_count = (in_degree[src] - has_reverse.long()).clamp_min(1).float()

    @classmethod
    def of(cls, topology: Topology, device: str | torch.device = "cpu") -> LinkAdjacency:
        return cls(link_ends(topology), topology.num_nodes, device)

    def means(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E, H) link states -> the mean state of the links each one feeds, and of the links feeding it."""
        batch, _, width = h.shape
        back = h[:, self.reverse] * self.has_reverse[None, :, None]
        out_sum = h.new_zeros(batch, self.num_nodes, width).index_add_(1, self.src, h)
        in_sum = h.new_zeros(batch, self.num_nodes, width).index_add_(1, self.dst, h)
        ahead = (out_sum[:, self.dst] - back) / self.ahead_count[None, :, None]
        behind = (in_sum[:, self.src] - back) / self.behind_count[None, :, None]
        return ahead, behind


class LinkGraph:
    """What the GNN needs to know about one path set, as tensors on ``device`` (built once per topology)."""

    def __init__(self, pathset: PathSet, device: str | torch.device = "cpu") -> None:
        topo = pathset.topology
        device = torch.device(device)
        self.pathset = pathset
        self.adjacency = LinkAdjacency.of(topo, device)  # the link graph, kept in O(links)
        self.slot_links = SparseProduct(pathset.incidence.T.tocsr(), device, torch.float32)  # (P·K, E): path links
        self.mask = torch.as_tensor(np.array(pathset.mask), device=device)
        capacities = np.array(topo.capacities, dtype=np.float64)  # a writable copy for torch
        self.capacity_share = torch.as_tensor(capacities / capacities.max(), dtype=torch.float32, device=device)
        self.twin = TorchFluidTwin(pathset, device=device, dtype=torch.float32)
        self.capacities = torch.as_tensor(capacities, dtype=torch.float32, device=device)
        self.equal_utilization = SparseProduct(equal_split_utilization_matrix(pathset).T.tocsr(), device,
                                               torch.float32)  # (E, P)


def equal_split_utilization(graph: LinkGraph, demands: torch.Tensor) -> torch.Tensor:
    """(B, h, P) pair demands -> (B, h, E) link utilization under an equal split."""
    batch, history, pairs = demands.shape
    utilization = graph.equal_utilization @ demands.reshape(batch * history, pairs).T  # (E, B·h)
    return utilization.T.reshape(batch, history, -1)


def link_features(graph: LinkGraph, demands: torch.Tensor) -> torch.Tensor:
    """(B, h, P) pair demands -> (B, E, h + 1) scale-free link features (see the module text)."""
    return _scale_free_features(graph, equal_split_utilization(graph, demands))


def _scale_free_features(graph: LinkGraph, utilization: torch.Tensor) -> torch.Tensor:
    """(B, h, E) equal-split utilization -> (B, E, h + 1): it over the window's peak, and the capacity share."""
    batch = utilization.shape[0]
    peak = utilization.flatten(1).amax(dim=1).clamp_min(torch.finfo(utilization.dtype).tiny)
    utilization = utilization / peak[:, None, None]
    share = graph.capacity_share.expand(batch, 1, -1)
    return torch.cat([utilization, share], dim=1).transpose(1, 2)


def _mean_into(values: torch.Tensor, into: torch.Tensor, source: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """(B, E, H) -> (B, E, H): at each link, the mean of ``values`` over the ``count`` edges source -> it."""
    return values.new_zeros(values.shape).index_add_(1, into, values[:, source]) / count[None, :, None]


class LinkMessagePassing(nn.Module):
    """Per-link features (B, E, F) and link-graph edges (2, M) -> link embeddings (B, E, hidden).

    Each layer adds, to a link's state, a transform of its own state, the mean state of the
    links it feeds and the mean state of the links feeding it. No weight depends on E or M.
    """

    def __init__(self, in_features: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.encode = nn.Linear(in_features, hidden)
        self.layers = nn.ModuleList(nn.Linear(3 * hidden, hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, features: torch.Tensor, edges: torch.Tensor | LinkAdjacency) -> torch.Tensor:
        """``edges``: the link graph's (2, M) edge list (as graph observations carried it before
        their ``link_ends``) or, the same graph in linear time, its :class:`LinkAdjacency`."""
        h = torch.relu(self.encode(features))
        if isinstance(edges, LinkAdjacency):
            means = edges.means
        else:
            feeds, fed = edges[0], edges[1]
            links = features.shape[1]
            fed_count = torch.bincount(feeds, minlength=links).clamp_min(1).to(features.dtype)  # links each one feeds
            feeding_count = torch.bincount(fed, minlength=links).clamp_min(1).to(features.dtype)

            def means(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                return _mean_into(h, feeds, fed, fed_count), _mean_into(h, fed, feeds, feeding_count)

        for layer, norm in zip(self.layers, self.norms):
            ahead, behind = means(h)
            h = norm(h + torch.relu(layer(torch.cat([h, ahead, behind], dim=-1))))
        return h


def table_path_costs(link_cost: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, E) link costs and a (P, K, L) link table (:attr:`topologies.PathSet.link_table`,
    padding = E) -> (B, P, K) summed path costs (0 in masked slots)."""
    padded = nn.functional.pad(link_cost, (0, 1))  # the padding link costs nothing
    return padded[:, table].sum(dim=-1)


def table_link_loads(flows: torch.Tensor, table: torch.Tensor, num_links: int) -> torch.Tensor:
    """(B, P, K) traffic on each path and its (P, K, L) link table -> (B, E) link loads."""
    per_hop = flows[..., None].expand(*flows.shape, table.shape[-1]).reshape(flows.shape[0], -1)
    loads = flows.new_zeros(flows.shape[0], num_links + 1).index_add_(1, table.reshape(-1), per_hop)
    return loads[:, :num_links]


class CostRefinement(nn.Module):
    """Learned local search over link costs: ``rounds`` times, route the latest matrix with the
    current costs, read the utilization that causes (a message-passing network over the link
    features, that utilization relative to a reference peak and to its own peak, the cost and
    the previous embedding) and move every cost by a bounded step. How costs route and how a
    step moves a cost are the caller's, so the gradient GNN (positive costs, softmin) and the
    PPO graph policy (link-cost actions) share it. No weight depends on the topology."""

    FEATURES = 3  # utilization over the reference peak, over its own peak, the cost

    def __init__(self, link_features: int, hidden: int, layers: int, rounds: int) -> None:
        super().__init__()
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        self.rounds = rounds
        self.net = LinkMessagePassing(link_features + self.FEATURES + hidden, hidden, layers)
        self.step = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, edges: torch.Tensor | LinkAdjacency, h: torch.Tensor, cost: torch.Tensor,
                utilization_of: Callable[[torch.Tensor], torch.Tensor], reference_peak: torch.Tensor,
                move: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, E, F) features, (B, E, hidden) embeddings, (B, E) costs -> refined (costs, embeddings).

        ``utilization_of(cost)``: (B, E) utilization of the latest matrix routed with ``cost``;
        ``reference_peak``: (B, 1), e.g. its equal-split peak; ``move(cost, step)``: the new
        cost for a step in [-1, 1]."""
        tiny = torch.finfo(features.dtype).tiny
        for _ in range(self.rounds):
            utilization = utilization_of(cost)
            own_peak = utilization.amax(dim=1, keepdim=True).clamp_min(tiny)
            state = torch.cat([features, (utilization / reference_peak)[..., None],
                               (utilization / own_peak)[..., None], cost[..., None], h], dim=-1)
            h = self.net(state, edges)
            cost = move(cost, torch.tanh(self.step(h).squeeze(-1)))
        return cost, h


class LinkGNN(nn.Module):
    """Link features + link graph -> split ratios, with weights independent of the topology's size."""

    def __init__(self, history: int, hidden: int = 64, layers: int = 3, rounds: int = 0) -> None:
        super().__init__()
        self.history, self.hidden, self.layers, self.rounds = history, hidden, layers, rounds
        self.body = LinkMessagePassing(history + 1, hidden, layers)
        self.cost = nn.Linear(hidden, 1)
        self.log_sharpness = nn.Parameter(torch.tensor(1.0))  # how hard the softmin prefers cheap paths
        if rounds:  # (CostRefinement refuses rounds < 0)
            self.refinement = CostRefinement(history + 1, hidden, layers, rounds)

    def forward(self, graph: LinkGraph, demands: torch.Tensor) -> torch.Tensor:
        """(B, h, P) demand history -> (B, P, K) split ratios for the next matrix."""
        equal = equal_split_utilization(graph, demands)
        features = _scale_free_features(graph, equal)
        h = self.body(features, graph.adjacency)
        link_cost = nn.functional.softplus(self.cost(h)).squeeze(-1)                  # (B, E) > 0
        if self.rounds:
            latest = demands[:, -1]
            equal_peak = equal[:, -1].amax(dim=1, keepdim=True).clamp_min(torch.finfo(equal.dtype).tiny)

            def utilization_of(cost: torch.Tensor) -> torch.Tensor:
                return graph.twin.link_loads(None, self.ratios(graph, cost), demands=latest) / graph.capacities

            # A factor in [1/e², e²] per round keeps costs positive and each step bounded. The
            # steps are centred over the links: a common factor only sharpens the softmin, and
            # uncentred, 8 rounds of e¹ drove every pair onto one path where no gradient flows.
            link_cost, _ = self.refinement(features, graph.adjacency, h, link_cost, utilization_of, equal_peak,
                                           lambda cost, step: cost * torch.exp(step - step.mean(dim=1, keepdim=True)))
        return self.ratios(graph, link_cost)

    def ratios(self, graph: LinkGraph, link_cost: torch.Tensor) -> torch.Tensor:
        """(B, E) positive link costs -> (B, P, K) softmin over each pair's path costs."""
        path_cost = (graph.slot_links @ link_cost.T).T                                 # (B, P·K)
        ps = graph.pathset
        logits = -self.log_sharpness.exp() * path_cost.view(-1, ps.num_pairs, ps.k)
        return torch.softmax(logits.masked_fill(~graph.mask, float("-inf")), dim=-1)

    def save(self, path: str | Path) -> None:
        """Weights plus the shape parameters :meth:`load` needs (no path set: any topology loads it)."""
        save_network(path, self, history=self.history, hidden=self.hidden, layers=self.layers, rounds=self.rounds)

    @classmethod
    def load(cls, path: str | Path) -> "LinkGNN":
        return load_network(cls, path, ("history", "hidden", "layers", "rounds"))


@dataclass
class GNNPolicy(DemandHistoryPolicy):
    """A trained :class:`LinkGNN` behind the RoutingPolicy interface, on any path set."""

    net: LinkGNN
    name: str = "gnn"
    graph: LinkGraph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.graph = LinkGraph(self.pathset, self.device)

    def on(self, pathset: PathSet, name: str | None = None) -> "GNNPolicy":
        """The same weights routing another topology's path set (no retraining)."""
        return GNNPolicy(pathset, self.net, name or self.name)

    def _ratios(self, demands: torch.Tensor) -> torch.Tensor:
        return self.net(self.graph, demands)


@dataclass
class GNNSettings:
    history: int = 3
    hidden: int = 64
    layers: int = 3
    rounds: int = 5          # cost refinements through the twin (0: one pass, no refinement)
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3  # annealed to 0 over the epochs (cosine)
    weight_decay: float = 0.01
    # refinement rounds multiply costs, so a bad batch can blow up a step: without clipping
    # (lr 3e-3) a run collapsed to a constant routing after 10 epochs
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class TrainingSet:
    """One topology's training data: consecutive matrices (T, N, N) and their optimal MLU (T,)."""

    pathset: PathSet
    matrices: np.ndarray
    optimal_mlu: np.ndarray


def train_gnn(
    sets: Sequence[TrainingSet],
    settings: GNNSettings = GNNSettings(),
    *,
    on_epoch: EpochCallback | None = None,
    resume: TrainingState | None = None,
    device: str | torch.device = "cpu",
) -> tuple[LinkGNN, list[float]]:
    """Train one :class:`LinkGNN` on one or more topologies (batches alternate between them).

    Samples are windows t-h..t-1 -> matrix t; the loss is MLU(matrix t) ÷ its optimum.
    Returns the network and the mean training loss of every epoch. ``on_epoch`` and
    ``resume`` and ``device`` as in :func:`agents.gradient.train_gradient`.
    """
    if not sets:
        raise ValueError("train_gnn needs at least one training set")
    h = settings.history
    prepared = [(LinkGraph(data.pathset, device),
                 *training_samples(data.pathset, data.matrices, data.optimal_mlu, h, device)) for data in sets]
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = LinkGNN(h, settings.hidden, settings.layers, settings.rounds).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.epochs)
    if resume is not None:
        resume.restore(net, optimizer, generator, schedule)
    losses = list(resume.losses) if resume is not None else []
    for epoch in range(resume.epoch if resume is not None else 0, settings.epochs):
        net.train()
        batches = []
        for index, (_, _, _, targets, _) in enumerate(prepared):
            order = torch.randperm(len(targets), generator=generator).to(device)
            batches += [(index, order[s:s + settings.batch_size]) for s in range(0, len(order), settings.batch_size)]
        total, count = 0.0, 0
        for b in torch.randperm(len(batches), generator=generator).tolist():
            index, batch = batches[b]
            graph, demands, optimum, targets, windows = prepared[index]
            ratios = net(graph, demands[windows[batch]])
            utilization = graph.twin.link_loads(None, ratios, demands=demands[targets[batch]]) / graph.capacities
            loss = normalized_mlu_loss(utilization, optimum[targets[batch]])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), settings.max_grad_norm)
            optimizer.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        schedule.step()
        losses.append(total / count)
        net.eval()
        if on_epoch:
            on_epoch(epoch, losses[-1], net,
                     lambda: TrainingState.of(epoch + 1, net, optimizer, generator, losses, schedule))
    return net, losses
