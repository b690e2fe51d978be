"""Reader for the SNDlib native network format (http://sndlib.zib.de, "native" text files).

::

    ?SNDlib native format; type: network; version: 1.0
    NODES (
      ATLAM5 ( -84.3833 33.75 )          # name ( longitude latitude )
    )
    LINKS (
      # id ( source target ) pre_installed_capacity pre_installed_capacity_cost
      #      routing_cost setup_cost ( {module_capacity module_cost}* )
      L1 ( ATLAM5 ATLAng ) 9920.00 0.00 0.00 0.00 ( 40000.00 1.00 )
    )
    DEMANDS (
      # id ( source target ) routing_unit demand_value max_path_length
      D1 ( ATLAM5 ATLAng ) 1 0.52 UNLIMITED
    )

A link's capacity is its pre-installed capacity when positive, else the largest
module capacity. SNDlib leaves units to each instance; ``capacity_unit_bps``
(default 1e6: Mbit/s, SNDlib's usual unit) converts them. SNDlib links are
undirected unless ``directed=True``: each becomes two directed links.
Coordinates are treated as geographic only when they fit (|lat| ≤ 90, |lon| ≤ 180).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..model import Node, Topology, TopologyError
from ._common import build_topology, delays_from_coordinates, directed_links, parse_number, read_text

_HEADER = re.compile(r"^\?SNDlib native format;\s*type:\s*network;\s*version:\s*1\.0\s*$")
_NODE = re.compile(r"^(\S+)\s*\(\s*(\S+)\s+(\S+)\s*\)$")
_LINK = re.compile(r"^(\S+)\s*\(\s*(\S+)\s+(\S+)\s*\)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*\((.*)\)$")
_DEMAND = re.compile(r"^(\S+)\s*\(\s*(\S+)\s+(\S+)\s*\)\s+(\S+)\s+(\S+)\s+(\S+)$")


def _sections(path: Path) -> dict[str, list[tuple[int, str]]]:
    """Section name -> [(line number, line)], checking header and bracket structure."""
    lines = read_text(path).splitlines()
    content = [(i, line.split("#", 1)[0].strip()) for i, line in enumerate(lines, start=1)]
    content = [(i, line) for i, line in content if line]
    if not content or not _HEADER.match(content[0][1]):
        raise TopologyError(f"{path}:1: not an SNDlib native network file "
                            "(expected '?SNDlib native format; type: network; version: 1.0')")
    sections: dict[str, list[tuple[int, str]]] = {}
    current: str | None = None
    for lineno, line in content[1:]:
        if current is None:
            match = re.match(r"^([A-Z_]+)\s*\($", line)
            if not match:
                raise TopologyError(f"{path}:{lineno}: expected a section opening like 'NODES (', got {line!r}")
            current = match.group(1)
            if current in sections:
                raise TopologyError(f"{path}:{lineno}: section {current} appears twice")
            sections[current] = []
        elif line == ")":
            current = None
        else:
            sections[current].append((lineno, line))
    if current is not None:
        raise TopologyError(f"{path}: section {current} is not closed with ')'")
    for required in ("NODES", "LINKS"):
        if required not in sections:
            raise TopologyError(f"{path}: missing {required} section")
    return sections


def read_sndlib(
    path: str | Path,
    *,
    name: str | None = None,
    capacity_unit_bps: float = 1e6,
    directed: bool = False,
) -> Topology:
    """Read an SNDlib native network file into a validated :class:`Topology`."""
    path = Path(path)
    sections = _sections(path)
    nodes: dict[str, Node] = {}
    geographic = True
    for lineno, line in sections["NODES"]:
        match = _NODE.match(line)
        if not match:
            raise TopologyError(f"{path}:{lineno}: malformed node line {line!r} (expected 'name ( x y )')")
        node, x, y = match.groups()
        where = f"{path}:{lineno}"
        lon, lat = parse_number(x, "longitude", where), parse_number(y, "latitude", where)
        if node in nodes:
            raise TopologyError(f"{where}: duplicate node {node!r}")
        geographic &= abs(lat) <= 90 and abs(lon) <= 180
        nodes[node] = Node(node, lat, lon)
    if not geographic:
        nodes = {n: Node(n) for n in nodes}

    edges, capacities = [], []
    for lineno, line in sections["LINKS"]:
        where = f"{path}:{lineno}"
        match = _LINK.match(line)
        if not match:
            raise TopologyError(f"{where}: malformed link line {line!r}")
        link_id, src, dst, pre_installed, *_costs, modules = match.groups()
        for end in (src, dst):
            if end not in nodes:
                raise TopologyError(f"{where}: link {link_id} uses unknown node {end!r}")
        capacity = parse_number(pre_installed, "pre-installed capacity", where)
        module_fields = modules.split()
        if len(module_fields) % 2:
            raise TopologyError(f"{where}: link {link_id} modules must be (capacity cost) pairs")
        module_caps = [parse_number(c, "module capacity", where) for c in module_fields[::2]]
        if capacity <= 0 and module_caps:
            capacity = max(module_caps)
        if capacity <= 0:
            raise TopologyError(f"{where}: link {link_id} has no positive pre-installed or module capacity")
        edges.append((src, dst))
        capacities.append(capacity * capacity_unit_bps)

    delays, delay_note = delays_from_coordinates(nodes, edges)
    links = directed_links(edges, capacities, delays, [None] * len(edges), directed=directed)
    notes = (f"source: {path.name} (SNDlib native)",
             f"capacity: pre-installed, else largest module, x {capacity_unit_bps:g} bit/s per unit",
             delay_note if geographic else "delay: coordinates are not geographic, default delay used")
    return build_topology(path, name or path.stem, nodes.values(), links, notes)


def read_sndlib_demands(path: str | Path, topology: Topology, *, unit_bps: float = 1e6) -> np.ndarray:
    """The DEMANDS section as an N×N matrix in bit/s, in ``topology``'s node order."""
    path = Path(path)
    sections = _sections(path)
    matrix = np.zeros((topology.num_nodes, topology.num_nodes))
    for lineno, line in sections.get("DEMANDS", []):
        where = f"{path}:{lineno}"
        match = _DEMAND.match(line)
        if not match:
            raise TopologyError(f"{where}: malformed demand line {line!r}")
        demand_id, src, dst, _unit, value, _max_len = match.groups()
        for end in (src, dst):
            if end not in topology.node_index:
                raise TopologyError(f"{where}: demand {demand_id} uses node {end!r} not in {topology.name!r}")
        amount = parse_number(value, "demand value", where)
        if amount < 0:
            raise TopologyError(f"{where}: demand {demand_id} is negative")
        matrix[topology.node_index[src], topology.node_index[dst]] += amount * unit_bps
    return matrix
