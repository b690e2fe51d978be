"""The deployment loop on an emulated Abilene (root, Mininet, Open vSwitch): a twin-trained graph
policy exported as a bundle, run by the controller's policy runtime in shadow, promoted, compared
with OSPF and with the LP on the last measured matrix on the same traffic, pushed out of its
training distribution, and rolled back.

1. **Policy.** ``agent=gradient_gnn topology=abilene`` trained through ``experiments.api`` into
   the work directory (or ``--run DIR`` / ``--bundle DIR``), exported with
   ``experiments.export.export_bundle``; a second version for the rollback
   (``agent=gradient``, the MLP, by default; ``--second-run`` / ``--second-bundle``).
2. **Controller.** ``rlte controller --topology abilene --policy BUNDLE --mode shadow`` on free
   ports, with a token file, ``--policy-dir`` in the work directory, ``--poll-interval`` and
   ``--decision-interval``. OSPF is not one of the controller's initial routings
   (``controllers/decision.py``: shortest path, equal split), so the bench installs it with
   ``PUT /routing`` once the switches are ready: OSPF's ECMP on Abilene's IGP weights
   (``agents.policy.ospf``) on the controller's path set, the K = 4 hop-shortest paths the
   bundle routes over. Three of the 132 pairs have their OSPF path outside that set; they get
   the candidate with the least IGP weight (``incumbent`` in the JSON lists them, with the twin's
   exact OSPF against this one).
3. **Traffic.** One day of ``abilene-test`` (``--day``), every ``--every``-th matrix, scaled
   once so the day's peak optimal MLU is ``--scale`` (as ``rlte net`` scales), replayed as one
   continuous series through ``experiments.replay.play`` (each matrix for ``--period`` s), with
   the phases laid out in it; every phase starts with ``--warmup`` matrices that precede its
   segment in the day, so the policy's history is the same when each phase's measured part
   begins:

   - *shadow*: segment S (``--segment`` matrices from ``--segment-start``), OSPF installed, the
     bundle in shadow: OSPF's measured MLU, and what the policy would have done;
   - *active*: ``POST /policy/mode active`` at the phase's start, then S again: the policy's;
   - *lp_last*: ``POST /policy/mode shadow``, and the bench itself installs the min-MLU path LP
     (``agents.lp.path_lp``, tie-break ``min_load``, on the matrix scaled by the largest
     capacity: the runtime's own fallback) on the matrix the controller measured over its last
     polling interval (``GET /stats``), right after each of the runtime's shadow decisions (so at
     the instants the policy decided), with ``PUT /routing``: the runtime has no forced-fallback
     command, and in active mode it would overwrite the bench's routing. Then S again;
   - *drift*: ``POST /policy/mode active`` and a later segment D of the day (``--drift-start``,
     ``--drift-segment``) where, from its ``--drift-after``-th matrix on, a hotspot multiplies
     one destination's incoming traffic by ``--hotspot-factor`` (``bench/drift.py``'s
     injection; the destination: ``--hotspot``, by default the busiest one whose hotspot still
     has an optimal MLU of at most ``--max-drift-optimum``, so that losses stay congestion-free
     for a good routing). Measured: drift start -> the runtime's fallback event, and the
     fallback's routing confirmed installed;
   - *rollback*: normal traffic again (S's first matrices); after ``--warmup`` matrices the
     second version is deployed (``PUT /policy``) and promoted, then ``POST /policy/rollback``
     ``--rollbacks`` times (each back to the other version): API call -> the restored version's
     routing confirmed by every switch (the audit record of its install), and -> ``GET /routing``
     showing it.

Measured per matrix (``bench/results/deployment.json``, ``deployment.png``): the MLU from the
controller's link counters (``GET /counters``, tx bytes per link over the matrix's period after
0.5 s, the way ``experiments.replay`` reads the pair counters), divided by the exact optimum
(``agents.lp.mcf_optimum``) of the matrix the controller's ingress counters measured over the
same polls (and, as a check, by the replayed matrix's optimum × the headers); the routing in
place at the period's middle (``GET /routing``) and the twin's MLU for it on the replayed
matrix; delivered traffic (the
traffic agents' own counts: bytes received ÷ bytes sent by packets sent inside the period,
``envs/traffic_agent.py``) and the twin's delivery for the same routing (losses beyond what
congestion explains); the controller's measured matrices against the replayed ones. From the
audit log (``decisions.jsonl``): decision latency (``latency_ms.inference``), fallback and
recovery events, drift statistics, promotions and rollbacks. Fields the runtime may not write
yet (``measured_mlu``, ``drift.drifted``) are read when present; what the bench needs it measures
itself.

Run as root, from the checkout: ``sudo .venv/bin/python -m bench.deployment`` (``--quick``: a
few matrices per phase, a short training, for a smoke test; ``--run`` / ``--bundle`` reuse a
trained policy; ``--from-raw WORK/raw.pickle`` analyses a live run's data again, without root).
With the defaults the replay takes ~8.5 min (124 matrices of 4 s) and training ~4 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MATRICES_PER_DAY = 288
SETTLE_S = 0.5            # a matrix's period is measured from this long after its start (every flow sends)
MARGIN_S = 0.1            # ... to this long before its end (experiments.replay.MEASURE_MARGIN_S)
COUNTER_READ_S = 0.25     # how often the bench reads GET /counters (as experiments.replay does)
ROUTING_READ_S = 0.5      # ... and GET /routing
PAYLOAD_BYTES = 1400      # envs.mininet_backend.ReplaySettings.payload_bytes
FRAME_BYTES = PAYLOAD_BYTES + 28 + 14  # IPv4 + UDP + Ethernet: what the ingress counters count per packet
CONGESTED_MLU = 0.9      # a period whose busiest link carried this much counts as congested (losses explained)
PHASES = ("shadow", "active", "lp_last", "drift", "rollback")
PHASE_LABELS = {"shadow": "OSPF installed, policy in shadow", "active": "policy active",
                "lp_last": "LP on the last measured matrix", "drift": "policy active, hotspot injected",
                "rollback": "second version, rollbacks"}
GOALS = {"policy_beats_ospf_median_by": 0.25, "policy_within_lp_last_median": 0.03, "inference_ms": 5.0,
         "drift_to_fallback_decision_intervals": 1.0, "rollback_ms": 100.0}


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


# ---------------------------------------------------------------------------------------- helpers
def summary(values, digits: int = 4) -> dict | None:
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    array = np.array(values)
    return {"median": round(float(np.median(array)), digits), "p90": round(float(np.percentile(array, 90)), digits),
            "mean": round(float(array.mean()), digits), "min": round(float(array.min()), digits),
            "max": round(float(array.max()), digits), "n": len(values)}


def field(record: dict, *path: str, default: Any = None, required: bool = False) -> Any:
    """``record[path[0]][path[1]]...``; ``default`` where the controller does not write it (yet), or a
    BenchError naming the missing field when ``required``."""
    value: Any = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            if required:
                raise BenchError(f"the controller's audit record has no '{'.'.join(path)}' (record kind "
                                 f"{record.get('kind')!r}, keys {sorted(record)}): this bench needs a runtime "
                                 "that writes it")
            return default
        value = value[key]
    return value


def drifted(record: dict) -> bool | None:
    """Whether the decision saw drift: ``drift.drifted`` (both the envelope-only and the KS/JS records
    write it); None when the record carries no drift statistics."""
    value = field(record, "drift", "drifted")
    return None if value is None else bool(value)


def install_of(record: dict) -> dict | None:
    """The routing install a record reports, confirmed by every switch, or None."""
    install = record.get("install")
    if isinstance(install, dict) and install.get("source") and install.get("confirmed"):
        return install
    return None


# ---------------------------------------------------------------------------------------- the policies
def train(agent: str, seed: int, directory: Path, epochs: int | None, extra: list[str]) -> dict:
    from experiments.api import compose, train_config

    overrides = [f"agent={agent}", "topology=abilene", f"seed={seed}", *extra]
    if epochs is not None:
        overrides.append(f"agent.epochs={epochs}")
    if directory.exists():
        shutil.rmtree(directory)  # not resumable: a fresh run each time
    print(f"training {' '.join(overrides)} into {directory}", flush=True)
    started = time.perf_counter()
    run = train_config(compose(*overrides), directory)
    wall = time.perf_counter() - started
    metrics = run.metrics
    final = metrics.get("final", {}).get(run.config.agent.name, {})
    print(f"  trained in {wall:.0f} s: held-out median {final.get('median')}", flush=True)
    return {"agent": agent, "seed": seed, "overrides": overrides, "run_dir": str(directory),
            "epochs": int(run.config.agent.epochs), "epochs_overridden": epochs is not None,
            "wall_seconds": round(wall, 1), "train_seconds": metrics.get("train_seconds"),
            "held_out": {k: final.get(k) for k in ("median", "p90", "max")}}


def export(run_dir: Path, bundle_dir: Path) -> dict:
    from experiments.api import load_run
    from experiments.export import export_bundle

    started = time.perf_counter()
    export_bundle(load_run(run_dir), bundle_dir)
    return {"bundle": str(bundle_dir), "export_seconds": round(time.perf_counter() - started, 1)}


def bundle_info(bundle_dir: Path) -> dict:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    return {"bundle": str(bundle_dir), "version": manifest["onnx_sha256"][:12], "policy": manifest["policy"],
            "kind": manifest["kind"], "history": manifest["history"],
            "held_out_median": field(manifest, "held_out", "median"),
            "drift_statistics": "KS, JS and envelope" if manifest.get("drift") else "envelope alone",
            "parity_max_abs_diff": manifest.get("parity_max_abs_diff")}


def policy(args, which: str, work: Path) -> dict:
    """The bundle of the first (``which`` = "first") or second version: given, exported from a
    given run, or trained here and exported."""
    if which == "first":
        run, bundle, agent, seed, epochs = args.run, args.bundle, args.agent, args.seed, args.epochs
    else:
        run, bundle, agent, seed, epochs = (args.second_run, args.second_bundle, args.second_agent, args.second_seed,
                                            args.second_epochs)
    out: dict[str, Any] = {}
    if bundle is not None:
        out["source"] = f"given bundle {bundle}"
        target = Path(bundle).resolve()
    else:
        if run is not None:
            run_dir = Path(run).resolve()
            out["source"] = f"given run {run_dir}"
        else:
            run_dir = work / "runs" / f"{agent}_seed{seed}"
            out["training"] = train(agent, seed, run_dir, epochs, ["eval.with_baselines=false"])
            out["source"] = "trained here"
        target = work / "bundles" / which
        target.parent.mkdir(parents=True, exist_ok=True)
        out["export"] = export(run_dir, target)
        print(f"exported {run_dir} -> {target} in {out['export']['export_seconds']} s", flush=True)
    out.update(bundle_info(target))
    return out


# ---------------------------------------------------------------------------------------- OSPF as the incumbent
def ospf_on_pathset(pathset) -> tuple[np.ndarray, list[str]]:
    """OSPF's routing (agents.policy.ospf) as split ratios over ``pathset``; a pair whose OSPF paths
    are not all candidates of ``pathset`` gets its candidate of least IGP weight (named in the list)."""
    from agents.policy import ospf

    topology = pathset.topology
    routing = ospf(topology).routing
    source = routing.pathset
    if not np.array_equal(source.pairs, pathset.pairs):
        raise BenchError("OSPF's pairs are not the controller's")
    weights = topology.link_metric("weight" if topology.has_weights else "invcap")
    ratios = np.zeros((pathset.num_pairs, pathset.k))
    projected = []
    for p in range(pathset.num_pairs):
        slots = {path: k for k, path in enumerate(pathset.paths[p])}
        used = [(path, routing.ratios[p, k]) for k, path in enumerate(source.paths[p]) if routing.ratios[p, k] > 0]
        if all(path in slots for path, _ in used):
            for path, share in used:
                ratios[p, slots[path]] += share
        else:
            costs = [float(weights[list(path)].sum()) for path in pathset.paths[p]]
            ratios[p, int(np.argmin(costs))] = 1.0
            projected.append(" -> ".join(source.node_path(p, 0)))
    return ratios / ratios.sum(axis=1, keepdims=True), projected


# ---------------------------------------------------------------------------------------- the controller
def start_controller(args, work: Path, bundle: Path) -> tuple[subprocess.Popen, dict]:
    from envs.mininet_backend import free_port

    of_port, api_port = free_port(), free_port()
    token_file, policy_dir = work / "controller.token", work / "policy"
    if policy_dir.exists():
        shutil.rmtree(policy_dir)  # a fresh state directory: nothing resumed
    rlte = Path(sys.executable).with_name("rlte")
    command = [str(rlte) if rlte.exists() else "rlte", "controller", "--topology", "abilene",
               "--of-port", str(of_port), "--api-port", str(api_port), "--token-file", str(token_file),
               "--poll-interval", f"{args.poll:g}", "--decision-interval", f"{args.decision_interval:g}",
               "--policy", str(bundle), "--mode", "shadow", "--policy-dir", str(policy_dir),
               "--initial-routing", "shortest_path"]
    log = open(work / "controller.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    log.close()
    url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + 60
    from controllers.client import ControllerClient, ControllerError

    probe = ControllerClient(url, timeout_s=2.0)
    while True:
        if process.poll() is not None:
            raise BenchError(f"the controller exited with status {process.returncode}:\n"
                             f"{(work / 'controller.log').read_text()[-3000:]}")
        try:
            probe.get("/openapi.json")
            break
        except ControllerError:
            if time.monotonic() > deadline:
                raise BenchError(f"the controller's API did not open within 60 s; see {work / 'controller.log'}")
            time.sleep(0.2)
    return process, {"command": " ".join(command), "url": url, "of_port": of_port, "token_file": str(token_file),
                     "policy_dir": str(policy_dir), "log": str(work / "controller.log")}


# ---------------------------------------------------------------------------------------- the series
@dataclasses.dataclass
class Slot:
    """One replayed matrix of the series."""

    position: int
    phase: str
    role: str            # warmup | measured
    day_matrix: int      # index into the day (0..287)
    dataset_index: int   # index into abilene-test
    drifted: bool = False


def layout(args) -> tuple[list[Slot], dict[str, int]]:
    """The series: each phase's warm-up and measured matrices, as positions in the day."""
    every, warm = args.every, args.warmup
    day = [args.day * MATRICES_PER_DAY + i for i in range(0, MATRICES_PER_DAY, every)]

    def seg(start: int, count: int) -> list[int]:  # positions in the subsampled day
        if start < 0 or start + count > len(day):
            raise BenchError(f"a segment of {count} from {start} does not fit the day's {len(day)} matrices "
                             f"(every {every}th)")
        return list(range(start, start + count))

    if args.segment_start < warm or args.drift_start < warm:
        raise BenchError(f"--segment-start and --drift-start must leave --warmup {warm} matrices before them")
    if not 1 <= args.drift_after < args.drift_segment:
        raise BenchError("--drift-after must leave at least one matrix after the drift starts")
    s_warm, s = seg(args.segment_start - warm, warm), seg(args.segment_start, args.segment)
    d_warm, d = seg(args.drift_start - warm, warm), seg(args.drift_start, args.drift_segment)
    rollback_warm = args.rollback_warmup
    rollback_matrices = int(math.ceil((2 + args.rollbacks) * (args.decision_interval + 1.5) / args.period)) + 1
    r = seg(args.segment_start - warm, rollback_warm + rollback_matrices)
    slots: list[Slot] = []
    starts: dict[str, int] = {}

    def add(phase: str, positions: list[int], role: str, drift_from: int | None = None) -> None:
        starts.setdefault(phase, len(slots))
        for j, position in enumerate(positions):
            slots.append(Slot(len(slots), phase, role, position * every, day[position],
                              drift_from is not None and j >= drift_from))

    for phase in ("shadow", "active", "lp_last"):
        add(phase, s_warm, "warmup")
        add(phase, s, "measured")
    add("drift", d_warm, "warmup")
    add("drift", d, "measured", drift_from=args.drift_after)
    add("rollback", r[:rollback_warm], "warmup")
    add("rollback", r[rollback_warm:], "measured")
    return slots, starts


