"""The policy runtime inside the controller (controllers.runtime), without switches: shadow and
active modes, fallback to the LP with its reason (failed, slow or invalid inference, drift, a
policy that hurts) and the return after hysteresis, versions, rollback, restart, the audit log,
the API's policy routes; and the controller process started with a bundle and torch unimportable."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from agents.bundle import Bundle, BundleError, load_bundle
from controllers.api import OPENAPI, Api
from controllers.decision import FirstPath
from controllers.fabric import FabricPlan
from controllers.runtime import AUDIT_FILE, CURRENT_FILE, PolicyRuntime, RuntimeConfig
from controllers.state import ControllerState
from tests.controllers.test_controller import call
from envs.mininet_backend import free_port, stop_process
from tests.support import wait_for_port
from tests.support import ROOT
from topologies import k_shortest_paths, load_topology

TINY = ("topology=b4", "traffic=b4-real", "eval.every=3", "eval.periodic_every=1000", "eval.with_baselines=false")
SCALE = 1e-3
TOKEN = "secret"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two tiny b4 MLP policies (different widths: two versions), exported, and the training traffic."""
    from experiments.export import export_bundle
    from experiments import compose, train_config

    root = tmp_path_factory.mktemp("runtime")
    made = []
    for hidden in (16, 8):
        overrides = ("agent=gradient", "agent.epochs=1", f"agent.hidden=[{hidden}]", *TINY)
        run = train_config(compose(*overrides), root / f"run_{hidden}")
        export_bundle(run, root / f"bundle_{hidden}")
        made.append(root / f"bundle_{hidden}")
    return {"a": made[0], "b": made[1], "traffic": run.data.train.matrices}


def new_state(topology: str = "b4", k: int = 4) -> ControllerState:
    return ControllerState(FabricPlan(k_shortest_paths(load_topology(topology), k)), FirstPath(), capacity_scale=SCALE)


class Feed:
    """Per-pair byte counters, as the switches' ingress rules report them, and per-link port
    counters of the routing installed at the time, one poll per call."""

    def __init__(self, state: ControllerState) -> None:
        self.state, self.time = state, 0.0
        self.totals = np.zeros(state.pathset.num_pairs)
        self.sent = np.zeros(state.plan.topology.num_links)
        self.ports = list(zip(state.plan.topology.link_src.tolist(), state.plan.link_port.tolist()))
        self.record(0.0)

    def record(self, at: float) -> None:
        for p in range(self.state.pathset.num_pairs):
            self.state.record_pair(p, float(self.totals[p]), at=at)
        for (node, port), sent in zip(self.ports, self.sent):
            self.state.record_port(node, port, float(sent), at=at)

    def __call__(self, matrix: np.ndarray) -> None:
        """One polling interval of 1 s carrying ``matrix`` (model bit/s) on the emulated network."""
        self.time += 1.0
        ps = self.state.pathset
        demand = ps.demands(matrix)
        self.totals += demand * SCALE / 8.0
        self.sent += ps.incidence @ (self.state.effective.ratios * demand[:, None]).ravel() * SCALE / 8.0
        self.record(self.time)


class Installer:
    def __init__(self, state: ControllerState) -> None:
        self.state, self.calls, self.pairs = state, [], []

    def __call__(self, ratios: np.ndarray, source: str, pairs: list[int] | None = None) -> dict:
        self.calls.append(source)
        self.pairs.append(pairs)
        self.state.set_ratios(ratios, source)
        return {"version": self.state.version, "switches_updated": 0, "confirmed": True, "latency_ms": 0.0}


def runtime_for(tmp_path, bundle=None, mode=None, state=None, loader=None,
                **config) -> tuple[PolicyRuntime, Feed, Installer]:
    state = state or new_state()
    config.setdefault("mlu_margin", 0.5)  # the tiny test policies are within 50% of the LP, not always within 5%
    runtime = PolicyRuntime(state, tmp_path / "policy", RuntimeConfig(**config), loader=loader)
    runtime.installer = installer = Installer(state)
    if bundle is not None:
        runtime.deploy(bundle, mode)
    return runtime, Feed(state), installer


def run(runtime: PolicyRuntime, feed: Feed, matrices) -> list:
    records = []
    for matrix in matrices:
        feed(matrix)
        records.append(runtime.step())
    return records


