"""Put a traffic series on an emulated network driven by a controller that is already running (``rlte net``).

:func:`prepare` checks everything it can before anything is built (topology, traffic, root and
Mininet, the controller's OpenFlow port, its API and the network it manages, OVS bridges in the
way) and scales the series; :func:`play` builds the network against that controller (the same
:class:`~envs.emulation.EmulatedNetwork` as :class:`~envs.mininet_backend.MininetBackend`, node i
is datapath i+1 with its host on port 1), waits until the controller reports every switch ready,
then replays each matrix for ``period_s`` seconds as paced UDP flows (the backend's
:meth:`~envs.mininet_backend.MininetBackend.flow_specs`: model demand × ``capacity_scale``) until
the series ends or it is stopped, and removes the network and its traffic agents.

Time is compressed: a matrix measured over 5 minutes is played for ``period_s``. Each matrix's
agents (one per host, ``envs/traffic_agent.py``) start a little before their period and stop at
its end; consecutive matrices use alternate UDP ports so the next agents can start while the
last ones finish (OVS hashes flows onto paths by addresses only, so ports change no path).
With the controller's API, each matrix is also measured as the controller sees it: its ingress
counters over the matrix's period (:class:`_Meter`), and ``GET /stats`` at the period's end.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controllers.client import ControllerClient, ControllerError
from topologies import PathSet, Topology, k_shortest_paths, load_topology, load_traffic

from envs.emulation import EmulationError, _ovs_vsctl, require_emulation
from envs.mininet_backend import (AGENT, FIRST_SOURCE_PORT, SINK_PORT, MininetBackend, ReplaySettings,
                              check_listening, controller_pathset, parse_address)

DEFAULT_SYNTHETIC_COUNT = 100
MIN_PERIOD_S = 1.0
MEASURE_MARGIN_S = 0.1  # read the controller's rates this long before a matrix's period ends
COUNTER_READ_S = 0.25   # how often the controller's counters are read while a matrix plays


@dataclass
class NetSettings:
    topology: str = "abilene"
    traffic: str = "abilene-test"
    controller: str = "127.0.0.1:6653"      # the running controller's OpenFlow address
    api: str | None = "http://127.0.0.1:8080"  # its HTTP API; None: no readiness report, no measurements
    token: str | None = None
    period_s: float = 5.0
    start: int = 0
    count: int | None = None                # None: to the end of the series (synthetic: 100 matrices)
    scale: float = 0.5                      # target peak optimal MLU of the replayed matrices
    seed: int = 0                           # synthetic traffic
    capacity_scale: float | None = None     # None: the controller's (GET /topology), else 1e-3
    flows_per_pair: int = 32
    ready_timeout_s: float = 60.0


@dataclass
class NetPlan:
    """What :func:`prepare` checked and computed; nothing is built yet."""

    settings: NetSettings
    topology: Topology
    pathset: PathSet
    traffic_name: str
    indices: list[int]
    demands: np.ndarray          # (T, P) model bit/s, scaled
    factor: float                # the scale applied to the dataset's matrices
    optimal_mlu: np.ndarray      # (T,) optimal MLU of each scaled matrix
    capacity_scale: float
    address: tuple[str, int]
    client: ControllerClient | None
    interval_s: float | None     # the series' time between matrices

    def pair_labels(self) -> list[str]:
        names = self.topology.node_names
        return [f"{names[o]}->{names[d]}" for o, d in self.pathset.pairs.tolist()]


@dataclass
class MatrixResult:
    index: int
    start: float                           # epoch seconds its period began and ended
    end: float
    offered_bps: float                     # emulated payload rate the matrix asks for
    offered_pair_bps: list[float]
    measured_bps: float | None = None      # the controller's measured total, emulated (see _Meter)
    measured_pair_bps: list[float | None] | None = None
    stats_pair_bps: list[float | None] | None = None  # GET /stats at the period's end: its last polling interval
    measured_at: float | None = None
    sent_bps: float | None = None          # what the agents put on the wire (payload)
    delivered: float | None = None         # received ÷ sent


@dataclass
class NetReport:
    results: list[MatrixResult] = field(default_factory=list)
    stopped: bool = False                  # by Ctrl-C or SIGTERM before the series ended
    notes: list[str] = field(default_factory=list)


def _bridges_in_the_way(topology: Topology) -> list[str]:
    existing = set(_ovs_vsctl("list-br").split())
    return [f"s{n + 1}" for n in range(topology.num_nodes) if f"s{n + 1}" in existing]


def prepare(settings: NetSettings) -> NetPlan:
    """Check the inputs and the controller, and scale the series; builds nothing. Raises
    ValueError (TopologyError, TrafficError), EmulationError or ControllerError with the reason."""
    from agents.lp import scaled_with_optimum
    from topologies.traffic import REAL_DATASETS, check_dataset_topology

    if not (math.isfinite(settings.period_s) and settings.period_s >= MIN_PERIOD_S):
        raise ValueError(f"--period must be at least {MIN_PERIOD_S:g} s, got {settings.period_s:g}")
    if settings.start < 0:
        raise ValueError(f"--start must be a matrix index (0 or more), got {settings.start}")
    if settings.count is not None and settings.count < 1:
        raise ValueError(f"--count must be at least 1, got {settings.count}")
    if not (math.isfinite(settings.scale) and settings.scale > 0):
        raise ValueError(f"--scale must be a positive target MLU, got {settings.scale:g}")
    if settings.capacity_scale is not None and not settings.capacity_scale > 0:
        raise ValueError(f"--capacity-scale must be positive, got {settings.capacity_scale:g}")
    if settings.ready_timeout_s <= 0:
        raise ValueError("--ready-timeout must be positive")
    ReplaySettings(flows_per_pair=settings.flows_per_pair)  # its own range checks
    topology = load_topology(settings.topology)
    if settings.traffic in REAL_DATASETS:
        check_dataset_topology(settings.traffic, topology)
        sequence = load_traffic(settings.traffic, topology)
    else:
        sequence = load_traffic(settings.traffic, topology,
                                count=settings.start + (settings.count or DEFAULT_SYNTHETIC_COUNT), seed=settings.seed)
    if settings.start >= len(sequence):
        raise ValueError(f"--start {settings.start} is past the end of {settings.traffic!r} "
                         f"({len(sequence)} matrices: 0..{len(sequence) - 1})")
    stop = len(sequence) if settings.count is None else min(len(sequence), settings.start + settings.count)
    indices = list(range(settings.start, stop))

    require_emulation()
    address = parse_address(settings.controller)
    check_listening(*address)
    client = None
    if settings.api:
        client = ControllerClient(settings.api, settings.token, timeout_s=10.0)
        try:
            described = client.get("/topology")
        except ControllerError as error:
            if error.status:
                raise
            raise ControllerError(f"no controller API answers at {settings.api} ({str(error).rpartition(' (')[2]}: "
                                  "give the running controller's --api URL, or --api none") from None
        pathset = controller_pathset(topology, described)
        theirs = float(described["capacity_scale"])
        if settings.capacity_scale is not None and not np.isclose(settings.capacity_scale, theirs, rtol=1e-9):
            raise ValueError(f"--capacity-scale {settings.capacity_scale:g} differs from the controller's {theirs:g}")
        capacity_scale = theirs
    else:  # what `rlte controller` runs by default
        pathset = k_shortest_paths(topology, 4)
        capacity_scale = settings.capacity_scale or 1e-3
    most = max(np.bincount(pathset.pairs[:, 0], minlength=topology.num_nodes)) * settings.flows_per_pair
    if FIRST_SOURCE_PORT + 2 * most > 65535:
        raise ValueError(f"{most} flows from one host need more UDP ports than there are: lower --flows-per-pair")
    in_the_way = _bridges_in_the_way(topology)
    if in_the_way:
        raise EmulationError(f"OVS bridges {', '.join(in_the_way)} already exist: another emulation runs on this "
                             "machine (or a crashed one left them: `python -m envs.emulation --clean` removes "
                             "those of rlte runs that are gone)")

    scaled = scaled_with_optimum(topology, sequence[indices], settings.scale, "peak")
    return NetPlan(settings=settings, topology=topology, pathset=pathset, traffic_name=sequence.name,
                   indices=indices, demands=pathset.demands(scaled.sequence.matrices), factor=float(scaled.factor),
                   optimal_mlu=scaled.optimum, capacity_scale=capacity_scale, address=address, client=client,
                   interval_s=sequence.interval_s)


class _Meter:
    """One matrix's pair rates as the controller's ingress counters saw them (``GET /counters``,
    read every ``COUNTER_READ_S``): per pair, from the first counter sample the controller took
    after the first reading (made once the matrix's flows were all sending) to the last one
    before the period ended. Over several polling intervals, not one: the controller stamps a
    sample when the switch's reply arrives, and one late reply skews a single interval's rate
    by tens of percent on a loaded machine; the sum over many does not."""

    def __init__(self) -> None:
        self.reference: list[float | None] | None = None
        self.first: dict[int, dict] = {}
        self.last: dict[int, dict] = {}

    def read(self, counters: dict) -> None:
        pairs = counters.get("pairs") or []
        if self.reference is None:
            self.reference = [None if sample is None else sample["time"] for sample in pairs]
            return
        for p, sample in enumerate(pairs):
            reference = self.reference[p] if p < len(self.reference) else None
            if sample is None or (reference is not None and sample["time"] <= reference):
                continue
            self.first.setdefault(p, sample)
            self.last[p] = sample

    def rates(self, num_pairs: int) -> list[float | None]:
        out = []
        for p in range(num_pairs):
            a, b = self.first.get(p), self.last.get(p)
            good = a is not None and b["time"] > a["time"] and b["bytes"] >= a["bytes"]  # not reset meanwhile
            out.append(8.0 * (b["bytes"] - a["bytes"]) / (b["time"] - a["time"]) if good else None)
        return out


class _Stop(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, like Ctrl-C."""


class _Agents:
    """The traffic agents of one matrix: one per host, alternate ports by ``slot``."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen, Path]] = []

    def launch(self, backend: MininetBackend, index: int, slot: int, demands: np.ndarray, start_at: float,
               period_s: float, grace_s: float) -> None:
        flows = backend.flow_specs(demands)
        pairs = backend.pathset.pairs
        most = int(max(np.bincount(pairs[:, 0], minlength=backend.pathset.topology.num_nodes))) * \
            backend.replay.flows_per_pair
        for node in range(backend.pathset.topology.num_nodes):
            mine = flows.get(node, [])
            for j, flow in enumerate(mine):
                flow["dport"] = SINK_PORT + slot
                flow["sport"] = FIRST_SOURCE_PORT + slot * most + j
            spec_file = backend.workdir / f"net-{index}-{node}.json"
            result_file = backend.workdir / f"net-{index}-{node}.result.json"
            spec_file.write_text(json.dumps({
                "listen_port": SINK_PORT + slot, "start_at": start_at, "duration_s": period_s, "grace_s": grace_s,
                "window": [start_at, start_at + period_s], "payload_bytes": backend.replay.payload_bytes,
                "flows": mine, "result": str(result_file), "seed": node + 1000 * index}))
            with open(backend.workdir / f"net-{index}-{node}.log", "w") as log:
                self.processes.append((backend.network.host(node).popen(
                    [sys.executable, str(AGENT), str(spec_file)], stdout=log, stderr=subprocess.STDOUT), result_file))

    def reap(self, deadline: float) -> list[dict | None]:
        results = []
        for process, result_file in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            results.append(json.loads(result_file.read_text()) if result_file.exists() else None)
        self.processes = []
        return results

    def kill(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
        for process, _ in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.processes = []


def play(plan: NetPlan, on_matrix: Callable[[MatrixResult], None] | None = None,
         on_ready: Callable[[MininetBackend], None] | None = None, workdir: str | Path | None = None) -> NetReport:
    """Build the network against the running controller, replay ``plan``'s matrices, clean up.

    Stopped by Ctrl-C or SIGTERM (in the main thread), it cleans up the same way and returns
    what was played with ``stopped`` set. A matrix's result comes shortly after its period ends.
    """
    settings = plan.settings
    period = settings.period_s
    lead = min(1.0, period / 2)       # agents start this long before their period
    grace = min(0.3, period / 4)      # sinks listen this long after it
    report = NetReport()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None

    def terminate(signum, frame):
        raise _Stop()

    if main_thread:
        signal.signal(signal.SIGTERM, terminate)
    temporary = tempfile.TemporaryDirectory(prefix="rlte-net-") if workdir is None else None
    backend = MininetBackend(plan.pathset, capacity_scale=plan.capacity_scale,
                             replay=ReplaySettings(flows_per_pair=settings.flows_per_pair),
                             controller=plan.address, api=settings.api or None, token=settings.token,
                             ready_timeout_s=settings.ready_timeout_s,
                             workdir=Path(workdir or temporary.name))
    running: dict[int, _Agents] = {}
    results: dict[int, MatrixResult] = {}
    try:
        backend.start()
        report.notes.extend(backend.network.notes)
        if on_ready is not None:
            on_ready(backend)
        offered = plan.demands * plan.capacity_scale
        offered[offered < backend.replay.min_rate_bps] = 0.0  # as flow_specs leaves them out
        t0 = time.time() + lead + 0.2
        settle = min(0.5, period / 4)  # every flow has sent its first packet (they start at random phases)
        events = []
        for i in range(len(plan.indices)):
            start, end = t0 + i * period, t0 + (i + 1) * period
            events += [(start - lead, 0, "launch", i), (end - MEASURE_MARGIN_S, 2, "measure", i),
                       (end + grace + 0.2, 3, "reap", i)]
            if plan.client is not None:
                events += [(at, 1, "count", i) for at in np.arange(start + settle, end - MEASURE_MARGIN_S,
                                                                   COUNTER_READ_S).tolist()]
        events.sort()
        meters: dict[int, _Meter] = {}
        for at, _, action, i in events:
            time.sleep(max(0.0, at - time.time()))
            start, end = t0 + i * period, t0 + (i + 1) * period
            if action == "launch":
                results[i] = MatrixResult(plan.indices[i], start, end, float(offered[i].sum()), offered[i].tolist())
                meters[i] = _Meter()
                running[i] = _Agents()  # registered first: a stop while launching still kills what started
                running[i].launch(backend, plan.indices[i], i % 2, plan.demands[i], start, period, grace)
            elif action == "count":
                meters[i].read(plan.client.counters(fresh=False))
            elif action == "measure" and plan.client is not None:
                meter = meters.pop(i)
                meter.read(plan.client.counters(fresh=False))
                stats = backend.measured_demands() * plan.capacity_scale  # the last polling interval
                result = results[i]
                result.measured_at = time.time()
                result.stats_pair_bps = [None if not np.isfinite(r) else float(r) for r in stats]
                # a pair the counters saw once only (a period of about one polling interval): its last interval
                pairs = [r if r is not None else q for r, q in zip(meter.rates(len(stats)), result.stats_pair_bps)]
                if any(r is not None for r in pairs):
                    result.measured_pair_bps = pairs
                    result.measured_bps = float(sum(r for r in pairs if r is not None))
            elif action == "reap":
                agents = running.pop(i)
                outcome = agents.reap(deadline=end + grace + 10.0)
                missing = [node for node, r in enumerate(outcome) if r is None]
                if missing:
                    log = (backend.workdir / f"net-{plan.indices[i]}-{missing[0]}.log").read_text()[-1500:]
                    raise RuntimeError(f"traffic agents of nodes {missing} did not report for matrix "
                                       f"{plan.indices[i]}; agent {missing[0]} said:\n{log}")
                sent = sum(sum(r["sent_in_window_bytes"]) for r in outcome)
                received = sum(sum(r["received_in_window_bytes"].values()) for r in outcome)
                result = results[i]
                result.sent_bps = 8.0 * sent / period
                result.delivered = received / sent if sent else None
                report.results.append(result)
                if on_matrix is not None:
                    on_matrix(result)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through terminate()
        report.stopped = True
    finally:
        if main_thread:  # a second signal must not cut the cleanup short
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for agents in running.values():
                agents.kill()
            backend.close()
            if temporary is not None:
                temporary.cleanup()
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, interrupt)
                signal.signal(signal.SIGTERM, previous)
    return report


def report_json(plan: NetPlan, report: NetReport) -> dict:
    """What was offered and measured, per matrix and pair (emulated bit/s), for ``rlte net --out``."""
    s = plan.settings
    return {
        "topology": plan.topology.name, "traffic": plan.traffic_name, "controller": f"{plan.address[0]}:{plan.address[1]}",
        "api": s.api, "period_s": s.period_s, "target_peak_mlu": s.scale, "scale_factor": plan.factor,
        "capacity_scale": plan.capacity_scale, "flows_per_pair": s.flows_per_pair, "pairs": plan.pair_labels(),
        "stopped": report.stopped, "notes": report.notes,
        "matrices": [vars(result) for result in report.results],
    }
