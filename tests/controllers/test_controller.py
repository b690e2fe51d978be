"""The controller's logic without switches: forwarding plan, routing state, failover, telemetry, HTTP API."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.api import OPENAPI, Api
from controllers.decision import EqualSplit, FirstPath
from controllers.fabric import HOST_PORT, FabricError, FabricPlan, source_ip
from controllers.state import ControllerState, RequestError
from topologies import (Node, Topology, TopologyError, bidirectional_links, equal_cost_paths, k_shortest_paths,
                        lift_ratios, load_topology, pathset_from_dict, pathset_to_dict, union_pathsets)

from tests.networks import GBPS, diamond, ring


def walk(plan: FabricPlan, pair: int, bucket) -> list[str]:
    """Follow the installed rules from the origin's bucket to the host port; node names visited."""
    topo = plan.topology
    neighbor_at = {(a, port): b for (a, b), port in plan.neighbor_ports.items()}
    rules = {(r.node, r.tag): r for r in plan.all_transit_rules()}
    node = int(plan.pathset.pairs[pair, 0])
    visited, port = [topo.node_names[node]], bucket.out_port
    for _ in range(topo.num_nodes):
        node = neighbor_at[(node, port)]
        visited.append(topo.node_names[node])
        rule = rules[(node, bucket.tag)]
        if rule.pop:
            assert rule.out_port == HOST_PORT
            return visited
        port = rule.out_port
    raise AssertionError("forwarding loop")


def test_every_bucket_forwards_along_its_path_to_the_destination_host():
    plan = FabricPlan(k_shortest_paths(load_topology("abilene"), 4))
    ps = plan.pathset
    for pair in range(ps.num_pairs):
        count = len(ps.paths[pair])
        buckets = plan.buckets(pair, np.full(count, 1.0 / count))
        assert [walk(plan, pair, b) for b in buckets] == [ps.node_path(pair, k) for k in range(count)]
    tags = [plan.tag(p, k) for p in range(ps.num_pairs) for k in range(ps.k)]
    tags += [plan.backup_tag(p) for p in range(ps.num_pairs)]
    assert len(set(tags)) == len(tags) and min(tags) >= 1 and max(tags) <= 4094


def test_ports_are_consistent_per_cable():
    plan = FabricPlan(k_shortest_paths(diamond(), 2))
    for (a, b), port in plan.neighbor_ports.items():
        assert port != HOST_PORT and (b, a) in plan.neighbor_ports
    for node in range(plan.topology.num_nodes):
        ports = [p for (a, _), p in plan.neighbor_ports.items() if a == node]
        assert sorted(ports) == list(range(2, 2 + len(ports)))
    # each directed link is measured on the port its source uses toward its destination
    for l, (u, v) in enumerate(zip(plan.topology.link_src, plan.topology.link_dst)):
        assert plan.port_link[(int(u), int(plan.link_port[l]))] == l


def test_bucket_weights_follow_ratios_and_drop_what_ovs_cannot_realize():
    plan = FabricPlan(k_shortest_paths(diamond(), 2))
    pair = plan.pathset.pair_index[(0, 3)]
    assert [b.weight for b in plan.buckets(pair, np.array([0.25, 0.75]))] == [64, 192]
    only = plan.buckets(pair, np.array([0.001, 0.999]))  # below 1/512: OVS's 256-slot table cannot hold it
    assert [b.weight for b in only] == [256] and only[0].tag == plan.tag(pair, 1)


def test_bucket_weights_sum_to_256_so_ovs_always_tables_the_group():
    """Each share rounded on its own gave [1, 128, 128] here: 257 in all, and a weight of 1 then
    needs 512 slots, so OVS left its dp_hash table for another method."""
    from envs.ovs_hashing import dp_hash_table

    edges = [("s", m, 10e6, 0.001, None) for m in "abc"] + [(m, "t", 10e6, 0.001, None) for m in "abc"]
    topology = Topology("three_ways", [Node(n) for n in "sabct"], bidirectional_links(edges))
    plan = FabricPlan(k_shortest_paths(topology, 3))
    pair = plan.pathset.pair_index[(0, 4)]
    weights = [b.weight for b in plan.buckets(pair, np.array([0.003, 0.4985, 0.4985]))]
    assert weights == [1, 128, 127] and dp_hash_table(weights) is not None
    assert [b.weight for b in plan.buckets(pair, np.zeros(3))] == [1]  # nothing to split: the first path
    with pytest.raises(ValueError, match="shares must be finite, non-negative numbers"):
        plan.buckets(pair, np.array([np.nan, 0.5, 0.5]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6).filter(lambda xs: sum(xs) > 1e-9),
       st.integers(1, 1000))
