"""Reader for networkx node-link JSON (the format of ``../shared/data/wan``).

Links carry ``capacity`` in the file's own unit; ``capacity_unit_bps`` (default
1e6, Mbit/s) converts it. Integer node ids are sorted numerically so that node
``i`` is row ``i`` of the matching traffic matrices; other ids keep file order.
Optional link attributes: ``weight`` (IGP weight) and ``delay`` (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from ..model import Node, Topology, TopologyError
from ._common import build_topology, delays_from_coordinates, directed_links, read_text


def read_node_link(
    path: str | Path,
    *,
    name: str | None = None,
    capacity_key: str = "capacity",
    capacity_unit_bps: float = 1e6,
) -> Topology:
    """Read a node-link JSON graph into a validated :class:`Topology`."""
    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(data, dict) or "nodes" not in data or not ({"links", "edges"} & set(data)):
        raise TopologyError(f"{path}: not a node-link graph (needs 'nodes' and 'links')")
    try:
        # Absent "directed"/"multigraph" keys mean a simple undirected graph (networkx would assume a multigraph).
        graph = nx.node_link_graph(data, directed=False, multigraph=False, edges="links" if "links" in data else "edges")
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise TopologyError(f"{path}: malformed node-link graph ({exc!r})") from None
    if graph.is_multigraph():
        raise TopologyError(f"{path}: multigraphs are not supported (merge parallel links first)")
    directed = graph.is_directed()

    ids = list(graph.nodes)
    if all(isinstance(v, int) for v in ids):
        ids.sort()
    names = {v: str(v) for v in ids}
    nodes = {}
    for v in ids:
        d = graph.nodes[v]
        nodes[names[v]] = Node(names[v], d.get("latitude", d.get("Latitude")),
                               d.get("longitude", d.get("Longitude")))

    edges, capacities, weights, explicit_delays = [], [], [], []
    for u, v, d in graph.edges(data=True):
        if capacity_key not in d:
            raise TopologyError(f"{path}: link {u} -> {v} has no {capacity_key!r} attribute")
        try:
            capacities.append(float(d[capacity_key]) * capacity_unit_bps)
        except (TypeError, ValueError):
            raise TopologyError(f"{path}: link {u} -> {v} capacity {d[capacity_key]!r} is not a number") from None
        edges.append((names[u], names[v]))
        weights.append(d.get("weight"))
        explicit_delays.append(d.get("delay"))
    if all(x is not None for x in explicit_delays):
        delays, delay_note = [float(x) for x in explicit_delays], "delay: from file"
    else:
        delays, delay_note = delays_from_coordinates(nodes, edges)
    links = directed_links(edges, capacities, delays, weights, directed=directed)
    notes = (f"source: {path.name} (node-link JSON)",
             f"capacity: '{capacity_key}' from file x {capacity_unit_bps:g} bit/s per unit", delay_note)
    return build_topology(path, name or path.stem, nodes.values(), links, notes)