def audit(runtime: PolicyRuntime) -> list[dict]:
    return [json.loads(line) for line in (runtime.dir / AUDIT_FILE).read_text().splitlines()]


# ---------------------------------------------------------------------- modes
def test_shadow_records_decisions_and_never_installs(bundles, tmp_path):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"])
    assert runtime.mode == "shadow" and runtime.report()["status"] == "warming up"
    assert runtime.step() is None  # no telemetry yet
    warm = runtime.history.maxlen  # the policy's H, or the drift statistics' longer need
    assert warm == max(runtime.bundle.history, runtime.bundle.drift.history)
    records = run(runtime, feed, bundles["traffic"][:warm + 3])
    assert records[:warm - 1] == [None] * (warm - 1) and runtime.report()["version"] == runtime.version
    decided = [r for r in records if r is not None]
    assert len(decided) == 4
    for record in decided:
        assert record["status"] == "policy" and record["action"] == "shadow" and record["causes"] == []
        mlu = record["predicted_mlu"]
        assert mlu["policy"] > 0 and mlu["incumbent"] > 0 and mlu["fallback"] > 0
        assert mlu["fallback"] <= mlu["policy"] + 1e-9 and mlu["fallback"] <= mlu["incumbent"] + 1e-9  # the LP
        assert record["installed_source"] == "shortest_path" and record["installed_version"] == 0
    assert installer.calls == [] and runtime.state.version == 0
    # the predicted incumbent MLU is the twin's: the installed (shortest-path) routing on the measured matrix
    from envs.twin import FluidTwin
    twin = FluidTwin(runtime.state.pathset)
    expected = float(twin.mlu(bundles["traffic"][warm + 2][None], runtime.state.effective.ratios)[0])
    assert decided[-1]["predicted_mlu"]["incumbent"] == pytest.approx(expected, rel=1e-6)
    report = runtime.report()
    assert report["latency_ms"]["count"] == 4 and report["latency_ms"]["max"] < 1000
    assert report["last_decision"]["time"] == decided[-1]["time"]


def test_active_installs_the_policy_decision(bundles, tmp_path):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"])
    runtime.set_mode("active")
    records = [r for r in run(runtime, feed, bundles["traffic"][:5]) if r is not None]
    assert records[0]["action"] == "installed" and installer.calls[0] == f"policy:{runtime.version}"
    assert runtime.state.decision.name == f"policy:{runtime.version}"
    ps = runtime.state.pathset
    history = np.stack(bundles["traffic"][2:5])
    # within the reinstall tolerance: a pair whose ratios moved less keeps the group it had
    np.testing.assert_allclose(runtime.state.requested, runtime.bundle.decide(history),
                               atol=runtime.config.reinstall_tolerance)
    assert [e["kind"] for e in audit(runtime) if e["kind"] != "decision"] == ["deploy", "promotion"]
    assert ps.num_pairs == runtime.state.requested.shape[0]


def test_a_decision_without_a_new_poll_adds_no_matrix(bundles, tmp_path):
    """The controller skips a counter poll while an install holds the routing lock: the next
    interval then finds the same rates, which must not enter the history twice."""
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active")
    run(runtime, feed, bundles["traffic"][:runtime.history.maxlen])
    before, records = list(runtime.history), len(runtime.decisions)
    assert runtime.step() is None and len(runtime.decisions) == records
    assert [id(m) for m in runtime.history] == [id(m) for m in before]
    feed(bundles["traffic"][runtime.history.maxlen])
    assert runtime.step()["kind"] == "decision" and runtime.history[-1] is not before[-1]


