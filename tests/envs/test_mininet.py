"""The live network for real: os-ken controller + Mininet + Open vSwitch (root only).

`make test` run as root installs Mininet and Open vSwitch and starts OVS, so these run in
CI. Elsewhere they are skipped with the reason (not root, no Mininet, OVS not running).
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from envs.emulation import emulation_problems, leftovers

PROBLEMS = emulation_problems()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(PROBLEMS), reason="live network tests need: " + "; ".join(PROBLEMS))]

if not PROBLEMS:
    from controllers.client import ControllerError
    from envs import SplitRoutingEnv
    from envs.mininet_backend import MininetBackend, ReplaySettings
    from topologies import k_shortest_paths, load_topology

from tests.networks import diamond  # noqa: E402

POLL_S = 0.5


@pytest.fixture(scope="class")
def live():
    pathset = k_shortest_paths(diamond(), 2)
    backend = MininetBackend(pathset, poll_interval_s=POLL_S,
                             replay=ReplaySettings(flows_per_pair=128, warmup_s=0.5, window_s=1.5))
    with backend:
        yield backend
    assert not any(leftovers().values())


def pair_of(backend, origin: str, destination: str) -> int:
    index = backend.pathset.topology.node_index
    return backend.pathset.pair_index[(index[origin], index[destination])]


def link(backend, a: str, b: str) -> int:
    index = backend.pathset.topology.node_index
    return backend.pathset.topology.link_index[(index[a], index[b])]


def only(backend, pair: int, rate_bps: float) -> np.ndarray:
    demands = np.zeros(backend.pathset.num_pairs)
    demands[pair] = rate_bps
    return demands


def first_path_ratios(backend) -> np.ndarray:
    ratios = np.zeros((backend.pathset.num_pairs, backend.pathset.k))
    ratios[:, 0] = 1.0
    return ratios


class TestDiamondUnderTheController:
    """One emulated network (class-scoped: torn down before the tests that build their own)."""

    def test_every_host_reaches_every_other_through_controller_paths(self, live):
        # the switches drop whatever matches no controller rule (table miss), so this is the controller's routing
        assert live.network.net.pingAll(timeout=1) == 0.0
        health = live.client.get("/health")
        assert health["status"] == "ok" and not health["switches_missing"]


    def test_select_groups_realize_split_ratios(self, live):
        pair = pair_of(live, "A", "D")
        ratios = first_path_ratios(live)
        via_b = [k for k in range(2) if live.pathset.node_path(pair, k)[1] == "B"][0]
        ratios[pair] = 0.0
        ratios[pair, via_b], ratios[pair, 1 - via_b] = 0.25, 0.75
        measured = live.run(only(live, pair, 6e9), ratios)  # 6 Mb/s emulated on 10 Mb/s links
        ab, ac = measured.utilization[link(live, "A", "B")], measured.utilization[link(live, "A", "C")]
        assert ab / (ab + ac) == pytest.approx(0.25, abs=0.1)
        assert ab + ac == pytest.approx(0.6, rel=0.1)  # payload plus a few % of headers
        assert measured.delivered_bps / measured.offered_bps > 0.98
        assert live.last_update["confirmed"] and live.last_update["switches_updated"] >= 1


    def test_the_hashing_model_says_which_path_each_flow_takes(self, live):
        # OVS hashes each flow's addresses onto the group's slots. From addresses 0..127 the 128
        # flows of a 25/75 split send 41 down A-B-D and of an even split 54, as the model says;
        # from the addresses the replay picks by default (flow_addresses=even) they send 32 and 64
        from dataclasses import replace

        from envs.ovs_hashing import hashed_ratios

        pair = pair_of(live, "A", "D")
        assert [live.pathset.node_path(pair, k)[1] for k in range(2)] == ["B", "C"]
        default = live.replay
        assert default.flow_addresses == "even"
        cases = [(replace(default, flow_addresses="sequential"), 0.25, 41 / 128), (default, 0.25, 32 / 128),
                 (replace(default, flow_addresses="sequential"), 0.5, 54 / 128), (default, 0.5, 64 / 128)]
        try:
            for replay, via_b, predicted in cases:
                live.replay = replay
                ratios = first_path_ratios(live)
                ratios[pair] = via_b, 1 - via_b
                shares, untabled = hashed_ratios(live.plan, ratios, replay.flows_per_pair, live.flow_sources())
                assert shares[pair, 0] == pytest.approx(predicted) and not untabled.any()
                measured = live.run(only(live, pair, 6e9), ratios)
                ab, ac = measured.utilization[link(live, "A", "B")], measured.utilization[link(live, "A", "C")]
                assert ab / (ab + ac) == pytest.approx(predicted, abs=0.03), replay  # ~6 packets a flow
        finally:
            live.replay = default


    def test_bad_requests_are_refused_and_change_nothing(self, live):
        before = live.client.get("/routing")
        with pytest.raises(ControllerError) as refused:
            live.client.request("PUT", "/routing", {"pairs": {"A->D": [0.6, 0.6]}})
        assert refused.value.status == 400
        anonymous = type(live.client)(live.client.base_url)
        with pytest.raises(ControllerError) as unauthorized:
            anonymous.set_ratios(first_path_ratios(live))
        assert unauthorized.value.status == 401
        assert live.client.get("/routing") == before


    def test_link_failure_reroutes_within_one_polling_interval(self, live):
        pair = pair_of(live, "A", "D")
        ratios = first_path_ratios(live)
        via_b = [k for k in range(2) if live.pathset.node_path(pair, k)[1] == "B"][0]
        ratios[pair] = np.eye(2)[via_b]
        live.install(ratios)
        index = live.pathset.topology.node_index
        since = time.time()
        live.network.set_cable(index["A"], index["B"], up=False)
        try:
            time.sleep(POLL_S)
            routing = live.client.get("/routing")
            assert routing["installed"][pair] == list(np.eye(2)[1 - via_b])
            assert "A->B" in routing["links_down"]
            events = live.client.get(f"/events?since={since}")
            down = [e for e in events if e["kind"] == "link_down"]
            assert down and "A->D" in down[0]["rerouted_pairs"]
            # one cable, one event: the several port messages of a cut must not flap the link
            assert [e["kind"] for e in events if e["kind"].startswith("link_")] == ["link_down"]
            measured = live.run(only(live, pair, 4e9), ratios)  # still asking for the dead path
            assert measured.utilization[link(live, "A", "C")] == pytest.approx(0.4, rel=0.1)
            assert measured.delivered_bps / measured.offered_bps > 0.98  # nothing lost after the reroute
        finally:
            live.network.set_cable(index["A"], index["B"], up=True)
        deadline = time.monotonic() + 5
        while live.client.get("/routing")["links_down"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live.client.get("/routing")["installed"][pair] == list(np.eye(2)[via_b])


    def test_switch_that_reconnects_gets_its_state_back(self, live):
        switch = "s1"
        target = subprocess.run(["ovs-vsctl", "get-controller", switch], capture_output=True, text=True).stdout.strip()
        subprocess.run(["ovs-vsctl", "del-controller", switch], check=True)
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-flows", switch], check=True)  # state lost
        subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "del-groups", switch], check=True)
        h1, h4 = live.network.host(0), live.network.host(3)
        assert "0 received" in h1.cmd(f"ping -c1 -W1 {h4.IP()}")
        subprocess.run(["ovs-vsctl", "set-controller", switch, target], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and live.client.health().get("status") != "ok":
            time.sleep(0.2)
        time.sleep(0.5)
        assert "1 received" in h1.cmd(f"ping -c1 -W2 {h4.IP()}")
        kinds = [e["kind"] for e in live.client.get("/events")]
        assert "switch_disconnected" in kinds and kinds.count("switch_ready") >= 6


    def test_split_routing_env_steps_on_the_live_network(self, live):
        env = SplitRoutingEnv(live.pathset.topology, np.full((3, 5, 5), 2e8), k=2, history=1, reward="mlu",
                              pathset=live.pathset, backend=live)
        observation, _ = env.reset(seed=0)
        assert env.observation_space.contains(observation)
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.isfinite(reward) and info["mlu"] > 0
        env.close()  # the backend belongs to the fixture: the env must not close it
        assert live.network is not None




def test_teardown_is_clean_even_after_a_crash():
    backend = MininetBackend(k_shortest_paths(diamond(), 1), replay=ReplaySettings(warmup_s=0.2, window_s=0.5))
    with pytest.raises(RuntimeError, match="boom"):
        with backend:
            assert leftovers(settle_s=0)["bridges"]
            raise RuntimeError("boom")
    assert backend.controller is None
    assert not any(leftovers().values())


CRASHING_RUN = """
import sys, time
from controllers.fabric import FabricPlan
from envs.emulation import EmulatedNetwork
from tests.networks import diamond
from topologies import k_shortest_paths
EmulatedNetwork(FabricPlan(k_shortest_paths(diamond(), 1)), 6999).start()
print("up", flush=True)
time.sleep(120)
"""


def test_cleanup_after_a_killed_run_removes_only_what_rlte_made(tmp_path):
    import os
    import signal
    import sys
    from pathlib import Path

    from envs.emulation import clean_leftovers

    foreign_bridge = "rltetestforeign"
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", foreign_bridge, "--", "set", "bridge", foreign_bridge,
                    "datapath_type=netdev"], check=True)
    foreign_log = Path("/tmp/rlte-test-foreign.log")  # `mn -c` would delete this
    foreign_log.write_text("keep me")
    run = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    try:
        assert run.stdout.readline().strip() == "up"
        running = leftovers(settle_s=0, owner=run.pid)
        assert len(running["bridges"]) == 5 and len(running["processes"]) >= 5, running  # switches, host shells
        os.kill(run.pid, signal.SIGKILL)  # no teardown at all
        run.wait()
        left = leftovers(settle_s=0, owner=run.pid)
        assert len(left["bridges"]) == 5, left  # host shells may exit on their own (their stdin closed)
        removed = clean_leftovers()
        assert sorted(removed["bridges"]) == sorted(left["bridges"])
        # switch-to-switch cables stay until removed; host cables may vanish with their namespaces first
        assert removed["interfaces"] and set(removed["interfaces"]) <= set(left["interfaces"])
        assert not any(leftovers(owner=run.pid).values())
        assert not [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.split("\n")
                    if any(f" {b}-eth" in l for b in left["bridges"])]
        assert foreign_bridge in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True).stdout
        assert foreign_log.read_text() == "keep me"
    finally:
        run.kill()
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", foreign_bridge])
        foreign_log.unlink(missing_ok=True)


def test_abilene_fidelity_smoke():
    """One real matrix under shortest path, ECMP and the LP: the twin's utilizations must match the packets."""
    import warnings

    from experiments.fidelity import FidelitySettings, fidelity_pathset, run_fidelity
    from topologies import load_traffic

    topo = load_topology("abilene")
    pathset = fidelity_pathset(topo, 4)

    def measure() -> dict:
        with MininetBackend(pathset, replay=ReplaySettings(flows_per_pair=32, window_s=2.0)) as emulated:
            return run_fidelity(pathset, load_traffic("abilene-test", topo).matrices, [100], emulated,
                                FidelitySettings()).to_dict()

    def measured(result: dict) -> list:
        return [(sample["routing"], sample["twin_mlu"], sample["measured_mlu"]) for sample in result["samples"]]

    result = measure()
    # The LP leaves several links tied at its MLU, and what lifts their measured maximum is mostly
    # how a pair's flows hash onto the select group: with the replay's evenly hashing addresses
    # 4.1-4.9% here (and 7.2% at most in the committed fidelity runs), with sequential ones 7.5%
    # here and up to 20% there. A wrong routing is far beyond, every time. Twice in ~30 suite runs
    # one routing measured 10-12% above the twin in one 2-second window (the LP: 0.413 against its
    # usual 0.384-0.386), and the next measurement was usual again; so a window past the bound is
    # measured once more, and the suite warns with what the first one saw.
    if result["errors"]["mlu_relative_error_max"] > 0.1:
        warnings.warn(f"fidelity smoke: MLU {result['errors']['mlu_relative_error_max']:.1%} off the twin in one "
                      f"window, measuring again: {measured(result)}", stacklevel=1)
        result = measure()
    assert result["errors"]["utilization_mae"] <= 0.03
    assert result["errors"]["mlu_relative_error_max"] <= 0.1, measured(result)
    assert result["same_ranking"]
    assert 1.0 <= result["calibration"]["load_factor"] <= 1.08  # headers add ~3% at 1400-byte payloads


