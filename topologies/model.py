"""The topology description: nodes, directed links, capacities, delays.

A :class:`Topology` is immutable and validated when it is built, so every other
module can trust it: no self-loops, no duplicate links, positive capacities,
strongly connected. Like Mininet's ``Topo`` it only *describes* a network;
the twin (``envs``) and the emulator realize it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components


class TopologyError(ValueError):
    """A topology (or the file it came from) is invalid; the message names the problem."""


@dataclass(frozen=True)
class Node:
    """A router/switch. Coordinates are degrees (WGS84) when the source has them."""

    name: str
    latitude: float | None = None
    longitude: float | None = None
    role: str | None = None  # e.g. "core"/"aggregation"/"edge" in generated fabrics

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None


@dataclass(frozen=True)
class Link:
    """A directed link. ``weight`` is the IGP (OSPF) weight when the source gives one."""

    src: str
    dst: str
    capacity_bps: float
    delay_s: float = 0.0
    weight: float | None = None


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Topology:
    """An immutable, validated network description.

    ``notes`` records provenance a user should see: which capacity rule was used,
    which repairs a reader made, which delays are defaults rather than measured.
    """

    name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "links", tuple(self.links))
        object.__setattr__(self, "notes", tuple(self.notes))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        where = f"topology {self.name!r}"
        if len(self.nodes) < 2:
            raise TopologyError(f"{where} needs at least 2 nodes, got {len(self.nodes)}")
        seen: set[str] = set()
        for node in self.nodes:
            if not isinstance(node.name, str) or not node.name:
                raise TopologyError(f"{where}: node names must be non-empty strings, got {node.name!r}")
            if node.name in seen:
                raise TopologyError(f"{where}: duplicate node {node.name!r}")
            seen.add(node.name)
        if not self.links:
            raise TopologyError(f"{where} has no links")
        pairs: set[tuple[str, str]] = set()
        for i, link in enumerate(self.links):
            label = f"{where}: link {i} ({link.src} -> {link.dst})"
            for end in (link.src, link.dst):
                if end not in seen:
                    raise TopologyError(f"{label} uses unknown node {end!r}")
            if link.src == link.dst:
                raise TopologyError(f"{label} is a self-loop")
            if (link.src, link.dst) in pairs:
                raise TopologyError(f"{label} is a duplicate link")
            pairs.add((link.src, link.dst))
            if not (math.isfinite(link.capacity_bps) and link.capacity_bps > 0):
                raise TopologyError(f"{label} has non-positive or non-finite capacity {link.capacity_bps!r}")
            if not (math.isfinite(link.delay_s) and link.delay_s >= 0):
                raise TopologyError(f"{label} has negative or non-finite delay {link.delay_s!r}")
            if link.weight is not None and not (math.isfinite(link.weight) and link.weight > 0):
                raise TopologyError(f"{label} has non-positive weight {link.weight!r}")
        components = self.strong_components()
        if len(components) > 1:
            sizes = sorted((len(c) for c in components), reverse=True)
            smallest = min(components, key=len)
            raise TopologyError(
                f"{where} is not strongly connected: {len(components)} components of sizes {sizes}; "
                f"e.g. nodes {sorted(smallest)[:5]} cannot reach or be reached from the rest"
            )

    def strong_components(self) -> list[set[str]]:
        """Strongly connected components as sets of node names."""
        n = len(self.nodes)
        index = {node.name: i for i, node in enumerate(self.nodes)}
        src = [index[l.src] for l in self.links]
        dst = [index[l.dst] for l in self.links]
        graph = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        count, labels = connected_components(graph, directed=True, connection="strong")
        groups: list[set[str]] = [set() for _ in range(count)]
        for node, label in zip(self.nodes, labels):
            groups[label].add(node.name)
        return groups

    # ------------------------------------------------------------------ indexing
    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_links(self) -> int:
        return len(self.links)

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    @cached_property
    def node_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    @cached_property
    def link_index(self) -> dict[tuple[int, int], int]:
        """(source node index, destination node index) -> link index."""
        return {(int(s), int(d)): i for i, (s, d) in enumerate(zip(self.link_src, self.link_dst))}

    @cached_property
    def link_src(self) -> np.ndarray:
        return _readonly(np.array([self.node_index[l.src] for l in self.links], dtype=np.int64))

    @cached_property
    def link_dst(self) -> np.ndarray:
        return _readonly(np.array([self.node_index[l.dst] for l in self.links], dtype=np.int64))

    @cached_property
    def capacities(self) -> np.ndarray:
        """Link capacities in bit/s, in link order."""
        return _readonly(np.array([l.capacity_bps for l in self.links], dtype=np.float64))

    @cached_property
    def delays(self) -> np.ndarray:
        """Link propagation delays in seconds, in link order."""
        return _readonly(np.array([l.delay_s for l in self.links], dtype=np.float64))

    @property
    def has_weights(self) -> bool:
        return all(l.weight is not None for l in self.links)

    @cached_property
    def weights(self) -> np.ndarray:
        """IGP weights; raises when the source had none (use inverse capacity instead)."""
        if not self.has_weights:
            raise TopologyError(f"topology {self.name!r} has no link weights")
        return _readonly(np.array([l.weight for l in self.links], dtype=np.float64))

    def link_metric(self, metric: str) -> np.ndarray:
        """Per-link cost for path computation: ``hop``, ``latency``, ``weight`` or ``invcap``."""
        if metric == "hop":
            return np.ones(self.num_links)
        if metric == "latency":
            # A tiny per-hop term breaks ties between equal-delay paths (and zero-delay links).
            return self.delays + 1e-9
        if metric == "weight":
            return np.array(self.weights)
        if metric == "invcap":
            return self.capacities.max() / self.capacities
        raise TopologyError(f"unknown path metric {metric!r}; use hop, latency, weight or invcap")

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """Stable hash of what a policy depends on: node order, links, capacities, delays, weights.

        Names of the topology and notes are left out; node coordinates too, since
        they do not change what traffic does.
        """
        payload = {
            "nodes": list(self.node_names),
            "links": [
                [l.src, l.dst, repr(float(l.capacity_bps)), f"{l.delay_s:.9e}",
                 None if l.weight is None else repr(float(l.weight))]
                for l in self.links
            ],
        }
        blob = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict:
        """Exact, JSON-ready description (``from_dict`` gives back an equal topology, same fingerprint)."""
        return {
            "format": "rlte-topology",
            "name": self.name,
            "nodes": [{"name": n.name, "latitude": n.latitude, "longitude": n.longitude, "role": n.role}
                      for n in self.nodes],
            "links": [{"src": l.src, "dst": l.dst, "capacity_bps": l.capacity_bps, "delay_s": l.delay_s,
                       "weight": l.weight} for l in self.links],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Topology":
        if not isinstance(data, dict) or data.get("format") != "rlte-topology":
            raise TopologyError("not an rlte topology description (expected \"format\": \"rlte-topology\")")
        try:
            return cls(data["name"], tuple(Node(**n) for n in data["nodes"]),
                       tuple(Link(**l) for l in data["links"]), tuple(data.get("notes", ())))
        except (KeyError, TypeError) as error:
            raise TopologyError(f"malformed rlte topology description: {error}") from None

    def to_networkx(self):  # -> networkx.DiGraph (import kept local: optional heavy import)
        import networkx as nx

        graph = nx.DiGraph(name=self.name)
        for node in self.nodes:
            graph.add_node(node.name, latitude=node.latitude, longitude=node.longitude, role=node.role)
        for i, link in enumerate(self.links):
            graph.add_edge(link.src, link.dst, index=i, capacity_bps=link.capacity_bps,
                           delay_s=link.delay_s, weight=link.weight)
        return graph

    def summary(self) -> dict:
        """Plain-data overview (for CLIs and reports)."""
        caps = self.capacities
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "links": self.num_links,
            "capacity_bps": {"min": float(caps.min()), "max": float(caps.max())},
            "delay_s": {"min": float(self.delays.min()), "max": float(self.delays.max())},
            "has_weights": self.has_weights,
            "has_coordinates": all(n.has_coordinates for n in self.nodes),
            "fingerprint": self.fingerprint(),
            "notes": list(self.notes),
        }


def bidirectional_links(
    edges: Iterable[tuple[str, str, float, float, float | None]],
) -> list[Link]:
    """Turn undirected edges ``(a, b, capacity_bps, delay_s, weight)`` into two directed links each."""
    links: list[Link] = []
    for a, b, capacity, delay, weight in edges:
        links.append(Link(a, b, capacity, delay, weight))
        links.append(Link(b, a, capacity, delay, weight))
    return links


def with_links(topology: Topology, links: Sequence[Link], *, note: str | None = None) -> Topology:
    """A copy of ``topology`` with other links (e.g. scaled capacities)."""
    notes = topology.notes + ((note,) if note else ())
    return Topology(topology.name, topology.nodes, tuple(links), notes)