def test_apportioned_weights_stay_within_one_of_their_quota(shares, total):
    from controllers.fabric import apportion

    weights = apportion(np.array(shares), total)
    quotas = np.array(shares) / sum(shares) * total
    assert weights.sum() == total and (weights >= 0).all()
    assert np.all(np.abs(weights - quotas) < 1.0 + 1e-9)


def test_apportion_refuses_what_has_no_proportion():
    from controllers.fabric import apportion

    for bad, message in (([0.0, 0.0], "must not all be zero"), ([0.5, -0.1], "non-negative"),
                         ([np.nan, 1.0], "finite"), ([], "finite")):
        with pytest.raises(ValueError, match=message):
            apportion(np.array(bad), 256)


def test_too_many_paths_for_vlan_tags_is_refused():
    with pytest.raises(FabricError, match="need .* path tags"):
        FabricPlan(k_shortest_paths(load_topology("geant"), 8))
    with pytest.raises(FabricError, match="0..149"):
        source_ip(0, 150)


# ---------------------------------------------------------------------- routing state
def state_for(topology: Topology, k: int = 2, decision=None) -> ControllerState:
    return ControllerState(FabricPlan(k_shortest_paths(topology, k)), decision or EqualSplit(),
                           capacity_scale=1e-3)


@pytest.mark.parametrize("body, message, status", [
    (None, "body: Input should be a valid dictionary", 400),
    ({}, "exactly one of", 400),
    ({"ratios": [[1.0, 0.0]]}, "shape", 400),
    ({"ratios": "x"}, "ratios: Input should be a valid list", 400),
    ({"pairs": {"A->Z": [1.0, 0.0]}}, "unknown pair 'A->Z'", 404),
    ({"pairs": {"A->D": [0.7, 0.7]}}, "sum to 1.4", 400),
    ({"pairs": {"A->D": [1.0]}}, "has 2 candidate paths", 400),
    ({"pairs": {"A->D": [1.5, -0.5]}}, "negative", 400),
    ({"ratios": [[1.0, 0.0]], "pairs": {}}, "exactly one of", 400),
])
def test_bad_routing_requests_are_refused_and_change_nothing(body, message, status):
    state = state_for(diamond())
    before = (state.version, state.requested.copy(), state.effective.ratios.copy())
    with pytest.raises(RequestError, match=message) as caught:
        state.parse_routing(body)
    assert caught.value.status == status
    assert state.version == before[0]
    np.testing.assert_array_equal(state.requested, before[1])
    np.testing.assert_array_equal(state.effective.ratios, before[2])


def test_partial_update_changes_only_the_named_pair():
    state = state_for(diamond())
    ratios = state.parse_routing({"pairs": {"A->D": [0.25, 0.75]}})
    pair = state.pathset.pair_index[(0, 3)]
    np.testing.assert_allclose(ratios[pair], [0.25, 0.75])
    others = np.arange(state.pathset.num_pairs) != pair
    np.testing.assert_array_equal(ratios[others], state.requested[others])
    state.set_ratios(ratios)
    assert state.version == 1 and state.routing_report()["source"] == "api"


def test_link_down_moves_traffic_to_surviving_candidates_and_back():
    state = state_for(diamond())
    topo, ps = state.plan.topology, state.pathset
    pair = ps.pair_index[(0, 3)]
    a_b = [topo.link_index[(0, 1)], topo.link_index[(1, 0)]]
    routing, affected = state.set_link_status(a_b, up=False)
    assert pair in affected
    via_b = [k for k in range(2) if ps.node_path(pair, k)[1] == "B"][0]
    assert routing.ratios[pair, via_b] == 0.0 and routing.ratios[pair].sum() == pytest.approx(1.0)
    assert state.events[-1]["kind"] == "link_down" and "A->D" in state.events[-1]["rerouted_pairs"]
    assert state.set_link_status(a_b, up=False) is None  # already down: nothing to do
    routing, _ = state.set_link_status(a_b, up=True)
    np.testing.assert_allclose(routing.ratios[pair], [0.5, 0.5])


