"""The policy runtime in a real controller over Open vSwitch (root only): Mininet-level checks of
what tests/controllers/test_runtime.py checks without switches.

One `rlte controller` for B4 (the network the runtime's tiny bundles are trained on) runs for the
module on free ports, as an operator starts it, polling and deciding every second; the emulated
B4 is attached to it and replays the mean matrix of the policies' training traffic from every host
until the module ends (a test may swap it for a hotspot). Policies are deployed, promoted and
rolled back through the API, as `rlte policy` does. The tests prove:

* shadow mode changes no switch: every bridge's group and flow tables are byte-identical over
  several decisions, which are recorded with mode shadow;
* a bundle whose graph answers NaN ratios, and one whose inference overruns its deadline, fall
  back to the LP in the first decision, the reason recorded, and in active mode the LP routing is
  what the controller installs;
* a hotspot far outside the training traffic makes an active policy fall back with a drift reason,
  and the steady traffic back brings the policy back;
* rollback puts back the routing of the version rolled back to;
* a restart with the same state directory and no --policy resumes the deployed version and mode,
  and goes on deciding and installing in that mode.

Elsewhere (not root, no Mininet, OVS not running) they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from envs.emulation import emulation_problems, leftovers
from envs.mininet_backend import free_port, stop_process
from tests.support import ROOT, wait_for_port

PROBLEMS = emulation_problems()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(PROBLEMS), reason="live network tests need: " + "; ".join(PROBLEMS))]

TOPOLOGY = "b4"
TINY = ("topology=b4", "traffic=b4-real", "eval.every=3", "eval.periodic_every=1000", "eval.with_baselines=false")
TOKEN = "live-policy-test"
POLL_S = 1.0            # the large pairs' measured rates: 4% error (std) here, 9% polled every half second
DECISION_S = 1.0
TIMEOUT_S = 0.25        # an inference's deadline: the tiny MLPs answer in about a millisecond
SLOW_S = 1.0            # what the slow graph takes at least, on one thread
SLACK_S = 1.5           # a decision's own work (the LP, the install) on a loaded machine, and the API's answer
STEADY_BPS = 8e6        # emulated payload rate of the steady matrix, all pairs together (B4 links: 5 Mb/s)
FLOWS_PER_PAIR = 4
PAYLOAD_BYTES = 400     # small datagrams: more packets per polling interval, finer per-pair rates


def rlte(*args) -> list[str]:
    return [sys.executable, "-c", "from experiments.cli import main; main()", *map(str, args)]


# ---------------------------------------------------------------------- bundles
@dataclass
class Bundles:
    a: Path                 # two tiny MLPs (different widths: two versions)
    b: Path
    nan: Path               # a's manifest, a graph that answers NaN ratios
    slow: Path              # a's manifest, a graph that answers valid ratios after SLOW_S or more
    train: np.ndarray       # (T, N, N) the training traffic


def swap_graph(source: Path, target: Path, model) -> Path:
    """A copy of bundle ``source`` whose policy.onnx is ``model``, the manifest's sha256 updated:
    a bundle that loads (same input/output names and shapes) but decides as ``model`` does."""
    import hashlib

    import onnx

    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    (target / manifest["onnx_file"]).write_bytes(data)
    manifest["onnx_sha256"] = hashlib.sha256(data).hexdigest()
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target


def graph(manifest: dict, nodes: list, initializers: list, name: str):
    from onnx import TensorProto, helper

    spec_in, spec_out = manifest["input"], manifest["output"]
    inputs = [helper.make_tensor_value_info(spec_in["name"], TensorProto.FLOAT, spec_in["shape"])]
    outputs = [helper.make_tensor_value_info(spec_out["name"], TensorProto.FLOAT, spec_out["shape"])]
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, initializer=initializers),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="rlte-tests")
    model.ir_version = 8  # what opset 17 needs: any onnxruntime that runs the exported bundles loads it
    return model


def nan_graph(manifest: dict):
    """split_ratios = sum(demands) × NaN: the declared shapes, every ratio NaN."""
    from onnx import helper, numpy_helper

    demands, ratios = manifest["input"]["name"], manifest["output"]["name"]
    nan = numpy_helper.from_array(np.full(manifest["output"]["shape"], np.nan, np.float32), "nan")
    nodes = [helper.make_node("ReduceSum", [demands], ["total"], keepdims=1),
             helper.make_node("Mul", ["total", "nan"], [ratios])]
    return graph(manifest, nodes, [nan], "nan_ratios")


def slow_graph(manifest: dict, products: int, size: int = 1024):
    """Every pair on its first path, after ``products`` products of two size × size matrices
    that depend on the input (so onnxruntime cannot fold them away when it loads the graph)."""
    from onnx import helper, numpy_helper

    demands, ratios = manifest["input"]["name"], manifest["output"]["name"]
    first = np.zeros(manifest["output"]["shape"], np.float32)
    first[..., 0] = 1.0
    initializers = [numpy_helper.from_array(np.full((size, size), 1.0 / size, np.float32), "mean"),
                    numpy_helper.from_array(np.zeros((), np.float32), "zero"),
                    numpy_helper.from_array(first, "first")]
    nodes = [helper.make_node("ReduceSum", [demands], ["total"], keepdims=0),
             helper.make_node("Mul", ["total", "zero"], ["nothing"]),
             helper.make_node("Add", ["mean", "nothing"], ["m0"])]
    for i in range(products):  # mean is idempotent (J/n · J/n = J/n): the values stay 1/n
        nodes.append(helper.make_node("MatMul", [f"m{i}", "mean"], [f"m{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"m{products}"], ["sum"], keepdims=0),
              helper.make_node("Mul", ["sum", "zero"], ["naught"]),
              helper.make_node("Add", ["first", "naught"], [ratios])]
    return graph(manifest, nodes, initializers, "slow_first_path")


def inference_seconds(path: Path) -> float:
    from agents.bundle import load_bundle

    bundle = load_bundle(path)
    history = np.ones((bundle.history, bundle.topology.num_nodes, bundle.topology.num_nodes))
    started = time.perf_counter()
    bundle.decide(history)
    return time.perf_counter() - started


def make_slow(source: Path, target: Path) -> Path:
    """A bundle whose graph takes SLOW_S or more: the products it needs, measured here."""
    manifest = json.loads((source / "manifest.json").read_text())
    probe = swap_graph(source, target.with_name(target.name + "_probe"), slow_graph(manifest, 8))
    per_product = inference_seconds(probe) / 8
    shutil.rmtree(probe)
    return swap_graph(source, target, slow_graph(manifest, max(8, int(np.ceil(SLOW_S / per_product)))))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Bundles:
    from experiments import compose, train_config
    from experiments.export import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    made = []
    # trained well enough (about 1% above the LP on the steady matrix) that the runtime's 5% margin
    # does not call them hurtful; different widths, so they route differently (two versions)
    for hidden, epochs in ((64, 50), (16, 100)):
        run = train_config(compose("agent=gradient", f"agent.epochs={epochs}", f"agent.hidden=[{hidden}]", *TINY),
                           root / f"run_{hidden}")
        export_bundle(run, root / f"bundle_{hidden}")
        made.append(root / f"bundle_{hidden}")
    manifest = json.loads((made[0] / "manifest.json").read_text())
    return Bundles(made[0], made[1], swap_graph(made[0], root / "nan", nan_graph(manifest)),
                   make_slow(made[0], root / "slow"), np.asarray(run.data.train.matrices))


# ---------------------------------------------------------------------- the live network
class Traffic:
    """Paced UDP flows from every host (experiments.replay's agents), one matrix until the next."""

    def __init__(self, backend) -> None:
        self.backend, self.agents, self.played, self.demands = backend, None, 0, None

    def play(self, demands: np.ndarray) -> None:
        """``demands``: (P,) model bit/s, replayed at emulated scale until :meth:`play` or :meth:`stop`."""
        from experiments.replay import _Agents

        self.stop()
        self.agents = _Agents()
        self.agents.launch(self.backend, self.played, self.played % 2, demands, time.time() + 0.5, 900.0, 0.2)
        self.played += 1
        self.demands = demands

    def stop(self) -> None:
        if self.agents is not None:
            agents, self.agents = self.agents, None
            agents.kill()


@dataclass
class Live:
    folder: Path
    of_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0
    backend: object = None
    traffic: Traffic | None = None
    steady: np.ndarray | None = None      # (P,) model bit/s
    hotspot: np.ndarray | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def policy_dir(self) -> Path:
        return self.folder / "policy"

    @property
    def client(self):
        from controllers.client import ControllerClient

        return ControllerClient(self.url, TOKEN)

    def log(self) -> str:
        return (self.folder / f"controller-{self.starts}.log").read_text()[-4000:]

    def start(self) -> None:
        """`rlte controller` with the module's state directory and no --policy (it resumes what it
        finds there). JS is the drift statistic that falls back (all three are recorded): the
        measured matrix is a few % off for the large pairs and far more for the smallest (a packet
        or two per poll), and B4's training week is so steady that its envelope threshold is 0.5% of
        the traffic and the steady replay's KS (every pair weighed alike) sits near its threshold,
        so either may fire on the steady replay itself; JS weighs pairs by their share (about 0.02
        there, threshold 0.07), and the hotspot lifts it far over."""
        self.starts += 1
        with open(self.folder / f"controller-{self.starts}.log", "w") as log:
            self.process = subprocess.Popen(
                rlte("controller", "--topology", TOPOLOGY, "--of-port", self.of_port, "--api-port", self.api_port,
                     "--poll-interval", POLL_S, "--decision-interval", DECISION_S, "--decision-timeout", TIMEOUT_S,
                     "--drift-statistics", "js", "--policy-dir", self.policy_dir),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "RLTE_CONTROLLER_TOKEN": TOKEN})
        wait_for_port(self.api_port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            stop_process(process, 15)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        from envs.mininet_backend import wait_switches_ready

        wait_switches_ready(self.client, timeout_s)

    def bridges(self) -> list[str]:
        return [switch.name for switch in self.backend.network.net.switches]

    def tables(self) -> dict[str, tuple[str, str]]:
        """Every bridge's group table and flow table (no counters), as ovs-ofctl prints them."""
        def ofctl(*args: str) -> str:
            return subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", *args], capture_output=True, text=True,
                                  check=True, timeout=30).stdout

        return {bridge: (ofctl("dump-groups", bridge), ofctl("--no-stats", "dump-flows", bridge))
                for bridge in self.bridges()}


