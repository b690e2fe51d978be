"""LP solve times per traffic matrix: the path formulation (K=4 hop-shortest paths, with each
tie-break) and the exact edge formulation (source-aggregated multicommodity flow), so that
learned policies can later be compared with the solver they would replace.

HiGHS runs single-threaded here. Times are the solver's own run (model build reported
separately). Writes ``bench/results/lp_solve.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.lp import LPError, mcf_optimum, path_lp  # noqa: E402
from bench.common import machine, write  # noqa: E402
from bench.twin_throughput import build  # noqa: E402
from topologies import load_traffic  # noqa: E402

# name, topology spec, endpoint sample (None: all nodes), matrices timed, edge-LP time limit (s)
CASES = [
    ("abilene", "abilene", None, 20, 60),
    ("geant", "geant", None, 5, 120),
    ("fat_tree_k8", "fat_tree:8", None, 3, 300),
    ("kdl_100_nodes", "kdl", 100, 2, 600),
]


def traffic(name: str, pathset, count: int) -> np.ndarray:
    topo = pathset.topology
    if name == "abilene":
        return load_traffic("abilene-test", topo).matrices[::100][:count]
    tms = load_traffic("gravity", topo, count=count, seed=1).matrices
    keep = np.zeros((topo.num_nodes, topo.num_nodes), dtype=bool)
    keep[pathset.pairs[:, 0], pathset.pairs[:, 1]] = True
    return tms * keep  # only the path set's pairs carry traffic


def summarize(samples: list[float]) -> dict:
    return {"median_s": statistics.median(samples), "mean_s": statistics.fmean(samples), "max_s": max(samples),
            "min_s": min(samples), "count": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out")
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES))
    args = parser.parse_args()
    wanted = set(args.cases.split(","))
    results = []
    for name, spec, endpoints, count, edge_limit in CASES:
        if name not in wanted:
            continue
        topology, pathset = build(spec, 4, endpoints)
        matrices = traffic(name, pathset, count)
        shape = {"topology": name, "nodes": topology.num_nodes, "links": topology.num_links,
                 "pairs": pathset.num_pairs, "paths_per_pair": pathset.k}
        for tie_break in ("none", "min_load", "balanced"):
            solve, build_time, wall, mlu = [], [], [], []
            for tm in matrices:
                start = time.perf_counter()
                solution = path_lp(pathset, tm, tie_break=tie_break)
                wall.append(time.perf_counter() - start)
                solve.append(solution.solve_time_s)
                build_time.append(solution.build_time_s)
                mlu.append(solution.mlu)
            row = {**shape, "formulation": f"path_k4_{tie_break}", "solve": summarize(solve),
                   "build": summarize(build_time), "wall": summarize(wall), "mlu": mlu}
            results.append(row)
            print(f"{name:14s} {row['formulation']:22s} solve {row['solve']['median_s'] * 1e3:9.2f} ms  "
                  f"wall {row['wall']['median_s'] * 1e3:9.2f} ms", flush=True)
        solve, build_time, wall, mlu, status = [], [], [], [], "optimal"
        for tm in matrices:
            start = time.perf_counter()
            try:
                solution = mcf_optimum(topology, tm, time_limit_s=edge_limit)
            except LPError as exc:
                status = f"{exc} (time limit {edge_limit} s)"
                break
            wall.append(time.perf_counter() - start)
            solve.append(solution.solve_time_s)
            build_time.append(solution.build_time_s)
            mlu.append(solution.mlu)
        row = {**shape, "formulation": "edge_mcf", "status": status}
        if solve:
            row.update(solve=summarize(solve), build=summarize(build_time), wall=summarize(wall), mlu=mlu)
            gap = max(abs(a - b) / b for a, b in zip(results[-3]["mlu"], mlu))
            row["path_k4_vs_edge_max_relative_gap"] = gap
        results.append(row)
        print(f"{name:14s} {'edge_mcf':22s} " + (f"solve {row['solve']['median_s'] * 1e3:9.2f} ms  "
                                                 f"wall {row['wall']['median_s'] * 1e3:9.2f} ms" if solve else status),
              flush=True)
    info = machine()
    import highspy

    info["highspy"] = getattr(highspy, "__version__", "unknown")
    write("lp_solve", {"benchmark": "lp_solve", "machine": info, "results": results}, args.out)


if __name__ == "__main__":
    main()