def hotspot_destination(args, topology, day_demands: np.ndarray, pathset, slots: list[Slot]) -> tuple[int, dict]:
    """The hotspot's destination: ``--hotspot``, or the busiest destination (incoming traffic over
    the drifted matrices) whose hotspot keeps the optimal MLU at most ``--max-drift-optimum``."""
    from agents.lp import optimal_mlu

    drifted = [s.day_matrix for s in slots if s.drifted]
    base = day_demands[drifted]
    n = topology.num_nodes
    incoming = np.array([base[:, pathset.pairs[:, 1] == d].sum() for d in range(n)])
    candidates = {}
    for d in np.argsort(-incoming):
        hot = base.copy()
        hot[:, pathset.pairs[:, 1] == d] *= args.hotspot_factor
        matrices = np.zeros((len(hot), n, n))
        matrices[:, pathset.pairs[:, 0], pathset.pairs[:, 1]] = hot
        candidates[topology.node_names[d]] = {"incoming_share": round(float(incoming[d] / incoming.sum()), 4),
                                              "drifted_peak_optimal_mlu": round(float(optimal_mlu(topology,
                                                                                                  matrices).max()), 4)}
    if args.hotspot is not None:
        if args.hotspot not in topology.node_names:
            raise BenchError(f"--hotspot {args.hotspot!r} is not an Abilene node: {', '.join(topology.node_names)}")
        chosen = topology.node_names.index(args.hotspot)
        how = "given (--hotspot)"
    else:
        fit = [name for name, c in candidates.items() if c["drifted_peak_optimal_mlu"] <= args.max_drift_optimum]
        if not fit:
            raise BenchError(f"no destination's x{args.hotspot_factor:g} hotspot stays at optimal MLU <= "
                             f"{args.max_drift_optimum:g}: lower --scale or give --hotspot")
        chosen = topology.node_names.index(fit[0])
        how = (f"the busiest destination whose x{args.hotspot_factor:g} hotspot keeps the optimal MLU at most "
               f"{args.max_drift_optimum:g}")
    return chosen, {"destination": topology.node_names[chosen], "factor": args.hotspot_factor, "chosen": how,
                    "candidates": candidates}