def steady_matrix(train: np.ndarray, pathset) -> np.ndarray:
    """The training traffic's mean matrix, scaled to STEADY_BPS emulated (model bit/s per pair)."""
    demands = pathset.demands(train.mean(axis=0))
    return demands * STEADY_BPS / 1e-3 / demands.sum()


def hotspot_matrix(steady: np.ndarray, pathset, envelope) -> np.ndarray:
    """The steady matrix at a fifth, plus one pair carrying 80% of the total: the pair whose largest
    training share is smallest among those the steady matrix sends (far outside the envelope)."""
    top = envelope.top_share[pathset.pairs[:, 0], pathset.pairs[:, 1]]
    candidates = np.flatnonzero(steady > 0.01 * steady.max())
    hot = int(candidates[np.argmin(top[candidates])])
    demands = 0.2 * steady
    demands[hot] = 0.0
    demands[hot] = 4.0 * demands.sum()
    return demands


@pytest.fixture(scope="module")
def live(bundles, tmp_path_factory):
    """The controller, B4 emulated under it, and the steady matrix playing from every host."""
    from agents.bundle import load_bundle
    from envs.mininet_backend import MininetBackend, ReplaySettings
    from topologies import k_shortest_paths, load_topology

    live = Live(tmp_path_factory.mktemp("live"))
    pathset = k_shortest_paths(load_topology(TOPOLOGY), 4)
    live.steady = steady_matrix(bundles.train, pathset)
    live.hotspot = hotspot_matrix(live.steady, pathset, load_bundle(bundles.a).envelope)
    live.start()
    (live.folder / "net").mkdir()
    try:
        live.backend = MininetBackend(pathset, controller=("127.0.0.1", live.of_port), api=live.url, token=TOKEN,
                                      replay=ReplaySettings(flows_per_pair=FLOWS_PER_PAIR,
                                                            payload_bytes=PAYLOAD_BYTES),
                                      workdir=live.folder / "net")
        live.backend.start()
        for bridge in live.bridges():  # a restarted controller is found again within a second, not 8
            subprocess.run(["ovs-vsctl", "set", "controller", bridge, "max_backoff=1000"], check=True)
        live.traffic = Traffic(live.backend)
        live.traffic.play(live.steady)
        yield live
    finally:
        if live.traffic is not None:
            live.traffic.stop()
        if live.backend is not None:
            live.backend.close()
        live.stop()
    assert not any(leftovers().values())


