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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from torch import nn

from envs.twin_torch import TorchFluidTwin
from topologies import PathSet, Routing

from .gradient import DemandHistoryPolicy, training_samples


def _torch_sparse(matrix: sparse.spmatrix) -> torch.Tensor:
    coo = sparse.coo_matrix(matrix)
    index = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    return torch.sparse_coo_tensor(index, torch.as_tensor(coo.data, dtype=torch.float32), coo.shape,
                                   check_invariants=False).coalesce()  # built from a valid scipy matrix


class LinkGraph:
    """What the GNN needs to know about one path set, as tensors (built once per topology)."""

    def __init__(self, pathset: PathSet) -> None:
        topo = pathset.topology
        self.pathset = pathset
        src, dst = np.asarray(topo.link_src), np.asarray(topo.link_dst)
        # link a -> link b when a ends where b starts and b does not go straight back: products
        # of sparse link-node incidences, never an E × E dense table
        links = np.arange(topo.num_links)
        ends_at = sparse.csr_matrix((np.ones(len(links)), (links, dst)), shape=(len(links), topo.num_nodes))
        starts_at = sparse.csr_matrix((np.ones(len(links)), (links, src)), shape=(len(links), topo.num_nodes))
        follows = ends_at @ starts_at.T
        forward = (follows - follows.multiply(starts_at @ ends_at.T)).tocsr()  # drop b = reverse of a
        forward.eliminate_zeros()
        self.successors = _torch_sparse(_row_normalized(forward))        # mean over the links a feeds
        self.predecessors = _torch_sparse(_row_normalized(forward.T))    # mean over the links feeding a
        self.slot_links = _torch_sparse(pathset.incidence.T)            # (P·K, E): links of each path
        self.mask = torch.as_tensor(np.array(pathset.mask))
        capacities = np.array(topo.capacities, dtype=np.float64)  # a writable copy for torch
        self.capacity_share = torch.as_tensor(capacities / capacities.max(), dtype=torch.float32)
        self.twin = TorchFluidTwin(pathset, dtype=torch.float32)
        self.capacities = torch.as_tensor(capacities, dtype=torch.float32)
        self.equal = torch.tensor(Routing.uniform(pathset).ratios, dtype=torch.float32)


def _row_normalized(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    degree = np.asarray(matrix.sum(axis=1)).ravel()
    return sparse.diags(np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)) @ matrix


def link_features(graph: LinkGraph, demands: torch.Tensor) -> torch.Tensor:
    """(B, h, P) pair demands -> (B, E, h + 1) scale-free link features (see the module text)."""
    batch, history, _ = demands.shape
    loads = graph.twin.link_loads(None, graph.equal, demands=demands.reshape(batch * history, -1))
    utilization = (loads / graph.capacities).reshape(batch, history, -1)
    peak = utilization.flatten(1).amax(dim=1).clamp_min(torch.finfo(utilization.dtype).tiny)
    utilization = utilization / peak[:, None, None]
    share = graph.capacity_share.expand(batch, 1, -1)
    return torch.cat([utilization, share], dim=1).transpose(1, 2)


class LinkGNN(nn.Module):
    """Link features + link graph -> split ratios, with weights independent of the topology's size."""

    def __init__(self, history: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.history = history
        self.encode = nn.Linear(history + 1, hidden)
        self.layers = nn.ModuleList(nn.Linear(3 * hidden, hidden) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.cost = nn.Linear(hidden, 1)
        self.log_sharpness = nn.Parameter(torch.tensor(1.0))  # how hard the softmin prefers cheap paths

    def embed(self, graph: LinkGraph, features: torch.Tensor) -> torch.Tensor:
        """(B, E, F) -> (B, E, hidden) link embeddings after message passing."""
        h = torch.relu(self.encode(features))
        for layer, norm in zip(self.layers, self.norms):
            flat = h.transpose(0, 1).reshape(h.shape[1], -1)                     # (E, B·H) for sparse products
            ahead = torch.sparse.mm(graph.successors, flat).reshape(h.shape[1], h.shape[0], -1).transpose(0, 1)
            behind = torch.sparse.mm(graph.predecessors, flat).reshape(h.shape[1], h.shape[0], -1).transpose(0, 1)
            h = norm(h + torch.relu(layer(torch.cat([h, ahead, behind], dim=-1))))
        return h

    def forward(self, graph: LinkGraph, demands: torch.Tensor) -> torch.Tensor:
        """(B, h, P) demand history -> (B, P, K) split ratios for the next matrix."""
        h = self.embed(graph, link_features(graph, demands))
        link_cost = nn.functional.softplus(self.cost(h)).squeeze(-1)                  # (B, E) > 0
        path_cost = torch.sparse.mm(graph.slot_links, link_cost.T).T                   # (B, P·K)
        ps = graph.pathset
        logits = -self.log_sharpness.exp() * path_cost.view(-1, ps.num_pairs, ps.k)
        return torch.softmax(logits.masked_fill(~graph.mask, float("-inf")), dim=-1)


@dataclass
class GNNPolicy(DemandHistoryPolicy):
    """A trained :class:`LinkGNN` behind the RoutingPolicy interface, on any path set."""

    pathset: PathSet
    net: LinkGNN
    name: str = "gnn"
    clairvoyant: bool = False
    history: int = field(init=False)
    graph: LinkGraph = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.history = self.net.history
        self.graph = LinkGraph(self.pathset)
        self.net.eval()

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
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
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
    on_epoch: Callable[[int, float, LinkGNN], None] | None = None,
) -> tuple[LinkGNN, list[float]]:
    """Train one :class:`LinkGNN` on one or more topologies (batches alternate between them).

    Samples are windows t-h..t-1 -> matrix t; the loss is MLU(matrix t) ÷ its optimum.
    Returns the network and the mean training loss of every epoch.
    """
    if not sets:
        raise ValueError("train_gnn needs at least one training set")
    h = settings.history
    prepared = [(LinkGraph(data.pathset), *training_samples(data.pathset, data.matrices, data.optimal_mlu, h))
                for data in sets]
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = LinkGNN(h, settings.hidden, settings.layers)
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    losses = []
    for epoch in range(settings.epochs):
        net.train()
        batches = []
        for index, (_, _, _, targets, _) in enumerate(prepared):
            order = torch.randperm(len(targets), generator=generator)
            batches += [(index, order[s:s + settings.batch_size]) for s in range(0, len(order), settings.batch_size)]
        total, count = 0.0, 0
        for b in torch.randperm(len(batches), generator=generator).tolist():
            index, batch = batches[b]
            graph, demands, optimum, targets, windows = prepared[index]
            ratios = net(graph, demands[windows[batch]])
            utilization = graph.twin.link_loads(None, ratios, demands=demands[targets[batch]]) / graph.capacities
            loss = (utilization.amax(dim=1) / optimum[targets[batch]]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(batch), count + len(batch)
        losses.append(total / count)
        net.eval()
        if on_epoch:
            on_epoch(epoch, losses[-1], net)
    return net, losses