@pytest.mark.parametrize("agent, training, scored", [
    ("gradient", ["agent.epochs=3", "eval.periodic_every=1000"],
     {"gradient", "shortest_path", "ecmp", "ospf", "lp_paths", "lp_previous"}),
    ("dqn", ["agent.total_timesteps=300", "agent.hyperparameters.learning_starts=100", "eval.periodic_every=300"],
     {"dqn", "least_loaded", "least_4norm", "lp_rounded", "lp_previous_rounded", "shortest_path"}),
])
def test_a_trained_run_is_scored_on_the_emulated_network(agent, training, scored, tmp_path, monkeypatch):
    """`rlte eval run=DIR backend=mininet`: the run's policy and every baseline installed by the
    controller and measured, with the twin's prediction beside each. Split routing carries
    ECMP's and OSPF's paths beside the K shortest; path selection routes each matrix's flows
    one by one, then replays the result."""
    import json

    from experiments.train import run_training
    from tests.support import ROOT, compose_train, rlte

    cache = {"RLTE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    monkeypatch.setenv("RLTE_CACHE", cache["RLTE_CACHE"])
    run_training(compose_train(f"agent={agent}", *training, "topology=b4", "traffic=b4-real", "eval.every=12"),
                 tmp_path / "run")
    out = tmp_path / "live.json"
    result = rlte("eval", f"run={tmp_path / 'run'}", "backend=mininet", "backend.warmup_s=0.5",
                  "backend.window_s=1.5", f"out={out}", cwd=tmp_path, env_extra=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "measured on mininet" in result.stdout and "twin median" in result.stdout
    report = json.loads(out.read_text())
    assert report["backend"] == "mininet" and len(report["tm_index"]) == 1
    settings = report["backend_settings"]  # how the matrices were replayed
    assert (settings["flow_addresses"], settings["flows_per_pair"], settings["window_s"]) == ("even", 32, 1.5)
    assert set(report["policies"]) >= scored
    optimum = report["optimal_mlu"][0]
    for name, scores in report["policies"].items():
        predicted = scores["twin_normalized_mlu"][0] * optimum
        measured, dropped = scores["mlu"][0], scores["drop_fraction"][0]
        if predicted < 0.9:
            # it fits: nothing lost, and the links carry what the twin predicts (headers add ~3%,
            # hashing a few flows per path up to ~13% on the busiest link: see the fidelity test)
            assert dropped < 0.01 and measured == pytest.approx(predicted, rel=0.2), name
        else:  # hop-shortest paths overload B4 (twin MLU ~1.3): ports carry their capacity, the rest is lost
            assert predicted > 1.1 and dropped > 0.05 and measured < 1.1, name
    assert not any(leftovers().values())
