"""How well a model of Open vSwitch's select-group hashing (``envs.ovs_hashing``) predicts the
split-routing scores measured on the emulated network, against the twin's prediction, for each
choice of the replay's flow addresses.

For every committed ``bench/results/live_eval_*.json`` of split routing, each policy in it
decides the same matrices again (offline, from its run in ``bench/runs/``), and each routing
is scored twice in the twin: with its split ratios (what the file's ``twin_normalized_mlu``
holds; checked here) and with the share of the replay's flows that OVS's hashing sends down
each path. Needs no root and no Mininet. Writes ``bench/results/ovs_hashing.json``.

Files measured before the controller apportioned each group's weights to sum to 256
(``controllers.fabric.apportion``; every file but the ``_even_28`` ones) had groups that OVS
did not table wherever rounding made a group's weights sum past 256 (on Abilene 22-28% of the
PPO policies' groups, 4% of gradient_gnn's, none of the LPs'); their rows keep those shares
as ratios. Scored again by this build, every group gets the apportioned weights (a unit apart
from the old ones here and there, which can move a slot) and those groups are modelled as
tabled, which is not how they were measured: add new files with ``--files ... --merge``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, write  # noqa: E402

RUNS = Path(__file__).parent / "runs"
# file stem -> (run directory it was measured from, topology override, eval.every). Files
# measured before eval.json recorded the replay's settings used flow_addresses=sequential and
# 32 flows per pair (128 where the name says so); later ones say theirs (backend_settings).
MEASURED = {
    "live_eval_baselines": ("gradient_gnn_seed0", None, 288),
    **{f"live_eval_{agent}_seed{seed}{even}": (f"{agent}_seed{seed}", None, 288)
       for agent in ("gradient_gnn", "ppo_costs", "ppo_gnn") for seed in (0, 1, 2) for even in ("", "_even")},
    **{f"live_eval_{agent}_seed{seed}_even_28": (f"{agent}_seed{seed}", None, 72)
       for agent in ("gradient_gnn", "ppo_costs", "ppo_gnn", "ppo_costs_group", "ppo_costs_spread")
       for seed in (0, 1, 2)},
    **{f"live_eval_gradient_gnn_mixed_b4_seed{seed}{suffix}": (f"gradient_gnn_mixed_seed{seed}", "b4", 2)
       for seed in (0, 1, 2) for suffix in ("", "_128flows", "_even")},
    **{f"live_eval_gradient_gnn_mixed_b4_seed{seed}_even_all12": (f"gradient_gnn_mixed_seed{seed}", "b4", 1)
       for seed in (0, 1, 2)},
}


def replay_settings(stem: str, measured: dict) -> tuple[int, str]:
    """(flows per pair, flow addresses) the file was measured with."""
    settings = measured.get("backend_settings")
    if settings is None:
        return (128 if stem.endswith("_128flows") else 32), "sequential"
    return int(settings["flows_per_pair"]), str(settings.get("flow_addresses", "sequential"))


def score_file(stem: str) -> dict:
    from agents.evaluation import decide
    from agents.policy import BASELINES, baseline_policies
    from controllers.fabric import FabricPlan
    from envs.backend import TwinBackend
    from envs.ovs_hashing import flow_sources, hashed_ratios
    from experiments import load_run
    from topologies import lift_ratios, union_pathsets

    run_name, topology, every = MEASURED[stem]
    measured = json.loads((RESULTS / f"{stem}.json").read_text())
    flows, addresses = replay_settings(stem, measured)
    run = RUNS / run_name
    loaded = load_run(run, "eval.guard=false", *((f"topology={topology}", f"traffic={topology}-real")
                                                 if topology is not None else ()))
    cfg, data = loaded.config, loaded.data
    sequence = data.test
    indices = sequence.indices(every)
    optimum = sequence.optimum_at(indices)
    policies = [loaded.policy]
    # the file's baselines, in its order: the emulation laid out their paths in that order
    policies += baseline_policies(data.topology, data.train.matrices, k=cfg.paths,
                                  names=[name for name in measured["policies"] if name in BASELINES])
    # the emulated network carried the union of the file's policies' paths, in this order
    union = union_pathsets(data.pathset, *{id(p.pathset): p.pathset for p in policies}.values())
    plan = FabricPlan(union)
    sources = flow_sources(union, flows, addresses)
    twin_backend = TwinBackend(union)
    rows = {}
    for policy in policies:
        ratios, _ = decide(policy, sequence.matrices, indices)
        per_matrix = np.broadcast_to(ratios, (len(indices), *np.shape(ratios)[-2:]))
        twin, hashed, untabled = [], [], 0
        for routing, t, best in zip(per_matrix, indices, optimum):
            lifted = lift_ratios(routing, policy.pathset, union)
            demands = union.demands(sequence.matrices[t])
            shares, skipped = hashed_ratios(plan, lifted, flows, sources)
            untabled += int(skipped.sum())
            for target, r in ((twin, lifted), (hashed, shares)):
                target.append(float(twin_backend.utilization(demands, r).max() / best))
        scores = measured["policies"][policy.name]
        recorded_twin = scores.get("twin_normalized_mlu")
        rows[policy.name] = {
            "measured": scores["normalized_mlu"], "twin": twin, "hashed": hashed,
            "twin_matches_file": recorded_twin is not None and bool(np.allclose(twin, recorded_twin, rtol=1e-6)),
            "untabled_groups": untabled, "dropped": float(np.mean(scores.get("drop_fraction") or [0.0])),
            "median": {"measured": float(np.median(scores["normalized_mlu"])), "twin": float(np.median(twin)),
                       "hashed": float(np.median(hashed))},
        }
        print(f"{stem:50s} {policy.name:22s} measured {rows[policy.name]['median']['measured']:.3f}  "
              f"twin {rows[policy.name]['median']['twin']:.3f}  hashed {rows[policy.name]['median']['hashed']:.3f}",
              flush=True)
    return {"run": run_name, "topology": data.topology.name, "flows_per_pair": flows, "flow_addresses": addresses,
            "tm_index": indices.tolist(),
            "policies": rows}


def summarize(files: dict) -> dict:
    """Per group of files (topology, flows per pair, flow addresses, matrices): how far the
    measured medians sit above each prediction, relative (mean and spread over the routings),
    and how well each prediction orders them (Spearman)."""
    from scipy.stats import spearmanr

    groups: dict[str, dict[str, list[float]]] = {}
    for result in files.values():
        group = groups.setdefault(f"{result['topology']}_{result['flows_per_pair']}flows_"
                                  f"{result.get('flow_addresses', 'sequential')}_{len(result['tm_index'])}matrices",
                                  {"measured": [], "twin": [], "hashed": []})
        for row in result["policies"].values():
            # far above the optimum (shortest path) links run near or over capacity, and a port
            # counter caps what it measures there; and a routing the file measured with an earlier
            # build (the LPs before their tie-breaks were unique) is not the one decided here
            if row["median"]["twin"] > 1.5 or row["dropped"] > 0.01 or not row["twin_matches_file"]:
                continue
            for key in group:
                group[key].append(row["median"][key])
    summary = {}
    for name, values in groups.items():
        measured = np.array(values["measured"])
        entry = {"routings": len(measured)}
        for model in ("twin", "hashed"):
            gap = measured / np.array(values[model]) - 1  # relative: headers add a share of the load
            entry[model] = {"mean_gap": float(gap.mean()), "gap_spread": float(gap.std()),
                            "max_abs_gap_from_mean": float(np.abs(gap - gap.mean()).max()),
                            "spearman": float(spearmanr(measured, values[model]).statistic) if len(gap) > 2 else None}
        summary[name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out")
    parser.add_argument("--files", help="comma-separated stems of bench/results files (default: every one there)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the results file's other files as they are (scored by the build that measured "
                             "them) and summarize over all")
    args = parser.parse_args()
    stems = args.files.split(",") if args.files else [s for s in MEASURED if (RESULTS / f"{s}.json").exists()]
    unknown = [stem for stem in stems if stem not in MEASURED]
    if unknown:
        parser.error(f"not a known live measurement: {', '.join(unknown)} (see MEASURED)")
    path = Path(args.out) if args.out else RESULTS / "ovs_hashing.json"
    files = json.loads(path.read_text())["files"] if args.merge and path.exists() else {}
    files |= {stem: score_file(stem) for stem in stems}
    report = {"benchmark": "ovs_hashing", "machine": machine(), "summary": summarize(files), "files": files}
    print(json.dumps(report["summary"], indent=1))
    write("ovs_hashing", report, args.out)


if __name__ == "__main__":
    main()