def interleavings(first: list, second: list):
    """Every merge of two sequences that keeps the order within each (one switch's messages stay in order)."""
    if not first or not second:
        yield first + second
        return
    for rest in interleavings(first[1:], second):
        yield [first[0]] + rest
    for rest in interleavings(first, second[1:]):
        yield [second[0]] + rest


def test_cable_status_follows_the_latest_report_of_both_ends_in_any_order():
    # Measured on OVS: taking a cable down yields a report of one end admin-down, a report of
    # the other end still live, then that end without carrier. Reacting to each message on its
    # own flapped the link down-up-down and could leave switches on the stale routing.
    reference = state_for(diamond())
    topo, plan = reference.plan.topology, reference.plan
    a_b = sorted([topo.link_index[(0, 1)], topo.link_index[(1, 0)]])
    expected, _ = reference.set_link_status(a_b, up=False)
    port_a, port_b = (0, plan.neighbor_ports[(0, 1)]), (1, plan.neighbor_ports[(1, 0)])
    reports_a, reports_b = [(port_a, False)], [(port_b, True), (port_b, False)]
    for order in interleavings(reports_a, reports_b):
        state = state_for(diamond())
        installs = []
        for port, live in order:
            state.record_port_status(*port, live)
            change = state.sync_links()
            if change is not None:
                installs.append(change)
        assert not state.link_up[a_b].any(), order
        assert [e["kind"] for e in state.events if e["kind"].startswith("link")] == ["link_down"], order
        np.testing.assert_array_equal(installs[-1][0].ratios, expected.ratios)
        pair = state.pathset.pair_index[(0, 3)]
        assert pair in installs[-1][1]
        # both ends live again: the link returns and every pair is reinstalled
        state.record_port_status(*port_a, True)
        assert state.sync_links() is None, "one end is still down"
        state.record_port_status(*port_b, True)
        routing, pairs = state.sync_links()
        assert state.link_up.all() and pairs is None
        np.testing.assert_allclose(routing.ratios[pair], [0.5, 0.5])


def test_pair_with_every_candidate_down_gets_a_backup_path_or_is_reported():
    state = state_for(ring(4), k=1, decision=FirstPath())
    topo, ps = state.plan.topology, state.pathset
    pair = ps.pair_index[(0, 1)]
    routing, affected = state.set_link_status([topo.link_index[(0, 1)], topo.link_index[(1, 0)]], up=False)
    assert pair in affected
    assert [topo.node_names[topo.link_dst[l]] for l in routing.backup[pair]] == ["r3", "r2", "r1"]
    # a stub cut off entirely is unroutable, and reported as such
    stub = state_for(diamond())
    d_e = [stub.plan.topology.link_index[(3, 4)], stub.plan.topology.link_index[(4, 3)]]
    routing, _ = stub.set_link_status(d_e, up=False)
    assert "A->E" in stub.routing_report()["unroutable_pairs"] and not routing.backup


def test_installed_routing_with_backup_paths_is_what_the_twin_predicts():
    from envs.backend import TwinBackend
    from envs.mininet_backend import MininetBackend

    state = state_for(ring(4), k=1, decision=FirstPath())
    topo, ps = state.plan.topology, state.pathset
    state.set_link_status([topo.link_index[(0, 1)], topo.link_index[(1, 0)]], up=False)
    backend = MininetBackend(ps)  # not started: only its view of the controller's report is used
    backend.client = type("Client", (), {"get": lambda self, path: json.loads(json.dumps(state.routing_report()))})()
    paths, ratios = backend.installed()
    pair = ps.pair_index[(0, 1)]
    backup = state.effective.backup[pair]
    assert backup in paths.paths[pair] and ratios[pair, paths.paths[pair].index(backup)] == 1.0
    demands = np.full(ps.num_pairs, 1e8)
    measured = TwinBackend(paths).run(demands, ratios)
    assert measured.delivered_bps == pytest.approx(demands.sum())  # nothing of the backup pair goes missing
    # the cut cable carries nothing; the backup's links carry the pair
    loads = measured.utilization * topo.capacities
    assert loads[topo.link_index[(0, 1)]] == 0.0
    assert all(loads[l] >= 1e8 for l in backup)
    backend.close()


