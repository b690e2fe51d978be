"""The OpenFlow 1.3 traffic-engineering app (Ryu API, run on os-ken).

Turns :class:`~controllers.state.ControllerState` decisions into switch state
(see :mod:`controllers.fabric` for the forwarding scheme), polls counters, reacts to
switches and links going away and coming back, and serves the HTTP API
(:mod:`controllers.api`). Started by :func:`controllers.main.run_controller`, which
sets :data:`SETTINGS` before os-ken instantiates the app.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.lib import hub
from os_ken.lib.packet import arp, ethernet, ether_types, packet
from os_ken.ofproto import ofproto_v1_3

from .fabric import HOST_PORT, FabricPlan, dpid_of, host_ip, host_mac
from .state import ControllerState, EffectiveRouting

LOG = logging.getLogger("rlte.controller")

PRIORITY_TRANSIT = 300
PRIORITY_INGRESS = 200
PRIORITY_ARP = 100
INGRESS_COOKIE = 1 << 32     # ingress rule of pair p has cookie INGRESS_COOKIE | p
COOKIE_KIND_MASK = 0xFFFFFFFF00000000
BARRIER_TIMEOUT_S = 5.0


@dataclass
class Settings:
    plan: FabricPlan
    state: ControllerState
    poll_interval_s: float
    api_host: str
    api_port: int
    token: str


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
        self.waiting: dict[int, hub.Event] = {}  # xid -> event set by the barrier or last stats reply
        self.backup_installed: dict[int, tuple[int, ...]] = {}
        self.host_of_ip = {host_ip(n): n for n in range(self.plan.topology.num_nodes)}  # for ARP replies
        # One routing change at a time: installs wait on barriers (they yield), and two
        # interleaved installs could leave a switch with the older routing's groups.
        self.routing_lock = hub.Semaphore(1)
        self.started = time.time()
        self.threads = [hub.spawn(self._poll_loop)]
        from .api import serve  # local: the API module imports this one for type names
        self.threads.append(hub.spawn(serve, self, SETTINGS.api_host, SETTINGS.api_port))

    # ------------------------------------------------------------------ switches
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _on_features(self, ev) -> None:
        datapath = ev.msg.datapath
        node = self.plan.node_of_dpid(datapath.id)
        if node is None:
            self.state.note("unknown_switch", dpid=datapath.id)
            LOG.warning("switch with dpid %s is not part of %s; ignoring it", datapath.id, self.plan.topology.name)
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

    def _install_switch(self, node: int, datapath) -> None:
        """Everything a (re)connecting switch needs, from scratch: rules, then groups, then ingress."""
        with self.routing_lock:
            self._install_switch_locked(node, datapath)

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
        with self.routing_lock:
            routing = self.state.set_ratios(self.state.parse_routing(body), "api")
            return routing, self._apply(routing)

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
        with self.routing_lock:
            change = self.state.sync_links()
            if change is None:
                return
            routing, pairs = change
            result = self._apply(routing, pairs)
        LOG.info("links down now %s: %s pairs updated in %.1f ms",
                 [self.state.link_label(l) for l in np.flatnonzero(~self.state.link_up).tolist()],
                 "all" if pairs is None else len(pairs), result["latency_ms"])

    # ------------------------------------------------------------------ barriers and telemetry
    def _barrier(self, nodes: list[int], timeout: float = BARRIER_TIMEOUT_S) -> bool:
        events = []
        for node in nodes:
            datapath = self.datapaths.get(node)
            if datapath is None:
                continue
            request = datapath.ofproto_parser.OFPBarrierRequest(datapath)
            events.append(self._expect(datapath, request))
        return self._wait(events, timeout)

    def _expect(self, datapath, request) -> hub.Event:
        datapath.set_xid(request)
        event = hub.Event()
        self.waiting[request.xid] = event
        datapath.send_msg(request)
        return event

    def _wait(self, events: list[hub.Event], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for event in events:
            if not event.wait(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _done(self, xid: int) -> None:
        event = self.waiting.pop(xid, None)
        if event is not None:
            event.set()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _on_barrier(self, ev) -> None:
        self._done(ev.msg.xid)

    def poll(self, wait: bool = False, timeout: float = 2.0) -> bool:
        """Ask every switch for port and ingress-rule counters; with ``wait``, until all answered."""
        events = []
        for node, datapath in list(self.datapaths.items()):
            ofp, parser = datapath.ofproto, datapath.ofproto_parser
            events.append(self._expect(datapath, parser.OFPPortStatsRequest(datapath, 0, ofp.OFPP_ANY)))
            events.append(self._expect(datapath, parser.OFPFlowStatsRequest(
                datapath, 0, 0, ofp.OFPP_ANY, ofp.OFPG_ANY, INGRESS_COOKIE, COOKIE_KIND_MASK, parser.OFPMatch())))
        return self._wait(events, timeout) if wait else True

    def _poll_loop(self) -> None:
        while True:
            hub.sleep(self.settings.poll_interval_s)
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


def _port_live(ofp, port) -> bool:
    """A port carries traffic unless it is administratively down or has no carrier."""
    return not (port.config & ofp.OFPPC_PORT_DOWN or port.state & ofp.OFPPS_LINK_DOWN)
