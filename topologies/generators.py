"""Generated topologies: data-centre fabrics and random WANs.

Fabric switches get a ``role``; only ``edge``/``leaf`` switches source and sink
traffic (their hosts sit behind them), ``aggregation``/``core``/``spine`` are
transit-only. See :data:`TRANSIT_ROLES`.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from .geo import propagation_delay_s
from .model import Link, Node, Topology, TopologyError, bidirectional_links, with_links

TRANSIT_ROLES = frozenset({"core", "aggregation", "spine"})


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise TopologyError(f"{name} must be positive, got {value!r}")


def fat_tree(k: int = 4, *, capacity_bps: float = 10e9, delay_s: float = 5e-6) -> Topology:
    """A k-ary fat tree (Al-Fares et al.): k pods of k/2 edge + k/2 aggregation switches,
    (k/2)^2 core switches; every link has the same capacity."""
    if not isinstance(k, int) or k < 2 or k % 2:
        raise TopologyError(f"fat_tree needs an even integer k >= 2, got {k!r}")
    _positive("capacity_bps", capacity_bps)
    half = k // 2
    nodes: list[Node] = []
    edges = []
    core = [f"core{i}" for i in range(half * half)]
    nodes += [Node(c, role="core") for c in core]
    for pod in range(k):
        aggs = [f"p{pod}_agg{i}" for i in range(half)]
        tors = [f"p{pod}_edge{i}" for i in range(half)]
        nodes += [Node(a, role="aggregation") for a in aggs] + [Node(t, role="edge") for t in tors]
        for i, agg in enumerate(aggs):
            edges += [(agg, tor, capacity_bps, delay_s, 1.0) for tor in tors]
            edges += [(agg, core[i * half + j], capacity_bps, delay_s, 1.0) for j in range(half)]
    return Topology(f"fat_tree_k{k}", tuple(nodes), tuple(bidirectional_links(edges)),
                    (f"generated: fat_tree(k={k}), {capacity_bps:.3g} bit/s, {delay_s:g} s per link",))


def leaf_spine(
    spines: int = 4, leaves: int = 8, *, capacity_bps: float = 40e9, delay_s: float = 5e-6,
) -> Topology:
    """A two-tier Clos: every leaf connects to every spine."""
    if spines < 1 or leaves < 2:
        raise TopologyError(f"leaf_spine needs spines >= 1 and leaves >= 2, got {spines}, {leaves}")
    _positive("capacity_bps", capacity_bps)
    spine_names = [f"spine{i}" for i in range(spines)]
    leaf_names = [f"leaf{i}" for i in range(leaves)]
    nodes = [Node(s, role="spine") for s in spine_names] + [Node(l, role="leaf") for l in leaf_names]
    edges = [(l, s, capacity_bps, delay_s, 1.0) for l in leaf_names for s in spine_names]
    return Topology(f"leaf_spine_{spines}x{leaves}", tuple(nodes), tuple(bidirectional_links(edges)),
                    (f"generated: leaf_spine(spines={spines}, leaves={leaves}), {capacity_bps:.3g} bit/s",))


def waxman(
    n: int = 20, seed: int = 0, *, alpha: float = 0.4, beta: float = 0.2, capacity_bps: float = 10e9,
) -> Topology:
    """A Waxman random WAN: nodes uniform in a continental box (24°N–48°N, 124°W–68°W), link
    probability ``beta·exp(-d / (alpha·L))``. Components are joined by their closest node
    pairs so the result is always connected; delays follow the great-circle distance."""
    if n < 2:
        raise TopologyError(f"waxman needs n >= 2, got {n}")
    _positive("capacity_bps", capacity_bps)
    graph = nx.waxman_graph(n, beta=beta, alpha=alpha, seed=seed)
    pos = {v: graph.nodes[v]["pos"] for v in graph}
    nodes = {v: Node(f"n{v}", 24 + 24 * pos[v][1], -124 + 56 * pos[v][0]) for v in graph}
    components = [sorted(c) for c in nx.connected_components(graph)]
    while len(components) > 1:  # join the component of node 0 to its nearest other component
        first, rest = components[0], [v for c in components[1:] for v in c]
        a, b = min(((a, b) for a in first for b in rest), key=lambda e: math.dist(pos[e[0]], pos[e[1]]))
        graph.add_edge(a, b)
        components = [sorted(c) for c in nx.connected_components(graph)]
    edges = []
    for a, b in sorted(graph.edges()):
        delay, _ = propagation_delay_s(nodes[a], nodes[b])
        edges.append((nodes[a].name, nodes[b].name, capacity_bps, delay, None))
    # the name tells draws apart: non-default alpha and beta change the graph, so they are in it
    shape = "".join(f"_{key}{value:g}" for key, value, default in (("a", alpha, 0.4), ("b", beta, 0.2))
                    if value != default)
    return Topology(f"waxman_n{n}_s{seed}{shape}", tuple(nodes[v] for v in sorted(graph)),
                    tuple(bidirectional_links(edges)),
                    (f"generated: waxman(n={n}, seed={seed}, alpha={alpha}, beta={beta}), "
                     f"{capacity_bps:.3g} bit/s, great-circle delays",))


def endpoint_mask(topology: Topology) -> np.ndarray:
    """Boolean per node: True where the node sources/sinks traffic (not a transit-only role)."""
    return np.array([node.role not in TRANSIT_ROLES for node in topology.nodes])


def scale_capacities(topology: Topology, factor: float) -> Topology:
    """All capacities × ``factor`` (e.g. to fit an emulator)."""
    _positive("factor", factor)
    links = [Link(l.src, l.dst, l.capacity_bps * factor, l.delay_s, l.weight) for l in topology.links]
    return with_links(topology, links, note=f"capacities scaled by {factor:g}")
