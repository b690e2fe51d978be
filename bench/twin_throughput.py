"""Fluid-twin throughput: TM × routing evaluations per second.

For each topology, backend (numpy float64 and float32; torch on CPU; torch on CUDA when
available) and batch size, times ``mlu`` (loads + MLU: what training and evaluation call)
and ``evaluate`` (everything: delays, tail-drop throughput and drops), with one routing
per traffic matrix ("per_tm", the hard case) and one routing shared by the batch
("shared"). Load "overloaded" scales traffic so the worst MLU is 2 (the drop fixed point
runs); "normal" to 0.9 (nothing to drop).
CPU runs are pinned to one thread. Writes ``bench/results/twin_throughput.json``.

Goals (issue #2): ≥ 1e6 evaluations/s batched on Abilene on one CPU core; a single
evaluation ≤ 20 µs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, time_call, write  # noqa: E402
from envs.twin import FluidTwin  # noqa: E402
from topologies import k_shortest_paths, load_topology  # noqa: E402

# name, topology spec, paths per pair, batch sizes, endpoints (None: all; else that many random nodes).
# kdl cases pass pair demands (twin.mlu(None, ratios, demands=...)): 1024 full 754×754 matrices
# would take 4.6 GB; the others pass N×N matrices, so their times include gathering the demands.
# The last field caps the batch for `evaluate` on an overloaded network, whose drop fixed point
# costs ~14 rounds over every hop of every path (0.24 s per matrix on kdl_100_nodes).
CASES = [
    ("abilene", "abilene", 4, (1, 1024), None, 1024),
    ("geant", "geant", 4, (1, 1024), None, 1024),
    ("fat_tree_k8", "fat_tree:8", 4, (1, 1024), None, 1024),
    ("kdl_100_nodes", "kdl", 4, (1, 16, 1024), 100, 16),  # traffic among 100 random nodes: 9,900 pairs
    ("kdl_all_pairs", "kdl", 1, (1, 8), None, 8),         # all 567,762 pairs
]


def build(spec: str, k: int, endpoints: int | None, seed: int = 0):
    topology = load_topology(spec)
    pairs = None
    if endpoints is not None:
        nodes = np.sort(np.random.default_rng(seed).choice(topology.num_nodes, endpoints, replace=False))
        o, d = np.meshgrid(nodes, nodes, indexing="ij")
        keep = o != d
        pairs = np.stack([o[keep], d[keep]], axis=1)
    return topology, k_shortest_paths(topology, k, pairs=pairs)


def random_inputs(pathset, batch: int, seed: int = 0, target_mlu: float = 2.0):
    """Exponential pair demands (B, P) and random split ratios, scaled so the largest MLU in
    the batch is ``target_mlu`` (> 1: links overload and the drop model runs)."""
    rng = np.random.default_rng(seed)
    demands = rng.exponential(1.0, (batch, pathset.num_pairs))
    ratios = rng.random((batch, pathset.num_pairs, pathset.k)) * pathset.mask
    ratios /= ratios.sum(-1, keepdims=True)
    demands *= target_mlu / FluidTwin(pathset).mlu(None, ratios, demands=demands).max()
    return demands, ratios


def as_matrices(pathset, demands: np.ndarray) -> np.ndarray:
    n = pathset.topology.num_nodes
    tms = np.zeros((len(demands), n, n))
    tms[:, pathset.pairs[:, 0], pathset.pairs[:, 1]] = demands
    return tms


def backends(devices: list[str]):
    yield "numpy", "cpu", lambda ps: FluidTwin(ps), None
    yield "numpy-float32", "cpu", lambda ps: FluidTwin(ps, dtype=np.float32), None
    try:
        import torch
    except ImportError:
        return
    from envs.twin_torch import TorchFluidTwin

    for device in devices:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        sync = torch.cuda.synchronize if device == "cuda" else None
        yield "torch", device, (lambda ps, device=device: TorchFluidTwin(ps, device=device)), sync
        if device == "cuda":
            yield "torch-float32", device, (lambda ps, device=device: TorchFluidTwin(ps, device=device,
                                                                                  dtype=torch.float32)), sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="JSON path (default bench/results/twin_throughput.json)")
    parser.add_argument("--devices", default="cpu,cuda", help="torch devices to try")
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (numpy BLAS and torch)")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    results = []
    wanted = set(args.cases.split(","))
    for name, spec, k, batches, endpoints, evaluate_limit in CASES:
        if name not in wanted:
            continue
        topology, pathset = build(spec, k, endpoints)
        shape = {"topology": name, "nodes": topology.num_nodes, "links": topology.num_links,
                 "pairs": pathset.num_pairs, "paths_per_pair": pathset.k, "hops": int(len(pathset.hop_link)),
                 "input": "demands" if spec == "kdl" else "matrices"}
        for backend, device, make, sync in backends(args.devices.split(",")):
            twin = make(pathset)
            use_demands = spec == "kdl"
            for batch in batches:
                demands, ratios = random_inputs(pathset, batch)
                traffic = demands if use_demands else as_matrices(pathset, demands)
                # inputs in the twin's own array type and dtype, as a pipeline built for it would pass
                heavy, ratios, normal = twin._asarray(traffic), twin._asarray(ratios), twin._asarray(traffic * 0.45)
                single = batch == 1

                def run(method, traffic, ratios):
                    if use_demands:
                        return method(None, ratios, demands=traffic)
                    return method(traffic, ratios)

                cases = {  # "normal": largest MLU 0.9, no link overloads
                    ("mlu", "per_tm", "overloaded"): lambda: run(twin.mlu, heavy[0] if single else heavy,
                                                                 ratios[0] if single else ratios),
                    ("mlu", "shared", "overloaded"): lambda: run(twin.mlu, heavy, ratios[0]),
                    ("evaluate", "per_tm", "overloaded"): lambda: run(twin.evaluate, heavy, ratios),
                    ("evaluate", "per_tm", "normal"): lambda: run(twin.evaluate, normal, ratios),
                }
                for (op, routing, load), fn in cases.items():
                    if (single and routing == "shared") or (op == "evaluate" and batch > evaluate_limit):
                        continue
                    timing = time_call(fn, sync=sync, min_seconds=0.02 if name == "kdl_all_pairs" else 0.05,
                                       repeats=3 if name == "kdl_all_pairs" else 5)
                    row = {**shape, "backend": backend, "device": device, "dense": twin.dense, "batch": batch,
                           "op": op, "routing": routing, "load": load, **timing,
                           "evaluations_per_s": batch / timing["seconds_per_call"],
                           "microseconds_per_evaluation": 1e6 * timing["seconds_per_call"] / batch}
                    results.append(row)
                    print(f"{name:14s} {backend:13s} {device:4s} B={batch:<5d} {op:8s} {routing:6s} {load:10s} "
                          f"{row['evaluations_per_s']:12.4g} evals/s  {row['microseconds_per_evaluation']:9.3g} us/eval",
                          flush=True)
        report(results, args, torch)


def report(results: list[dict], args, torch) -> None:
    """Write everything measured so far (called after every case, so a long run keeps its results)."""
    goals = {}
    pick = lambda **kw: [r for r in results if all(r[k] == v for k, v in kw.items())]  # noqa: E731
    single = pick(topology="abilene", backend="numpy", batch=1, op="mlu", routing="per_tm")
    if single:
        goals["abilene_single_evaluation_us"] = single[0]["microseconds_per_evaluation"]
        goals["abilene_single_goal_20us_met"] = single[0]["microseconds_per_evaluation"] <= 20
    for backend in ("numpy", "numpy-float32"):
        for routing in ("per_tm", "shared"):
            row = pick(topology="abilene", backend=backend, batch=1024, op="mlu", routing=routing)
            if row:
                goals[f"abilene_batched_{backend}_{routing}_evaluations_per_s"] = row[0]["evaluations_per_s"]
                goals[f"abilene_batched_{backend}_{routing}_goal_1e6_met"] = row[0]["evaluations_per_s"] >= 1e6
    info = machine()
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    write("twin_throughput", {"benchmark": "twin_throughput", "threads": args.threads, "machine": info,
                              "goals": goals, "results": results}, args.out)


if __name__ == "__main__":
    main()