def test_telemetry_rates_from_counter_samples():
    state = state_for(diamond())
    topo, plan = state.plan.topology, state.plan
    link = topo.link_index[(0, 1)]
    node, port = int(topo.link_src[link]), int(plan.link_port[link])
    assert state.link_utilization() is None
    state.record_port(node, port, 1_000, at=10.0)
    state.record_port(node, port, 1_000 + 2_500_000, at=12.0)  # 10 Mb/s for 2 s
    utilization = state.link_utilization()
    assert utilization[link] == pytest.approx(10e6 / (10 * GBPS * 1e-3))
    assert np.isnan(utilization[topo.link_index[(1, 0)]])
    state.record_port(node, port, 500, at=13.0)  # counter went backwards: switch reconnected
    assert np.isnan(state.link_utilization()[link])
    state.record_pair(0, 0, at=0.0)
    state.record_pair(0, 125_000, at=1.0)
    assert state.pair_rates()[0] == pytest.approx(1e6)


# ---------------------------------------------------------------------- HTTP API
class FakeController:
    """What the API needs from the os-ken app, without switches."""

    def __init__(self, state: ControllerState) -> None:
        self.state, self.plan = state, state.plan
        self.settings = type("S", (), {"poll_interval_s": 1.0})()
        self.applied = []

    def set_routing(self, body):
        routing = self.state.set_ratios(self.state.parse_routing(body), "api")
        self.applied.append(routing)
        return routing, {"switches_updated": 1, "confirmed": True, "latency_ms": 0.1}

    def poll(self, wait=False, timeout=2.0):
        return True

    def health(self):
        return {"status": "ok"}


def call(api: Api, method: str, path: str, body=None, token: str | None = None, raw: bytes | None = None,
         scheme: str = "Bearer", headers: dict | None = None):
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path.split("?")[0],
               "QUERY_STRING": path.partition("?")[2], "CONTENT_LENGTH": str(len(data)),
               "CONTENT_TYPE": "application/json", "wsgi.input": io.BytesIO(data), **(headers or {})}
    if token:
        environ["HTTP_AUTHORIZATION"] = f"{scheme} {token}"
    status = []
    payload = b"".join(api(environ, lambda s, headers: status.append(s)))
    return int(status[0].split()[0]), json.loads(payload)


def test_api_guards_changes_with_the_token_and_reports_errors():
    state = state_for(diamond())
    controller = FakeController(state)
    api = Api(controller, "secret")
    good = {"pairs": {"A->D": [0.25, 0.75]}}
    assert call(api, "PUT", "/routing", good)[0] == 401
    assert call(api, "PUT", "/routing", good, token="wrong")[0] == 401
    status, reply = call(api, "PUT", "/routing", raw=b"{not json", token="secret")
    assert status == 400 and "not JSON" in reply["error"]
    status, reply = call(api, "PUT", "/routing", {"pairs": {"A->D": [0.5, 0.6]}}, token="secret")
    assert status == 400 and "sum to 1.1" in reply["error"]
    assert state.version == 0 and not controller.applied
    status, reply = call(api, "PUT", "/routing", good, token="secret")
    assert status == 200 and reply["version"] == 1 and len(controller.applied) == 1
    status, routing = call(api, "GET", "/routing")
    pair = state.pathset.pair_index[(0, 3)]
    assert routing["installed"][pair] == [0.25, 0.75]
    assert call(api, "DELETE", "/routing")[0] == 405
    assert call(api, "GET", "/nowhere")[0] == 404
    status, events = call(api, "GET", "/events?since=0")
    assert status == 200 and events[-1]["kind"] == "routing"
    assert call(api, "GET", "/events?since=yesterday")[0] == 400
    status, spec = call(api, "GET", "/openapi.json")
    assert status == 200 and set(spec["paths"]) == set(OPENAPI["paths"])
    assert {path for _, path in api.routes} <= set(spec["paths"])


