"""The live backend: the same ``run(demands, ratios) -> Measurement`` as the twin, answered by packets.

On first use it starts its own controller (``python -m controllers``, os-ken) on free
ports and an emulated network wired to it. Each :meth:`MininetBackend.run` installs the
split ratios through the controller's API (the call returns once every switch confirmed),
replays the demands as paced UDP flows from every host, and reads the switches' port
counters over a measurement window that starts after a warm-up. Utilization is
measured bits/s ÷ emulated capacity, so it reads like the twin's.

Given ``controller=(host, port)`` it starts no controller: it attaches the emulated network to
one already running there (``rlte controller``), checks through ``api`` that the controller
manages the same topology, path set and capacity scale, and waits until the controller reports
every switch ready. Closing it then removes the network only; the controller keeps running.
Either way :meth:`MininetBackend.measured_demands` reads the traffic the controller itself
measures (``GET /stats``), in model units.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controllers.client import ControllerClient, ControllerError
from controllers.fabric import MAX_SOURCE_ADDRESSES, FabricPlan, host_ip, source_ip
from topologies import (PathSet, Topology, TopologyError, check_ratios, lift_ratios, pathset_from_dict,
                        pathset_to_dict, union_pathsets)

from .backend import Measurement
from .emulation import EmulatedNetwork, EmulationSettings
from .ovs_hashing import FLOW_ADDRESSES, flow_sources

LOG = logging.getLogger("rlte.mininet")
AGENT = Path(__file__).with_name("traffic_agent.py")
SINK_PORT = 5001
FIRST_SOURCE_PORT = 20000
UDP_IP_OVERHEAD_BYTES = 28  # what the wire adds to each payload before Ethernet (IPv4 20 + UDP 8)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Ask ``process`` to end (SIGTERM); past ``timeout_s``, kill it. Returns once it is gone."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------- a controller that is already running
def parse_address(address: str | tuple[str, int], default_port: int = 6653) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"HOST"`` or ``(host, port)`` -> (IPv4 address, port): OVS takes no host names."""
    if isinstance(address, tuple):
        host, port = address
    else:
        host, _, port_text = str(address).strip().rpartition(":")
        if not host:
            host, port_text = port_text, str(default_port)
        if not port_text.isdigit():
            raise ValueError(f"controller address {address!r} is not HOST:PORT")
        port = int(port_text)
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"controller port {port} is outside 1..65535")
    try:
        return socket.gethostbyname(host), int(port)
    except OSError as error:
        raise ValueError(f"controller host {host!r} does not resolve: {error}") from None


