"""Candidate paths per origin–destination pair, and the link × path incidence matrix.

A :class:`PathSet` fixes, for P pairs, up to K paths each. Path slot ``p*K + k`` is
path ``k`` of pair ``p``; pairs with fewer than K paths have masked slots. The
sparse incidence matrix ``A`` (links × slots) makes every load computation one
product: ``loads = A @ (split_ratio * demand)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from .generators import endpoint_mask
from .model import Topology, TopologyError

PATH_METRICS = ("hop", "latency", "weight", "invcap")


def default_pairs(topology: Topology) -> np.ndarray:
    """Every ordered pair of distinct endpoint nodes, row-major: shape (P, 2)."""
    endpoints = np.flatnonzero(endpoint_mask(topology))
    origin, destination = np.meshgrid(endpoints, endpoints, indexing="ij")
    keep = origin != destination
    return np.stack([origin[keep], destination[keep]], axis=1)


@dataclass(frozen=True, eq=False)
class PathSet:
    """Up to K candidate paths (tuples of link indices) for each of P origin–destination pairs."""

    topology: Topology
    pairs: np.ndarray
    paths: tuple[tuple[tuple[int, ...], ...], ...]
    description: str = ""

    def __post_init__(self) -> None:
        pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        pairs.setflags(write=False)
        object.__setattr__(self, "pairs", pairs)
        paths = tuple(tuple(path if type(path) is tuple else tuple(map(int, path)) for path in candidates)
                      for candidates in self.paths)
        object.__setattr__(self, "paths", paths)
        if len(paths) != len(pairs):
            raise TopologyError(f"{len(paths)} path lists for {len(pairs)} pairs")
        empty = [p for p, candidates in enumerate(paths) if not candidates]
        if empty:
            raise TopologyError(f"pair {self._pair_label(*pairs[empty[0]])} has no path")
        self._validate_walks()

    def _validate_walks(self) -> None:
        """Vectorized: every path is a simple walk (no repeated node) from its origin to its destination."""
        topo = self.topology
        path_pair = np.repeat(np.arange(self.num_pairs), [len(c) for c in self.paths])
        lengths = np.array([len(path) for candidates in self.paths for path in candidates], dtype=np.int64)
        if (lengths == 0).any():
            p = int(path_pair[np.argmax(lengths == 0)])
            raise TopologyError(f"pair {self._pair_label(*self.pairs[p])} has an empty path")
        try:
            links = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(self.paths)),
                                dtype=np.int64, count=int(lengths.sum()))
        except (TypeError, ValueError):
            raise TopologyError("paths must be sequences of integer link indices") from None
        if ((links < 0) | (links >= topo.num_links)).any():
            raise TopologyError(f"a path uses a link index outside 0..{topo.num_links - 1}")
        ends = np.cumsum(lengths)
        starts = ends - lengths
        path_of_hop = np.repeat(np.arange(len(lengths)), lengths)
        src, dst = topo.link_src[links], topo.link_dst[links]
        broken = np.zeros(len(lengths), dtype=bool)
        broken |= src[starts] != self.pairs[path_pair, 0]
        broken |= dst[ends - 1] != self.pairs[path_pair, 1]
        gap = dst[:-1] != src[1:]
        gap[ends[:-1] - 1] = False  # the last hop of one path and the first of the next need not meet
        broken[path_of_hop[:-1][gap]] = True
        # A walk is simple when origin + every link's head are distinct within the path.
        visit_path = np.r_[np.arange(len(lengths)), path_of_hop]
        visit_node = np.r_[src[starts], dst]
        order = np.lexsort((visit_node, visit_path))
        repeat = (np.diff(visit_path[order]) == 0) & (np.diff(visit_node[order]) == 0)
        looped = np.zeros(len(lengths), dtype=bool)
        looped[visit_path[order][1:][repeat]] = True
        for flags, problem in ((broken, "is not a walk from"), (looped, "repeats a node; pair")):
            if flags.any():
                i = int(np.argmax(flags))
                path = links[starts[i]:ends[i]].tolist()
                raise TopologyError(f"path {path} {problem} {self._pair_label(*self.pairs[path_pair[i]])}")
        hop_slot = np.repeat(path_pair * self.k + self._path_rank(lengths, path_pair), lengths)
        for array in (hop_slot, links):
            array.setflags(write=False)
        object.__setattr__(self, "_hop_arrays", (hop_slot, links))

    def _path_rank(self, lengths: np.ndarray, path_pair: np.ndarray) -> np.ndarray:
        """Position of each path within its pair's list (0..K-1)."""
        first_of_pair = np.searchsorted(path_pair, path_pair, side="left")
        return np.arange(len(lengths)) - first_of_pair

    def _pair_label(self, o: int, d: int) -> str:
        names = self.topology.node_names
        return f"{names[o]} -> {names[d]}"

    def same_paths(self, other: "PathSet") -> bool:
        """The same candidate paths for the same pairs of the same topology (a path set built
        twice is two objects; its routings mean the same on either)."""
        return other is self or (other.topology.fingerprint() == self.topology.fingerprint()
                                 and np.array_equal(other.pairs, self.pairs) and other.paths == self.paths)

    # ------------------------------------------------------------------ shape
    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    @cached_property
    def k(self) -> int:
        """Slots per pair (the largest number of paths of any pair)."""
        return max(len(p) for p in self.paths)

    @property
    def num_slots(self) -> int:
        return self.num_pairs * self.k

    @cached_property
    def mask(self) -> np.ndarray:
        """(P, K) bool: which slots hold a path."""
        counts = np.array([len(p) for p in self.paths])
        mask = np.arange(self.k)[None, :] < counts[:, None]
        mask.setflags(write=False)
        return mask

    @cached_property
    def pair_index(self) -> dict[tuple[int, int], int]:
        return {(int(o), int(d)): p for p, (o, d) in enumerate(self.pairs)}

    # ------------------------------------------------------------------ hop structure
    @property
    def hop_slot(self) -> np.ndarray:
        """For every (slot, hop) in slot-then-hop order: the slot index. Shape (H,)."""
        return self._hop_arrays[0]

    @property
    def hop_link(self) -> np.ndarray:
        """For every (slot, hop): the link index. Shape (H,)."""
        return self._hop_arrays[1]

    @cached_property
    def incidence(self) -> csr_matrix:
        """Sparse (links × slots) 0/1 matrix: entry (l, p*K+k) = 1 when path k of pair p uses link l."""
        return csr_matrix(
            (np.ones(len(self.hop_link)), (self.hop_link, self.hop_slot)),
            shape=(self.topology.num_links, self.num_slots),
        )

    @cached_property
    def link_table(self) -> np.ndarray:
        """(P, K, L) link indices of every path, L the longest path, padded with ``num_links``
        (a link past the last; masked slots are all padding)."""
        hop_slot, hop_link = self._hop_arrays
        position = np.arange(len(hop_slot)) - np.searchsorted(hop_slot, hop_slot)  # hop number within its path
        table = np.full((self.num_slots, int(position.max()) + 1), self.topology.num_links, dtype=np.int64)
        table[hop_slot, position] = hop_link
        table = table.reshape(self.num_pairs, self.k, -1)
        table.setflags(write=False)
        return table

    @cached_property
    def hops(self) -> np.ndarray:
        """(P, K) path length in links (0 in masked slots)."""
        return np.bincount(self.hop_slot, minlength=self.num_slots).reshape(self.num_pairs, self.k)

    @cached_property
    def propagation_delay(self) -> np.ndarray:
        """(P, K) sum of link propagation delays (nan in masked slots)."""
        delay = (self.topology.delays @ self.incidence).reshape(self.num_pairs, self.k)
        return np.where(self.mask, delay, np.nan)

    # ------------------------------------------------------------------ helpers
    def demands(self, matrices: np.ndarray) -> np.ndarray:
        """Pair demands from traffic matrices: (..., N, N) -> (..., P)."""
        matrices = np.asarray(matrices)
        n = self.topology.num_nodes
        if matrices.shape[-2:] != (n, n):
            raise TopologyError(f"traffic matrices of shape {matrices.shape[-2:]} do not fit "
                                f"{self.topology.name!r} with {n} nodes")
        return matrices[..., self.pairs[:, 0], self.pairs[:, 1]]

    def node_path(self, pair: int, k: int) -> list[str]:
        """The node names along path ``k`` of pair ``pair``."""
        path = self.paths[pair][k]
        names = self.topology.node_names
        return [names[self.topology.link_src[path[0]]]] + [names[self.topology.link_dst[l]] for l in path]


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise TopologyError(f"number of paths k must be a positive integer, got {k!r}")


