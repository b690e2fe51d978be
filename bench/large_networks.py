"""Large networks (issue #36): the graph policy against the LP on Kdl (754 nodes) and ASN2k
(1,739 nodes), the full graphs, with demands among growing sets of random nodes (50, 100, 200
by default: 2,450 / 9,900 / 39,800 pairs), K = 4 hop-shortest candidate paths per pair. The
nodes are drawn from the largest 2-edge-connected component (all of ASN2k, 680 of Kdl's 754):
a node behind one of Kdl's 74 bridges sends all its traffic over it, and with one sampled the
bridge set every routing's MLU, shortest path's included, at the optimum.

Per case, each measured in a fresh subprocess (peak memory is the process's peak RSS above its
RSS once its inputs are loaded: ``/proc/self/clear_refs`` resets the peak there, and VmHWM, the
counter behind ``ru_maxrss``, reads it; torch's allocations are in it, which tracemalloc would
not see):

- the path set's build time and memory (``topologies.k_shortest_paths`` with ``pairs=``);
- the graph policy (``agents.gnn.LinkGNN``, agent=gradient_gnn's shape: 5 refinement rounds)
  deciding one matrix from its 3-matrix history, and a batch of windows in one pass: setup
  (its ``LinkGraph``), the first decision, the median of the rest, memory;
- PPO's graph policy (``agents.sb3.GraphActorCriticPolicy``, ``ppo_gnn``'s shape, untrained:
  its decision time and memory do not depend on the weights), deciding one matrix through the
  adapter rlte scores it with (``SB3GraphSplitPolicy``: the graph observation, then link costs
  to split ratios), on the CPU;
- the path LP (``agents.lp.path_lp``, the K=4 LP the policy would replace) and the exact edge
  multicommodity-flow optimum (``agents.lp.mcf_optimum``), each with a time limit;
- MLU of the routed matrix: the graph policy, hop-shortest path (the first candidate), per-hop
  ECMP (equal split over next hops on the hop-shortest DAG, per destination) and LP-previous
  (the path LP of the matrix before), each ÷ the exact optimum (where the edge LP finished)
  and ÷ the path LP's optimum (where that finished).

Traffic: the gravity model (seed 1) restricted to the sampled nodes' pairs, scaled by one factor
so that hop-shortest-path routing's MLU on the routed matrix is 1 (normalized MLU does not
depend on the factor). The graph policy's weights: a short ``agent=gradient_gnn`` run on
Abilene (``agent.epochs=10``, trained into ``bench/runs/`` on the first run and reused after;
``--weights`` takes another run's ``model.pt``, ``--untrained`` a fresh network: the decision
time and memory are the same, the MLU is not).

Sizes run in the order kdl 50, asn2k 50, kdl 100, ... while they fit ``--budget`` (seconds for
the whole script): each case's time is estimated first, from a 10-node path probe and the
smaller sizes measured before it, and a case that would not fit is recorded as skipped with its
estimate (the LPs left out of it: a case that fits runs, and its LPs get the time left, at most
``--lp-limit``). An LP that did not finish at a smaller size is not tried at a larger one.

Torch and BLAS use ``--threads`` threads (1 by default, like the other benchmarks); HiGHS runs
as ``agents.lp`` sets it up.
``--device cuda`` runs the graph policy on a GPU (its graph and twin tensors on the device;
GPU memory from torch's allocator beside the RSS); the default is the CPU. Writes
``bench/results/large_networks.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, write  # noqa: E402

K = 4
HISTORY = 3
TRAFFIC_SEED = 1
NODE_SEED = 0  # the random node sample (of the 2-edge-connected core: not twin_throughput's kdl nodes)
RUN_DIR = ROOT / "bench" / "runs" / "large_networks_gradient_gnn_seed0"
TRAIN_OVERRIDES = ("agent=gradient_gnn", "agent.epochs=10", "seed=0")
CHILD_START_S = 8.0  # a fresh interpreter importing torch and loading its inputs (estimate)
MAX_TIMING_S = 20.0  # timed decisions stop here once 3 are in
BATCH_S = 60.0       # the batch shrinks until its timed decisions should fit this


# ----------------------------------------------------------------------------- memory (in a child)

def _status_kb(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class Peak:
    """Peak RSS of this process above its RSS when it was created (inputs loaded, garbage freed)."""

    def __init__(self) -> None:
        gc.collect()
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the base is what is held
        except (OSError, AttributeError):
            pass
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # reset the peak (VmHWM, and ru_maxrss with it) to the current RSS
            self.reset = True
        except OSError:
            self.reset = False  # the peak may then be the loading's, not the measurement's
        self.base_kb = _status_kb("VmRSS")

    def read(self) -> dict:
        # VmHWM is ru_maxrss's own counter for this address space. ru_maxrss itself also holds
        # the forked parent's RSS (the kernel keeps the old image's peak across exec), so in a
        # child started from a 200 MB parent it never reads below 200 MB: only a fallback here.
        peak_kb = _status_kb("VmHWM") if self.reset else max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                                              _status_kb("VmHWM"))
        return {"base_rss_mb": self.base_kb / 1024, "peak_rss_mb": peak_kb / 1024,
                "peak_above_base_mb": (peak_kb - self.base_kb) / 1024,
                "rss_after_mb": _status_kb("VmRSS") / 1024, "peak_reset": self.reset}


def limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


# ----------------------------------------------------------------------------- inputs

def core_nodes(topology) -> np.ndarray:
    """The nodes of the largest 2-edge-connected component: every node of ASN2k, 680 of Kdl's 754.
    Off it, a node's traffic all crosses a bridge (Kdl has 74), which pins every routing's MLU
    at the optimum as soon as a sampled node sits behind one."""
    import networkx as nx

    graph = nx.Graph(zip(topology.link_src.tolist(), topology.link_dst.tolist()))
    graph.add_nodes_from(range(topology.num_nodes))
    graph.remove_edges_from(list(nx.bridges(graph)))
    return np.array(sorted(max(nx.connected_components(graph), key=len)))


def sample_pairs(topology, endpoints: int, seed: int = NODE_SEED) -> np.ndarray:
    """Every ordered pair among ``endpoints`` random nodes of :func:`core_nodes`."""
    nodes = np.sort(np.random.default_rng(seed).choice(core_nodes(topology), endpoints, replace=False))
    origin, destination = np.meshgrid(nodes, nodes, indexing="ij")
    keep = origin != destination
    return np.stack([origin[keep], destination[keep]], axis=1)


def matrices(pathset, demands: np.ndarray) -> np.ndarray:
    """(T, P) pair demands -> (T, N, N) traffic matrices."""
    n = pathset.topology.num_nodes
    tms = np.zeros((len(demands), n, n))
    tms[:, pathset.pairs[:, 0], pathset.pairs[:, 1]] = demands
    return tms


def path_mlu(pathset, ratios: np.ndarray, demand: np.ndarray) -> float:
    """MLU of (P,) pair demands split over the path set by (P, K) ratios (the fluid twin's)."""
    from envs.twin import FluidTwin

    return float(FluidTwin(pathset).mlu(None, ratios, demands=demand))


def ecmp_mlu(topology, pairs: np.ndarray, demand: np.ndarray) -> float:
    """MLU of hop-by-hop ECMP: at each node, traffic for a destination splits equally over the
    links that lead one hop closer to it (the per-hop split of ``agents.policy.ecmp``, computed
    per destination over its shortest-path DAG instead of enumerating every equal-cost path,
    which on ASN2k can run to hundreds per pair)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    n, src, dst = topology.num_nodes, topology.link_src, topology.link_dst
    adjacency = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    destinations, row_of = np.unique(pairs[:, 1], return_inverse=True)
    hops_to = shortest_path(adjacency.T, unweighted=True, indices=destinations)  # (D, N): hops from u to d
    loads = np.zeros(topology.num_links)
    for row, d in enumerate(destinations):
        dist = hops_to[row]
        on_dag = np.isfinite(dist[src]) & (dist[src] == dist[dst] + 1)
        next_hops = np.bincount(src[on_dag], minlength=n)
        traffic = np.zeros(n)
        np.add.at(traffic, pairs[row_of == row, 0], demand[row_of == row])
        dag_links = np.flatnonzero(on_dag)
        level_of_link = dist[src[dag_links]]
        for level in range(int(level_of_link.max(initial=0)), 0, -1):  # farthest nodes first
            links = dag_links[level_of_link == level]
            flow = traffic[src[links]] / next_hops[src[links]]
            np.add.at(loads, links, flow)
            np.add.at(traffic, dst[links], flow)
    return float((loads / topology.capacities).max())


# ----------------------------------------------------------------------------- children

def child_paths(case: Path, spec: dict) -> dict:
    """Build the path set (timed, memory), save it, the traffic and the static baselines' MLU."""
    from topologies import load_topology, load_traffic
    from topologies.paths import k_shortest_paths
    from topologies.routing import Routing

    topology = load_topology(spec["topology"])
    pairs = sample_pairs(topology, spec["nodes"])
    peak = Peak()
    start = time.perf_counter()
    pathset = k_shortest_paths(topology, K, pairs=pairs)
    incidence = pathset.incidence  # every consumer's first use: part of building the set
    build_s = time.perf_counter() - start
    out = {"build_s": build_s, "memory": peak.read(), "pairs": pathset.num_pairs, "k": pathset.k,
           "slots_used": int(pathset.mask.sum()), "hops_total": int(incidence.nnz),
           "mean_hops": float(pathset.hops[pathset.mask].mean()), "max_hops": int(pathset.hops.max()),
           "pairs_with_fewer_than_k": int((pathset.mask.sum(axis=1) < K).sum())}
    with open(case / "pathset.pkl", "wb") as handle:
        pickle.dump(pathset, handle, protocol=pickle.HIGHEST_PROTOCOL)
    count = spec["batch"] + HISTORY
    sequence = load_traffic("gravity", topology, count=count, seed=TRAFFIC_SEED).matrices
    demands = pathset.demands(sequence)  # (T, P): only the sampled pairs carry traffic
    del sequence
    first = Routing.first_path(pathset).ratios
    demands *= 1.0 / path_mlu(pathset, first, demands[HISTORY])  # hop-shortest path's MLU is 1
    np.save(case / "demands.npy", demands)
    routed = demands[HISTORY]
    out["mlu"] = {"shortest_path": path_mlu(pathset, first, routed)}
    start = time.perf_counter()
    out["mlu"]["ecmp"] = ecmp_mlu(topology, pathset.pairs, routed)
    out["ecmp_s"] = time.perf_counter() - start
    return out


def load_case(case: Path):
    with open(case / "pathset.pkl", "rb") as handle:
        pathset = pickle.load(handle)
    return pathset, np.load(case / "demands.npy")


def gnn_network(weights: str | None):
    import torch

    from agents.gnn import LinkGNN

    if weights:
        return LinkGNN.load(weights)
    torch.manual_seed(0)
    return LinkGNN(HISTORY, hidden=64, layers=3, rounds=5)  # agent=gradient_gnn's shape


def child_gnn(case: Path, spec: dict) -> dict:
    """The graph policy: setup, one decision (or a batch of windows), memory; MLU of its routing."""
    import torch

    from agents.gnn import LinkGraph

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    pathset, demands = load_case(case)
    batch = spec["batch"] if spec["mode"] == "batch" else 1
    tms = matrices(pathset, demands[:batch + HISTORY - 1])  # the windows' matrices (not the routed one)
    # (B, h, N, N) windows as a view of the sequence: t..t+h-1 routes matrix t+h
    windows = np.moveaxis(np.lib.stride_tricks.sliding_window_view(tms, HISTORY, axis=0), -1, 1)
    net = gnn_network(spec["weights"]).eval()
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    @torch.no_grad()
    def decide(graph) -> np.ndarray:
        # what GNNPolicy.route_batch does, with the demands moved to the device and back
        pair_demands = torch.as_tensor(pathset.demands(windows), dtype=torch.float32, device=device)
        ratios = net(graph, pair_demands).double().cpu().numpy()
        sync()
        return ratios

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    peak = Peak()
    start = time.perf_counter()
    graph = LinkGraph(pathset, device)
    net.to(device)
    sync()
    setup_s = time.perf_counter() - start
    setup_rss_mb = _status_kb("VmRSS") / 1024 - peak.base_kb / 1024
    start = time.perf_counter()
    ratios = decide(graph)  # warm-up: the CSR copies of the sparse products are made here
    first_s = time.perf_counter() - start
    samples = []  # ``repeats`` decisions, or at least 3 within MAX_TIMING_S where one takes seconds
    while len(samples) < spec["repeats"] and (len(samples) < 3 or sum(samples) < MAX_TIMING_S):
        start = time.perf_counter()
        decide(graph)
        samples.append(time.perf_counter() - start)
    out = {"batch": batch, "setup_s": setup_s, "setup_rss_mb": setup_rss_mb, "first_decision_s": first_s,
           "median_s": statistics.median(samples), "min_s": min(samples), "repeats": len(samples),
           "seconds_per_matrix": statistics.median(samples) / batch, "memory": peak.read()}
    if cuda:
        out["gpu"] = {"name": torch.cuda.get_device_name(device),
                      "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    if batch == 1:  # the routing of matrix h (from matrices 0..h-1)
        out["mlu"] = path_mlu(pathset, ratios[0], demands[HISTORY])
    return out


def child_ppo(case: Path, spec: dict) -> dict:
    """PPO's graph policy (untrained, ppo_gnn's shape): setup, one decision through its adapter, memory."""
    import torch

    from agents.sb3 import GraphActorCriticPolicy, SB3GraphSplitPolicy
    from envs.graph import LinkGraphObservation, LinkCosts

    torch.set_num_threads(spec["threads"])
    pathset, demands = load_case(case)
    window = matrices(pathset, demands[:HISTORY])
    peak = Peak()
    start = time.perf_counter()
    torch.manual_seed(0)
    observation = LinkGraphObservation(pathset, HISTORY).space
    actions = LinkCosts(pathset).space
    policy = GraphActorCriticPolicy(observation, actions, lambda _: 0.0, hidden=64, layers=3)
    adapter = SB3GraphSplitPolicy(policy, pathset, HISTORY, 3.0, name="ppo_gnn")
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    adapter.route(window)
    first_s = time.perf_counter() - start
    samples = []
    while len(samples) < spec["repeats"] and (len(samples) < 3 or sum(samples) < MAX_TIMING_S):
        start = time.perf_counter()
        adapter.route(window)
        samples.append(time.perf_counter() - start)
    return {"setup_s": setup_s, "first_decision_s": first_s, "median_s": statistics.median(samples),
            "min_s": min(samples), "repeats": len(samples), "seconds_per_matrix": statistics.median(samples),
            "observation_mb": sum(value.nbytes for value in adapter.encoder.encode(
                pathset.demands(window), np.zeros(pathset.topology.num_links)).values()) / 2**20,
            "memory": peak.read()}


def child_lp(case: Path, spec: dict) -> dict:
    """The path LP (K=4) of the routed matrix (timed, memory), then LP-previous's MLU on it."""
    from agents.lp import LPError, path_lp

    pathset, demands = load_case(case)
    routed, previous = matrices(pathset, demands[[HISTORY, HISTORY - 1]])
    peak = Peak()
    start = time.perf_counter()
    try:
        solution = path_lp(pathset, routed, time_limit_s=spec["limit"])
    except LPError as exc:
        return {"status": f"did not finish within {spec['limit']:g} s ({exc})",
                "wall_s": time.perf_counter() - start, "memory": peak.read()}
    out = {"status": "optimal", "wall_s": time.perf_counter() - start, "solve_s": solution.solve_time_s,
           "build_s": solution.build_time_s, "memory": peak.read(), "mlu": solution.mlu}
    try:
        start = time.perf_counter()
        before = path_lp(pathset, previous, time_limit_s=spec["limit"])
        out["lp_previous"] = {"mlu": path_mlu(pathset, before.ratios, demands[HISTORY]),
                              "wall_s": time.perf_counter() - start}
    except LPError as exc:
        out["lp_previous"] = {"status": f"did not finish within {spec['limit']:g} s ({exc})"}
    return out


def child_mcf(case: Path, spec: dict) -> dict:
    """The exact optimum (edge multicommodity flow, source-aggregated) of the routed matrix."""
    from agents.lp import LPError, mcf_optimum

    pathset, demands = load_case(case)
    routed = matrices(pathset, demands[[HISTORY]])[0]
    peak = Peak()
    start = time.perf_counter()
    try:
        solution = mcf_optimum(pathset.topology, routed, time_limit_s=spec["limit"])
    except LPError as exc:
        return {"status": f"did not finish within {spec['limit']:g} s ({exc})",
                "wall_s": time.perf_counter() - start, "memory": peak.read()}
    return {"status": "optimal", "wall_s": time.perf_counter() - start, "solve_s": solution.solve_time_s,
            "build_s": solution.build_time_s, "memory": peak.read(), "mlu": solution.mlu}


CHILDREN = {"paths": child_paths, "gnn": child_gnn, "ppo": child_ppo, "lp": child_lp, "mcf": child_mcf}


def run_child(kind: str, case: Path, spec: dict, timeout: float) -> dict:
    """Run one measurement in a fresh interpreter; a child past ``timeout`` is stopped."""
    name = f"{kind}_{spec['mode']}" if kind == "gnn" else kind
    (case / f"{name}.spec.json").write_text(json.dumps(spec))
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind, "--case", str(case),
                               "--spec", str(case / f"{name}.spec.json")],
                              check=False, env=env, timeout=max(timeout, 1.0), capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"status": f"stopped after {timeout:.0f} s", "process_wall_s": time.perf_counter() - start}
    wall = time.perf_counter() - start
    result = case / f"{name}.json"
    if done.returncode != 0 or not result.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"status": f"failed (exit {done.returncode}): {' | '.join(tail)}", "process_wall_s": wall}
    return {**json.loads(result.read_text()), "process_wall_s": wall}


