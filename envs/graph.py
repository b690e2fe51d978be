"""Graph-structured views of both environments, for policies whose weights do not depend on
the topology (graph neural networks).

- :func:`link_graph_edges`: the *link graph*, link a -> link b when a ends where b starts
  (and b is not a's reverse), as an edge list; :func:`link_ends`: the same graph in O(links),
  each link's endpoints and reverse, which the observations carry (the edge list grows as
  d·(d-1) at a hub of d links each way: 655,700 edges among ASN2k's 8,558 links).
- :func:`equal_split_utilization_matrix`: pair demands -> the link utilization an equal
  split causes, as one sparse matrix (the graph features' first columns).
- :class:`LinkGraphObservation`: per-link features plus the link ends. Features, all
  scale-free: for each of the last ``history`` matrices the utilization an equal split over
  the candidate paths would cause (divided by the window's largest), the link's capacity
  over the largest capacity, and the utilization the agent's own previous routing caused
  (divided by its maximum). With ``paths=True`` it also carries what a policy needs to
  route the latest matrix itself (a twin inside the policy, as refinement rounds do): each
  candidate path's links and the latest matrix's pair demands.
- :class:`LinkCosts`: an action of one cost per link; a pair's paths get the summed cost of
  their links, and ratios follow a softmin of those sums.

:class:`GraphObservation` and :class:`LinkCostActions` are Gymnasium wrappers that put these
on a :class:`~envs.split_routing.SplitRoutingEnv` (compose both for a policy that can route
any topology). The encoders are separate classes so deployed policies encode alike.

- :class:`FlowGraphObservation` (wrapper :class:`FlowGraphView`): the same link ends for
  :class:`~envs.path_selection.PathSelectionEnv`, with per-link load features, which links
  each of the K actions' paths uses, and what each action would do to the path's bottleneck
  and to the MLU. The action stays Discrete(K).

:func:`graph_wrapped` puts the right wrappers on either environment.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from scipy import sparse

from topologies import PathSet, Routing, Topology

from .common import scale_free
from .path_selection import OBSERVATION_CAP, PathSelectionEnv
from .split_routing import SplitRoutingEnv

# Largest spread of slot logits a link-cost action can make within one pair: costs are in
# [0, 1] per link, and a path 2 links' cost dearer than the pair's cheapest already gets the
# smallest share the split-routing action allows (e^(-2·action_scale) of the cheapest).
COST_SPAN = 2.0


def link_graph_edges(topology: Topology) -> np.ndarray:
    """(2, M) int64 edges (a, b) of the link graph: a ends where b starts, b is not a reversed.

    Built from sparse link–node incidences (never an E × E dense table)."""
    links = np.arange(topology.num_links)
    shape = (topology.num_links, topology.num_nodes)
    ends_at = sparse.csr_matrix((np.ones(len(links)), (links, np.asarray(topology.link_dst))), shape=shape)
    starts_at = sparse.csr_matrix((np.ones(len(links)), (links, np.asarray(topology.link_src))), shape=shape)
    follows = ends_at @ starts_at.T
    forward = (follows - follows.multiply(starts_at @ ends_at.T)).tocoo()  # drop b = reverse of a
    keep = forward.data != 0
    order = np.lexsort((forward.col[keep], forward.row[keep]))
    return np.vstack([forward.row[keep][order], forward.col[keep][order]]).astype(np.int64)


def link_ends(topology: Topology) -> np.ndarray:
    """(3, E) int64: each link's source node, destination node, and reverse link (-1 where it
    has none). The link graph of :func:`link_graph_edges` follows from it: a feeds b when
    b's source is a's destination and b is not a's reverse (:class:`agents.gnn.LinkAdjacency`)."""
    src, dst = np.asarray(topology.link_src, dtype=np.int64), np.asarray(topology.link_dst, dtype=np.int64)
    reverse = np.array([topology.link_index.get((v, u), -1) for u, v in zip(src.tolist(), dst.tolist())],
                       dtype=np.int64)
    return np.stack([src, dst, reverse])


def link_ends_space(topology: Topology) -> spaces.Box:
    """The observation space of :func:`link_ends`."""
    largest = max(topology.num_nodes, topology.num_links) - 1
    return spaces.Box(-1, largest, shape=(3, topology.num_links), dtype=np.int64)