# ---------------------------------------------------------------------------------------- live threads
class Sampler(threading.Thread):
    """Reads GET /counters every COUNTER_READ_S (links and pairs: one measurement window gives both
    the MLU and the matrix it carried, from the same polls) and GET /routing every ROUTING_READ_S."""

    def __init__(self, client) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.counters: list[list[tuple[float, float] | None]] = []  # per read: (sample time, bytes), links then pairs
        self.routing: list[tuple[float, dict]] = []    # (epoch, {version, source, installed})
        self.errors = 0

    def run(self) -> None:
        next_routing = 0.0
        while not self.stop.is_set():
            now = time.time()
            try:
                counters = self.client.counters(fresh=False)
                links, pairs = counters.get("links") or [], counters.get("pairs") or []
                self.counters.append([None if x is None else (x["time"], x["tx_bytes"]) for x in links]
                                     + [None if x is None else (x["time"], x["bytes"]) for x in pairs])
                if now >= next_routing:
                    report = self.client.get("/routing")
                    self.routing.append((time.time(), {"version": report.get("version"), "source": report.get("source"),
                                                       "installed": report.get("installed")}))
                    next_routing = now + ROUTING_READ_S
            except Exception:  # noqa: BLE001 - a missed sample is no result
                self.errors += 1
            self.stop.wait(max(0.0, COUNTER_READ_S - (time.time() - now)))


class LPLast(threading.Thread):
    """The path LP on the controller's last measured matrix (GET /stats), installed with PUT /routing
    right after each of the runtime's (shadow) decisions, so that it routes from the same measurements
    at the same instants as the policy did; every ``interval`` s when no decision comes."""

    def __init__(self, client, pathset, capacity_scale: float, interval: float) -> None:
        super().__init__(name="bench-lp-last", daemon=True)
        self.client, self.pathset, self.scale, self.interval = client, pathset, capacity_scale, interval
        self.stop = threading.Event()
        self.installs: list[dict] = []
        self.skipped: list[dict] = []

    def run(self) -> None:
        last_decision = time.time() - self.interval
        last_install = 0.0
        while not self.stop.is_set():
            try:
                newer = [r for r in self.client.decisions(last_decision) if r.get("kind") == "decision"]
            except Exception:  # noqa: BLE001
                newer = []
            if newer:
                last_decision = newer[-1]["time"]
            if newer or time.time() - last_install > self.interval + 0.5:
                last_install = time.time()
                self.install("after the runtime's decision" if newer else "timer")
            self.stop.wait(0.05)

    def install(self, trigger: str) -> None:
        from agents.lp import path_lp

        ps = self.pathset
        labels = [f"{ps.topology.node_names[o]}->{ps.topology.node_names[d]}" for o, d in ps.pairs.tolist()]
        began = time.time()
        try:
            stats = self.client.get("/stats")
            rates = dict(zip(stats.get("pairs") or [], stats.get("pair_rate_bps") or []))
            values = [rates.get(label) for label in labels]
            if any(v is None for v in values):
                self.skipped.append({"time": began, "why": "a pair has no measured rate yet"})
                return
            matrix = _matrix(ps, np.maximum(np.array(values, dtype=float), 0.0) / self.scale)
            solve_start = time.perf_counter()
            ratios = path_lp(ps, matrix / float(ps.topology.capacities.max()), tie_break="min_load",
                             time_limit_s=1.0).ratios
            solve_ms = 1e3 * (time.perf_counter() - solve_start)
            call_start = time.perf_counter()
            reply = self.client.set_ratios(ratios)
            self.installs.append({"time": time.time(), "trigger": trigger, "solve_ms": solve_ms,
                                  "api_ms": 1e3 * (time.perf_counter() - call_start),
                                  "controller_ms": reply.get("latency_ms"), "confirmed": reply.get("confirmed"),
                                  "version": reply.get("version")})
        except Exception as error:  # noqa: BLE001 - one failed interval; the next tries again
            self.skipped.append({"time": began, "why": f"{type(error).__name__}: {error}"})


class Director(threading.Thread):
    """Changes the phase at its first matrix's start: promotions, the LP loop, the rollback sequence."""

    def __init__(self, args, client, t0: float, starts: dict[str, int], pathset, capacity_scale: float,
                 second_bundle: str, first_version: str) -> None:
        super().__init__(name="bench-director", daemon=True)
        self.args, self.client, self.t0, self.starts = args, client, t0, starts
        self.pathset, self.capacity_scale = pathset, capacity_scale
        self.second_bundle, self.first_version = second_bundle, first_version
        self.halt = threading.Event()
        self.actions: list[dict] = []    # what it did, when
        self.rollbacks: list[dict] = []
        self.errors: list[str] = []
        self.lp: LPLast | None = None

    def at(self, position: int) -> float:
        return self.t0 + position * self.args.period

    def wait_until(self, when: float) -> bool:
        return not self.halt.wait(max(0.0, when - time.time()))

    def act(self, what: str, call) -> Any:
        began = time.time()
        try:
            result = call()
            self.actions.append({"time": began, "action": what, "api_ms": 1e3 * (time.time() - began)})
            print(f"  [{began - self.t0:7.1f} s] {what}", flush=True)
            return result
        except Exception as error:  # noqa: BLE001 - recorded, reported, and the bench fails at the end
            self.errors.append(f"{what}: {type(error).__name__}: {error}")
            self.actions.append({"time": began, "action": what, "error": str(error)})
            print(f"  [{began - self.t0:7.1f} s] {what} FAILED: {error}", flush=True)
            return None

    def run(self) -> None:
        try:
            self._run()
        except Exception as error:  # noqa: BLE001
            self.errors.append(f"director: {type(error).__name__}: {error}")

    def _run(self) -> None:
        if not self.wait_until(self.at(self.starts["active"])):
            return
        self.act("promote (POST /policy/mode active)", lambda: self.client.set_policy_mode("active"))
        if not self.wait_until(self.at(self.starts["lp_last"])):
            return
        self.act("demote (POST /policy/mode shadow)", lambda: self.client.set_policy_mode("shadow"))
        self.lp = LPLast(self.client, self.pathset, self.capacity_scale, self.args.decision_interval)
        self.lp.start()
        self.actions.append({"time": time.time(), "action": "LP-last loop started"})
        if not self.wait_until(self.at(self.starts["drift"])):
            return
        self.lp.stop.set()
        self.lp.join(timeout=10)
        self.actions.append({"time": time.time(), "action": "LP-last loop stopped"})
        self.act("promote (POST /policy/mode active)", lambda: self.client.set_policy_mode("active"))
        if not self.wait_until(self.at(self.starts["rollback"] + self.args.rollback_warmup)):
            return
        deployed_at = time.time()
        reply = self.act("deploy the second version (PUT /policy)",
                         lambda: self.client.deploy_policy(self.second_bundle))
        if reply is None:
            return
        second = reply.get("deployed_version") or reply.get("version")
        self.act("promote the second version (POST /policy/mode active)",
                 lambda: self.client.set_policy_mode("active"))
        if self.wait_installed(second, deployed_at, 3 * self.args.decision_interval + 2) is None:
            self.errors.append(f"the second version {second} was never installed")
        expected = [self.first_version, second]
        for k in range(self.args.rollbacks):
            if not self.wait_until(time.time() + self.args.decision_interval + 1.0):
                return
            self.rollbacks.append(self.rollback(expected[k % 2]))

    def wait_installed(self, version: str, since: float, timeout: float) -> dict | None:
        """The first audit record after ``since`` with ``version``'s routing confirmed installed."""
        deadline = time.time() + timeout
        while time.time() < deadline and not self.halt.is_set():
            try:
                for record in self.client.decisions(since):
                    if record.get("version") == version and install_of(record):
                        return record
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)
        return None

    def rollback(self, target: str) -> dict:
        """POST /policy/rollback; the time to the restored version's install (its audit record) and to
        GET /routing showing it."""
        try:
            before = self.client.get("/routing").get("version") or 0
        except Exception:  # noqa: BLE001
            before = 0
        began = time.time()
        try:
            report = self.client.rollback_policy()
        except Exception as error:  # noqa: BLE001
            self.errors.append(f"rollback: {error}")
            return {"time": began, "error": str(error)}
        returned = time.time()
        version = report.get("version")
        print(f"  [{began - self.t0:7.1f} s] rollback to {version} (API call {1e3 * (returned - began):.1f} ms)",
              flush=True)
        seen_at, source = None, None
        deadline = began + 2 * self.args.decision_interval + 2
        while time.time() < deadline:  # GET /routing: a newer routing from the restored version (or its fallback)
            try:
                routing = self.client.get("/routing")
            except Exception:  # noqa: BLE001
                routing = {}
            source = routing.get("source") or ""
            restored = source == f"policy:{version}" or source.startswith("fallback")
            if (routing.get("version") or 0) > before and restored:
                seen_at = time.time()
                break
            time.sleep(0.01)
        record = self.wait_installed(version, began - 1e-3, max(0.5, deadline - time.time()))
        install = install_of(record) if record else None
        return {"time": began, "from_expected": target, "to": version, "api_call_ms": 1e3 * (returned - began),
                "installed_record_kind": None if record is None else record.get("kind"),
                "installed_source": None if install is None else install.get("source"),
                "install_controller_ms": None if install is None else install.get("latency_ms"),
                "confirmed_after_ms": None if record is None else 1e3 * (record["time"] - began),
                "installed_within_call": None if record is None else bool(record["time"] <= returned),
                "routing_shows_it_after_ms": None if seen_at is None else 1e3 * (seen_at - began),
                "routing_source_seen": source}


