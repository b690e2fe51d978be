"""File readers. Each returns a validated :class:`~topologies.model.Topology` or raises
:class:`~topologies.model.TopologyError` naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

from ..model import Topology, TopologyError
from .abilene import read_abilene
from .graphml import CAPACITY_RULES, read_graphml
from .nodelink import read_node_link
from .sndlib import read_sndlib, read_sndlib_demands

__all__ = ["CAPACITY_RULES", "read_abilene", "read_graphml", "read_node_link", "read_sndlib",
           "read_sndlib_demands", "read_topology"]


def read_topology(path: str | Path, **options) -> Topology:
    """Read a topology file, choosing the reader from its content."""
    path = Path(path)
    from ._common import read_text

    head = read_text(path).lstrip()[:200]
    if head.startswith("<"):
        return read_graphml(path, **options)
    if head.startswith("?SNDlib"):
        return read_sndlib(path, **options)
    if head.startswith("{"):
        import json

        try:
            data = json.loads(read_text(path))
        except ValueError as error:
            raise TopologyError(f"{path}: not valid JSON: {error}") from None
        if isinstance(data, dict) and data.get("format") == "rlte-topology":
            return Topology.from_dict(data)
        return read_node_link(path, **options)
    if head.startswith("Node_num"):
        return read_abilene(path, **options)
    raise TopologyError(f"{path}: unknown topology format (expected GraphML, SNDlib native, "
                        "node-link JSON or the Abilene text format)")