def check_listening(host: str, port: int, timeout_s: float = 3.0) -> None:
    """ControllerError unless something accepts TCP connections at host:port (a controller's
    OpenFlow port: the switches connect there)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "nothing listens there" if isinstance(error, ConnectionRefusedError) else str(error)
        raise ControllerError(f"no controller at OpenFlow address {host}:{port} ({reason}); start one first: "
                              f"rlte controller --topology NAME --of-port {port}") from None


def controller_pathset(topology: Topology, described: dict) -> PathSet:
    """The path set a controller runs, from its ``GET /topology``, on ``topology``; ControllerError
    when the controller manages another network."""
    if described.get("fingerprint") != topology.fingerprint():
        raise ControllerError(f"the controller manages topology {described.get('name')!r} (fingerprint "
                              f"{described.get('fingerprint')}), not {topology.name!r} (fingerprint "
                              f"{topology.fingerprint()}): give the topology it was started with")
    try:
        return pathset_from_dict(topology, {"fingerprint": described["fingerprint"],
                                            "pairs": [label.split("->", 1) for label in described["pairs"]],
                                            "paths": described["paths"]})
    except (KeyError, TopologyError) as error:
        raise ControllerError(f"the controller's path set does not fit {topology.name!r}: {error}") from None


def check_controller(described: dict, pathset: PathSet, capacity_scale: float, where: str) -> None:
    """ControllerError unless the controller that answered ``GET /topology`` with ``described``
    runs ``pathset`` at ``capacity_scale`` (a backend attached to it sends its split ratios
    and divides its counters by that scale)."""
    theirs = controller_pathset(pathset.topology, described)
    if not theirs.same_paths(pathset):
        raise ControllerError(f"the controller at {where} runs another path set ({theirs.num_pairs} pairs × "
                              f"{theirs.k} paths) than this backend ({pathset.num_pairs} × {pathset.k}): start it "
                              "with this path set (--paths-file, topologies.pathset_to_dict)")
    scale = float(described.get("capacity_scale", float("nan")))
    if not np.isclose(scale, capacity_scale, rtol=1e-9, atol=0.0):
        raise ControllerError(f"the controller at {where} emulates capacity × {scale:g}, this backend × "
                              f"{capacity_scale:g}: give the same capacity scale to both")


def wait_switches_ready(client: ControllerClient, timeout_s: float = 60.0, interval_s: float = 0.2) -> dict:
    """Until the controller's ``GET /health`` reports every switch connected and programmed;
    ControllerError naming the switches still missing at the deadline."""
    deadline = time.monotonic() + timeout_s
    report, failure = None, None
    while True:
        try:
            report, failure = client.health(), None
        except ControllerError as error:
            failure = error
        if report is not None and failure is None and report.get("status") == "ok":
            return report
        if time.monotonic() > deadline:
            if failure is not None:
                raise ControllerError(f"the controller's API did not answer within {timeout_s:.0f} s: {failure}")
            missing = report.get("switches_missing") or []
            raise ControllerError(f"switches {', '.join(missing) or '?'} not ready at the controller "
                                  f"{client.base_url} after {timeout_s:.0f} s ({len(report.get('switches_ready', []))}"
                                  f" of {report.get('switches_expected')} ready): do the switches reach its "
                                  "OpenFlow address, and does it manage this network?")
        time.sleep(interval_s)


@dataclass
class ReplaySettings:
    """How a traffic matrix becomes packets."""

    flows_per_pair: int = 32       # select groups hash flows: more flows, finer realized splits
    payload_bytes: int = 1400
    warmup_s: float = 1.0          # queues fill and counters settle before the window opens
    window_s: float = 2.0          # measurement window
    start_delay_s: float = 0.8     # time for every host's sender to start before the common start
    min_rate_bps: float = 1e3      # emulated flows slower than this are not sent (below one packet per window)
    # Which source address each of a pair's flows comes from. OVS hashes a flow by its addresses,
    # so "sequential" (flow f from address f) makes a pair's flows one fixed draw over the select
    # group's slots; "even" picks addresses whose hashes cover the slots evenly, as a large
    # aggregate of flows would (envs.ovs_hashing.even_sources)
    flow_addresses: str = "even"

    def __post_init__(self) -> None:
        if not 1 <= self.flows_per_pair <= MAX_SOURCE_ADDRESSES:
            raise ValueError(f"flows_per_pair must be within 1..{MAX_SOURCE_ADDRESSES} (one source address each)")
        if self.flow_addresses not in FLOW_ADDRESSES:
            raise ValueError(f"flow_addresses must be one of {', '.join(FLOW_ADDRESSES)}, got {self.flow_addresses!r}")
        if not 16 <= self.payload_bytes <= 1472:
            raise ValueError("payload_bytes must be within 16..1472 (one Ethernet frame)")
        if self.window_s <= 0 or self.warmup_s < 0:
            raise ValueError("window_s must be positive and warmup_s non-negative")


class MininetBackend:
    """Emulated network under the rlte controller. Close it (or use ``with``) to tear everything down."""

    name = "mininet"

    def __init__(self, pathset: PathSet, *, capacity_scale: float = 1e-3, replay: ReplaySettings | None = None,
                 datapath: str = "auto", buffer_s: float = 0.2, poll_interval_s: float = 1.0,
                 workdir: str | Path | None = None, controller: str | tuple[str, int] | None = None,
                 api: str | None = None, token: str | None = None, ready_timeout_s: float = 60.0) -> None:
        """``controller``: the OpenFlow address (``"host:port"`` or ``(host, port)``) of a controller
        that is already running, to attach to instead of starting one (``poll_interval_s`` is then
        the controller's business); ``api`` its HTTP API and ``token`` its API token (routing
        changes need it). Without ``api`` the backend can only build the network and wait until
        every switch holds an OpenFlow connection: it cannot install routings nor measure."""
        if controller is None and (api is not None or token is not None):
            raise ValueError("api and token are for attaching to a running controller: give controller= too")
        self.remote = parse_address(controller) if controller is not None else None
        self.api = api
        self.ready_timeout_s = ready_timeout_s
        self.pathset = pathset
        self.plan = FabricPlan(pathset)
        self.capacity_scale = capacity_scale
        self.replay = replay or ReplaySettings()
        self.emulation_settings = EmulationSettings(capacity_scale=capacity_scale, datapath=datapath,
                                                    buffer_s=buffer_s)
        self.poll_interval_s = poll_interval_s
        self._tmp = tempfile.TemporaryDirectory(prefix="rlte-mininet-") if workdir is None else None
        self.workdir = Path(workdir or self._tmp.name)
        self.controller: subprocess.Popen | None = None
        self.network: EmulatedNetwork | None = None
        self.client: ControllerClient | None = ControllerClient(api, token) if api else None
        self._installed: np.ndarray | None = None
        self._sources: tuple | None = None
        self.last_update: dict | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "MininetBackend":
        if self.network is not None:
            return self
        if self.remote is not None:
            return self._attach()
        from controllers.main import ControllerConfig

        of_port, api_port = free_port(), free_port()
        token = secrets.token_urlsafe(16)
        paths_file, topology_file = self.workdir / "paths.json", self.workdir / "topology.json"
        paths_file.write_text(json.dumps(pathset_to_dict(self.pathset)))
        topology_file.write_text(json.dumps(self.pathset.topology.to_dict()))  # exact: same fingerprint
        config = ControllerConfig(topology=str(topology_file), paths_file=str(paths_file), of_port=of_port,
                                  api_port=api_port, token=token, poll_interval_s=self.poll_interval_s,
                                  capacity_scale=self.capacity_scale, log_level="WARNING")
        config_file = self.workdir / "controller.json"
        config_file.write_text(config.model_dump_json())
        with open(self.workdir / "controller.log", "w") as log:  # the child keeps its own copy
            self.controller = subprocess.Popen([sys.executable, "-m", "controllers", str(config_file)],
                                               stdout=log, stderr=subprocess.STDOUT,
                                               cwd=Path(__file__).resolve().parent.parent)
        self.client = ControllerClient(f"http://127.0.0.1:{api_port}", token)
        try:
            self._wait_listening(api_port)
            self.network = EmulatedNetwork(self.plan, of_port, self.emulation_settings).start()
            self.network.add_source_addresses(MAX_SOURCE_ADDRESSES)  # either choice of flow_addresses fits
            self.client.wait_ready(timeout_s=60)
        except BaseException:
            self.close()
            raise
        return self

    def _attach(self) -> "MininetBackend":
        """Build the network against the running controller at ``self.remote``."""
        host, port = self.remote
        check_listening(host, port)
        if self.client is not None:
            check_controller(self.client.get("/topology"), self.pathset, self.capacity_scale, self.client.base_url)
        try:
            self.network = EmulatedNetwork(self.plan, port, self.emulation_settings, controller_host=host).start()
            self.network.add_source_addresses(MAX_SOURCE_ADDRESSES)
            began = time.monotonic()
            # OVS first: a controller that has not yet noticed an earlier network leave may still call it ready
            self.network.wait_connected(self.ready_timeout_s)
            if self.client is not None:
                wait_switches_ready(self.client, max(1.0, self.ready_timeout_s - (time.monotonic() - began)))
        except BaseException:
            self.close()
            raise
        return self

    def _api(self) -> ControllerClient:
        if self.client is None:
            raise ControllerError("attached to the controller without its API (api=URL): it can neither install "
                                  "routings nor measure" if self.remote is not None else
                                  "the backend has not started its controller yet (start() or `with`)")
        return self.client

    def _wait_listening(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.controller.poll() is not None:
                raise ControllerError(f"the controller exited with status {self.controller.returncode}; "
                                      f"see {self.workdir / 'controller.log'}:\n{self.controller_log()[-2000:]}")
            try:
                self.client.get("/openapi.json")
                return
            except ControllerError:
                time.sleep(0.1)
        raise ControllerError(f"the controller did not open its API on port {port} within {timeout_s:.0f} s")

    def controller_log(self) -> str:
        path = self.workdir / "controller.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        if self.network is not None:
            network, self.network = self.network, None
            network.stop()
        if self.controller is not None:
            controller, self.controller = self.controller, None
            stop_process(controller)
        self._installed = None

    def __enter__(self) -> "MininetBackend":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; close() is the contract
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ the Backend interface
    def install(self, ratios: np.ndarray) -> dict | None:
        """Send split ratios to the controller unless they are already installed."""
        ratios = check_ratios(self.pathset, ratios)
        # a controller of its own changes only when told; a shared one may have been told by others
        if self.remote is None and self._installed is not None and np.array_equal(ratios, self._installed):
            return None
        self.last_update = self._api().set_ratios(ratios)
        if not self.last_update.get("confirmed", False):
            raise ControllerError("not every switch confirmed the routing update")
        self._installed = ratios
        return self.last_update

    def run(self, demands: np.ndarray, ratios: np.ndarray) -> Measurement:
        self.start()
        demands = np.asarray(demands, dtype=np.float64)
        if demands.shape != (self.pathset.num_pairs,) or not np.isfinite(demands).all() or (demands < 0).any():
            raise ValueError(f"demands must be {self.pathset.num_pairs} finite non-negative pair rates in bit/s")
        self._api()
        self.install(ratios)
        traffic = self._replay(demands)
        utilization = traffic["utilization"]
        offered = float(demands.sum())
        delivered = offered * traffic["delivered_fraction"]
        return Measurement(utilization=utilization, mlu=float(np.max(utilization)), offered_bps=offered,
                           delivered_bps=delivered)

    def utilization(self, demands: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        return self.run(demands, ratios).utilization

    def installed(self) -> tuple[PathSet, np.ndarray]:
        """What the controller forwards by now, failover included: the candidate paths plus any
        backup path it installed, and split ratios over them (feed both to the twin to predict it)."""
        report = self._api().get("/routing")
        ratios = np.array(report["installed"], dtype=np.float64)
        if not report["backup_paths"]:
            return self.pathset, ratios
        topo, ps = self.pathset.topology, self.pathset
        names, labels = topo.node_index, {label: p for p, label in enumerate(report["pairs"])}

        def link(label: str) -> int:
            origin, destination = label.split("->")
            return topo.link_index[(names[origin], names[destination])]

        backups = {labels[pair]: tuple(link(label) for label in links) for pair, links in report["backup_paths"].items()}
        extra = PathSet(topo, ps.pairs, tuple((backups.get(p, candidates[0]),) for p, candidates in enumerate(ps.paths)),
                        "backup paths")
        merged = union_pathsets(ps, extra)
        lifted = lift_ratios(ratios, ps, merged)
        for p, path in backups.items():
            lifted[p] = 0.0
            lifted[p, merged.paths[p].index(path)] = 1.0
        return merged, lifted

    # ------------------------------------------------------------------ what the controller measures
    def measured_demands(self) -> np.ndarray:
        """The traffic matrix the controller measured over its last polling interval (``GET /stats``),
        per pair of the path set, in model units: the bits/s entering the network (Ethernet frames,
        so ~3% above the replayed payload rate) ÷ ``capacity_scale``. NaN where it has no measurement."""
        stats = self._api().get("/stats")
        rates = dict(zip(stats.get("pairs") or [], stats.get("pair_rate_bps") or []))
        names = self.pathset.topology.node_names
        labels = [f"{names[o]}->{names[d]}" for o, d in self.pathset.pairs.tolist()]
        return np.array([np.nan if rates.get(label) is None else float(rates[label]) for label in labels]) \
            / self.capacity_scale

    def measured_matrix(self) -> np.ndarray:
        """:meth:`measured_demands` as an N×N matrix (zero diagonal; NaN for pairs the path set lacks)."""
        n = self.pathset.topology.num_nodes
        matrix = np.full((n, n), np.nan)
        np.fill_diagonal(matrix, 0.0)
        matrix[self.pathset.pairs[:, 0], self.pathset.pairs[:, 1]] = self.measured_demands()
        return matrix

    # ------------------------------------------------------------------ traffic replay
    def flow_sources(self) -> np.ndarray:
        """The source address index of each pair's replayed flows (P, flows_per_pair), as
        ``replay.flow_addresses`` picks them (computed once per setting)."""
        key = (self.replay.flows_per_pair, self.replay.flow_addresses)
        if self._sources is None or self._sources[0] != key:
            self._sources = (key, flow_sources(self.pathset, *key))
        return self._sources[1]

    def flow_specs(self, demands: np.ndarray) -> dict[int, list[dict]]:
        """Per origin node: the UDP flows that replay its demands at emulated scale."""
        replay = self.replay
        flows: dict[int, list[dict]] = {}
        per_flow = demands * self.capacity_scale / replay.flows_per_pair
        sources = self.flow_sources()
        for p, (origin, destination) in enumerate(self.pathset.pairs.tolist()):
            if per_flow[p] * replay.flows_per_pair < replay.min_rate_bps:
                continue
            for f in range(replay.flows_per_pair):
                flows.setdefault(origin, []).append({
                    "src": source_ip(origin, int(sources[p, f])), "dst": host_ip(destination), "dport": SINK_PORT,
                    "sport": FIRST_SOURCE_PORT + p * replay.flows_per_pair + f, "rate_bps": float(per_flow[p])})
        return flows

    def _replay(self, demands: np.ndarray) -> dict:
        replay = self.replay
        topo = self.plan.topology
        flows = self.flow_specs(demands)
        start_at = time.time() + replay.start_delay_s
        total = replay.warmup_s + replay.window_s
        window = [start_at + replay.warmup_s, start_at + total]
        # packets sent in the window must reach their sink: allow the longest queue to drain
        grace_s = self.emulation_settings.buffer_s + 0.5
        agents = []
        for node in range(topo.num_nodes):
            spec_file = self.workdir / f"agent-{node}.json"
            result_file = self.workdir / f"agent-{node}.result.json"
            result_file.unlink(missing_ok=True)
            spec_file.write_text(json.dumps({
                "listen_port": SINK_PORT, "start_at": start_at, "duration_s": total + 0.2, "grace_s": grace_s,
                "window": window,
                "payload_bytes": replay.payload_bytes, "flows": flows.get(node, []), "result": str(result_file),
                "seed": node}))
            with open(self.workdir / f"agent-{node}.log", "w") as log:
                agents.append((self.network.host(node).popen([sys.executable, str(AGENT), str(spec_file)],
                                                             stdout=log, stderr=subprocess.STDOUT), result_file))
        try:
            time.sleep(max(0.0, start_at + replay.warmup_s - time.time()))
            before = self.client.counters(fresh=True)
            time.sleep(replay.window_s)
            after = self.client.counters(fresh=True)
        finally:
            results = []
            for process, result_file in agents:
                try:
                    process.wait(timeout=total + grace_s + 30)
                except subprocess.TimeoutExpired:
                    process.kill()
                results.append(json.loads(result_file.read_text()) if result_file.exists() else None)
        missing = [node for node, r in enumerate(results) if r is None]
        if missing:
            log = (self.workdir / f"agent-{missing[0]}.log").read_text()[-1500:]
            raise RuntimeError(f"traffic agents of nodes {missing} did not report; agent {missing[0]} said:\n{log}")
        bits = np.zeros(topo.num_links)
        seconds = np.zeros(topo.num_links)
        for l, (b, a) in enumerate(zip(before["links"], after["links"])):
            if b is None or a is None or a["time"] <= b["time"]:
                raise ControllerError(f"no counters for link {l} in the measurement window")
            bits[l] = 8.0 * (a["tx_bytes"] - b["tx_bytes"])
            seconds[l] = a["time"] - b["time"]
        # delivery over packets sent inside the window: the steady state the utilization describes
        sent = sum(sum(r["sent_in_window_bytes"]) for r in results)
        received = sum(sum(r["received_in_window_bytes"].values()) for r in results)
        return {"utilization": bits / seconds / (topo.capacities * self.capacity_scale),
                "delivered_fraction": received / sent if sent else 1.0,
                "send_failures": sum(r["send_failures"] for r in results)}
