"""Reader for the Abilene text format of ``../shared/data/abilene`` (CFR-RL/DOTE style).

::

    Node_num: 12	Edge_num: 30
    Link_index	Source	Destination	OSPF	Capacity(kbps)
    0	0	1	1	9920000
    ...

Links are already directed. Nodes are numbered 0..N-1; ``node_names`` (and
``coordinates``) may give them real names, which the bundled ``abilene`` does.
"""

from __future__ import annotations

from pathlib import Path

from ..model import Node, Topology, TopologyError
from ._common import build_topology, delays_from_coordinates, directed_links, parse_number, read_text


def read_abilene(
    path: str | Path,
    *,
    name: str | None = None,
    node_names: list[str] | None = None,
    coordinates: dict[str, tuple[float, float]] | None = None,
) -> Topology:
    """Read the Abilene text format. Capacities are kbit/s in the file, bit/s in the model."""
    path = Path(path)
    lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Node_num"):
        raise TopologyError(f"{path}: not the Abilene text format (first line must start with 'Node_num:')")
    header = lines[0].replace(":", " ").split()
    try:
        num_nodes = int(header[header.index("Node_num") + 1])
        num_edges = int(header[header.index("Edge_num") + 1])
    except (ValueError, IndexError):
        raise TopologyError(f"{path}:1: cannot read 'Node_num: N  Edge_num: M' from {lines[0]!r}") from None
    if node_names is None:
        node_names = [str(i) for i in range(num_nodes)]
    if len(node_names) != num_nodes:
        raise TopologyError(f"{path}: {len(node_names)} node names given for {num_nodes} nodes")
    coordinates = coordinates or {}
    nodes = {n: Node(n, *coordinates.get(n, (None, None))) for n in node_names}

    edges, capacities, weights = [], [], []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            raise TopologyError(f"{where}: expected 5 fields (index src dst ospf capacity), got {len(fields)}")
        src, dst = (int(parse_number(f, "node", where)) for f in fields[1:3])
        for end in (src, dst):
            if not 0 <= end < num_nodes:
                raise TopologyError(f"{where}: node {end} outside 0..{num_nodes - 1}")
        edges.append((node_names[src], node_names[dst]))
        weights.append(parse_number(fields[3], "OSPF weight", where))
        capacities.append(parse_number(fields[4], "capacity", where) * 1e3)
    if len(edges) != num_edges:
        raise TopologyError(f"{path}: header says {num_edges} links, file has {len(edges)}")
    delays, delay_note = delays_from_coordinates(nodes, edges)
    links = directed_links(edges, capacities, delays, weights, directed=True)
    return build_topology(path, name or path.stem.split(".")[0].lower(), nodes.values(), links,
                          (f"source: {path.name} (Abilene text format)", "capacity: from file (kbit/s)",
                           "weights: OSPF weights from file", delay_note))
