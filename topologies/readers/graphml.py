"""Reader for Topology Zoo GraphML (and other GraphML with similar attributes).

Topology Zoo files are undirected, often multigraphs (parallel physical links),
mostly without capacities, and a few are disconnected or have a self-loop.

Capacity rules (``capacity=``), recorded in ``Topology.notes``:

* ``"linkspeed"`` (default): the edge's ``LinkSpeedRaw`` (bit/s) where present,
  else ``default_capacity_bps``;
* ``"default"``: ``default_capacity_bps`` on every link;
* ``"degree"``: ``default_capacity_bps × min(deg(u), deg(v))`` — links between
  well-connected nodes are core links and get more capacity.

Parallel edges are merged into one link whose capacity is their sum (the Zoo
draws parallel physical links as parallel edges). ``repair=True`` additionally
drops self-loops and keeps only the largest connected component instead of
raising; every repair is written to ``notes``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

import networkx as nx

from ..model import Node, Topology, TopologyError
from ._common import build_topology, delays_from_coordinates, directed_links, read_text

CAPACITY_RULES = ("linkspeed", "default", "degree")


def _node_names(graph: nx.Graph) -> dict[str, str]:
    """GraphML id -> readable unique name (the Zoo ``label``, made unique with the id)."""
    labels = {v: str(d.get("label") or v).strip() or str(v) for v, d in graph.nodes(data=True)}
    counts = Counter(labels.values())
    return {v: (label if counts[label] == 1 else f"{label}#{v}") for v, label in labels.items()}


def _coordinate(data: dict, key: str) -> float | None:
    value = data.get(key)
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def read_graphml(
    path: str | Path,
    *,
    name: str | None = None,
    capacity: str = "linkspeed",
    default_capacity_bps: float = 10e9,
    repair: bool = False,
) -> Topology:
    """Read a (Topology Zoo) GraphML file into a validated :class:`Topology`."""
    path = Path(path)
    return parse_graphml(read_text(path), source=path, name=name or path.stem, capacity=capacity,
                         default_capacity_bps=default_capacity_bps, repair=repair)


def parse_graphml(
    text: str,
    *,
    source: Path,
    name: str,
    capacity: str = "linkspeed",
    default_capacity_bps: float = 10e9,
    repair: bool = False,
) -> Topology:
    """Like :func:`read_graphml` on text already read; ``source`` names it in errors and notes."""
    path = source
    if capacity not in CAPACITY_RULES:
        raise TopologyError(f"unknown capacity rule {capacity!r}; use one of {', '.join(CAPACITY_RULES)}")
    if not default_capacity_bps > 0:
        raise TopologyError(f"default_capacity_bps must be positive, got {default_capacity_bps!r}")
    try:
        graph = nx.parse_graphml(text, force_multigraph=True)
    except (ET.ParseError, nx.NetworkXError, ValueError, KeyError) as exc:
        raise TopologyError(f"{path}: malformed GraphML ({exc})") from None
    if graph.number_of_nodes() == 0:
        raise TopologyError(f"{path}: GraphML has no nodes")
    directed = graph.is_directed()
    notes = [f"source: {path.name} (GraphML{', directed' if directed else ''})"]

    names = _node_names(graph)
    nodes = {names[v]: Node(names[v], _coordinate(d, "Latitude"), _coordinate(d, "Longitude"))
             for v, d in graph.nodes(data=True)}

    # Merge parallel edges; an undirected edge is keyed by its sorted endpoints.
    merged: dict[tuple[str, str], list[float | None]] = defaultdict(list)
    self_loops = 0
    for u, v, data in graph.edges(data=True):
        a, b = names[u], names[v]
        if a == b:
            self_loops += 1
            continue
        key = (a, b) if directed else tuple(sorted((a, b)))
        merged[key].append(_link_speed(data.get("LinkSpeedRaw")))
    if self_loops:
        if not repair:
            raise TopologyError(f"{path}: {self_loops} self-loop edge(s); pass repair=True (CLI: --repair) to drop them")
        notes.append(f"repair: dropped {self_loops} self-loop edge(s)")
    parallel = sum(len(speeds) - 1 for speeds in merged.values())
    if parallel:
        notes.append(f"merged {parallel} parallel edge(s) into single links with summed capacity")

    edges = list(merged)
    if repair:
        edges, dropped = _largest_component(list(nodes), edges)
        if dropped:
            notes.append(f"repair: kept the largest connected component, dropped {len(dropped)} node(s): "
                         + ", ".join(sorted(dropped)[:8]) + (" ..." if len(dropped) > 8 else ""))
            nodes = {n: node for n, node in nodes.items() if n not in dropped}

    capacities, capacity_note = _capacities(edges, [merged[e] for e in edges], capacity, default_capacity_bps)
    notes.append(capacity_note)
    delays, delay_note = delays_from_coordinates(nodes, edges)
    notes.append(delay_note)
    links = directed_links(edges, capacities, delays, [None] * len(edges), directed=directed)
    try:
        return build_topology(path, name, nodes.values(), links, notes)
    except TopologyError as exc:
        if "not strongly connected" in str(exc) and not repair:
            raise TopologyError(f"{exc}; pass repair=True (CLI: --repair) to keep the largest component") from None
        raise


def _link_speed(value) -> float | None:
    """LinkSpeedRaw in bit/s, or None when absent or unusable."""
    try:
        speed = float(value)
    except (TypeError, ValueError):
        return None
    return speed if speed > 0 and speed != float("inf") else None


def _largest_component(nodes: list[str], edges: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], set[str]]:
    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    keep = max(nx.connected_components(graph), key=len)
    return [e for e in edges if e[0] in keep], set(nodes) - keep


def _capacities(
    edges: list[tuple[str, str]], speeds: list[list[float | None]], rule: str, default_bps: float,
) -> tuple[list[float], str]:
    if rule == "default":
        return [default_bps * len(s) for s in speeds], f"capacity: default {default_bps:.3g} bit/s on every link"
    if rule == "degree":
        degree: Counter[str] = Counter()
        for a, b in edges:
            degree[a] += 1
            degree[b] += 1
        caps = [default_bps * min(degree[a], degree[b]) for a, b in edges]
        return caps, f"capacity: degree rule, {default_bps:.3g} bit/s x min(deg(u), deg(v))"
    caps, from_file = [], 0
    for parallel in speeds:
        caps.append(sum(s if s is not None else default_bps for s in parallel))
        from_file += all(s is not None for s in parallel)
    if from_file == len(edges):
        note = "capacity: LinkSpeedRaw from file on every link"
    else:
        note = (f"capacity: LinkSpeedRaw from file on {from_file} of {len(edges)} links, "
                f"default {default_bps:.3g} bit/s on the rest")
    return caps, note