def _resolve_pairs(topology: Topology, pairs) -> np.ndarray:
    if pairs is None:
        return default_pairs(topology)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n = topology.num_nodes
    if ((pairs < 0) | (pairs >= n)).any():
        raise TopologyError(f"pair node index outside 0..{n - 1}")
    if (pairs[:, 0] == pairs[:, 1]).any():
        raise TopologyError("a pair has the same origin and destination")
    return pairs


def _node_path_to_links(topology: Topology, nodes: list[int]) -> tuple[int, ...]:
    return tuple(topology.link_index[(a, b)] for a, b in zip(nodes, nodes[1:]))


def k_shortest_paths(
    topology: Topology, k: int = 4, metric: str = "hop", *, disjoint: bool = False, pairs=None,
) -> PathSet:
    """The k shortest loop-free paths per pair (Yen's algorithm via networkx).

    ``disjoint=True`` instead takes successive shortest paths, each avoiding every link
    of the paths before it (greedy: may return fewer than k, and the set need not be
    the shortest possible disjoint set). Ties are broken deterministically.
    """
    _check_k(k)
    cost = topology.link_metric(metric)
    pairs = _resolve_pairs(topology, pairs)
    if k == 1:
        paths = _single_shortest(topology, cost, pairs)
    else:
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(range(topology.num_nodes))
        for index, (u, v, c) in enumerate(zip(topology.link_src.tolist(), topology.link_dst.tolist(), cost.tolist())):
            graph.add_edge(u, v, weight=c, index=index)
        paths = []
        for o, d in pairs.tolist():
            if disjoint:
                paths.append(_successive_disjoint(graph, o, d, k))
            else:
                stream = nx.shortest_simple_paths(graph, o, d, weight="weight")
                paths.append(tuple(_node_path_to_links(topology, nodes) for nodes in itertools.islice(stream, k)))
    label = f"{k} {'edge-disjoint ' if disjoint else ''}{metric}-shortest paths"
    return PathSet(topology, pairs, tuple(paths), label)