@pytest.mark.parametrize("tolerance", [0.0, 0.02, 0.2])
def test_only_the_groups_of_pairs_that_moved_beyond_the_tolerance_are_rewritten(bundles, tmp_path, tolerance):
    """Every group change disturbs the switches' counters the next decision reads: a pair whose
    ratios moved by at most ``reinstall_tolerance`` keeps its group (and its installed ratios)."""
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", reinstall_tolerance=tolerance)
    traffic, warm = bundles["traffic"], runtime.history.maxlen
    run(runtime, feed, traffic[:warm - 1])
    for t in range(warm - 1, warm + 5):
        before = runtime.state.requested.copy()
        feed(traffic[t])
        record = runtime.step()
        decided = runtime.bundle.decide(np.stack(traffic[t + 1 - runtime.bundle.history:t + 1]))
        moved = np.flatnonzero(np.abs(decided - before).max(axis=1) > tolerance)
        after = runtime.state.requested
        np.testing.assert_allclose(after[moved], decided[moved], atol=1e-6)  # rewritten: the new decision
        kept = np.setdiff1d(np.arange(len(after)), moved)
        np.testing.assert_array_equal(after[kept], before[kept])                # the rest: untouched
        if record["action"] == "installed":
            assert installer.pairs[-1] == moved.tolist() and record["install"]["pairs_changed"] == len(moved)
        else:
            assert record["action"] == "unchanged" and len(moved) == 0
    rewrites = [len(pairs) for pairs in installer.pairs[1:]]
    if tolerance == 0.0:
        assert min(rewrites) == runtime.state.pathset.num_pairs  # each new matrix moves every pair a little
    else:
        assert sum(rewrites) < 5 * runtime.state.pathset.num_pairs


# ---------------------------------------------------------------------- fallback
def raises(self, history):
    raise RuntimeError("the graph exploded")


def nan_ratios(self, history):
    return np.full((self.pathset.num_pairs, self.pathset.k), np.nan)


def sleeps(self, history):
    time.sleep(1.0)
    return Bundle.run(self, self.demands(history))


@pytest.mark.parametrize("decide, reason", [(raises, "inference failed: RuntimeError: the graph exploded"),
                                            (nan_ratios, "invalid decision: the policy gave non-finite"),
                                            (sleeps, "inference timed out after 0.2 s")])
def test_a_failing_inference_falls_back_to_the_lp_in_the_same_interval(bundles, tmp_path, monkeypatch, decide,
                                                                        reason):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", decision_timeout_s=0.2)
    warm = runtime.history.maxlen
    run(runtime, feed, bundles["traffic"][:warm - 1])
    monkeypatch.setattr(Bundle, "decide", decide)
    feed(bundles["traffic"][warm - 1])
    started = time.perf_counter()
    record = runtime.step()
    assert time.perf_counter() - started < 0.2 + 0.5  # a slow inference delays only its own decision, by its deadline
    assert record["status"] == "fallback" and reason in record["fallback_reason"]
    assert record["events"] == [{"kind": "fallback", "reason": record["fallback_reason"]}]
    assert record["action"] == "installed" and installer.calls == ["fallback:lp"]
    assert record["predicted_mlu"]["policy"] is None and "no usable policy decision" in record["explanation"]["text"]
    assert runtime.report()["status"] == "fallback"


def test_the_fallback_routing_is_the_operators_choice(bundles, tmp_path, monkeypatch):
    from topologies import Routing

    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", fallback="equal_split")
    monkeypatch.setattr(Bundle, "decide", raises)
    record = [r for r in run(runtime, feed, bundles["traffic"][:runtime.history.maxlen]) if r is not None][-1]
    assert record["status"] == "fallback" and record["fallback_routing"] == "equal_split"
    assert installer.calls == ["fallback:equal_split"]
    np.testing.assert_array_equal(runtime.state.requested, Routing.uniform(runtime.state.pathset).ratios)
    with pytest.raises(ValueError, match="unknown fallback routing 'ospf'; choose lp, shortest_path, equal_split"):
        RuntimeConfig(fallback="ospf")


def hotspot(matrices: np.ndarray, factor: float = 20.0) -> list[np.ndarray]:
    """``matrices`` with the pair that carries most of the first one's traffic ×``factor``."""
    ps = new_state().pathset
    o, d = ps.pairs[int(np.argmax(ps.demands(matrices[0])))]
    hot = [m.copy() for m in matrices]
    for m in hot:
        m[o, d] *= factor
    return hot