@pytest.mark.parametrize("raw, message", [
    (b'{"pairs": {"A->D": ["0.25", 0.75]}}', "pairs.A->D.0: Input should be a valid number"),
    (b'{"pairs": {"A->D": [true, false]}}', "pairs.A->D.0: Input should be a valid number"),
    (b'{"ratios": "1"}', "ratios: Input should be a valid list"),
    (b'{"pairs": {"A->D": [0.25, 0.75]}, "force": true}', "force: Extra inputs are not permitted"),
    (b'{"pairs": {"A->D": [0.25, 0.75], "A->D": [1, 0]}}', "key 'A->D' appears twice in one object"),
    (b'{"pairs": {"A->D": [0.25, 0.75], " A -> D ": [1, 0]}}', "pair A->D is given twice (as 'A->D' and ' A -> D ')"),
    (b'{"pairs": {"A->D": [1e400, 0]}}', "pairs.A->D.0: Input should be a finite number"),
    (b'{"pairs": {"A->D": [' + b"1" * 400 + b', 0]}}', "pairs.A->D.0: Input should be a valid number"),
    (b'{"pairs": {"A->D": [NaN, 0]}}', "NaN is not a JSON number"),
    (b'{"pairs": {"A->D": [Infinity, 0]}}', "Infinity is not a JSON number"),
    (b"[" * 3000 + b"]" * 3000, "body nests too deeply"),  # within the size limit, past the parser's depth
    (b"\xff\xfe{}", "body is not JSON"),
])
def test_hostile_routing_bodies_get_a_400_naming_the_problem_and_change_nothing(raw, message):
    state = state_for(diamond())
    controller = FakeController(state)
    status, reply = call(Api(controller, "secret"), "PUT", "/routing", raw=raw, token="secret")
    assert (status, reply["error"][:len(message)]) == (400, message), reply
    assert state.version == 0 and not controller.applied


def test_the_api_refuses_bodies_of_the_wrong_kind_or_size_and_takes_any_case_of_bearer():
    state = state_for(diamond())
    controller = FakeController(state)
    api, good = Api(controller, "secret"), {"pairs": {"A->D": [0.25, 0.75]}}
    status, reply = call(api, "PUT", "/routing", good, token="secret", headers={"CONTENT_TYPE": "text/plain"})
    assert status == 415 and "application/json" in reply["error"]
    status, reply = call(api, "PUT", "/routing", good, token="secret", headers={"CONTENT_LENGTH": ""})
    assert status == 411
    every_pair = {"ratios": [[-1.2345678901234567e-300] * state.pathset.k] * state.pathset.num_pairs}
    assert len(json.dumps(every_pair)) < api.max_body  # the largest routing of this network fits
    status, reply = call(api, "PUT", "/routing", raw=b" " * (api.max_body + 1), token="secret")
    assert status == 413 and f"{api.max_body}-byte limit" in reply["error"]
    assert state.version == 0 and not controller.applied
    for scheme in ("bearer", "BEARER", "Bearer"):  # HTTP's auth scheme is case-insensitive
        assert call(api, "PUT", "/routing", good, token="secret", scheme=scheme)[0] == 200
    assert call(api, "PUT", "/routing", good, token="secret", scheme="Basic")[0] == 401


def test_an_internal_error_is_a_500_that_does_not_echo_its_exception():
    state = state_for(diamond())
    controller = FakeController(state)
    controller.poll = lambda wait=False, timeout=2.0: 1 / 0  # a bug behind the route
    status, reply = call(Api(controller, "secret"), "GET", "/counters?fresh=1")
    assert status == 500 and "division" not in reply["error"] and "log" in reply["error"]


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=6) | st.dictionaries(
                        st.sampled_from(["ratios", "pairs", "A->D", "D->A", "B->C", "x"]) | st.text(max_size=6),
                        children, max_size=4), max_leaves=30))
def test_random_json_at_put_routing_is_a_4xx_or_a_valid_routing_never_a_500(body):
    state = state_for(diamond())
    controller = FakeController(state)
    before = state.requested.copy()
    raw = json.dumps(body, allow_nan=True).encode()
    status, reply = call(Api(controller, "secret"), "PUT", "/routing", raw=raw, token="secret")
    assert status in (200, 400, 404), (status, reply)
    if status != 200:
        assert state.version == 0 and not controller.applied and np.array_equal(state.requested, before)
        assert reply["error"]
    else:
        assert np.allclose(state.requested.sum(axis=1), 1.0)