# ---------------------------------------------------------------------------------------- measurements
def counter_arrays(reads: list[list[tuple[float, float] | None]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """The sampler's reads as (reads, width) arrays of sample times and byte counts (NaN: no sample)."""
    times = np.full((len(reads), width), np.nan)
    counts = np.full((len(reads), width), np.nan)
    for i, read in enumerate(reads):
        for j, sample in enumerate(read[:width]):
            if sample is not None:
                times[i, j], counts[i, j] = sample
    return times, counts


def window_rates(times: np.ndarray, counts: np.ndarray, window: tuple[float, float],
                 clock_offset: float) -> tuple[np.ndarray, int]:
    """Bits/s per counter over ``window`` (epoch seconds): from the first sample the controller took
    inside it to the last (its sample times are monotonic seconds; NaN where fewer than two), and the
    most polls any counter had inside it."""
    lo, hi = window[0] - clock_offset, window[1] - clock_offset
    inside = (times >= lo) & (times <= hi)
    rates = np.full(times.shape[1], np.nan)
    polls = 0
    for j in range(times.shape[1]):
        rows = np.flatnonzero(inside[:, j])
        if len(rows):
            polls = max(polls, len(np.unique(times[rows, j])))
        if len(rows) < 2:
            continue
        a, b = rows[0], rows[-1]
        if times[b, j] > times[a, j] and counts[b, j] >= counts[a, j]:
            rates[j] = 8.0 * (counts[b, j] - counts[a, j]) / (times[b, j] - times[a, j])
    return rates, polls


def routing_at(samples: list[tuple[float, dict]], when: float, window: tuple[float, float]) -> tuple[dict | None, list]:
    """The GET /routing sample nearest ``when``, and the distinct sources seen within ``window``."""
    if not samples:
        return None, []
    nearest = min(samples, key=lambda s: abs(s[0] - when))[1]
    sources = list(dict.fromkeys(s[1]["source"] for s in samples if window[0] <= s[0] <= window[1]))
    return nearest, sources


def read_audit(policy_dir: Path, client, since: float) -> list[dict]:
    """Every audit record: the state directory's decisions.jsonl (complete), else GET /decisions (the
    records the controller keeps in memory)."""
    path = policy_dir / "decisions.jsonl"
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return client.decisions(since)


def percentile_summary(values: list[float]) -> dict | None:
    if not values:
        return None
    array = np.array(values)
    return {"p50": round(float(np.percentile(array, 50)), 4), "p99": round(float(np.percentile(array, 99)), 4),
            "max": round(float(array.max()), 4), "n": len(values)}


def analyse(args, slots, plan, report, sampler, director, records, t0, clock_offset, hotspot: dict,
            versions: dict) -> dict:
    """Everything the JSON reports, from what the live part collected (``finish`` rebuilds it from raw data)."""
    from agents.lp import mcf_optimum
    from envs.backend import TwinBackend

    topology, ps = plan.topology, plan.pathset
    twin = TwinBackend(ps)
    emulated = topology.capacities * plan.capacity_scale
    results = {r.index: r for r in report.results}
    links = topology.num_links
    times, counts = counter_arrays(sampler.counters, links + ps.num_pairs)
    headers = FRAME_BYTES / PAYLOAD_BYTES  # what the ingress counters see per payload byte
    link_headers = (FRAME_BYTES + 4) / PAYLOAD_BYTES  # ... and the links (with the path's VLAN tag)
    matrices = []
    tm: dict[str, list[float]] = {"pair": [], "pair_large": [], "weighted": [], "total": [], "total_raw": [],
                                  "interval_pair": [], "interval_weighted": [], "interval_total": []}
    for slot in slots:
        result = results.get(slot.position)
        row: dict[str, Any] = {"position": slot.position, "phase": slot.phase, "role": slot.role,
                               "day_matrix": slot.day_matrix, "dataset_index": slot.dataset_index,
                               "drifted": slot.drifted}
        if result is None:
            row["missing"] = True
            matrices.append(row)
            continue
        window = (result.start + SETTLE_S, result.end - MARGIN_S)
        rates, polls = window_rates(times, counts, window, clock_offset)
        utilization = rates[:links] / emulated
        mlu = None if np.isnan(utilization).all() else float(np.nanmax(utilization))
        offered_model = plan.demands[slot.position]
        optimum_offered = float(mcf_optimum(topology, _matrix(ps, offered_model)).mlu)
        row.update({"start_s": round(result.start - t0, 3), "end_s": round(result.end - t0, 3),
                    "polls_in_period": polls, "offered_mbps": round(result.offered_bps / 1e6, 4),
                    "sent_mbps": None if result.sent_bps is None else round(result.sent_bps / 1e6, 4),
                    "delivered": result.delivered, "measured_mlu": mlu, "optimal_mlu_replayed": optimum_offered,
                    "normalized_mlu_replayed": None if mlu is None else mlu / (optimum_offered * link_headers)})
        offered = np.array(result.offered_pair_bps)  # emulated payload bit/s; 0: too small to send
        sent = offered > 0
        measured = rates[links:]
        if sent.any() and np.isfinite(measured[sent]).all():
            measured = np.where(np.isfinite(measured), measured, 0.0)
            optimum = float(mcf_optimum(topology, _matrix(ps, measured / plan.capacity_scale)).mlu)
            row.update({"measured_mbps": round(float(measured.sum()) / 1e6, 4), "optimal_mlu_measured": optimum,
                        "normalized_mlu": None if mlu is None else mlu / optimum})
            payload = measured / headers
            errors = np.abs(payload[sent] - offered[sent]) / offered[sent]
            large = offered[sent] >= 0.01 * offered.sum()
            tm["pair"] += errors.tolist()
            tm["pair_large"] += errors[large].tolist()
            tm["weighted"].append(float(np.abs(payload - offered).sum() / offered.sum()))
            tm["total"].append(float(abs(payload.sum() - offered.sum()) / offered.sum()))
            tm["total_raw"].append(float(abs(measured.sum() - offered.sum()) / offered.sum()))
            row["pair_error_mean"] = round(float(errors.mean()), 4)
        interval = result.stats_pair_bps  # GET /stats at the period's end: the one interval a decision reads
        if interval is not None and all(v is not None for v in interval) and sent.any():
            single = np.array(interval, dtype=float) / headers
            tm["interval_pair"] += (np.abs(single[sent] - offered[sent]) / offered[sent]).tolist()
            tm["interval_weighted"].append(float(np.abs(single - offered).sum() / offered.sum()))
            tm["interval_total"].append(float(abs(single.sum() - offered.sum()) / offered.sum()))
        nearest, sources = routing_at(sampler.routing, (window[0] + window[1]) / 2, window)
        if nearest is not None and nearest.get("installed") is not None:
            installed = np.array(nearest["installed"], dtype=float)
            predicted = twin.run(offered_model, installed)
            versions_seen = {s[1]["version"] for s in sampler.routing if window[0] <= s[0] <= window[1]}
            row.update({"routing_source": nearest.get("source"), "routing_sources_in_period": sources,
                        "routing_changes_in_period": max(0, len(versions_seen) - 1),
                        "twin_mlu": predicted.mlu, "twin_normalized_mlu": predicted.mlu / optimum_offered,
                        "twin_delivered": predicted.delivered_bps / predicted.offered_bps
                        if predicted.offered_bps else None})
        row["congested"] = bool((mlu is not None and mlu >= CONGESTED_MLU) or row.get("twin_mlu", 0.0) >= 1.0)
        matrices.append(row)

    def rows(phase: str, role: str = "measured", drifted: bool | None = None) -> list[dict]:
        return [m for m in matrices if m["phase"] == phase and m["role"] == role and not m.get("missing")
                and (drifted is None or m["drifted"] == drifted)]

    def phase_summary(selected: list[dict]) -> dict:
        sources: dict[str, int] = {}
        for m in selected:
            key = _source_kind(m.get("routing_source"))
            sources[key] = sources.get(key, 0) + 1
        losses = [1 - m["delivered"] for m in selected if m.get("delivered") is not None]
        twin_losses = [1 - m["twin_delivered"] for m in selected if m.get("twin_delivered") is not None]
        return {"matrices": len(selected),
                "normalized_mlu": summary(m.get("normalized_mlu") for m in selected),
                "normalized_mlu_replayed": summary(m.get("normalized_mlu_replayed") for m in selected),
                "measured_mlu": summary(m.get("measured_mlu") for m in selected),
                "optimal_mlu_measured": summary(m.get("optimal_mlu_measured") for m in selected),
                "twin_normalized_mlu": summary(m.get("twin_normalized_mlu") for m in selected),
                "routing_at_mid_period": sources,
                "routing_changes_in_period": summary(m.get("routing_changes_in_period") for m in selected),
                "polls_in_period": summary(m.get("polls_in_period") for m in selected),
                "loss": {"mean": _round(np.mean(losses)) if losses else None,
                         "max": _round(max(losses)) if losses else None,
                         "matrices_with_loss_over_0.1%": sum(1 for x in losses if x > 1e-3),
                         "twin_predicted_mean": _round(np.mean(twin_losses)) if twin_losses else None,
                         "twin_predicted_max": _round(max(twin_losses)) if twin_losses else None}}

    phases = {"ospf": phase_summary(rows("shadow")), "policy": phase_summary(rows("active")),
              "lp_last": phase_summary(rows("lp_last")),
              "drift_before": phase_summary(rows("drift", drifted=False)),
              "drift_after": phase_summary(rows("drift", drifted=True)),
              "rollback": phase_summary(rows("rollback"))}

    decisions = [r for r in records if r.get("kind") == "decision"]
    inference = [field(r, "latency_ms", "inference") for r in decisions]
    inference = [float(v) for v in inference if v is not None]
    steps = [float(v) for v in (field(r, "latency_ms", "step") for r in decisions) if v is not None]
    latency = {"inference_ms": percentile_summary(inference), "step_ms": percentile_summary(steps),
               "decisions": len(decisions), "goal_ms": GOALS["inference_ms"],
               "per_version": {name: percentile_summary([float(field(r, "latency_ms", "inference"))
                                                        for r in decisions if r.get("version") == version
                                                        and field(r, "latency_ms", "inference") is not None])
                               for name, version in versions.items()}}
    if decisions and not inference:
        field(decisions[0], "latency_ms", "inference", required=True)

    def in_phase(record: dict, phase: str, measured_only: bool = False) -> bool:
        start = _phase_start(matrices, phase, measured_only)
        end = _phase_end(matrices, phase)
        return start is not None and end is not None and t0 + start <= record["time"] <= t0 + end

    shadow_decisions = [r for r in decisions if in_phase(r, "shadow", True)]
    shadow = {"decisions": len(shadow_decisions)}
    if shadow_decisions:
        predicted = [field(r, "predicted_mlu") or {} for r in shadow_decisions]
        shadow.update({
            "policy_predicted_below_incumbent": sum(1 for p in predicted if p.get("policy") is not None
                                                    and p["policy"] < p["incumbent"]),
            "predicted_policy_over_fallback": summary(p["policy"] / p["fallback"] for p in predicted
                                                      if p.get("policy") is not None and p.get("fallback")),
            "predicted_incumbent_over_fallback": summary(p["incumbent"] / p["fallback"] for p in predicted
                                                         if p.get("fallback")),
            "in_fallback": sum(1 for r in shadow_decisions if r.get("status") == "fallback"),
            "causes": _causes(shadow_decisions)})
    active_decisions = [r for r in decisions if in_phase(r, "active", True)]
    active = {"decisions": len(active_decisions),
              "in_fallback": sum(1 for r in active_decisions if r.get("status") == "fallback"),
              "installed": sum(1 for r in active_decisions if r.get("action") == "installed"),
              "causes": _causes(active_decisions)}
    measured_field = [field(r, "measured_mlu") for r in decisions]
    measured_mlu_in_records = any(v is not None for v in measured_field)

    # drift -> fallback
    drifted_rows = rows("drift", drifted=True)
    drift: dict[str, Any] = {"hotspot": hotspot, "decision_interval_s": args.decision_interval,
                             "goal_decision_intervals": GOALS["drift_to_fallback_decision_intervals"]}
    if drifted_rows:
        drift_start = t0 + drifted_rows[0]["start_s"]
        drift_end = t0 + drifted_rows[-1]["end_s"]
        before = [r for r in decisions if r["time"] < drift_start]
        drift["in_fallback_at_drift_start"] = bool(before and before[-1].get("status") == "fallback")
        if drift["in_fallback_at_drift_start"]:
            drift["fallback_reason_at_drift_start"] = before[-1].get("fallback_reason")
        during = [r for r in decisions if drift_start <= r["time"] <= drift_end + args.decision_interval]
        fallback = next((r for r in during if any(e.get("kind") == "fallback" for e in r.get("events") or [])), None)
        flagged = next((r for r in during if drifted(r)), None)
        installed = next((r for r in during if r.get("status") == "fallback" and install_of(r)
                          and str(install_of(r)["source"]).startswith("fallback")), None)
        already = next((r for r in during if r.get("status") == "fallback"
                        and str(r.get("installed_source") or "").startswith("fallback")), None)
        drift.update({
            "drift_start_s": round(drift_start - t0, 3),
            "decisions_until_fallback": None if fallback is None else
            sum(1 for r in during if r["time"] <= fallback["time"]),
            "fallback_after_s": None if fallback is None else round(fallback["time"] - drift_start, 3),
            "fallback_after_decision_intervals": None if fallback is None else
            round((fallback["time"] - drift_start) / args.decision_interval, 2),
            "fallback_reason": None if fallback is None else fallback.get("fallback_reason"),
            "first_drift_flag_after_s": None if flagged is None else round(flagged["time"] - drift_start, 3),
            "fallback_routing_installed_after_s": None if installed is None else
            round(installed["time"] - drift_start, 3),
            "fallback_install": None if installed is None else install_of(installed),
            "fallback_installed_source_seen": None if already is None else already.get("installed_source"),
            "drift_statistics_per_decision": [{"t_s": round(r["time"] - drift_start, 3), "drift": r.get("drift"),
                                               "status": r.get("status"), "action": r.get("action")}
                                              for r in decisions
                                              if drift_start - 2 * args.decision_interval <= r["time"]
                                              <= drift_start + 6 * args.decision_interval]})
        drift["met"] = (drift["fallback_after_decision_intervals"] is not None
                        and drift["fallback_after_decision_intervals"] <= GOALS["drift_to_fallback_decision_intervals"])

    rollback_times = [r["confirmed_after_ms"] for r in director.rollbacks if r.get("confirmed_after_ms") is not None]
    rollback = {"rollbacks": director.rollbacks, "goal_ms": GOALS["rollback_ms"],
                "confirmed_after_ms": summary(rollback_times, 2),
                "met": bool(rollback_times) and len(rollback_times) == len(director.rollbacks)
                and max(rollback_times) <= GOALS["rollback_ms"]}

    def errors(values: list[float]) -> dict | None:
        if not values:
            return None
        array = np.array(values)
        return {"mean": _round(array.mean()), "p95": _round(np.percentile(array, 95)), "n": len(values)}

    tm_error = {
        "over_each_period": {"per_pair_relative": errors(tm["pair"]),
                             "per_pair_relative_pairs_over_1pct": errors(tm["pair_large"]),
                             "volume_weighted": errors(tm["weighted"]), "total_relative": errors(tm["total"]),
                             "total_relative_headers_not_removed": errors(tm["total_raw"])},
        "last_polling_interval": {"per_pair_relative": errors(tm["interval_pair"]),
                                  "volume_weighted": errors(tm["interval_weighted"]),
                                  "total_relative": errors(tm["interval_total"])},
        "notes": "measured: the controller's ingress counters (GET /counters) over each matrix's period from 0.5 s "
                 "after its start, Ethernet frames, scaled by "
                 f"{PAYLOAD_BYTES}/{FRAME_BYTES} to payload (IPv4, UDP and Ethernet headers); replayed: the agents' "
                 "payload rate; per pair: |measured - replayed| / replayed over every pair that sent, mean and p95 "
                 "over pairs and matrices; pairs_over_1pct: pairs carrying at least 1% of the matrix; "
                 "volume_weighted: sum |error| / total per matrix; last_polling_interval: GET /stats at the "
                 "period's end, the one polling interval a decision reads"}

    ospf_median = field(phases, "ospf", "normalized_mlu", "median")
    policy_median = field(phases, "policy", "normalized_mlu", "median")
    lp_median = field(phases, "lp_last", "normalized_mlu", "median")
    comparison = {
        "policy_over_ospf_median": None if not (ospf_median and policy_median)
        else round(policy_median / ospf_median, 4),
        "policy_better_than_ospf_by": None if not (ospf_median and policy_median)
        else round(1 - policy_median / ospf_median, 4),
        "policy_over_lp_last_median": None if not (lp_median and policy_median)
        else round(policy_median / lp_median, 4)}
    better = comparison["policy_better_than_ospf_by"]
    comparison["met_beats_ospf_by_25pct"] = better is not None and better >= GOALS["policy_beats_ospf_median_by"]
    comparison["met_within_3pct_of_lp_last"] = (comparison["policy_over_lp_last_median"] is not None and
                                                comparison["policy_over_lp_last_median"] - 1
                                                <= GOALS["policy_within_lp_last_median"])
    replayed = {name: field(phases, name, "normalized_mlu_replayed", "median")
                for name in ("ospf", "policy", "lp_last")}
    if all(replayed.values()):
        comparison["normalized_by_the_replayed_matrix"] = {
            "policy_better_than_ospf_by": round(1 - replayed["policy"] / replayed["ospf"], 4),
            "policy_over_lp_last_median": round(replayed["policy"] / replayed["lp_last"], 4)}
    lp_loop = director.lp
    lp_info = None if lp_loop is None else {
        "installs": len(lp_loop.installs), "skipped": lp_loop.skipped,
        "solve_ms": summary([i["solve_ms"] for i in lp_loop.installs], 2),
        "put_routing_ms": summary([i["api_ms"] for i in lp_loop.installs], 2),
        "all_confirmed": all(i.get("confirmed") for i in lp_loop.installs)}
    losses = {name: phases[name]["loss"] for name in phases}
    previous: dict | None = None
    for m in matrices:  # a period right after a congested one still drains its queues
        m["after_congested"] = bool(previous is not None and previous.get("congested"))
        previous = m
    calm = [m for m in matrices if m.get("delivered") is not None and not m["congested"]]
    busy = [m for m in matrices if m.get("delivered") is not None and m["congested"]]
    beyond = [max(0.0, (1 - m["delivered"]) - (1 - m["twin_delivered"])) for m in busy
              if m.get("twin_delivered") is not None]
    loss = {
        "per_phase": losses,
        "uncongested_matrices": len(calm),
        "uncongested_with_loss_over_0.1%": [{"position": m["position"], "phase": m["phase"],
                                             "loss": _round(1 - m["delivered"]),
                                             "routing_changes_in_period": m.get("routing_changes_in_period"),
                                             "after_congested": m["after_congested"]}
                                            for m in calm if 1 - m["delivered"] > 1e-3],
        "uncongested_max_loss": _round(max((1 - m["delivered"] for m in calm), default=0.0)),
        "uncongested_not_after_congested_max_loss": _round(max((1 - m["delivered"] for m in calm
                                                                if not m["after_congested"]), default=0.0)),
        "uncongested_loss_fraction": _round(sum((m["sent_mbps"] or 0) * (1 - m["delivered"]) for m in calm)
                                            / max(1e-12, sum(m["sent_mbps"] or 0 for m in calm))),
        "congested_matrices": len(busy),
        "congested_loss_beyond_twin_max": _round(max(beyond)) if beyond else None,
        "how": "the traffic agents' own counts (envs/traffic_agent.py): bytes received by the sinks ÷ bytes sent, "
               "over the packets sent inside each matrix's period (each datagram carries its send time, so packets "
               f"still queued at the period's end are not losses). A matrix is congested when its measured MLU is "
               f"at least {CONGESTED_MLU:g} (paced UDP from random phases into 0.2 s buffers overflows there) or the "
               "twin puts the routing installed at mid-period above 1; there the twin's "
               "delivery for that routing is what congestion explains. Any loss on an uncongested matrix is loss "
               "beyond congestion, unless the period before was congested (after_congested: its queues drain "
               "into this period)."}
    events = [{"t_s": round(r["time"] - t0, 3), "kind": r.get("kind"), "version": r.get("version"),
               "reason": r.get("reason")} for r in records if r.get("kind") != "decision"]
    for r in decisions:
        for e in r.get("events") or []:
            events.append({"t_s": round(r["time"] - t0, 3), "kind": e.get("kind"), "version": r.get("version"),
                           "reason": e.get("reason")})
    events.sort(key=lambda e: e["t_s"])
    return {
        "phases": phases, "comparison": comparison, "decision_latency": latency, "drift": drift,
        "rollback": rollback, "traffic_matrix_error": tm_error,
        "loss": loss,
        "shadow": shadow, "active_decisions": active, "lp_last_loop": lp_info,
        "decision_records_carry_measured_mlu": measured_mlu_in_records,
        "events": events, "director_actions": [{**a, "t_s": round(a["time"] - t0, 3)} for a in director.actions],
        "matrices": matrices,
    }


def _matrix(pathset, demands: np.ndarray) -> np.ndarray:
    n = pathset.topology.num_nodes
    matrix = np.zeros((n, n))
    matrix[pathset.pairs[:, 0], pathset.pairs[:, 1]] = demands
    return matrix


def _round(value, digits: int = 6):
    return None if value is None else round(float(value), digits)


def _source_kind(source: str | None) -> str:
    if source is None:
        return "unknown"
    if source.startswith("policy:"):
        return source
    if source.startswith("fallback"):
        return source
    return {"api": "PUT /routing (bench: OSPF or LP-last)"}.get(source, source)


def _causes(records: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        for cause in r.get("causes") or []:
            key = str(cause).split(":")[0]
            out[key] = out.get(key, 0) + 1
    return out


def _phase_start(matrices, phase: str, measured_only: bool) -> float | None:
    rows = [m for m in matrices
            if m["phase"] == phase and "start_s" in m and (not measured_only or m["role"] == "measured")]
    return rows[0]["start_s"] if rows else None


def _phase_end(matrices, phase: str) -> float | None:
    rows = [m for m in matrices if m["phase"] == phase and "end_s" in m]
    return rows[-1]["end_s"] if rows else None


# ---------------------------------------------------------------------------------------- the figure
def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrices = [m for m in result["matrices"] if "start_s" in m]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, dpi=110,
                                      gridspec_kw={"height_ratios": [1, 1.2]})
    colors = {"shadow": "#9e9e9e", "active": "#2e7d32", "lp_last": "#1565c0", "drift": "#ef6c00", "rollback": "#6a1b9a"}
    for phase in PHASES:
        rows = [m for m in matrices if m["phase"] == phase]
        if not rows:
            continue
        start, end = rows[0]["start_s"], rows[-1]["end_s"]
        warm = [m for m in rows if m["role"] == "warmup"]
        measured = [m for m in rows if m["role"] == "measured"]
        for ax in (top, bottom):
            if measured:
                ax.axvspan(measured[0]["start_s"], measured[-1]["end_s"], color=colors[phase], alpha=0.15, lw=0)
            if warm:  # hatched, lighter: not in the phase's statistics
                ax.axvspan(warm[0]["start_s"], warm[-1]["end_s"], facecolor="none", edgecolor=colors[phase],
                           alpha=0.35, lw=0, hatch="///")
        top.text((start + end) / 2, 1.02, PHASE_LABELS[phase], transform=top.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=8, color=colors[phase])
    mid = np.array([(m["start_s"] + m["end_s"]) / 2 for m in matrices])
    mlu = np.array([np.nan if m.get("measured_mlu") is None else m["measured_mlu"] for m in matrices])
    opt = np.array([np.nan if m.get("optimal_mlu_measured") is None else m["optimal_mlu_measured"] for m in matrices])
    norm = np.array([np.nan if m.get("normalized_mlu") is None else m["normalized_mlu"] for m in matrices])
    twin = np.array([np.nan if m.get("twin_normalized_mlu") is None else m["twin_normalized_mlu"] for m in matrices])
    top.plot(mid, mlu, "-o", ms=2.5, lw=1, color="black", label="measured MLU (link counters)")
    top.plot(mid, opt, "--", lw=1, color="grey", label="optimum of the measured matrix")
    top.set_ylabel("MLU")
    bottom.plot(mid, norm, "-o", ms=2.5, lw=1, color="black", label="measured ÷ optimum of the measured matrix")
    replayed = np.array([np.nan if m.get("normalized_mlu_replayed") is None else m["normalized_mlu_replayed"]
                         for m in matrices])
    bottom.plot(mid, replayed, "-", lw=0.8, color="tab:grey", alpha=0.7,
                label="measured ÷ optimum of the replayed matrix (× headers)")
    bottom.plot(mid, twin, ":", lw=1, color="tab:red", label="twin, routing at mid-period (replayed matrix)")
    bottom.axhline(1.0, color="grey", lw=0.5)
    bottom.set_ylabel("normalized MLU")
    bottom.set_xlabel("seconds since the replay began")
    marks = {"promotion": ("tab:green", "promotion"), "fallback": ("tab:red", "fallback"),
             "recovered": ("tab:blue", "recovered"), "rollback": ("purple", "rollback"),
             "deploy": ("grey", "deploy"), "mode": ("tab:olive", "mode change")}
    seen = set()
    for event in result.get("events", []):
        style = marks.get(event["kind"])
        if style is None or event["t_s"] < 0:  # the deployment at the controller's start
            continue
        color, label = style
        for ax in (top, bottom):
            ax.axvline(event["t_s"], color=color, lw=1, ls="--", alpha=0.8,
                       label=label if ax is bottom and label not in seen else None)
        seen.add(label)
    drift_start = field(result, "drift", "drift_start_s")
    if drift_start is not None:
        for ax in (top, bottom):
            ax.axvline(drift_start, color="darkorange", lw=1.5, label="hotspot starts" if ax is bottom else None)
    top.legend(loc="upper left", fontsize=7)
    bottom.legend(loc="upper left", fontsize=7, ncol=2)
    finite = norm[np.isfinite(norm)]
    if finite.size:
        bottom.set_ylim(0.9, min(3.0, max(1.8, float(finite.max()) * 1.05)))
    fig.suptitle("Deployment loop on emulated Abilene: measured MLU per replayed matrix (hatched: warm-up, not "
                 "counted)", fontsize=10, y=0.995)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------------- main
def options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rlte-deployment"),
                        help="work directory: runs, bundles, the controller's state and log (replaced parts)")
    parser.add_argument("--out", help="JSON output (default bench/results/deployment.json; the figure beside it)")
    parser.add_argument("--from-raw", type=Path, help="analyse a live run's WORK/raw.pickle again (no root needed)")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few matrices per phase, short training")
    parser.add_argument("--run", help="the first version's trained run directory (skips training)")
    parser.add_argument("--bundle", help="the first version's bundle (skips training and export)")
    parser.add_argument("--agent", default="gradient_gnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="train the first version this many epochs instead of its config's")
    parser.add_argument("--second-run", help="the second (rollback) version's trained run directory")
    parser.add_argument("--second-bundle", help="the second version's bundle")
    parser.add_argument("--second-agent", default="gradient")
    parser.add_argument("--second-seed", type=int, default=0)
    parser.add_argument("--second-epochs", type=int, help="train the second version this many epochs instead")
    parser.add_argument("--day", type=int, default=1, help="day of abilene-test's week (0-6)")
    parser.add_argument("--every", type=int, default=4, help="replay every n-th matrix of the day")
    parser.add_argument("--scale", type=float, default=0.45, help="the day's peak optimal MLU as replayed")
    parser.add_argument("--period", type=float, default=4.0, help="seconds each matrix is played")
    parser.add_argument("--poll", type=float, default=1.0, help="the controller's polling interval, seconds")
    parser.add_argument("--decision-interval", type=float, help="the runtime's decision interval (default: --period, "
                                                                "so its history holds one matrix per decision)")
    parser.add_argument("--warmup", type=int, default=4, help="matrices before each phase's measured part")
    parser.add_argument("--rollback-warmup", type=int, default=8,
                        help="normal matrices after the drift before the second version is deployed (the drift "
                             "statistics' history is 7 matrices)")
    parser.add_argument("--segment-start", type=int, default=4, help="segment S's first matrix (subsampled day)")
    parser.add_argument("--segment", type=int, default=24, help="matrices in segment S")
    parser.add_argument("--drift-start", type=int, default=44, help="segment D's first matrix (subsampled day)")
    parser.add_argument("--drift-segment", type=int, default=20, help="matrices in segment D")
    parser.add_argument("--drift-after", type=int, default=8, help="D's matrices before the hotspot starts")
    parser.add_argument("--hotspot", help="the hotspot's destination (default: see --max-drift-optimum)")
    parser.add_argument("--hotspot-factor", type=float, default=5.0)
    parser.add_argument("--max-drift-optimum", type=float, default=0.9,
                        help="default hotspot: the busiest destination whose hotspot keeps the optimal MLU at "
                             "most this")
    parser.add_argument("--rollbacks", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.segment, args.drift_segment, args.drift_after, args.rollbacks = 3, 7, 3, 2
        args.drift_start = args.segment_start + args.segment + args.warmup + 2
        if args.epochs is None and args.run is None and args.bundle is None:
            args.epochs = 3
        if args.second_epochs is None and args.second_run is None and args.second_bundle is None:
            args.second_epochs = 3
    if args.decision_interval is None:
        args.decision_interval = args.period
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    out = Path(args.out) if args.out else RESULTS / "deployment.json"
    if args.from_raw is not None:
        with open(args.from_raw, "rb") as file:
            return finish(pickle.load(file), out)
    os.environ.setdefault("TQDM_DISABLE", "1")  # training's scoring bars: not in a log
    from envs.emulation import require_emulation

    require_emulation()  # root, Mininet and Open vSwitch, before anything is trained
    began = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    first = policy(args, "first", work)
    second = policy(args, "second", work)
    timings["policies_s"] = round(time.perf_counter() - started, 1)
    if first["version"] == second["version"]:
        raise BenchError(f"both bundles are version {first['version']}: the rollback needs two versions")

    from controllers.client import ControllerClient
    from envs.mininet_backend import stop_process
    from experiments.replay import NetSettings, play, prepare

    slots, starts = layout(args)
    started = time.perf_counter()
    process, controller = start_controller(args, work, Path(first["bundle"]))
    timings["controller_start_s"] = round(time.perf_counter() - started, 1)
    token = Path(controller["token_file"]).read_text().strip()
    client = ControllerClient(controller["url"], token, timeout_s=10.0)
    sampler = None
    director = None
    try:
        settings = NetSettings(topology="abilene", traffic="abilene-test",
                               controller=f"127.0.0.1:{controller['of_port']}", api=controller["url"], token=token,
                               period_s=args.period, start=args.day * MATRICES_PER_DAY, count=MATRICES_PER_DAY,
                               scale=args.scale)
        day_plan = prepare(settings)  # the day scaled so its peak optimal MLU is --scale
        ps, topology = day_plan.pathset, day_plan.topology
        destination, hotspot = hotspot_destination(args, topology, day_plan.demands, ps, slots)
        demands = np.array([day_plan.demands[s.day_matrix] for s in slots])
        for j, s in enumerate(slots):
            if s.drifted:
                demands[j, ps.pairs[:, 1] == destination] *= args.hotspot_factor
        plan = dataclasses.replace(day_plan, indices=[s.position for s in slots], demands=demands,
                                   optimal_mlu=np.array([np.nan] * len(slots)))
        incumbent, projected = ospf_on_pathset(ps)
        from agents.policy import ospf as exact_ospf
        from envs.backend import TwinBackend
        from agents.lp import mcf_optimum

        exact = exact_ospf(topology).routing
        measured_slots = [j for j, s in enumerate(slots) if s.phase == "shadow" and s.role == "measured"]
        twin_check = {"exact": [], "on_controller_paths": []}
        for j in measured_slots:
            optimum = mcf_optimum(topology, _matrix(ps, demands[j])).mlu
            twin_check["exact"].append(TwinBackend(exact.pathset).run(demands[j], exact.ratios).mlu / optimum)
            twin_check["on_controller_paths"].append(TwinBackend(ps).run(demands[j], incumbent).mlu / optimum)
        incumbent_info = {"routing": "OSPF: ECMP on Abilene's IGP weights (agents.policy.ospf) over the controller's "
                                     "K=4 hop-shortest paths, installed with PUT /routing",
                          "why_not_initial_routing": "controllers/decision.py offers shortest_path and "
                                                     "equal_split only",
                          "pairs_with_ospf_path_outside_the_path_set": projected,
                          "those_pairs_get": "their candidate of least IGP weight",
                          "twin_normalized_mlu_on_segment_S": {k: summary(v) for k, v in twin_check.items()}}
        t0_box: dict[str, float] = {}

        def on_ready(backend) -> None:
            reply = client.set_ratios(incumbent)
            if not reply.get("confirmed"):
                raise BenchError(f"OSPF was not confirmed by every switch: {reply}")
            print(f"network ready; OSPF installed ({reply.get('latency_ms', 0):.1f} ms); replaying {len(slots)} "
                  f"matrices, {args.period:g} s each", flush=True)
            nonlocal sampler, director
            sampler = Sampler(client)
            sampler.start()
            director = Director(args, client, 0.0, starts, ps, plan.capacity_scale,
                                str(Path(second["bundle"]).resolve()), first["version"])
            # experiments.replay.play's t0, which it takes right after this returns
            director.t0 = t0_box["t0"] = time.time() + min(1.0, args.period / 2) + 0.2
            director.start()

        def on_matrix(result) -> None:
            slot = slots[result.index]
            if slot.position == 0 or slot.position == len(slots) - 1 or slot.position in starts.values():
                print(f"  matrix {slot.position} ({slot.phase}, {slot.role}): offered {result.offered_bps / 1e6:.2f} "
                      f"Mb/s, delivered {result.delivered if result.delivered is None else f'{result.delivered:.3f}'}",
                      flush=True)

        clock_offset = time.time() - time.monotonic()
        net_dir = work / "net"  # the traffic agents' specs, results and logs
        if net_dir.exists():
            shutil.rmtree(net_dir)
        net_dir.mkdir()
        started = time.perf_counter()
        report = play(plan, on_matrix=on_matrix, on_ready=on_ready, workdir=net_dir)
        timings["replay_s"] = round(time.perf_counter() - started, 1)
        if director is not None:
            director.halt.set()
            director.join(timeout=30)
        if sampler is not None:
            sampler.stop.set()
            sampler.join(timeout=10)
        if director is not None and director.lp is not None:
            director.lp.stop.set()
        if report.stopped:
            raise BenchError("the replay was stopped (Ctrl-C or SIGTERM)")
        if director is None or sampler is None:
            raise BenchError("the network never became ready")
        timings["total_s"] = round(time.perf_counter() - began, 1)
        records = read_audit(Path(controller["policy_dir"]), client, 0.0)
        policy_report = client.policy()
    finally:
        if director is not None:
            director.halt.set()
        stop_process(process)

    from topologies import pathset_to_dict

    replayed = {
        "traffic": "abilene-test", "day": args.day,
        "day_matrices": f"{args.day * MATRICES_PER_DAY}..{(args.day + 1) * MATRICES_PER_DAY - 1}",
        "every": args.every, "minutes_per_matrix_in_the_dataset": 5, "period_s": args.period,
        "scale": {"target_peak_optimal_mlu_of_the_day": args.scale, "factor": day_plan.factor},
        "segment_S": [s.dataset_index for s in slots if s.phase == "shadow" and s.role == "measured"],
        "segment_D": [s.dataset_index for s in slots if s.phase == "drift" and s.role == "measured"],
        "drifted": [s.dataset_index for s in slots if s.drifted],
        "rollback_matrices": [s.dataset_index for s in slots if s.phase == "rollback"],
        "warmup_per_phase": args.warmup, "total_matrices": len(slots),
        "phase_starts_position": starts,
        "series": [[s.phase, s.role, s.dataset_index, s.drifted] for s in slots],
    }
    raw = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join(["sudo .venv/bin/python -m bench.deployment", *(sys.argv[1:] if argv is None else argv)]),
        "slots": [dataclasses.asdict(slot) for slot in slots], "pathset": pathset_to_dict(ps),
        "demands": demands, "capacity_scale": plan.capacity_scale,
        "results": [vars(r) for r in report.results],
        "counters": sampler.counters, "routing": sampler.routing, "sampler_errors": sampler.errors,
        "director": {"actions": director.actions, "rollbacks": director.rollbacks, "errors": director.errors,
                     "lp": None if director.lp is None else {"installs": director.lp.installs,
                                                             "skipped": director.lp.skipped}},
        "records": records, "t0": report.results[0].start if report.results else t0_box["t0"],
        "clock_offset": clock_offset, "hotspot": hotspot,
        "versions": {"first": first["version"], "second": second["version"]},
        "header": {"policies": {"first": first, "second": second},
                   "controller": {**controller, "poll_interval_s": args.poll,
                                  "decision_interval_s": args.decision_interval,
                                  "final_policy_report": {k: policy_report.get(k) for k in
                                                          ("version", "mode", "status", "latency_ms", "deployed")}},
                   "incumbent": incumbent_info, "replayed": replayed},
        "timings": timings, "began": began,
    }
    with open(work / "raw.pickle", "wb") as file:  # --from-raw analyses it again without the network
        pickle.dump(raw, file)
    return finish(raw, out)


def finish(raw: dict, out: Path) -> int:
    """The JSON and the figure from what the live part collected."""
    from types import SimpleNamespace as Namespace

    from topologies import load_topology, pathset_from_dict

    args = argparse.Namespace(**raw["args"])
    topology = load_topology("abilene")
    pathset = pathset_from_dict(topology, raw["pathset"])
    plan = Namespace(topology=topology, pathset=pathset, demands=np.asarray(raw["demands"]),
                     capacity_scale=raw["capacity_scale"])
    slots = [Slot(**slot) for slot in raw["slots"]]
    report = Namespace(results=[Namespace(**r) for r in raw["results"]])
    sampler = Namespace(counters=raw["counters"], routing=raw["routing"])
    lp = raw["director"]["lp"]
    director = Namespace(actions=raw["director"]["actions"], rollbacks=raw["director"]["rollbacks"],
                         lp=None if lp is None else Namespace(**lp))
    started = time.perf_counter()
    analysis = analyse(args, slots, plan, report, sampler, director, raw["records"], raw["t0"], raw["clock_offset"],
                       raw["hotspot"], raw["versions"])
    timings = {**raw["timings"], "analysis_s": round(time.perf_counter() - started, 1)}
    if "total_s" not in timings:
        timings["total_s"] = round(time.perf_counter() - raw["began"], 1)
    result = {
        "benchmark": "deployment", "machine": machine(), "quick": args.quick, "command": raw["command"],
        **raw["header"], "timings": timings, "goals": GOALS,
        "sampler_errors": raw["sampler_errors"], "errors": raw["director"]["errors"],
        **analysis,
    }
    path = write("deployment", result, str(out))
    figure(result, path.with_suffix(".png"))
    print_summary(result)
    return 1 if result["errors"] else 0


def print_summary(result: dict) -> None:
    phases = result["phases"]
    print("\nnormalized MLU (measured ÷ optimum of the measured matrix), median / p90:")
    for name in ("ospf", "policy", "lp_last", "drift_before", "drift_after", "rollback"):
        s = phases[name]["normalized_mlu"]
        r = phases[name]["normalized_mlu_replayed"]
        print(f"  {name:13s} " + ("-" if s is None else f"{s['median']:.3f} / {s['p90']:.3f} (n={s['n']})")
              + ("" if r is None else f"  [÷ replayed optimum: {r['median']:.3f} / {r['p90']:.3f}]")
              + f"   routing: {phases[name]['routing_at_mid_period']}")
    c = result["comparison"]
    print(f"policy vs OSPF: {c['policy_better_than_ospf_by']} better (goal >= 0.25: {c['met_beats_ospf_by_25pct']}); "
          f"policy / LP-last {c['policy_over_lp_last_median']} (goal <= 1.03: {c['met_within_3pct_of_lp_last']})")
    print(f"decision latency: {result['decision_latency']['inference_ms']}")
    d = result["drift"]
    print(f"drift -> fallback: {d.get('fallback_after_s')} s ({d.get('fallback_after_decision_intervals')} intervals), "
          f"fallback routing installed after {d.get('fallback_routing_installed_after_s')} s; reason "
          f"{d.get('fallback_reason')}")
    print(f"rollback, API call -> installed: {result['rollback']['confirmed_after_ms']}")
    errors = {k: v for k, v in result["traffic_matrix_error"].items() if k != "notes"}
    print(f"traffic matrix error: {json.dumps(errors)}")
    loss = result["loss"]
    print(f"loss beyond congestion: {len(loss['uncongested_with_loss_over_0.1%'])} of {loss['uncongested_matrices']} "
          f"uncongested matrices lost > 0.1% (max {loss['uncongested_max_loss']}; not right after a congested "
          f"period: max {loss['uncongested_not_after_congested_max_loss']}; overall "
          f"{loss['uncongested_loss_fraction']}); {loss['congested_matrices']} congested matrices")
    print(f"timings: {result['timings']}")
    if result["errors"]:
        print("errors:\n  " + "\n  ".join(result["errors"]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
