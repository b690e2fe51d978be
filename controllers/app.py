"""The OpenFlow 1.3 traffic-engineering app (Ryu API, run on os-ken).

Turns :class:`~controllers.state.ControllerState` decisions into switch state
(see :mod:`controllers.fabric` for the forwarding scheme), polls counters, reacts to
switches and links going away and coming back, and serves the HTTP API
(:mod:`controllers.api`). Started by :func:`controllers.main.run_controller`, which
sets :data:`SETTINGS` before os-ken instantiates the app.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER, HANDSHAKE_DISPATCHER, MAIN_DISPATCHER,
                                       set_ev_cls)
from os_ken.lib import hub
from os_ken.lib.packet import arp, ethernet, ether_types, packet
from os_ken.ofproto import ofproto_v1_3

from .fabric import HOST_PORT, FabricPlan, dpid_of, host_ip, host_mac
from .state import ControllerState, EffectiveRouting, RequestError

if TYPE_CHECKING:
    from .runtime import PolicyRuntime

LOG = logging.getLogger("rlte.controller")

PRIORITY_TRANSIT = 300
PRIORITY_INGRESS = 200
PRIORITY_ARP = 100
INGRESS_COOKIE = 1 << 32     # ingress rule of pair p has cookie INGRESS_COOKIE | p
COOKIE_KIND_MASK = 0xFFFFFFFF00000000
BARRIER_TIMEOUT_S = 5.0      # a switch that has not confirmed by then is reported unconfirmed
ROUTING_LOCK_TIMEOUT_S = 2.0  # an API write waits this long for another routing change, then gets 503
# a reconnecting switch or a link change waits longer: the holder gives the lock back within
# two barrier timeouts whatever the switches do
BACKGROUND_LOCK_TIMEOUT_S = 4 * BARRIER_TIMEOUT_S
HANDSHAKE_TIMEOUT_S = 10.0    # a connection that has not said which switch it is by then is closed


@dataclass
class Pending:
    """A request a switch must answer (barrier, last stats reply): set when it does, or failed
    when the switch disconnects first. os-ken's native hub.Event ignores its timeout, so these
    are threading events with real deadlines."""

    node: int
    answered: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


@dataclass
class Settings:
    plan: FabricPlan
    state: ControllerState
    poll_interval_s: float
    api_host: str
    api_port: int
    token: str
    runtime: "PolicyRuntime | None" = None  # the learned policy's runtime (controllers.runtime)


SETTINGS: Settings | None = None


class TEController(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if SETTINGS is None:
            raise RuntimeError("start the controller with controllers.main.run_controller (settings missing)")
        self.settings = SETTINGS
        self.plan = SETTINGS.plan
        self.state = SETTINGS.state
        self.datapaths: dict[int, object] = {}   # node -> datapath
        self.ready: set[int] = set()             # nodes whose state is installed
        self.waiting: dict[int, Pending] = {}    # xid -> what the barrier or last stats reply answers
        self.backup_installed: dict[int, tuple[int, ...]] = {}
        self.host_of_ip = {host_ip(n): n for n in range(self.plan.topology.num_nodes)}  # for ARP replies
        self.unknown_dpids: set[int] = set()     # logged once each
        self.failed_handshakes: set[str] = set()  # peer addresses, logged once each
        # One routing change at a time: installs wait on barriers, and two interleaved
        # installs could leave a switch with the older routing's groups. Taken with a deadline.
        self.routing_lock = threading.Lock()
        self.routing_since: float | None = None  # when the holder took it
        self.started = time.time()
        self.threads = [hub.spawn(self._poll_loop)]
        self.runtime = SETTINGS.runtime
        if self.runtime is not None:  # its own real thread: inference deadlines block nobody else
            self.runtime.start(self.install_ratios)
        from .api import serve  # local: the API module imports this one for type names
        self.threads.append(hub.spawn(serve, self, SETTINGS.api_host, SETTINGS.api_port))

    # ------------------------------------------------------------------ switches
    @set_ev_cls(ofp_event.EventOFPStateChange, HANDSHAKE_DISPATCHER)
    def _on_connect(self, ev) -> None:
        """Whatever connects to the OpenFlow port must say which switch it is in time: garbage,
        a wrong protocol or a silent peer would otherwise hold its connection open forever."""
        timer = threading.Timer(HANDSHAKE_TIMEOUT_S, self._check_handshake, args=(ev.datapath,))
        timer.daemon = True
        timer.start()

    def _check_handshake(self, datapath) -> None:
        if datapath.id is not None or datapath.state == DEAD_DISPATCHER:
            return
        peer = str(datapath.address[0]) if datapath.address else "?"
        if peer not in self.failed_handshakes:
            self.failed_handshakes.add(peer)
            self.state.note("bad_openflow_peer", address=peer)
            LOG.warning("OpenFlow port: %s sent no valid handshake within %.0f s (garbage, another protocol or "
                        "silence); closing its connection (logged once per address)", peer, HANDSHAKE_TIMEOUT_S)
        _hang_up(datapath)

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev) -> None:
        datapath = ev.msg.datapath
        node = self.plan.node_of_dpid(datapath.id)
        if node is None:  # not one of ours: log it once, and hang up rather than keep it open
            if datapath.id not in self.unknown_dpids:
                self.unknown_dpids.add(datapath.id)
                self.state.note("unknown_switch", dpid=datapath.id)
                LOG.warning("switch with dpid %s from %s is not part of %s; closing its connection (logged once "
                            "per dpid)", datapath.id, datapath.address, self.plan.topology.name)
            _hang_up(datapath)
            return
        self.datapaths[node] = datapath
        parser = datapath.ofproto_parser
        datapath.send_msg(parser.OFPPortDescStatsRequest(datapath, 0))
        hub.spawn(self._install_switch, node, datapath)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _on_port_desc(self, ev) -> None:
        node = self.plan.node_of_dpid(ev.msg.datapath.id)
        if node is None:
            return
        present = {p.port_no for p in ev.msg.body if p.port_no < ev.msg.datapath.ofproto.OFPP_MAX}
        expected = self.plan.expected_ports(node)
        if present != expected:
            self.state.note("port_mismatch", switch=self.plan.topology.node_names[node],
                            missing=sorted(expected - present), unexpected=sorted(present - expected))
            LOG.warning("switch %s: ports %s, expected %s", self.plan.topology.node_names[node],
                        sorted(present), sorted(expected))
        ofp = ev.msg.datapath.ofproto
        for port in ev.msg.body:
            self.state.record_port_status(node, port.port_no, _port_live(ofp, port))
        hub.spawn(self._sync_links)  # it waits for barriers: not in the event loop

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _on_disconnect(self, ev) -> None:
        datapath = ev.datapath
        node = self.plan.node_of_dpid(datapath.id) if datapath.id is not None else None
        if node is not None and self.datapaths.get(node) is datapath:
            del self.datapaths[node]
            self.ready.discard(node)
            self.state.note("switch_disconnected", switch=self.plan.topology.node_names[node])
            for xid, pending in list(self.waiting.items()):  # nothing it owed will come: release the waits
                if pending.node == node:
                    pending.failed = True
                    pending.answered.set()
                    self.waiting.pop(xid, None)

    @contextmanager
    def routing_change(self, timeout: float, who: str) -> Iterator[None]:
        """The routing lock, waited for ``timeout`` seconds at most: an API write is then refused
        with 503 (nothing changed), a background change is logged and dropped."""
        if not self.routing_lock.acquire(timeout=timeout):
            held = time.monotonic() - self.routing_since if self.routing_since is not None else 0.0
            raise RequestError(f"another routing change is being installed (for {held:.1f} s); {who} was not "
                               f"applied: try again", 503)
        self.routing_since = time.monotonic()
        try:
            yield
        finally:
            self.routing_since = None
            self.routing_lock.release()

    def _install_switch(self, node: int, datapath) -> None:
        """Everything a (re)connecting switch needs, from scratch: rules, then groups, then ingress."""
        try:
            with self.routing_change(BACKGROUND_LOCK_TIMEOUT_S, "installing a connecting switch"):
                self._install_switch_locked(node, datapath)
        except RequestError as busy:
            LOG.error("switch %s not installed: %s", self.plan.topology.node_names[node], busy)

    def _install_switch_locked(self, node: int, datapath) -> None:
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        datapath.send_msg(parser.OFPFlowMod(datapath, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
                                            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        datapath.send_msg(parser.OFPGroupMod(datapath, ofp.OFPGC_DELETE, ofp.OFPGT_SELECT, ofp.OFPG_ALL))
        self._add_flow(datapath, 0, parser.OFPMatch(), [])  # table miss: drop (never flood a looped WAN)
        self._add_flow(datapath, PRIORITY_ARP, parser.OFPMatch(eth_type=ether_types.ETH_TYPE_ARP),
                       [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)])
        for rule in self.plan.transit_rules_by_node[node]:
            self._install_transit(datapath, rule)
        for pair, links in self.state.effective.backup.items():
            for rule in self.plan.transit_rules(links, self.plan.backup_tag(pair)):
                if rule.node == node:
                    self._install_transit(datapath, rule)
        origin_pairs = [p for p, (o, _) in enumerate(self.plan.pathset.pairs.tolist()) if o == node]
        self._barrier([node])  # paths before the groups that use them
        for pair in origin_pairs:
            self._send_group(datapath, pair, self.state.effective, ofp.OFPGC_ADD)
        for pair in origin_pairs:
            destination = int(self.plan.pathset.pairs[pair, 1])
            match = parser.OFPMatch(in_port=HOST_PORT, eth_type=ether_types.ETH_TYPE_IP, ipv4_dst=host_ip(destination))
            self._add_flow(datapath, PRIORITY_INGRESS, match, [parser.OFPActionGroup(self.plan.group_id(pair))],
                           cookie=INGRESS_COOKIE | pair)
        if self._barrier([node]):
            self.ready.add(node)
            self.state.note("switch_ready", switch=self.plan.topology.node_names[node])
            LOG.info("switch %s ready", self.plan.topology.node_names[node])

    def _install_transit(self, datapath, rule) -> None:
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        actions = ([parser.OFPActionPopVlan()] if rule.pop else []) + [parser.OFPActionOutput(rule.out_port)]
        self._add_flow(datapath, PRIORITY_TRANSIT, parser.OFPMatch(vlan_vid=(ofp.OFPVID_PRESENT | rule.tag)), actions)

    def _add_flow(self, datapath, priority: int, match, actions, cookie: int = 0) -> None:
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        instructions = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)] if actions else []
        datapath.send_msg(parser.OFPFlowMod(datapath, cookie=cookie, priority=priority, match=match,
                                            instructions=instructions))

    def _send_group(self, datapath, pair: int, routing: EffectiveRouting, command: int) -> None:
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        backup = routing.backup.get(pair)
        ratios = routing.ratios[pair]
        if backup is not None:
            ratios = [0.0] * len(ratios) + [1.0]
        elif pair in routing.unroutable:
            ratios = None
        buckets = []
        if ratios is not None:
            for bucket in self.plan.buckets(pair, ratios, backup):
                actions = [parser.OFPActionPushVlan(ether_types.ETH_TYPE_8021Q),
                           parser.OFPActionSetField(vlan_vid=(ofp.OFPVID_PRESENT | bucket.tag)),
                           parser.OFPActionOutput(bucket.out_port)]
                buckets.append(parser.OFPBucket(weight=bucket.weight, watch_port=ofp.OFPP_ANY,
                                                watch_group=ofp.OFPG_ANY, actions=actions))
        datapath.send_msg(parser.OFPGroupMod(datapath, command, ofp.OFPGT_SELECT, self.plan.group_id(pair), buckets))

    # ------------------------------------------------------------------ routing updates
    def set_routing(self, body) -> tuple[EffectiveRouting, dict]:
        """Validate an API routing body, adopt it and install it; returns the routing and the install report.

        Raises :class:`~controllers.state.RequestError` (nothing changed) for a bad body. Parsing
        happens under the lock too: a partial update is read against the routing it replaces.
        """
        with self.routing_change(ROUTING_LOCK_TIMEOUT_S, "this request"):
            routing = self.state.set_ratios(self.state.parse_routing(body), "api")
            return routing, self._apply(routing)

    def install_ratios(self, ratios: np.ndarray, source: str, pairs: list[int] | None = None) -> dict:
        """Adopt ``ratios`` (a policy's decision or its fallback) and install the groups of
        ``pairs`` (None: every pair) as an API write does: the routing lock with a deadline
        (RequestError 503 when busy: nothing changed), then barriers."""
        with self.routing_change(ROUTING_LOCK_TIMEOUT_S, f"the policy decision ({source})"):
            routing = self.state.set_ratios(ratios, source)
            return {"version": self.state.version, **self._apply(routing, pairs)}

    def _apply(self, routing: EffectiveRouting, pairs: list[int] | None = None) -> dict:
        """Install ``routing`` for ``pairs`` (all by default): backup paths first, then the groups.

        Returns when every switch confirmed (barrier) or the timeout passed.
        """
        started = time.perf_counter()
        pairs = list(range(self.plan.pathset.num_pairs)) if pairs is None else pairs
        new_backups = {p: links for p, links in routing.backup.items() if self.backup_installed.get(p) != links}
        touched = set()
        for pair, links in new_backups.items():
            for rule in self.plan.transit_rules(links, self.plan.backup_tag(pair)):
                datapath = self.datapaths.get(rule.node)
                if datapath is not None:
                    self._install_transit(datapath, rule)
                    touched.add(rule.node)
            self.backup_installed[pair] = links
        confirmed = self._barrier(sorted(touched)) if touched else True
        origins: set[int] = set()
        for pair in sorted(set(pairs) | set(new_backups)):
            origin = int(self.plan.pathset.pairs[pair, 0])
            datapath = self.datapaths.get(origin)
            if datapath is not None and origin in self.ready:
                self._send_group(datapath, pair, routing, datapath.ofproto.OFPGC_MODIFY)
                origins.add(origin)
        confirmed = self._barrier(sorted(origins)) and confirmed
        return {"switches_updated": len(origins), "confirmed": confirmed,
                "latency_ms": 1e3 * (time.perf_counter() - started)}

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _on_port_status(self, ev) -> None:
        msg = ev.msg
        node = self.plan.node_of_dpid(msg.datapath.id)
        if node is None:
            return
        live = msg.reason != msg.datapath.ofproto.OFPPR_DELETE and _port_live(msg.datapath.ofproto, msg.desc)
        self.state.record_port_status(node, msg.desc.port_no, live)  # in arrival order, here in the event loop
        hub.spawn(self._sync_links)  # it waits for barriers: not in the event loop

    def _sync_links(self) -> None:
        """Reroute after links went down or came back, judged from every port's latest report."""
        try:
            with self.routing_change(BACKGROUND_LOCK_TIMEOUT_S, "a link change"):
                change = self.state.sync_links()
                if change is None:
                    return
                routing, pairs = change
                result = self._apply(routing, pairs)
        except RequestError as busy:
            LOG.error("links not resynchronised: %s", busy)
            return
        LOG.info("links down now %s: %s pairs updated in %.1f ms",
                 [self.state.link_label(l) for l in np.flatnonzero(~self.state.link_up).tolist()],
                 "all" if pairs is None else len(pairs), result["latency_ms"])

    # ------------------------------------------------------------------ barriers and telemetry
    def _barrier(self, nodes: list[int], timeout: float = BARRIER_TIMEOUT_S) -> bool:
        """True when every switch of ``nodes`` confirmed what was sent before, within ``timeout``."""
        expected = []
        for node in nodes:
            datapath = self.datapaths.get(node)
            if datapath is None:
                continue
            expected.append(self._expect(node, datapath, datapath.ofproto_parser.OFPBarrierRequest(datapath)))
        return self._wait(expected, timeout)

    def _expect(self, node: int, datapath, request) -> tuple[int, Pending]:
        datapath.set_xid(request)
        pending = Pending(node)
        self.waiting[request.xid] = pending
        datapath.send_msg(request)
        return request.xid, pending

    def _wait(self, expected: list[tuple[int, Pending]], timeout: float) -> bool:
        """Whether every expected answer came within ``timeout`` (a disconnect fails its own at once)."""
        deadline, answered = time.monotonic() + timeout, True
        for xid, pending in expected:
            if not pending.answered.wait(max(0.0, deadline - time.monotonic())) or pending.failed:
                answered = False
                self.waiting.pop(xid, None)  # a late answer finds nobody waiting
        return answered

    def _done(self, xid: int) -> None:
        pending = self.waiting.pop(xid, None)
        if pending is not None:
            pending.answered.set()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev) -> None:
        self._done(ev.msg.xid)

    def poll(self, wait: bool = False, timeout: float = 2.0) -> bool:
        """Ask every switch for port and ingress-rule counters; with ``wait``, until all answered."""
        expected = []
        for node, datapath in list(self.datapaths.items()):
            ofp, parser = datapath.ofproto, datapath.ofproto_parser
            expected.append(self._expect(node, datapath, parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY)))
            expected.append(self._expect(node, datapath, parser.OFPFlowStatsRequest(
                datapath, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, INGRESS_COOKIE, COOKIE_KIND_MASK, parser.OFPMatch())))
        if not wait:  # the replies update the state when they come; nobody waits for them
            for xid, _ in expected:
                self.waiting.pop(xid, None)
            return True
        return self._wait(expected, timeout)

    def _poll_loop(self) -> None:
        while True:
            hub.sleep(self.settings.poll_interval_s)
            if self.routing_lock.locked():  # the switches' replies would queue behind it: poll next time
                continue
            try:
                self.poll()
            except Exception:  # a switch vanishing mid-poll must not stop telemetry
                LOG.exception("polling failed")

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    def _on_port_stats(self, ev) -> None:
        node = self.plan.node_of_dpid(ev.msg.datapath.id)
        now = time.monotonic()
        for stat in ev.msg.body:
            if node is not None and (node, stat.port_no) in self.plan.port_link:
                self.state.record_port(node, stat.port_no, stat.tx_bytes, now)
        if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self._done(ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _on_flow_stats(self, ev) -> None:
        now = time.monotonic()
        for stat in ev.msg.body:
            pair = stat.cookie & ~COOKIE_KIND_MASK
            if stat.cookie & COOKIE_KIND_MASK == INGRESS_COOKIE and pair < self.plan.pathset.num_pairs:
                self.state.record_pair(pair, stat.byte_count, now)
        if not ev.msg.flags & ev.msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            self._done(ev.msg.xid)

    # ------------------------------------------------------------------ ARP (hosts without static entries)
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _on_packet_in(self, ev) -> None:
        msg = ev.msg
        datapath = msg.datapath
        pkt = packet.Packet(msg.data)
        request = pkt.get_protocol(arp.arp)
        if request is None or request.opcode != arp.ARP_REQUEST:
            return
        target = self.host_of_ip.get(request.dst_ip)
        if target is None:
            return
        reply = packet.Packet()
        reply.add_protocol(ethernet.ethernet(dst=request.src_mac, src=host_mac(target),
                                             ethertype=ether_types.ETH_TYPE_ARP))
        reply.add_protocol(arp.arp(opcode=arp.ARP_REPLY, src_mac=host_mac(target), src_ip=request.dst_ip,
                                   dst_mac=request.src_mac, dst_ip=request.src_ip))
        reply.serialize()
        ofp, parser = datapath.ofproto, datapath.ofproto_parser
        datapath.send_msg(parser.OFPPacketOut(datapath, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
                                              actions=[parser.OFPActionOutput(msg.match["in_port"])],
                                              data=reply.data))

    # ------------------------------------------------------------------ for the API
    def health(self) -> dict:
        names = self.plan.topology.node_names
        return {
            "status": "ok" if len(self.ready) == self.plan.topology.num_nodes else "degraded",
            "switches_expected": self.plan.topology.num_nodes,
            "switches_ready": sorted(names[n] for n in self.ready),
            "switches_missing": sorted(names[n] for n in set(range(len(names))) - self.ready),
            "links_down": [self.state.link_label(l) for l, up in enumerate(self.state.link_up) if not up],
            "uptime_s": round(time.time() - self.started, 3),
            "dpids": {names[n]: dpid_of(n) for n in range(len(names))},
        }


def _hang_up(datapath) -> None:
    """Close a switch connection now (os-ken's close() alone waits for its reader's next timeout)."""
    datapath.close()
    try:
        datapath.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _port_live(ofp, port) -> bool:
    """A port carries traffic unless it is administratively down or has no carrier."""
    return not (port.config & ofp.OFPPC_PORT_DOWN or port.state & ofp.OFPPS_LINK_DOWN)