# ---------------------------------------------------------------------- waiting for decisions
def decisions(client, since: float) -> list[dict]:
    return [r for r in client.decisions(since) if r["kind"] == "decision"]


def summary(record: dict) -> str:
    return (f"{record['time']:.2f} {record['version']} {record['mode']} {record['status']} {record['action']} "
            f"{(record.get('install') or {}).get('source')} {record['fallback_reason']}")


def wait_decision(live: Live, since: float, what: str, predicate, timeout_s: float = 10.0,
                  count: int = 1) -> list[dict]:
    """The first ``count`` decisions after ``since`` that satisfy ``predicate``, waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = decisions(live.client, since)
        chosen = [r for r in records if predicate(r)]
        if len(chosen) >= count:
            return chosen[:count]
        if time.monotonic() > deadline:
            raise AssertionError(f"no{'' if count == 1 else f' {count}'} decision {what} within {timeout_s:g} s; "
                                 "decisions:\n" + "\n".join(map(summary, records)) + "\ncontroller log:\n"
                                 + live.log())
        time.sleep(0.2)


def deploy(live: Live, bundle: Path, mode: str) -> str:
    client = live.client
    version = client.deploy_policy(str(bundle))["deployed_version"]
    report = client.set_policy_mode(mode)
    assert (report["version"], report["mode"]) == (version, mode)
    return version


def is_policy(version: str, mode: str):
    return lambda r: (r["version"], r["mode"], r["status"]) == (version, mode, "policy")


def installed(live: Live) -> dict:
    return live.client.get("/routing")


# ---------------------------------------------------------------------- the tests
def test_shadow_mode_leaves_every_switch_table_byte_identical(live, bundles):
    version = deploy(live, bundles.a, "shadow")
    settled = time.time()
    # a decision with mode shadow: any decision begun in another mode has finished
    wait_decision(live, settled, "in shadow", lambda r: (r["version"], r["mode"]) == (version, "shadow"))
    routing = installed(live)
    before = live.tables()
    assert len(before) == 12 and all(groups.count("group_id=") > 0 for groups, _ in before.values())
    since = time.time()
    records = wait_decision(live, since, f"by {version} in shadow", lambda r: r["version"] == version, count=3)
    after = live.tables()
    for bridge in before:
        assert after[bridge][0] == before[bridge][0], f"{bridge}: its group table changed in shadow mode"
        assert after[bridge][1] == before[bridge][1], f"{bridge}: its flow table changed in shadow mode"
    assert installed(live)["version"] == routing["version"]
    for record in records:
        assert (record["mode"], record["action"], record["install"]) == ("shadow", "shadow", None), summary(record)
        assert record["installed_version"] == routing["version"]
        assert record["installed_source"] == routing["source"]
    # the traffic ran, and the policy decided on it: it would have moved traffic, and did not
    stats = live.client.get("/stats")
    assert sum(rate or 0.0 for rate in stats["pair_rate_bps"]) > 0.5 * STEADY_BPS
    assert all(r["predicted_mlu"]["policy"] is not None and r["explanation"]["moved_pairs"] for r in records), \
        "\n".join(map(summary, records))
    assert live.client.policy()["mode"] == "shadow"


@pytest.mark.parametrize("which, reason", [("nan", "invalid decision: the policy gave non-finite split ratios"),
                                           ("slow", f"inference timed out after {TIMEOUT_S:g} s")])
def test_a_failing_bundle_falls_back_to_the_lp_within_one_decision_interval(live, bundles, which, reason):
    client = live.client
    faulty = getattr(bundles, which)
    deployed = time.time()
    version = client.deploy_policy(str(faulty))["deployed_version"]
    try:
        [first] = wait_decision(live, deployed, f"by {version}", lambda r: r["version"] == version)
        assert first["time"] - deployed <= DECISION_S + TIMEOUT_S + SLACK_S, summary(first)
        assert first["status"] == "fallback" and reason in first["fallback_reason"], summary(first)
        assert reason in first["causes"][0] and first["predicted_mlu"]["policy"] is None
        assert first["events"][0]["kind"] == "fallback" and reason in first["events"][0]["reason"]
        assert first["mode"] == "shadow" and first["action"] == "shadow"  # a new version starts in shadow
        promoted = time.time()
        assert client.set_policy_mode("active")["mode"] == "active"
        [active] = wait_decision(live, promoted, f"by {version} in active",
                                 lambda r: (r["version"], r["mode"]) == (version, "active"))
        assert active["time"] - promoted <= DECISION_S + TIMEOUT_S + SLACK_S, summary(active)
        assert active["status"] == "fallback" and reason in active["fallback_reason"], summary(active)
        assert active["action"] in ("installed", "unchanged") and active["install"]["source"] == "fallback:lp", \
            summary(active)
        routing = installed(live)
        assert routing["source"] == "fallback:lp" and routing["version"] >= active["installed_version"]
        report = client.policy()
        assert report["status"] == "fallback" and reason in report["fallback_reason"]
    finally:
        # the slow graph keeps a core busy while it runs: back to a, until its last inference is over
        version = deploy(live, bundles.a, "shadow")
        wait_decision(live, time.time(), "with no inference left running",
                      lambda r: r["version"] == version and not any("still running" in c for c in r["causes"]))


def test_a_hotspot_makes_the_active_policy_fall_back_for_drift_and_it_returns_after(live, bundles):
    version = deploy(live, bundles.a, "active")
    # on the steady matrix the policy decides, and its routing is installed
    wait_decision(live, time.time(), f"by {version} in active, status policy", is_policy(version, "active"),
                  timeout_s=15)
    assert installed(live)["source"] == f"policy:{version}"
    hot = time.time()
    live.traffic.play(live.hotspot)
    try:
        [record] = wait_decision(live, hot, f"by {version} in fallback",
                                 lambda r: r["version"] == version and r["status"] == "fallback", timeout_s=15)
        assert record["fallback_reason"].startswith("drift"), summary(record)
        assert any(cause.startswith("drift") for cause in record["causes"])
        assert record["events"][0]["kind"] == "fallback" and record["mode"] == "active"
        assert record["action"] in ("installed", "unchanged") and record["install"]["source"] == "fallback:lp", \
            summary(record)
        assert installed(live)["source"] == "fallback:lp"
        report = live.client.policy()
        assert report["status"] == "fallback" and report["fallback_reason"].startswith("drift")
    finally:
        live.traffic.play(live.steady)
    # the steady matrix again: once the hot ones left the window and three intervals passed clean, it is back
    [back] = wait_decision(live, record["time"], f"by {version} back from the fallback",
                           lambda r: r["version"] == version and r["status"] == "policy", timeout_s=20)
    assert back["action"] in ("installed", "unchanged") and back["install"]["source"] == f"policy:{version}"
    assert installed(live)["source"] == f"policy:{version}"


def test_rollback_restores_the_routing_of_the_version_rolled_back_to(live, bundles):
    client = live.client
    first = deploy(live, bundles.a, "active")
    [a_decision] = wait_decision(live, time.time(), f"by {first} in active, status policy",
                                 is_policy(first, "active"), timeout_s=20)
    a_routing = installed(live)
    assert a_decision["install"]["source"] == a_routing["source"] == f"policy:{first}"
    second = deploy(live, bundles.b, "active")
    [b_decision] = wait_decision(live, time.time(), f"by {second} in active, status policy",
                                 is_policy(second, "active"))
    b_routing = installed(live)
    assert b_decision["install"]["source"] == b_routing["source"] == f"policy:{second}"
    a_ratios, b_ratios = np.array(a_routing["installed"]), np.array(b_routing["installed"])
    apart = np.abs(a_ratios - b_ratios).max()
    assert apart > 0.1, "the two versions route alike: rolling back would prove nothing"
    rolled = time.time()
    report = client.rollback_policy()
    assert (report["version"], report["mode"]) == (first, "active")
    [back] = wait_decision(live, rolled, f"by {first} in active after the rollback",
                           lambda r: (r["version"], r["mode"]) == (first, "active"))
    assert back["time"] - rolled <= DECISION_S + SLACK_S, summary(back)
    assert back["status"] == "policy" and back["action"] in ("installed", "unchanged"), summary(back)
    assert back["install"]["source"] == f"policy:{first}"
    routing = installed(live)
    assert routing["source"] == f"policy:{first}" and routing["version"] > b_routing["version"]
    # the same steady traffic, measured again: a's decision again, a little off where the measured matrix is
    restored = np.array(routing["installed"])
    assert np.abs(restored - a_ratios).max() < 0.25 * apart, (np.abs(restored - a_ratios).max(), apart)
    kinds = [r["kind"] for r in client.decisions(rolled - 1e-3)]
    assert "rollback" in kinds


def test_a_restart_resumes_the_deployed_version_and_mode(live, bundles):
    client = live.client
    version = deploy(live, bundles.b, "active")
    before = client.policy()
    assert (before["version"], before["mode"]) == (version, "active")
    audit = (live.policy_dir / "decisions.jsonl").read_bytes()
    live.stop()
    live.start()  # same --policy-dir, no --policy, no --mode
    report = live.client.policy()
    assert (report["version"], report["mode"]) == (version, "active")
    assert report["deployed"] == before["deployed"]
    kinds = [r["kind"] for r in live.client.decisions(0)]
    assert kinds[0] == "resume" and "deploy" not in kinds, kinds
    assert (live.policy_dir / "decisions.jsonl").read_bytes().startswith(audit)  # appended to, not rewritten
    live.wait_ready()
    # it decides again, in active mode: its decision (or the fallback's) is what the switches get
    restarted = time.time()
    [record] = wait_decision(live, restarted, f"by {version} in active",
                             lambda r: (r["version"], r["mode"]) == (version, "active") and r["action"] != "shadow",
                             timeout_s=15)
    source = record["install"]["source"]
    assert source == (f"policy:{version}" if record["status"] == "policy" else "fallback:lp"), summary(record)
    assert installed(live)["source"] == source