def equal_split_utilization_matrix(pathset: PathSet) -> sparse.csr_matrix:
    """(P, E) sparse: the utilization one unit of a pair's demand causes on each link when the
    pair splits equally over its candidate paths. Utilization is linear in the demands, so
    (h, P) demands @ this matrix is the (h, E) equal-split utilization of h matrices."""
    equal = sparse.diags(Routing.uniform(pathset).ratios.ravel())
    slot_pair = sparse.csr_matrix((np.ones(pathset.num_slots), (np.arange(pathset.num_slots),
                                                                np.repeat(np.arange(pathset.num_pairs), pathset.k))))
    capacities = np.asarray(pathset.topology.capacities, dtype=np.float64)
    return (pathset.incidence @ equal @ slot_pair).T.tocsr() @ sparse.diags(1.0 / capacities)


class LinkGraphObservation:
    """Graph observation encoding: ``{"links": (E, history + 2), "link_ends": (3, E)}``, and
    with ``paths``, ``"paths"``: (P·K, L) :attr:`PathSet.link_table` (padding = E; flat in its
    slots so that no tool takes it for an image) and ``"demands"``: (P,) the latest matrix's
    pair demands over the window's largest."""

    def __init__(self, pathset: PathSet, history: int, paths: bool = False) -> None:
        topology = pathset.topology
        self.pathset, self.history, self.paths = pathset, history, paths
        self.ends = link_ends(topology)
        self.num_features = history + 2
        self._capacities = np.asarray(topology.capacities, dtype=np.float64)
        self._pair_utilization = equal_split_utilization_matrix(pathset)
        num_links = topology.num_links
        space = {
            "links": spaces.Box(0.0, 1.0, shape=(num_links, self.num_features), dtype=np.float32),
            "link_ends": link_ends_space(topology),
        }
        if paths:
            space["paths"] = spaces.Box(0, num_links, shape=(pathset.num_slots, pathset.link_table.shape[-1]),
                                        dtype=np.int64)
            space["demands"] = spaces.Box(0.0, 1.0, shape=(pathset.num_pairs,), dtype=np.float32)
        self.space = spaces.Dict(space)

    def encode(self, window_demands: np.ndarray, utilization: np.ndarray) -> dict[str, np.ndarray]:
        """(h, P) pair demands, oldest first (any scale), and (E,) utilization -> the observation."""
        window = np.atleast_2d(np.asarray(window_demands, dtype=np.float64))
        equal_split = window @ self._pair_utilization
        features = np.column_stack([scale_free(np.asarray(equal_split)).T,
                                    self._capacities / self._capacities.max(),
                                    scale_free(np.asarray(utilization, dtype=np.float64))])
        observation = {"links": features.astype(np.float32), "link_ends": self.ends.copy()}
        if self.paths:
            observation["paths"] = self.pathset.link_table.reshape(self.pathset.num_slots, -1).copy()
            observation["demands"] = scale_free(window)[-1].astype(np.float32)
        return observation