def test_the_token_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    from controllers.main import write_secret

    target = tmp_path / "precious"
    target.write_text("keep me")
    target.chmod(0o644)
    link = tmp_path / "token"
    link.symlink_to(target)
    write_secret(link, "s3cret")
    assert target.read_text() == "keep me" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert not link.is_symlink() and link.read_text() == "s3cret" and oct(link.stat().st_mode & 0o777) == "0o600"
    write_secret(link, "again")  # over its own earlier file too
    assert link.read_text() == "again" and sorted(p.name for p in tmp_path.iterdir()) == ["precious", "token"]


def test_api_topology_and_stats_are_json_even_before_measurements():
    state = state_for(diamond())
    api = Api(FakeController(state), "t")
    status, topo = call(api, "GET", "/topology")
    assert status == 200 and [n["name"] for n in topo["nodes"]] == list("ABCDE")
    assert topo["links"][0]["emulated_bps"] == pytest.approx(10e6)
    status, stats = call(api, "GET", "/stats")
    assert status == 200 and stats["utilization"] is None and all(stats["link_up"])


# ---------------------------------------------------------------------- path sets travel between processes
def test_pathset_and_topology_descriptions_round_trip_exactly():
    topo = load_topology("abilene")
    union = union_pathsets(k_shortest_paths(topo, 4), equal_cost_paths(topo))
    copy = pathset_from_dict(Topology.from_dict(json.loads(json.dumps(topo.to_dict()))),
                             json.loads(json.dumps(pathset_to_dict(union))))
    assert copy.paths == union.paths and copy.topology.fingerprint() == topo.fingerprint()
    with pytest.raises(TopologyError, match="made for topology 'abilene'"):
        pathset_from_dict(diamond(), pathset_to_dict(union))


def test_lifted_ratios_route_the_same_loads():
    topo = load_topology("abilene")
    ecmp = equal_cost_paths(topo)
    union = union_pathsets(k_shortest_paths(topo, 2), ecmp)
    rng = np.random.default_rng(0)
    ratios = rng.random((ecmp.num_pairs, ecmp.k)) * ecmp.mask
    ratios /= ratios.sum(axis=1, keepdims=True)
    lifted = lift_ratios(ratios, ecmp, union)
    demands = rng.random(ecmp.num_pairs)
    np.testing.assert_allclose(union.incidence @ (lifted * demands[:, None]).ravel(),
                               ecmp.incidence @ (ratios * demands[:, None]).ravel())
    with pytest.raises(TopologyError, match="not in the target path set"):
        lift_ratios(lift_ratios(ratios, ecmp, union), union, k_shortest_paths(topo, 1))


# ---------------------------------------------------------------------- traffic replay agent
def test_traffic_agent_paces_flows_and_counts_the_window_on_both_ends(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    from envs.mininet_backend import AGENT

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free UDP port for the sink
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.time() + 0.3
    rates = [80_000.0, 160_000.0]  # bit/s of payload: 10 and 20 datagrams of 1000 bytes per second
    spec = {"listen_port": port, "start_at": start, "duration_s": 1.6, "grace_s": 0.3, "payload_bytes": 1000,
            "window": [start + 0.5, start + 1.5], "result": str(tmp_path / "result.json"), "seed": 1,
            "flows": [{"src": "127.0.0.1", "dst": "127.0.0.1", "dport": port, "sport": 0, "rate_bps": r}
                      for r in rates]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, str(AGENT), str(tmp_path / "spec.json")], check=True, timeout=30)
    result = json.loads((tmp_path / "result.json").read_text())
    # one second of window: 10 and 20 datagrams (±1 for the phase of the first one)
    for sent, expected in zip(result["sent_in_window_bytes"], (10, 20)):
        assert abs(sent / 1000 - expected) <= 1
    assert sum(result["sent_in_window_bytes"]) == result["received_in_window_bytes"]["127.0.0.1"]  # loopback
    assert sum(result["sent_bytes"]) == result["received_bytes"]["127.0.0.1"] > sum(result["sent_in_window_bytes"])