def test_drift_falls_back_when_a_statistic_stays_above_its_threshold_and_returns_after_hysteresis(bundles, tmp_path):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active")
    detector = runtime.bundle.drift
    assert detector is not None and set(detector.thresholds) == {"ks", "js", "envelope"}
    traffic = bundles["traffic"]
    warm = detector.history  # matrices before the first decision
    records = [r for r in run(runtime, feed, traffic[:warm + 2]) if r is not None]
    assert len(records) == 3 and {r["status"] for r in records} == {"policy"}
    records = run(runtime, feed, hotspot(traffic[warm + 2:warm + 6]))
    first = next(i for i, r in enumerate(records) if r["status"] == "fallback")
    assert first >= 1  # one window above a threshold is not drift: `consecutive` (2) windows in a row are
    drift = records[first]["drift"]
    assert drift["drifted"] and drift["fired"] and drift["consecutive"] == 2
    assert all(drift["statistics"][name]["above"] for name in drift["fired"])
    assert records[first]["fallback_reason"].startswith("drift") and drift["fired"][0] in records[first]["fallback_reason"]
    assert not any(r["drift"]["drifted"] for r in records[:first])
    assert installer.calls[-1] == "fallback:lp"
    # an operator's choice of statistics: the others are recorded, and make nobody fall back
    chosen = tuple(name for name in ("ks", "js", "envelope") if name not in drift["fired"])
    assert chosen, "this hotspot fires every statistic at once: the choice below tests nothing"
    narrow, narrow_feed, _ = runtime_for(tmp_path / "narrow", bundles["a"], "active", drift_statistics=chosen)
    narrow_records = run(narrow, narrow_feed, traffic[:warm + 2]) + run(narrow, narrow_feed,
                                                                        hotspot(traffic[warm + 2:warm + 6]))
    assert narrow_records[warm + 2 + first]["status"] == "policy"
    assert narrow_records[warm + 2 + first]["drift"]["statistics"] == drift["statistics"]
    assert all(set(r["drift"]["fired"]) <= set(chosen) for r in narrow_records if r is not None)
    records = run(runtime, feed, traffic[warm + 6:])
    back = next(i for i, r in enumerate(records) if r["status"] == "policy")
    assert records[back]["events"][0]["kind"] == "recovered" and "drift" in records[back]["events"][0]["reason"]
    clean = next(i for i, r in enumerate(records) if not r["drift"]["drifted"])
    assert back == clean + runtime.config.recover_intervals - 1  # hysteresis: 3 clean intervals, this one included
    assert installer.calls[-1] == f"policy:{runtime.version}"


def test_without_ks_js_statistics_the_envelope_alone_guards_one_window(bundles, tmp_path):
    """A bundle whose training traffic was too short for KS / JS: the envelope score, one window."""
    def envelope_only(path):
        return dataclasses.replace(load_bundle(path, pathset=new_state().pathset), drift=None)

    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", loader=envelope_only)
    traffic = bundles["traffic"]
    run(runtime, feed, traffic[:4])
    assert runtime.status == "policy"
    records = run(runtime, feed, hotspot(traffic[4:6]))
    assert records[0]["status"] == "policy"  # the median of the last 3 matrices: one hot matrix is not drift
    assert records[1]["status"] == "fallback" and records[1]["fallback_reason"].startswith("drift")
    envelope = records[1]["drift"]["statistics"]["envelope"]
    assert records[1]["drift"]["fired"] == ["envelope"] and envelope["score"] > envelope["threshold"]
    assert installer.calls[-1] == "fallback:lp"
    records = run(runtime, feed, traffic[6:12])
    statuses = [r["status"] for r in records]
    # the window's median is clean once two of its three matrices are normal; three clean intervals later
    # (the second normal matrix's included) the policy is back
    assert statuses == ["fallback", "fallback", "fallback", "policy", "policy", "policy"], statuses
    assert [r["drift"]["drifted"] for r in records[:4]] == [True, False, False, False]
    assert installer.calls[-1] == f"policy:{runtime.version}"


def longest(self, history):
    """Everything on each pair's last candidate: far worse than the LP (a Bundle.decide stand-in)."""
    mask = np.asarray(self.pathset.mask)
    ratios = np.zeros(mask.shape)
    ratios[np.arange(len(mask)), mask.sum(axis=1) - 1] = 1.0
    return ratios


