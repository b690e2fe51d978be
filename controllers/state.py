"""The controller's state machine, free of OpenFlow: routing, link health, failover, telemetry.

The os-ken app (``controllers.app``) turns what this decides into messages; the HTTP
API reads and changes it through the same methods. Keeping it free of os-ken makes the
parts that are easy to get wrong (validation, failover, counter arithmetic) testable
without switches.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import networkx as nx
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from topologies import PathSet, RoutingError, check_ratios

from .decision import FixedRatios, NetworkView, RoutingDecision
from .fabric import FabricPlan


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None: JSON has no NaN (an unknown measurement is null)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RoutingRequest(BaseModel):
    """The body of ``PUT /routing``, strictly typed: the same numbers the OpenAPI schema documents."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    ratios: Optional[list[list[float]]] = None
    pairs: Optional[dict[str, list[float]]] = None


class RequestError(ValueError):
    """A request the controller refuses; nothing was changed. ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class EffectiveRouting:
    """What is installed: ratios over the candidates, plus per-pair backup paths after failures."""

    ratios: np.ndarray                                        # (P, K) after masking failed paths
    backup: dict[int, tuple[int, ...]] = field(default_factory=dict)  # pair -> links, carries all its traffic
    unroutable: list[int] = field(default_factory=list)       # pairs with no surviving path at all


@dataclass
class Counter:
    time: float
    value: float


class ControllerState:
    """Routing and telemetry of one managed network."""

    def __init__(self, plan: FabricPlan, decision: RoutingDecision, *, capacity_scale: float = 1.0,
                 clock=time.monotonic) -> None:
        if not capacity_scale > 0:
            raise ValueError(f"capacity_scale must be positive, got {capacity_scale!r}")
        self.plan = plan
        self.pathset: PathSet = plan.pathset
        self.decision = decision
        self.capacity_scale = capacity_scale
        self.clock = clock
        topo = plan.topology
        self.link_up = np.ones(topo.num_links, dtype=bool)
        # latest report per neighbour-facing switch port: False once admin-down, without carrier or deleted
        self.port_live: dict[tuple[int, int], bool] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)
        # telemetry: (node, port) -> two latest tx-byte samples; pair -> two latest byte samples
        self.port_samples: dict[tuple[int, int], deque[Counter]] = {}
        self.pair_samples: dict[int, deque[Counter]] = {}
        self.version = 0
        self.requested = self._decide()
        self.effective = self._effective(self.requested)

    # ------------------------------------------------------------------ routing
    def view(self) -> NetworkView:
        return NetworkView(self.pathset, self.link_up.copy(), self.link_utilization(), self.pair_rates())

    def _decide(self) -> np.ndarray:
        try:
            return check_ratios(self.pathset, self.decision.decide(self.view()))
        except RoutingError as error:
            raise RuntimeError(f"routing decision {self.decision.name!r} gave invalid ratios: {error}") from error

    def parse_routing(self, body: Any) -> np.ndarray:
        """Ratios from an API body: ``{"ratios": [[...] per pair]}`` (all pairs) or
        ``{"pairs": {"A->B": [...], ...}}`` (some pairs, the rest unchanged). Numbers only (no
        strings, booleans, NaN or infinities), no other fields, each pair once. Raises RequestError."""
        try:
            request = RoutingRequest.model_validate(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise RequestError(f"{where}: {first['msg']} (send {{'ratios': [[...] per pair]}} or "
                               f"{{'pairs': {{'origin->destination': [...]}}}})") from None
        if (request.ratios is None) == (request.pairs is None):
            raise RequestError("send a JSON object with exactly one of 'ratios' (every pair) or 'pairs' (some pairs)")
        ps = self.pathset
        if request.ratios is not None:
            if len(request.ratios) != ps.num_pairs or any(len(row) != ps.k for row in request.ratios):
                shape = [len(request.ratios), *sorted({len(row) for row in request.ratios})[:1]]
                raise RequestError(f"'ratios' has shape {shape}; this network has {ps.num_pairs} pairs × {ps.k} paths")
            ratios = np.array(request.ratios, dtype=np.float64)
        else:
            if not request.pairs:
                raise RequestError("'pairs' must be a non-empty object mapping 'origin->destination' to ratios")
            ratios = np.array(self.requested, dtype=np.float64)
            names, given = ps.topology.node_index, {}
            for label, row in request.pairs.items():
                origin, _, destination = label.partition("->")
                key = (names.get(origin.strip()), names.get(destination.strip()))
                if None in key or key not in ps.pair_index:
                    raise RequestError(f"unknown pair {label!r}; pairs are written 'origin->destination'", 404)
                p = ps.pair_index[key]
                if p in given:
                    raise RequestError(f"pair {self.pair_label(p)} is given twice (as {given[p]!r} and {label!r})")
                given[p] = label
                count = len(ps.paths[p])
                if len(row) != count:
                    raise RequestError(f"pair {label!r} has {count} candidate paths; got {len(row)} ratios")
                ratios[p] = 0.0
                ratios[p, :count] = row
        try:
            return check_ratios(ps, ratios)
        except RoutingError as error:
            raise RequestError(str(error)) from None

    def set_decision(self, decision: RoutingDecision) -> EffectiveRouting:
        """Adopt a new decision; returns the routing to install. State changes only if it is valid."""
        previous = self.decision
        self.decision = decision
        try:
            requested = self._decide()
        except RuntimeError:
            self.decision = previous
            raise
        self.requested = requested
        self.version += 1
        self.effective = self._effective(requested)
        self._event("routing", source=decision.name, version=self.version)
        return self.effective

    def set_ratios(self, ratios: np.ndarray, source: str = "api") -> EffectiveRouting:
        return self.set_decision(FixedRatios(ratios, source))

    def _effective(self, requested: np.ndarray) -> EffectiveRouting:
        """Mask paths over failed links; a pair left with none gets a backup shortest path."""
        alive = self._slots_over(np.flatnonzero(~self.link_up)) == 0
        alive &= self.pathset.mask
        ratios = np.where(alive, requested, 0.0)
        totals = ratios.sum(axis=1)
        # A pair whose chosen paths all failed falls back to its surviving candidates equally.
        stranded = totals <= 1e-12
        ratios[stranded] = alive[stranded].astype(np.float64)
        totals = ratios.sum(axis=1)
        routing = EffectiveRouting(np.divide(ratios, totals[:, None], out=np.zeros_like(ratios),
                                             where=totals[:, None] > 0))
        for p in np.flatnonzero(totals == 0).tolist():
            backup = self._backup_path(p)
            if backup is None:
                routing.unroutable.append(p)
            else:
                routing.backup[p] = backup
        return routing

    def _backup_path(self, pair: int) -> tuple[int, ...] | None:
        topo = self.plan.topology
        graph = nx.DiGraph()
        graph.add_nodes_from(range(topo.num_nodes))
        for l in np.flatnonzero(self.link_up).tolist():
            graph.add_edge(int(topo.link_src[l]), int(topo.link_dst[l]), link=l)
        origin, destination = (int(x) for x in self.pathset.pairs[pair])
        try:
            nodes = nx.shortest_path(graph, origin, destination)
        except nx.NetworkXNoPath:
            return None
        return tuple(graph.edges[u, v]["link"] for u, v in zip(nodes, nodes[1:]))

    def pairs_using(self, links: list[int]) -> list[int]:
        """Pairs whose installed routing sends traffic over any of ``links``."""
        routing = self.effective
        used = set(np.flatnonzero(((self._slots_over(links) > 0) & (routing.ratios > 0)).any(axis=1)).tolist())
        used.update(p for p, path in routing.backup.items() if set(path) & set(links))
        return sorted(used)

    def _slots_over(self, links) -> np.ndarray:
        """(P, K): how many of ``links`` each candidate path crosses (one sparse product, no path walks)."""
        ps = self.pathset
        hits = np.zeros(self.plan.topology.num_links)
        hits[np.asarray(links, dtype=np.int64)] = 1.0
        return (hits @ ps.incidence).reshape(ps.num_pairs, ps.k)

    def set_link_status(self, links: list[int], up: bool) -> tuple[EffectiveRouting, list[int]] | None:
        """Mark links up or down. Returns the new routing and the pairs it moves, or None when nothing changed."""
        links = [l for l in links if self.link_up[l] != up]
        if not links:
            return None
        affected = self.pairs_using(links) if not up else []
        self.link_up[links] = up
        self.effective = self._effective(self.requested)
        names = [self.link_label(l) for l in links]
        self._event("link_up" if up else "link_down", links=names,
                    rerouted_pairs=[self.pair_label(p) for p in affected],
                    unroutable_pairs=[self.pair_label(p) for p in self.effective.unroutable])
        return self.effective, affected

    def record_port_status(self, node: int, port: int, live: bool) -> None:
        """Remember what a switch last said about one of its ports (ports not facing a neighbour are ignored)."""
        if (node, port) in self.plan.port_cable_links:
            self.port_live[(node, port)] = bool(live)

    def links_seen_up(self) -> np.ndarray:
        """Per directed link: up unless a port at either end of its cable was last reported down."""
        up = np.ones_like(self.link_up)
        for port, live in self.port_live.items():
            if not live:
                up[list(self.plan.port_cable_links[port])] = False
        return up

    def sync_links(self) -> tuple[EffectiveRouting, list[int] | None] | None:
        """Bring link status in line with the latest port reports.

        Port reports of one cable going down arrive as several messages from both ends (admin
        state, then carrier), and their handlers may run in any order: deciding from the latest
        report of every port, not from the message at hand, makes the outcome independent of
        that order. Returns the routing to install and the pairs whose groups change (None:
        all of them, after a link came back), or None when nothing changed.
        """
        seen = self.links_seen_up()
        went_down = np.flatnonzero(self.link_up & ~seen).tolist()
        came_up = np.flatnonzero(~self.link_up & seen).tolist()
        if not went_down and not came_up:
            return None
        pairs: list[int] | None = []
        if went_down:
            _, affected = self.set_link_status(went_down, up=False)
            pairs = affected
        if came_up:
            self.set_link_status(came_up, up=True)
            pairs = None  # a restored link may return every pair to its request
        return self.effective, pairs

    # ------------------------------------------------------------------ telemetry
    def record_port(self, node: int, port: int, tx_bytes: float, at: float | None = None) -> None:
        self._record(self.port_samples, (node, port), tx_bytes, at)

    def record_pair(self, pair: int, byte_count: float, at: float | None = None) -> None:
        self._record(self.pair_samples, pair, byte_count, at)

    def _record(self, table: dict, key, value: float, at: float | None) -> None:
        samples = table.setdefault(key, deque(maxlen=2))
        if samples and value < samples[-1].value:  # counters reset (switch reconnected): restart the series
            samples.clear()
        samples.append(Counter(self.clock() if at is None else at, float(value)))

    @staticmethod
    def _rate(samples: deque[Counter] | None) -> float | None:
        if not samples or len(samples) < 2 or samples[1].time <= samples[0].time:
            return None
        return 8.0 * (samples[1].value - samples[0].value) / (samples[1].time - samples[0].time)

    def link_utilization(self) -> np.ndarray | None:
        """Per link: bits/s sent in the last polling interval ÷ emulated capacity (nan where unknown)."""
        if not self.port_samples:
            return None
        topo = self.plan.topology
        rates = [self._rate(self.port_samples.get((int(u), int(p)))) for u, p in zip(topo.link_src, self.plan.link_port)]
        rates = np.array([np.nan if r is None else r for r in rates])
        return rates / (topo.capacities * self.capacity_scale)

    def pair_sample_time(self) -> float | None:
        """When the latest per-pair counter sample was taken (None before the first)."""
        return max((samples[-1].time for samples in self.pair_samples.values() if samples), default=None)

    def pair_rates(self) -> np.ndarray | None:
        """Measured traffic matrix: bits/s per pair entering the network in the last interval."""
        if not self.pair_samples:
            return None
        rates = [self._rate(self.pair_samples.get(p)) for p in range(self.pathset.num_pairs)]
        return np.array([np.nan if r is None else r for r in rates])

    def counters(self) -> dict[str, Any]:
        """Cumulative counters with their sample times, for callers that average over their own window."""
        topo = self.plan.topology
        links = []
        for l, (u, p) in enumerate(zip(topo.link_src.tolist(), self.plan.link_port.tolist())):
            samples = self.port_samples.get((u, p))
            links.append(None if not samples else {"time": samples[-1].time, "tx_bytes": samples[-1].value})
        pairs = []
        for p in range(self.pathset.num_pairs):
            samples = self.pair_samples.get(p)
            pairs.append(None if not samples else {"time": samples[-1].time, "bytes": samples[-1].value})
        return {"links": links, "pairs": pairs}

    # ------------------------------------------------------------------ reporting
    def link_label(self, link: int) -> str:
        topo = self.plan.topology
        return f"{topo.node_names[topo.link_src[link]]}->{topo.node_names[topo.link_dst[link]]}"

    def pair_label(self, pair: int) -> str:
        o, d = self.pathset.pairs[pair]
        names = self.plan.topology.node_names
        return f"{names[o]}->{names[d]}"

    def _event(self, kind: str, **details) -> None:
        self.events.append({"time": time.time(), "kind": kind, **details})

    def note(self, kind: str, **details) -> None:
        """Record an event seen by the OpenFlow side (switch up/down, mismatches)."""
        self._event(kind, **details)

    def routing_report(self) -> dict[str, Any]:
        ps = self.pathset
        return {
            "version": self.version,
            "source": self.decision.name,
            "requested": np.round(self.requested, 9).tolist(),
            "installed": np.round(self.effective.ratios, 9).tolist(),
            "backup_paths": {self.pair_label(p): [self.link_label(l) for l in links]
                             for p, links in self.effective.backup.items()},
            "unroutable_pairs": [self.pair_label(p) for p in self.effective.unroutable],
            "links_down": [self.link_label(l) for l in np.flatnonzero(~self.link_up).tolist()],
            "pairs": [self.pair_label(p) for p in range(ps.num_pairs)],
        }
