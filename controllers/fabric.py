"""How a topology becomes OpenFlow state: datapath ids, ports, host addresses, path tags.

Pure and shared: the controller installs rules from this plan and the emulator
(``envs.emulation``) wires Mininet by the same plan, so a port number or an address
means the same thing on both sides.

Forwarding is source-routed by tags. The ingress switch of a pair classifies the packet
(destination host address), a *select group* picks one candidate path per flow with
bucket weights equal to the split ratios, and the bucket pushes a VLAN tag naming the
path (pair, slot). Transit switches forward on the tag alone; the egress switch pops it.
Every candidate path is installed before any group points at it and stays installed,
so changing split ratios is one atomic group modification per ingress switch: no packet
meets a switch that does not know its path (make-before-break by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from topologies import PathSet, Topology

HOST_PORT = 1
MAX_TAG = 4094          # VLAN ids 1..4094 name paths
# Bucket weight for a split ratio of 1. OVS realizes select groups with a table of at most
# 256 dp_hash slots and silently falls back to a biased per-bucket score when the smallest
# weight needs more (total ÷ smallest > 256): weights summing to exactly 256 keep every group
# on the table. (Rounding each share on its own could sum to 257, and then a weight of 1
# needed 512 slots: a quarter of the PPO policies' groups fell back, and lost packets.)
WEIGHT_RESOLUTION = 256


def apportion(shares: np.ndarray, total: int) -> np.ndarray:
    """Whole numbers summing to ``total`` in proportion to the non-negative ``shares``
    (largest remainders: each within 1 of its exact quota; the first on ties)."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 1 or len(shares) == 0 or not np.isfinite(shares).all() or (shares < 0).any():
        raise ValueError(f"shares must be finite, non-negative numbers, got {shares.tolist()}")
    if shares.sum() <= 0:
        raise ValueError("shares must not all be zero")
    quotas = shares / shares.sum() * total
    whole = np.floor(quotas).astype(np.int64)
    short = total - int(whole.sum())
    whole[np.argsort(-(quotas - whole), kind="stable")[:short]] += 1
    return whole


class FabricError(ValueError):
    """The topology or path set cannot be realized by this forwarding scheme."""


@dataclass(frozen=True)
class Bucket:
    weight: int
    tag: int
    out_port: int


@dataclass(frozen=True)
class TransitRule:
    node: int
    tag: int
    out_port: int
    pop: bool  # last hop: strip the tag and hand the packet to the host


def dpid_of(node: int) -> int:
    return node + 1


def host_ip(node: int) -> str:
    n = node + 1
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


MAX_SOURCE_ADDRESSES = 150


def source_ip(node: int, index: int) -> str:
    """Extra address ``index`` of a node's host, for traffic replay.

    OVS hashes a select group's flows with a symmetric L3/L4 hash that leaves UDP ports
    out, so UDP flows of one pair spread over paths only if their addresses differ:
    each replayed flow gets its own source address (10.100+index.x.y, same /8).
    """
    if not 0 <= index < MAX_SOURCE_ADDRESSES:
        raise FabricError(f"source address index must be in 0..{MAX_SOURCE_ADDRESSES - 1}, got {index}")
    n = node + 1
    return f"10.{100 + index}.{(n >> 8) & 255}.{n & 255}"


def host_mac(node: int) -> str:
    n = node + 1
    return "02:00:00:{:02x}:{:02x}:{:02x}".format((n >> 16) & 255, (n >> 8) & 255, n & 255)