class LinkCosts:
    """Link-cost actions in [-1, 1]^E -> the split-routing action (slot logits in [-1, 1]).

    Link cost is ``(a + 1) / 2`` in [0, 1]; a path costs the sum over its links; within each
    pair, logit = 1 − min(cost − cheapest cost, COST_SPAN), so the environment's softmax makes
    a softmin of path costs whose sharpness is its ``action_scale``.
    """

    def __init__(self, pathset: PathSet) -> None:
        self.pathset = pathset
        self._slot_links = pathset.incidence.T.tocsr()  # (P·K, E)
        self._mask = np.asarray(pathset.mask)
        self.space = spaces.Box(-1.0, 1.0, shape=(pathset.topology.num_links,), dtype=np.float32)

    def path_costs(self, action: np.ndarray) -> np.ndarray:
        """(E,) action -> (P, K) path costs (inf in masked slots)."""
        cost = (np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0
        paths = (self._slot_links @ cost).reshape(self._mask.shape)
        return np.where(self._mask, paths, np.inf)

    def slot_logits(self, action: np.ndarray) -> np.ndarray:
        costs = self.path_costs(action)
        excess = costs - costs.min(axis=1, keepdims=True)
        return (1.0 - np.minimum(excess, COST_SPAN)).ravel().astype(np.float32)  # masked slots: -1


class FlowGraphObservation:
    """Graph observation of path selection, every utilization relative to the episode's u_ref
    and clipped at ``OBSERVATION_CAP``:

    - ``links`` (E, 4): utilization of the flows placed so far; the utilization the waiting
      flow would add to the link; capacity over the largest capacity; fraction of flows routed;
    - ``link_ends`` (3, E): :func:`link_ends`;
    - ``paths`` (K, E): 1 where action a's path uses the link (a pair with fewer than K paths
      repeats them, as the environment maps actions);
    - ``actions`` (K, 3): per action, its path's bottleneck utilization with the flow on it,
      the increase of the reward's congestion measure it would cause (the MLU's by default;
      minus the step reward when ``bottleneck_weight`` is 0), and its hop count over the
      pair's shortest candidate's (what else the flow will occupy).

    Once the episode is over the flow-dependent parts are zero.
    """

    NUM_LINK_FEATURES = 4

    def __init__(self, pathset: PathSet) -> None:
        topology = pathset.topology
        self.pathset, self.ends = pathset, link_ends(topology)
        self._capacities = np.asarray(topology.capacities, dtype=np.float64)
        num_links, k = topology.num_links, pathset.k
        self.space = spaces.Dict({
            "links": spaces.Box(0.0, OBSERVATION_CAP, shape=(num_links, self.NUM_LINK_FEATURES), dtype=np.float32),
            "link_ends": link_ends_space(topology),
            "paths": spaces.Box(0.0, 1.0, shape=(k, num_links), dtype=np.float32),
            "actions": spaces.Box(0.0, OBSERVATION_CAP, shape=(k, 3), dtype=np.float32),
        })

    def encode(self, env: PathSelectionEnv) -> dict[str, np.ndarray]:
        """The observation of ``env``'s current state (its candidate paths must be this encoder's)."""
        num_links, k = len(self._capacities), self.pathset.k
        if env.pathset is not self.pathset and _shape(env.pathset) != _shape(self.pathset):  # cheap: runs per flow
            raise ValueError(f"this encoder was built for {self.pathset.topology.name!r} with K={k}; the environment "
                             f"routes {env.pathset.topology.name!r} with K={env.pathset.k}")
        utilization = env.utilization()
        added = np.zeros(num_links)
        paths, actions = np.zeros((k, num_links + 1)), np.zeros((k, 3))
        scale = 1.0 / env.reference
        if env.routed < env.num_flows:
            pair, rate = env.current_flow
            on_path = env.candidate_links(pair)                     # (K, L), padded with num_links
            added = rate / self._capacities
            paths[np.arange(k)[:, None], on_path] = 1.0
            bottleneck, increase = (effect[env.action_paths(pair)] for effect in env.candidate_effects())
            hops = (on_path < num_links).sum(axis=1)
            actions[:] = np.column_stack([bottleneck * scale, increase * scale, hops / hops.min()])
        links = np.column_stack([utilization * scale, added * scale, self._capacities / self._capacities.max(),
                                 np.full(num_links, env.routed / max(1, env.num_flows))])
        return {"links": np.clip(links, 0.0, OBSERVATION_CAP).astype(np.float32), "link_ends": self.ends.copy(),
                "paths": paths[:, :-1].astype(np.float32),
                "actions": np.clip(actions, 0.0, OBSERVATION_CAP).astype(np.float32)}


def _shape(pathset: PathSet) -> tuple:
    return pathset.topology.name, pathset.topology.num_links, pathset.num_pairs, pathset.k


def _split_routing(env: gym.Env) -> SplitRoutingEnv:
    base = env.unwrapped
    if not isinstance(base, SplitRoutingEnv):
        raise TypeError(f"graph wrappers need a SplitRoutingEnv underneath, got {type(base).__name__}")
    return base


class GraphObservation(gym.ObservationWrapper):
    """Observe link features and the link graph instead of the flat vector (with ``paths``,
    also the candidate paths and the latest demands: :class:`LinkGraphObservation`)."""

    def __init__(self, env: gym.Env, paths: bool = False) -> None:
        super().__init__(env)
        base = _split_routing(env)
        self.flat = base.encoder
        self.encoder = LinkGraphObservation(base.pathset, base.history, paths)
        self.observation_space = self.encoder.space

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return self.encoder.encode(*self.flat.split(observation))


class LinkCostActions(gym.ActionWrapper):
    """Act with one cost per link instead of one logit per (pair, path) slot."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.decoder = LinkCosts(_split_routing(env).pathset)
        self.action_space = self.decoder.space

    def action(self, action: np.ndarray) -> np.ndarray:
        return self.decoder.slot_logits(action)


class FlowGraphView(gym.ObservationWrapper):
    """Observe a path-selection environment as :class:`FlowGraphObservation`."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, PathSelectionEnv):
            raise TypeError(f"FlowGraphView needs a PathSelectionEnv underneath, got {type(env.unwrapped).__name__}")
        self.encoder = FlowGraphObservation(env.unwrapped.pathset)
        self.observation_space = self.encoder.space

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return self.encoder.encode(self.env.unwrapped)


def graph_wrapped(env: gym.Env, paths: bool = False) -> gym.Env:
    """The graph view of either environment: split routing gets link features and link-cost
    actions (with ``paths``, the observation also carries the candidate paths and the latest
    demands), path selection link features and per-action path memberships."""
    if isinstance(env.unwrapped, PathSelectionEnv):
        return FlowGraphView(env)
    return LinkCostActions(GraphObservation(env, paths))