def _successive_disjoint(graph, origin: int, destination: int, k: int) -> tuple[tuple[int, ...], ...]:
    import networkx as nx

    used: set[int] = set()
    found = []
    hide_used = lambda u, v, data: None if data["index"] in used else data["weight"]  # noqa: E731
    for _ in range(k):
        try:
            nodes = nx.dijkstra_path(graph, origin, destination, weight=hide_used)
        except nx.NetworkXNoPath:
            break
        links = tuple(graph.edges[a, b]["index"] for a, b in zip(nodes, nodes[1:]))
        found.append(links)
        used.update(links)
    return tuple(found)


def _shortest_path_dags(topology: Topology, cost: np.ndarray, destinations: np.ndarray) -> np.ndarray:
    """(D, E) bool: link l lies on a shortest path to ``destinations[i]`` (Dijkstra on the reversed graph)."""
    n = topology.num_nodes
    graph = csr_matrix((cost, (topology.link_src, topology.link_dst)), shape=(n, n))
    dist_to = dijkstra(graph.T.tocsr(), directed=True, indices=destinations)  # (D, N): cost from u to t
    via = cost + dist_to[:, topology.link_dst]
    here = dist_to[:, topology.link_src]
    return np.abs(via - here) <= 1e-9 * np.maximum(1.0, here)


def _single_shortest(topology: Topology, cost: np.ndarray, pairs: np.ndarray) -> list[tuple[tuple[int, ...]]]:
    """One shortest path per pair: at every hop, the lowest-index link on a shortest path.

    A fixed, size-independent tie-break (on Abilene it equals networkx's order). Ties
    matter: on Abilene's real traffic the single-path MLU ranges from 1.3× to 3.6× the
    optimum across tie-breaks.
    """
    destinations, dest_row = np.unique(pairs[:, 1], return_inverse=True)
    on_dag = _shortest_path_dags(topology, cost, destinations)
    num_links = topology.num_links
    next_link = np.full((len(destinations), topology.num_nodes), num_links, dtype=np.int64)
    rows, links = np.nonzero(on_dag)
    np.minimum.at(next_link, (rows, topology.link_src[links]), links)
    current, target = pairs[:, 0].copy(), pairs[:, 1]
    steps = []
    active = current != target
    while active.any():  # advance every pair one hop at a time
        link = np.where(active, next_link[dest_row, current], -1)
        steps.append(link)
        current = np.where(active, topology.link_dst[np.maximum(link, 0)], current)
        active = current != target
    hops = np.stack(steps, axis=1)
    return [(tuple(row[row >= 0].tolist()),) for row in hops]


