"""Live-network benchmarks on an emulated Abilene (root, Mininet, Open vSwitch):

- routing update latency: HTTP call -> every ingress switch confirmed the new groups (barrier);
- failover: cable down -> the controller has rerouted every pair that used it, and what the
  pairs deliver afterwards;
- environment step time on Mininet against the twin.

Writes ``bench/results/live.json``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write  # noqa: E402
from envs import SplitRoutingEnv  # noqa: E402
from envs.backend import TwinBackend  # noqa: E402
from envs.emulation import require_emulation  # noqa: E402
from envs.mininet_backend import MininetBackend, ReplaySettings  # noqa: E402
from topologies import Routing, k_shortest_paths, load_topology, load_traffic  # noqa: E402

UPDATES = 30
FAILOVERS = 5
POLL_S = 1.0


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "max": max(values), "min": min(values), "n": len(values)}


def routing_updates(backend: MininetBackend, rng: np.random.Generator) -> dict:
    ps = backend.pathset
    server, client = [], []
    for _ in range(UPDATES):
        ratios = rng.random((ps.num_pairs, ps.k)) * ps.mask
        ratios /= ratios.sum(axis=1, keepdims=True)
        start = time.perf_counter()
        reply = backend.client.set_ratios(ratios)
        client.append(1e3 * (time.perf_counter() - start))
        assert reply["confirmed"], reply
        server.append(reply["latency_ms"])
    return {"switches": reply["switches_updated"], "controller_ms": summary(server), "api_call_ms": summary(client),
            "goal_ms": 100}


def failovers(backend: MininetBackend, demands: np.ndarray) -> dict:
    topo, ps = backend.pathset.topology, backend.pathset
    backend.install(Routing.first_path(ps).ratios)

    def pairs_over(cable: tuple[int, int]) -> int:
        links = {topo.link_index[cable], topo.link_index[cable[::-1]]}
        return sum(1 for candidates in ps.paths if links & set(candidates[0]))

    busiest = sorted(backend.plan.cables, key=pairs_over, reverse=True)
    results = []
    for u, v in busiest[:FAILOVERS]:
        down_at = time.time()
        backend.network.set_cable(u, v, up=False)
        rerouted_at, event = None, None
        while time.time() - down_at < 5 * POLL_S:
            events = [e for e in backend.client.get(f"/events?since={down_at}") if e["kind"] == "link_down"]
            if events:
                event, rerouted_at = events[0], time.time()
                break
            time.sleep(0.01)
        installed_paths, installed = backend.installed()
        measured = backend.run(demands, Routing.first_path(ps).ratios)
        # loss from congestion on the surviving links (the twin under the installed routing) is not black-holing
        congestion = TwinBackend(installed_paths).run(demands, installed)
        backend.network.set_cable(u, v, up=True)
        time.sleep(2 * POLL_S)
        results.append({
            "cable": f"{topo.node_names[u]}-{topo.node_names[v]}",
            "rerouted_pairs": len(event["rerouted_pairs"]) if event else None,
            "unroutable_pairs": len(event["unroutable_pairs"]) if event else None,
            "controller_event_after_s": None if event is None else event["time"] - down_at,
            "observed_by_client_after_s": None if rerouted_at is None else rerouted_at - down_at,
            "delivered_fraction_after": measured.delivered_fraction,
            "twin_delivered_fraction_after": congestion.delivered_fraction,
            "twin_mlu_after": congestion.mlu,
        })
    return {"poll_interval_s": POLL_S, "cases": results}


def step_times(backend: MininetBackend, matrices: np.ndarray) -> dict:
    out = {}
    for name, chosen in (("twin", "twin"), ("mininet", backend)):
        env = SplitRoutingEnv(backend.pathset.topology, matrices, k=backend.pathset.k, history=1, reward="mlu",
                              pathset=backend.pathset, backend=chosen)
        env.reset(seed=0)
        steps = 3 if name == "mininet" else 300
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        out[name] = (time.perf_counter() - start) / steps
    return {"twin_s": out["twin"], "mininet_s": out["mininet"], "ratio": out["mininet"] / out["twin"]}


def main() -> None:
    require_emulation()
    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    sequence = load_traffic("abilene-test", topo)
    matrices = np.array(sequence.matrices[100:110], dtype=np.float64)
    demands = ps.demands(matrices[0])
    demands *= 0.8 / TwinBackend(ps).run(demands, Routing.first_path(ps).ratios).mlu
    matrices *= demands.sum() / ps.demands(matrices[0]).sum()
    rng = np.random.default_rng(0)
    with MininetBackend(ps, poll_interval_s=POLL_S, replay=ReplaySettings(window_s=2.0)) as backend:
        result = {"machine": machine(), "topology": "abilene",
                  "notes": backend.network.notes,
                  "routing_update": routing_updates(backend, rng),
                  "failover": failovers(backend, demands),
                  "env_step": step_times(backend, matrices)}
    write("live", result)
    print(result["routing_update"], result["env_step"])


if __name__ == "__main__":
    main()