@dataclass(frozen=True, eq=False)
class FabricPlan:
    """Addresses, ports and tags for one path set (and, through it, one topology)."""

    pathset: PathSet

    def __post_init__(self) -> None:
        needed = self.num_tags
        if needed > MAX_TAG:
            raise FabricError(f"{self.pathset.num_pairs} pairs × {self.pathset.k} paths (+ one backup per pair) "
                              f"need {needed} path tags; VLAN tags allow {MAX_TAG}. Use fewer paths or pairs.")

    @property
    def topology(self) -> Topology:
        return self.pathset.topology

    @property
    def num_tags(self) -> int:
        return self.pathset.num_slots + self.pathset.num_pairs

    # ------------------------------------------------------------------ wiring
    @cached_property
    def neighbor_ports(self) -> dict[tuple[int, int], int]:
        """(node, neighbour) -> port on node facing neighbour. Port 1 is the host.

        Mininet links are bidirectional: the two directed links u->v and v->u share one
        cable, so both ends are numbered once per unordered neighbour pair, in link order.
        """
        ports: dict[tuple[int, int], int] = {}
        next_port = [HOST_PORT + 1] * self.topology.num_nodes
        for u, v in zip(self.topology.link_src.tolist(), self.topology.link_dst.tolist()):
            for a, b in ((u, v), (v, u)):
                if (a, b) not in ports:
                    ports[(a, b)] = next_port[a]
                    next_port[a] += 1
        return ports

    @cached_property
    def cables(self) -> list[tuple[int, int]]:
        """Unordered neighbour pairs (u < v), one Mininet link each, in port order."""
        return sorted({(min(u, v), max(u, v)) for u, v in self.neighbor_ports}, key=lambda c: self.neighbor_ports[c])

    @cached_property
    def link_port(self) -> np.ndarray:
        """Per directed link: the port on its source switch whose tx counters measure it."""
        return np.array([self.neighbor_ports[(u, v)] for u, v in
                         zip(self.topology.link_src.tolist(), self.topology.link_dst.tolist())], dtype=np.int64)

    @cached_property
    def port_link(self) -> dict[tuple[int, int], int]:
        """(node, port) -> the directed link leaving node by that port."""
        return {(int(u), int(p)): l for l, (u, p) in enumerate(zip(self.topology.link_src, self.link_port))}

    @cached_property
    def port_cable_links(self) -> dict[tuple[int, int], tuple[int, ...]]:
        """(node, port) -> the directed links of the cable on that port (one or both directions)."""
        index = self.topology.link_index
        return {(a, port): tuple(index[link] for link in ((a, b), (b, a)) if link in index)
                for (a, b), port in self.neighbor_ports.items()}

    def node_of_dpid(self, dpid: int) -> int | None:
        node = dpid - 1
        return node if 0 <= node < self.topology.num_nodes else None

    def expected_ports(self, node: int) -> set[int]:
        return {HOST_PORT} | {port for (a, _), port in self.neighbor_ports.items() if a == node}

    # ------------------------------------------------------------------ tags
    def tag(self, pair: int, slot: int) -> int:
        return pair * self.pathset.k + slot + 1

    def backup_tag(self, pair: int) -> int:
        return self.pathset.num_slots + pair + 1

    def transit_rules(self, links: tuple[int, ...], tag: int) -> list[TransitRule]:
        """Rules for every switch after the ingress along ``links``: forward on the tag, pop at the egress."""
        topo = self.topology
        rules = [TransitRule(int(topo.link_src[l]), tag, int(self.link_port[l]), False) for l in links[1:]]
        rules.append(TransitRule(int(topo.link_dst[links[-1]]), tag, HOST_PORT, True))
        return rules

    def all_transit_rules(self) -> list[TransitRule]:
        rules = []
        for p, candidates in enumerate(self.pathset.paths):
            for k, links in enumerate(candidates):
                rules.extend(self.transit_rules(links, self.tag(p, k)))
        return rules

    @cached_property
    def transit_rules_by_node(self) -> dict[int, list[TransitRule]]:
        """The candidate-path rules each switch holds (computed once; every reconnect reuses it)."""
        by_node: dict[int, list[TransitRule]] = {n: [] for n in range(self.topology.num_nodes)}
        for rule in self.all_transit_rules():
            by_node[rule.node].append(rule)
        return by_node

    def buckets(self, pair: int, ratios: np.ndarray, backup: tuple[int, ...] | None = None) -> list[Bucket]:
        """Select-group buckets for one pair: weights from its split ratios (zero-weight paths left out).

        With ``backup``, ``ratios`` has one more entry: the share of the backup path.
        """
        ratios = np.asarray(ratios, dtype=np.float64)
        if ratios.any():  # apportion refuses NaN and negative shares
            weights = apportion(ratios, WEIGHT_RESOLUTION)
        else:  # nothing to split: the first path
            weights = np.zeros(len(ratios), dtype=np.int64)
            weights[0] = 1
        out = []
        for k, links in enumerate(self.pathset.paths[pair]):
            if weights[k] > 0:
                out.append(Bucket(int(weights[k]), self.tag(pair, k), int(self.link_port[links[0]])))
        if backup is not None and weights[-1] > 0:
            out.append(Bucket(int(weights[-1]), self.backup_tag(pair), int(self.link_port[backup[0]])))
        return out

    def group_id(self, pair: int) -> int:
        return pair + 1