def equal_cost_paths(topology: Topology, metric: str = "hop", *, max_paths: int = 256, pairs=None) -> PathSet:
    """All shortest paths per pair under ``metric`` (what OSPF/ECMP can use), in the order of
    lowest link index first at each hop.

    Raises when a pair has more than ``max_paths`` equal-cost paths.
    """
    cost = topology.link_metric(metric)
    pairs = _resolve_pairs(topology, pairs)
    destinations, dest_row = np.unique(pairs[:, 1], return_inverse=True)
    on_dag = _shortest_path_dags(topology, cost, destinations)
    out_links: list[list[int]] = [[] for _ in range(topology.num_nodes)]
    for l, u in enumerate(topology.link_src.tolist()):
        out_links[u].append(l)
    dst = topology.link_dst.tolist()
    paths = []
    for (o, d), row in zip(pairs.tolist(), dest_row.tolist()):
        found: list[tuple[int, ...]] = []
        stack: list[tuple[int, tuple[int, ...]]] = [(o, ())]
        while stack:
            u, prefix = stack.pop()
            if u == d:
                found.append(prefix)
                if len(found) > max_paths:
                    raise TopologyError(f"pair {topology.node_names[o]} -> {topology.node_names[d]} has more than "
                                        f"{max_paths} equal-cost {metric} paths; raise max_paths")
                continue
            stack.extend((dst[l], prefix + (l,)) for l in reversed(out_links[u]) if on_dag[row, l])
        paths.append(tuple(found))
    return PathSet(topology, pairs, tuple(paths), f"all equal-cost {metric}-shortest paths")


def union_pathsets(first: PathSet, *others: PathSet) -> PathSet:
    """Per pair, the paths of ``first`` followed by those of ``others`` it lacks.

    Lets one network carry several routings defined on different candidate sets
    (K shortest for the LP, all equal-cost paths for ECMP): lift each onto the union
    with :func:`lift_ratios`.
    """
    for other in others:
        if other.topology.fingerprint() != first.topology.fingerprint():
            raise TopologyError("path sets built for different topologies cannot be merged")
        if not np.array_equal(other.pairs, first.pairs):
            raise TopologyError("path sets with different origin-destination pairs cannot be merged")
    merged = []
    for p, candidates in enumerate(first.paths):
        paths = list(candidates)
        for other in others:
            paths.extend(path for path in other.paths[p] if path not in paths)
        merged.append(tuple(paths))
    names = " + ".join(ps.description or "paths" for ps in (first, *others))
    return PathSet(first.topology, first.pairs, tuple(merged), f"union of {names}")


def lift_ratios(ratios: np.ndarray, source: PathSet, target: PathSet) -> np.ndarray:
    """Split ratios over ``source`` re-expressed over ``target``, which must hold every source path."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.shape != (source.num_pairs, source.k):
        raise TopologyError(f"split ratios of shape {ratios.shape} do not fit the source path set "
                            f"({source.num_pairs} pairs × {source.k} paths)")
    if not np.array_equal(source.pairs, target.pairs):
        raise TopologyError("source and target path sets have different origin-destination pairs")
    lifted = np.zeros((target.num_pairs, target.k))
    for p, candidates in enumerate(source.paths):
        slot = {path: k for k, path in enumerate(target.paths[p])}
        for k, path in enumerate(candidates):
            if path not in slot:
                raise TopologyError(f"path {source.node_path(p, k)} is not in the target path set")
            lifted[p, slot[path]] += ratios[p, k]
    return lifted


def pathset_to_dict(pathset: PathSet) -> dict:
    """A JSON-ready description: node names, so it survives link renumbering checks."""
    return {
        "topology": pathset.topology.name,
        "fingerprint": pathset.topology.fingerprint(),
        "description": pathset.description,
        "pairs": [[pathset.topology.node_names[o], pathset.topology.node_names[d]] for o, d in pathset.pairs],
        "paths": [[pathset.node_path(p, k) for k in range(len(c))] for p, c in enumerate(pathset.paths)],
    }


def pathset_from_dict(topology: Topology, data: dict) -> PathSet:
    """Inverse of :func:`pathset_to_dict`; refuses a description made for another topology."""
    if not isinstance(data, dict) or not {"pairs", "paths"} <= data.keys():
        raise TopologyError("a path set description needs 'pairs' and 'paths'")
    fingerprint = data.get("fingerprint")
    if fingerprint is not None and fingerprint != topology.fingerprint():
        raise TopologyError(f"the path set was made for topology {data.get('topology')!r} "
                            f"(fingerprint {fingerprint}), not {topology.name!r}")
    index = topology.node_index

    def node(name) -> int:
        if name not in index:
            raise TopologyError(f"path set names unknown node {name!r}")
        return index[name]

    pairs = np.array([[node(o), node(d)] for o, d in data["pairs"]], dtype=np.int64).reshape(-1, 2)
    paths = []
    for nodes_per_path in data["paths"]:
        candidates = []
        for nodes in nodes_per_path:
            hops = [node(n) for n in nodes]
            try:
                candidates.append(tuple(topology.link_index[(u, v)] for u, v in zip(hops, hops[1:])))
            except KeyError as missing:
                raise TopologyError(f"path {nodes} uses a link the topology lacks: {missing}") from None
        paths.append(tuple(candidates))
    return PathSet(topology, pairs, tuple(paths), data.get("description", ""))