def child_main(kind: str, case: Path, spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text())
    limit_threads(spec["threads"])
    out = CHILDREN[kind](case, spec)
    name = f"{kind}_{spec['mode']}" if kind == "gnn" else kind
    (case / f"{name}.json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- the graph policy's weights

def policy_weights(args) -> dict:
    """Which LinkGNN the cases route with: ``--weights``, ``--untrained``, or the short Abilene run."""
    if args.untrained:
        return {"source": "untrained (LinkGNN(3, hidden=64, layers=3, rounds=5), torch seed 0)", "weights": None}
    if args.weights:
        path = Path(args.weights)
        path = path / "model.pt" if path.is_dir() else path
        return {"source": f"--weights {path}", "weights": str(path)}
    model = RUN_DIR / "model.pt"
    info = {"run_dir": str(RUN_DIR.relative_to(ROOT)), "overrides": list(TRAIN_OVERRIDES), "weights": str(model)}
    if model.exists() and (RUN_DIR / "metrics.json").exists():
        info["source"] = "trained on Abilene (reused run)"
        info["train_wall_s_this_run"] = 0.0
    else:
        from experiments import compose, train_config

        print(f"training the graph policy: rlte train {' '.join(TRAIN_OVERRIDES)} -> {RUN_DIR}", flush=True)
        start = time.perf_counter()
        train_config(compose(*TRAIN_OVERRIDES), RUN_DIR)
        info["source"] = "trained on Abilene (this run)"
        info["train_wall_s_this_run"] = time.perf_counter() - start
    metrics = json.loads((RUN_DIR / "metrics.json").read_text())
    info["train_seconds"] = metrics.get("train_seconds")
    info["abilene_heldout"] = {k: metrics["final"]["gradient_gnn"][k] for k in ("median", "p90", "max")}
    return info


# ----------------------------------------------------------------------------- schedule

def probe(spec: str, nodes: int = 10) -> dict:
    """Seconds per pair of k_shortest_paths on a small sample (to size the cases)."""
    from topologies import load_topology
    from topologies.paths import k_shortest_paths

    topology = load_topology(spec)
    pairs = sample_pairs(topology, nodes, seed=NODE_SEED + 1)
    start = time.perf_counter()
    k_shortest_paths(topology, K, pairs=pairs)
    seconds = time.perf_counter() - start
    return {"topology": spec, "nodes": nodes, "pairs": len(pairs), "build_s": seconds,
            "seconds_per_pair": seconds / len(pairs)}


def estimate(topology: str, pairs: int, probes: dict, done: list[dict], args) -> dict:
    """Seconds a case should take: paths per pair from the largest measured size (else the probe),
    the policy's children scaled from it (by the square root of the pairs: kdl's decision took 1.6×
    as long for 4× the pairs, ASN2k's is its link graph's; at most a minute more each), the LPs by pairs^1.5, each at most its limit. ``essential``
    leaves the LPs out: a case runs when that fits, and its LPs get what is left of the budget."""
    previous = [c for c in done if c["topology"] == topology and "paths" in c and "build_s" in c["paths"]]
    if not previous:
        paths = probes[topology]["seconds_per_pair"] * pairs * 1.2
        essential = paths + 3 * CHILD_START_S + 60.0
        return {"seconds": essential + 2 * CHILD_START_S + 30.0, "essential_s": essential, "paths_s": paths}
    last = previous[-1]
    ratio = pairs / last["pairs"]
    paths = last["paths"]["build_s"] / last["pairs"] * pairs * 1.1
    policy = sum(min(wall * ratio ** 0.5, wall + 60.0) for wall in
                 (last.get(k, {}).get("process_wall_s", 0.0) for k in ("gnn_single", "gnn_batch", "ppo_single")))
    other = (last["paths"].get("process_wall_s", 0.0) - last["paths"]["build_s"]) * ratio  # saving, traffic, ECMP
    lps = sum(min(args.lp_limit, last[key]["process_wall_s"] * ratio ** 1.5) + CHILD_START_S
              for key in ("path_lp", "edge_mcf") if last[key].get("status") == "optimal")
    essential = paths + policy + other
    return {"seconds": essential + lps, "essential_s": essential, "paths_s": paths}


def run_case(topology: str, nodes: int, work: Path, args, weights: str | None, remaining) -> dict:
    from topologies import load_topology

    topo = load_topology(topology)
    case = work / f"{topology}_{nodes}"
    case.mkdir(parents=True, exist_ok=True)
    base = {"topology": topology, "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
            "nodes": nodes, "device": args.device, "weights": weights, "limit": args.lp_limit, "mode": None}
    row = {"topology": topology, "nodes": topo.num_nodes, "links": topo.num_links,
           "core_nodes": len(core_nodes(topo)), "sampled_nodes": nodes, "pairs": nodes * (nodes - 1)}
    row["paths"] = run_child("paths", case, base, remaining())
    print(f"{topology} {nodes} nodes: paths {row['paths'].get('build_s', float('nan')):.1f} s "
          f"({row['paths'].get('status', 'built')})", flush=True)
    if "build_s" not in row["paths"]:
        return row
    for mode in ("single", "batch"):
        spec = {**base, "mode": mode}
        single = row.get("gnn_single", {}).get("median_s")
        if mode == "batch" and single and single * args.batch * 4 > BATCH_S:
            # a batch decides its windows in one pass; where one decision takes seconds (ASN2k's link
            # graph), a batch of 16 would take minutes per pass and gigabytes: fewer windows then
            spec["batch"] = max(2, int(BATCH_S / (4 * single)))
        row[f"gnn_{mode}"] = run_child("gnn", case, spec, remaining())
        if mode == "batch" and spec["batch"] != args.batch:
            row["gnn_batch"]["batch_reduced_from"] = args.batch
        result = row[f"gnn_{mode}"]
        if "median_s" in result:
            print(f"  graph policy, {mode}: {result['seconds_per_matrix'] * 1e3:.1f} ms per matrix, "
                  f"peak +{result['memory']['peak_above_base_mb']:.0f} MB", flush=True)
        else:
            print(f"  graph policy, {mode}: {result['status']}", flush=True)
    row["ppo_single"] = run_child("ppo", case, {**base, "device": "cpu"}, remaining())
    result = row["ppo_single"]
    print("  PPO graph policy: " + (f"{result['seconds_per_matrix'] * 1e3:.1f} ms per matrix, peak "
                                     f"+{result['memory']['peak_above_base_mb']:.0f} MB" if "median_s" in result
                                     else result["status"]), flush=True)
    for key, kind in (("path_lp", "lp"), ("edge_mcf", "mcf")):
        failed_before = args.failed.get((topology, key))
        if failed_before:
            row[key] = {"status": f"not tried: {failed_before}"}
        else:
            # the solver stops at its limit; the model build and a stopped solve's cleanup get a margin
            budget_left = remaining()
            limit = min(args.lp_limit, budget_left - 30.0)
            if limit < 5.0:
                row[key] = {"status": f"not run: {max(budget_left, 0):.0f} s of the budget left"}
            else:
                row[key] = run_child(kind, case, {**base, "limit": limit}, min(limit + 90.0, budget_left))
            if row[key].get("status") not in ("optimal", None) and not row[key]["status"].startswith("not run"):
                args.failed[(topology, key)] = f"{row[key]['status']} at {nodes} nodes"
        result = row[key]
        print(f"  {key}: " + (f"{result['wall_s']:.2f} s, peak +{result['memory']['peak_above_base_mb']:.0f} MB"
                             if result.get("status") == "optimal" else result["status"]), flush=True)
    row["mlu"], row["normalized_mlu"] = mlus(row)
    shutil.rmtree(case, ignore_errors=True)
    return row


def mlus(row: dict) -> tuple[dict, dict]:
    """Each policy's MLU on the routed matrix, and ÷ each optimum that was computed."""
    mlu = dict(row["paths"]["mlu"])
    if "mlu" in row.get("gnn_single", {}):
        mlu["graph_policy"] = row["gnn_single"]["mlu"]
    if row["path_lp"].get("status") == "optimal":
        mlu["path_lp"] = row["path_lp"]["mlu"]
        if "mlu" in row["path_lp"].get("lp_previous", {}):
            mlu["lp_previous"] = row["path_lp"]["lp_previous"]["mlu"]
    normalized = {}
    for key, name in (("edge_mcf", "exact_optimum"), ("path_lp", "path_lp_optimum")):
        if row[key].get("status") == "optimal":
            normalized[f"over_{name}"] = {policy: value / row[key]["mlu"] for policy, value in mlu.items()}
    if row["edge_mcf"].get("status") == "optimal":
        mlu["exact_optimum"] = row["edge_mcf"]["mlu"]
    return mlu, normalized


def table(results: dict) -> str:
    """The cases as the markdown table of docs/results.md."""
    lines = [("| network (pairs) | paths: build / memory | graph policy: one matrix / memory | graph policy: "
              f"batch {results['settings']['batch']}, per matrix / memory | PPO graph policy: one matrix / memory "
              "| path LP: time / memory | exact LP: time / memory | normalized MLU: graph policy / SP / ECMP / "
              "LP-previous |"),
             "|---|---|---|---|---|---|---|---|"]

    def lp(result: dict) -> str:
        if result.get("status") != "optimal":
            return result.get("status", "—")
        return f"{result['wall_s']:.1f} s / {result['memory']['peak_above_base_mb']:.0f} MB"

    for row in results["cases"]:
        paths = row["paths"]
        cells = [f"{row['topology']}, {row['sampled_nodes']} of {row['nodes']} nodes ({row['pairs']:,})"]
        cells.append(f"{paths['build_s']:.0f} s / {paths['memory']['peak_above_base_mb']:.0f} MB"
                     if "build_s" in paths else paths.get("status", "—"))
        for mode in ("single", "batch"):
            result = row.get(f"gnn_{mode}", {})
            shrunk = f" (batch {result['batch']})" if "batch_reduced_from" in result else ""
            cells.append(f"{result['seconds_per_matrix'] * 1e3:.0f} ms / {result['memory']['peak_above_base_mb']:.0f} MB"
                         f"{shrunk}" if "median_s" in result else result.get("status", "—"))
        ppo = row.get("ppo_single", {})
        cells.append(f"{ppo['seconds_per_matrix'] * 1e3:.0f} ms / {ppo['memory']['peak_above_base_mb']:.0f} MB"
                     if "median_s" in ppo else ppo.get("status", "—"))
        cells += [lp(row.get("path_lp", {})), lp(row.get("edge_mcf", {}))]
        normalized = row.get("normalized_mlu", {})
        over = normalized.get("over_exact_optimum") or normalized.get("over_path_lp_optimum")
        if over:
            marker = "" if "over_exact_optimum" in normalized else " (÷ path LP)"
            cells.append(" / ".join(f"{over[p]:.3f}" if p in over else "—"
                                    for p in ("graph_policy", "shortest_path", "ecmp", "lp_previous")) + marker)
        else:
            cells.append("no optimum")
        lines.append("| " + " | ".join(cells) + " |")
    for skipped in results["skipped"]:
        lines.append(f"| {skipped['topology']}, {skipped['sampled_nodes']} nodes ({skipped['pairs']:,}) | "
                     f"skipped: {skipped['reason']} | | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topologies", default="kdl,asn2k")
    parser.add_argument("--nodes", default="50,100,200", help="sizes of the random node samples")
    parser.add_argument("--budget", type=float, default=840.0, help="seconds for the whole script")
    parser.add_argument("--lp-limit", type=float, default=120.0, help="time limit of each LP solve (s)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="timed decisions after the first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="the graph policy's torch device (cpu, cuda)")
    parser.add_argument("--weights", help="a LinkGNN model.pt (or a run directory holding one)")
    parser.add_argument("--untrained", action="store_true", help="route with an untrained LinkGNN")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, Path(args.case), Path(args.spec))
        return
    started = time.perf_counter()

    def remaining() -> float:
        return args.budget - (time.perf_counter() - started)

    import torch

    limit_threads(args.threads)
    torch.set_num_threads(args.threads)
    info = machine()
    info.update(threads=args.threads, torch_threads=torch.get_num_threads(), device=args.device)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device here")
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    else:
        info["gpu"] = ("none used: the graph policy ran on the CPU" + ("" if torch.cuda.is_available() else
                       "; no GPU on this machine (none was lent to the session that measured this)"))
    weights = policy_weights(args)
    print(f"graph policy: {weights['source']}", flush=True)
    topologies = args.topologies.split(",")
    sizes = [int(n) for n in args.nodes.split(",")]
    probes = {spec: probe(spec) for spec in topologies}
    for p in probes.values():
        print(f"path probe {p['topology']}: {p['pairs']} pairs in {p['build_s']:.2f} s "
              f"({p['seconds_per_pair'] * 1e3:.1f} ms per pair)", flush=True)
    results = {"benchmark": "large_networks", "machine": info, "command": " ".join(["python", "-m",
                                                                                     "bench.large_networks",
                                                                                     *sys.argv[1:]]),
               "settings": {"paths_per_pair": K, "path_metric": "hop", "history": HISTORY, "batch": args.batch,
                            "repeats": args.repeats, "lp_time_limit_s": args.lp_limit, "budget_s": args.budget,
                            "node_sample_seed": NODE_SEED,
                            "endpoints": "random nodes of the largest 2-edge-connected component (all of ASN2k, "
                                         "680 of Kdl's 754: behind one of Kdl's 74 bridges a node's traffic has "
                                         "one way out, and with such a node sampled every routing's MLU was the "
                                         "optimum's)",
                            "traffic": f"gravity (seed {TRAFFIC_SEED}) on the sampled nodes' pairs, scaled so that "
                                       "hop-shortest-path routing's MLU on the routed matrix is 1",
                            "routed_matrix": f"matrix {HISTORY}, routed by the graph policy from matrices "
                                             f"0..{HISTORY - 1}; the batch routes {args.batch} windows"},
               "graph_policy": weights, "path_probe": list(probes.values()), "cases": [], "skipped": []}
    args.failed = {}
    work = Path(tempfile.mkdtemp(prefix="rlte-large-networks-"))
    try:
        for nodes in sizes:
            for topology in topologies:
                pairs = nodes * (nodes - 1)
                guess = estimate(topology, pairs, probes, results["cases"], args)
                if guess["essential_s"] > remaining():
                    reason = (f"estimated {guess['essential_s']:.0f} s without the LPs ({guess['paths_s']:.0f} s of "
                              f"it the path set) with {max(remaining(), 0):.0f} s of the budget left")
                    results["skipped"].append({"topology": topology, "sampled_nodes": nodes, "pairs": pairs,
                                               "estimate": guess, "reason": reason})
                    print(f"{topology} {nodes} nodes: skipped, {reason}", flush=True)
                    continue
                row = run_case(topology, nodes, work, args, weights["weights"], remaining)
                row["estimate"] = guess
                results["cases"].append(row)
                results["wall_seconds"] = time.perf_counter() - started
                write("large_networks", results, args.out)  # each case kept as it lands
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["wall_seconds"] = time.perf_counter() - started
    write("large_networks", results, args.out)
    print(table(results))
    print(f"wall time {results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