def test_a_policy_that_hurts_falls_back_after_n_intervals(bundles, tmp_path, monkeypatch):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "shadow", mlu_margin=0.05)
    monkeypatch.setattr(Bundle, "decide", longest)
    warm = runtime.history.maxlen
    records = [r for r in run(runtime, feed, bundles["traffic"][:warm + 4]) if r is not None]
    assert all(r["predicted_mlu"]["policy"] > 1.05 * r["predicted_mlu"]["fallback"] for r in records)
    assert [r["status"] for r in records] == ["policy", "policy", "fallback", "fallback", "fallback"]
    assert records[2]["fallback_reason"].startswith("hurt") and "3 intervals in a row" in records[2]["fallback_reason"]
    assert installer.calls == []  # shadow: what it would do is recorded, nothing installed
    # a policy as good as the fallback: the cause is gone, and after 3 clean intervals it is back
    monkeypatch.setattr(Bundle, "decide", lambda self, history: runtime.fallback_routing(history[-1])[0])
    records = run(runtime, feed, bundles["traffic"][warm + 4:warm + 7])
    assert [r["status"] for r in records] == ["fallback", "fallback", "policy"]
    assert records[-1]["events"][0]["kind"] == "recovered" and "hurt" in records[-1]["events"][0]["reason"]


def test_each_decision_records_the_mlu_the_port_counters_measured_under_the_installed_routing(bundles, tmp_path):
    from envs.twin import FluidTwin

    # every decision installed whole (no reinstall tolerance): the routing of each interval is known exactly
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", reinstall_tolerance=0.0)
    traffic = bundles["traffic"]
    warm = runtime.history.maxlen
    records = run(runtime, feed, traffic[:warm + 2])
    twin = FluidTwin(runtime.state.pathset)
    decided = [(t, r) for t, r in enumerate(records) if r is not None]
    t, first = decided[0]  # its polling interval ran on the initial shortest-path routing
    assert first["measured_mlu"] == pytest.approx(float(twin.mlu(traffic[t][None], first_path(runtime))[0]), rel=1e-9)
    for t, record in decided[1:]:  # later intervals ran on what the previous decision installed
        assert record["installed_source"] == f"policy:{runtime.version}"
        previous = runtime.bundle.decide(np.stack(traffic[t - runtime.bundle.history:t]))
        assert record["measured_mlu"] == pytest.approx(float(twin.mlu(traffic[t][None], previous)[0]), rel=1e-6)


def first_path(runtime: PolicyRuntime) -> np.ndarray:
    ratios = np.zeros((runtime.state.pathset.num_pairs, runtime.state.pathset.k))
    ratios[:, 0] = 1.0
    return ratios


@pytest.mark.parametrize("decide, promoted", [("lp", True), ("longest", False)])
def test_automatic_promotion_after_n_of_m_shadow_wins(bundles, tmp_path, monkeypatch, decide, promoted):
    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "shadow", promote_after=(2, 3))
    if decide == "lp":  # the LP on the matrix it routes: below shortest path's MLU on B4
        monkeypatch.setattr(Bundle, "decide", lambda self, history: runtime.fallback_routing(history[-1])[0])
    else:  # worse than shortest path
        monkeypatch.setattr(Bundle, "decide", longest)
    warm = runtime.history.maxlen
    records = [r for r in run(runtime, feed, bundles["traffic"][:warm + 4]) if r is not None]
    wins = [r["predicted_mlu"]["policy"] < r["predicted_mlu"]["incumbent"] for r in records[:3]]
    assert all(wins) if promoted else not any(wins)
    if promoted:  # the third shadow decision completes 2 wins of 3: it promotes and installs itself
        assert [r["mode"] for r in records] == ["shadow", "shadow", "active", "active", "active"]
        assert records[2]["events"][0]["kind"] == "promotion" and "2 of 3" in records[2]["events"][0]["reason"]
        assert records[2]["action"] == "installed" and installer.calls[0] == f"policy:{runtime.version}"
        assert json.loads((runtime.dir / CURRENT_FILE).read_text())["mode"] == "active"
        assert [e["kind"] for e in audit(runtime) if e["kind"] != "decision"] == ["deploy", "promotion"]
    else:
        assert runtime.mode == "shadow" and installer.calls == []
    with pytest.raises(ValueError, match="1 <= N <= M"):
        RuntimeConfig(promote_after=(4, 3))


def test_policy_status_shows_the_last_decisions_drift_statistics(bundles, tmp_path, capsys):
    from experiments.cli import _print_policy

    runtime, feed, _ = runtime_for(tmp_path, bundles["a"])
    record = [r for r in run(runtime, feed, bundles["traffic"][:runtime.history.maxlen]) if r is not None][-1]
    _print_policy(runtime.report())
    out = capsys.readouterr().out
    ks = record["drift"]["statistics"]["ks"]
    assert f"drift: ks {ks['score']:.3g} (threshold {ks['threshold']:.3g}), js " in out and "envelope" in out


# ---------------------------------------------------------------------- versions
def test_rollback_restores_the_previous_version(bundles, tmp_path):
    runtime, feed, _ = runtime_for(tmp_path, bundles["a"])
    first = runtime.version
    second = runtime.deploy(bundles["b"])
    assert first != second and len(first) == len(second) == 12
    assert sorted(p.name for p in (runtime.dir / "bundles").iterdir()) == sorted([first, second])
    assert runtime.rollback() == first and runtime.version == first
    assert json.loads((runtime.dir / CURRENT_FILE).read_text())["version"] == first
    assert runtime.rollback(second) == second
    with pytest.raises(BundleError, match="never deployed here"):
        runtime.rollback("0123456789ab")
    assert [e["kind"] for e in audit(runtime)] == ["deploy", "deploy", "rollback", "rollback"]
    # the bundle decides from the stored copy: the original may go away
    run(runtime, feed, bundles["traffic"][:3])
    assert runtime.decisions[-1]["version"] == second


def test_rollback_in_active_mode_installs_the_restored_version_at_once(bundles, tmp_path, monkeypatch):
    loads = []

    def counting(path):
        loads.append(path)
        return load_bundle(path, pathset=new_state().pathset)

    runtime, feed, installer = runtime_for(tmp_path, bundles["a"], "active", loader=counting)
    first = runtime.version
    run(runtime, feed, bundles["traffic"][:runtime.history.maxlen])
    assert installer.calls == [f"policy:{first}"]
    second = runtime.deploy(bundles["b"])  # a new version starts in shadow: nothing installed
    assert runtime.mode == "shadow" and installer.calls == [f"policy:{first}"]
    runtime.set_mode("active")  # promoting installs now, not an interval later
    assert installer.calls[-1] == f"policy:{second}"
    solves = []
    monkeypatch.setattr(PolicyRuntime, "fallback_routing",
                        lambda self, matrix: solves.append(1) or (first_path(self), "lp"))
    assert runtime.rollback() == first
    assert installer.calls[-1] == f"policy:{first}"  # no interval passed: the rollback itself installed it
    # quick because it reuses: the version loaded at its deployment, the fallback LP of this matrix
    assert len(loads) == 2 and solves == []
    history = np.stack(runtime.history)
    np.testing.assert_allclose(runtime.state.requested, runtime.bundle.decide(history),
                               atol=runtime.config.reinstall_tolerance)
    assert [e["kind"] for e in audit(runtime)][-2:] == ["rollback", "decision"]


def test_a_restart_resumes_the_bundle_and_mode(bundles, tmp_path):
    runtime, _, _ = runtime_for(tmp_path, bundles["a"])
    runtime.set_mode("active")
    again = PolicyRuntime(new_state(), tmp_path / "policy")
    assert again.resume()
    assert (again.version, again.mode) == (runtime.version, "active")
    assert isinstance(again.bundle, Bundle) and again.report()["deployed"] == runtime.report()["deployed"]
    assert PolicyRuntime(new_state(), tmp_path / "elsewhere").resume() is False
    # redeploying the same version keeps its mode; a new version starts in shadow
    again.deploy(bundles["a"])
    assert again.mode == "active"
    again.deploy(bundles["b"])
    assert again.mode == "shadow"


def test_the_audit_log_is_append_only_json_lines(bundles, tmp_path):
    runtime, feed, _ = runtime_for(tmp_path, bundles["a"])
    warm = runtime.history.maxlen
    run(runtime, feed, bundles["traffic"][:warm + 1])
    before = (runtime.dir / AUDIT_FILE).read_bytes()
    run(runtime, feed, bundles["traffic"][warm + 1:warm + 3])
    runtime.set_mode("active")  # a promotion decides and installs at once
    after = (runtime.dir / AUDIT_FILE).read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    lines = audit(runtime)
    decisions = [r for r in lines if r["kind"] == "decision"]
    assert len(decisions) == 5 and lines[-2]["kind"] == "promotion" and "shadow -> active" in lines[-2]["reason"]
    assert lines[-1]["kind"] == "decision" and lines[-1]["mode"] == "active" and lines[-1]["action"] == "installed"
    for record in decisions:
        assert {"time", "version", "mode", "installed_version", "drift", "predicted_mlu", "events",
                "explanation", "status", "fallback_reason"} <= set(record)
        assert set(record["predicted_mlu"]) == {"policy", "incumbent", "fallback"}
        assert {"statistics", "drifted", "fired"} <= set(record["drift"])
        assert set(record["drift"]["statistics"]) == {"ks", "js", "envelope"}
        explanation = record["explanation"]
        assert explanation["policy_bottleneck"]["link"] and explanation["incumbent_bottleneck"]["link"]
        assert 1 <= len(explanation["moved_pairs"]) <= 3 and "->" in explanation["moved_pairs"][0]["pair"]
        assert "bottleneck" in explanation["text"]
    assert runtime.since(decisions[-1]["time"] - 1e-3)[0] == decisions[-1]


# ---------------------------------------------------------------------- API
class App:
    def __init__(self, runtime: PolicyRuntime) -> None:
        self.runtime, self.state, self.plan = runtime, runtime.state, runtime.state.plan
        self.settings = type("S", (), {"poll_interval_s": 1.0})()


def snapshot(runtime: PolicyRuntime) -> tuple:
    stored = sorted(p.name for p in (runtime.dir / "bundles").iterdir())
    return runtime.version, runtime.mode, json.dumps(runtime.deployed), stored, \
        (runtime.dir / CURRENT_FILE).read_bytes()


def test_the_policy_api_refuses_bad_requests_and_changes_nothing(bundles, tmp_path):
    runtime, _, _ = runtime_for(tmp_path, bundles["a"])
    api = Api(App(runtime), TOKEN)
    damaged = tmp_path / "damaged"
    shutil.copytree(bundles["b"], damaged)
    (damaged / "policy.onnx").write_bytes((damaged / "policy.onnx").read_bytes()[:-1] + b"\x00")
    future = tmp_path / "future"
    shutil.copytree(bundles["b"], future)
    manifest = json.loads((future / "manifest.json").read_text())
    (future / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    shapes = tmp_path / "shapes"
    shutil.copytree(bundles["b"], shapes)
    (shapes / "manifest.json").write_text(json.dumps({**manifest, "history": 4}))
    (tmp_path / "empty").mkdir()
    before = snapshot(runtime)
    for method, path, body, token, status, message in [
        ("PUT", "/policy", {"path": str(bundles["b"])}, None, 401, "Authorization"),
        ("POST", "/policy/mode", {"mode": "active"}, "wrong", 401, "Authorization"),
        ("PUT", "/policy", {"path": str(damaged)}, TOKEN, 400, "does not match the manifest"),
        ("PUT", "/policy", {"path": str(future)}, TOKEN, 400, "unknown format_version 99"),
        ("PUT", "/policy", {"path": str(shapes)}, TOKEN, 400, "shapes"),
        ("PUT", "/policy", {"path": str(tmp_path / "empty")}, TOKEN, 400, "not a policy bundle"),
        ("PUT", "/policy", {"path": "relative/bundle"}, TOKEN, 400, "absolute path"),
        ("PUT", "/policy", {"path": str(bundles["b"]), "mode": "active"}, TOKEN, 400, "Extra inputs"),
        ("PUT", "/policy", {"path": 3}, TOKEN, 400, "path: Input should be a valid string"),
        ("POST", "/policy/mode", {"mode": "bold"}, TOKEN, 400, "mode: Input should be 'shadow' or 'active'"),
        ("POST", "/policy/rollback", {}, TOKEN, 400, "no earlier version"),
        ("POST", "/policy/rollback", {"version": "0123456789ab"}, TOKEN, 400, "never deployed"),
        ("POST", "/policy/rollback", {"version": "x"}, TOKEN, 400, "version: String should match"),
        ("DELETE", "/policy", None, TOKEN, 405, "use GET, PUT"),
    ]:
        got, reply = call(api, method, path, body, token=token)
        assert (got, message in reply.get("error", "")) == (status, True), (path, body, reply)
        assert snapshot(runtime) == before
    # another network or path set
    for state, message in ((new_state("abilene"), "routes topology 'b4'.*not 'abilene'"),
                           (new_state("b4", 3), "another path set")):
        other = PolicyRuntime(state, tmp_path / f"other_{state.pathset.k}")
        got, reply = call(Api(App(other), TOKEN), "PUT", "/policy", {"path": str(bundles["a"])}, token=TOKEN)
        assert got == 400 and re.search(message, reply["error"]), reply
        assert other.version is None and not other.dir.exists()
    # and the good requests
    got, reply = call(api, "PUT", "/policy", {"path": str(bundles["b"])}, token=TOKEN)
    assert got == 200 and reply["deployed_version"] == reply["version"] == runtime.version != before[0]
    assert call(api, "POST", "/policy/mode", {"mode": "active"}, token=TOKEN)[1]["mode"] == "active"
    got, reply = call(api, "POST", "/policy/rollback", {}, token=TOKEN)
    assert got == 200 and reply["version"] == before[0] and reply["mode"] == "active"
    got, reply = call(api, "GET", "/policy")
    assert got == 200 and reply["version"] == before[0]
    got, records = call(api, "GET", "/decisions?since=0")
    assert got == 200 and [r["kind"] for r in records] == ["deploy", "deploy", "promotion", "rollback"]
    assert call(api, "GET", "/decisions?since=x")[0] == 400
    for route in ("/policy", "/policy/mode", "/policy/rollback", "/decisions"):
        assert route in OPENAPI["paths"]
    assert "on the controller's own machine" in OPENAPI["paths"]["/policy"]["put"]["summary"]


# ---------------------------------------------------------------------- the controller process
def test_the_controller_runs_a_bundle_in_shadow_mode_without_torch(bundles, tmp_path):
    """`rlte controller --policy BUNDLE --mode shadow`, started with torch and Stable-Baselines3
    unimportable: GET /policy reports the bundle loaded; a bad bundle is a start-up error (exit 2)."""
    blocked = ("import sys; sys.modules['torch'] = None; sys.modules['stable_baselines3'] = None; "
               "from experiments.cli import main; main()")
    of_port, api_port = free_port(), free_port()
    arguments = ["controller", "--topology", "b4", "--of-port", str(of_port), "--api-port", str(api_port),
                 "--policy-dir", str(tmp_path / "state")]
    env = {**os.environ, "RLTE_CONTROLLER_TOKEN": TOKEN}
    bad = subprocess.run([sys.executable, "-c", blocked, *arguments, "--policy", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not a policy bundle: it has no manifest.json" in bad.stderr, bad.stderr
    process = subprocess.Popen([sys.executable, "-c", blocked, *arguments, "--policy", str(bundles["a"]), "--mode",
                                "shadow", "--decision-interval", "0.3"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        wait_for_port(api_port, process)
        from controllers.client import ControllerClient

        client = ControllerClient(f"http://127.0.0.1:{api_port}", TOKEN)
        report = client.policy()
        digest = hashlib.sha256((bundles["a"] / "policy.onnx").read_bytes()).hexdigest()
        assert report["version"] == digest[:12] and report["mode"] == "shadow"
        assert report["policy"]["topology"] == "b4" and report["decision_interval_s"] == 0.3
        deadline = time.monotonic() + 10.0  # the runtime's thread runs in the controller: no switches, no telemetry
        while report["status"] == "warming up" and time.monotonic() < deadline:
            time.sleep(0.1)
            report = client.policy()
        assert report["status"] == "waiting for telemetry"
        assert (tmp_path / "state" / "bundles" / digest[:12] / "policy.onnx").is_file()
        # the `rlte policy` client commands against it
        from typer.testing import CliRunner

        from experiments.cli import app

        (tmp_path / "token").write_text(TOKEN + "\n")
        where = ["--controller", f"http://127.0.0.1:{api_port}", "--token-file", str(tmp_path / "token")]
        result = CliRunner().invoke(app, ["policy", "promote", *where])
        assert result.exit_code == 0 and f"version {digest[:12]} · mode active" in result.output, result.output
        result = CliRunner().invoke(app, ["policy", "rollback", *where])
        assert result.exit_code == 2 and "no earlier version" in result.output
        result = CliRunner().invoke(app, ["policy", "log", *where])
        assert [json.loads(line)["kind"] for line in result.output.splitlines()] == ["deploy", "promotion"]
        result = CliRunner().invoke(app, ["policy", "status", "--json", *where])
        assert json.loads(result.output)["mode"] == "active"
    finally:
        stop_process(process, 20)
