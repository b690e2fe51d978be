"""Markdown tables from bench/results/*.json (the numbers quoted in bench/README.md).

    python bench/summarize.py > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def twin(data: dict) -> str:
    rows = []
    for r in data["results"]:
        if r["op"] != "mlu" and r["batch"] not in (1, r["batch"]):
            continue
        rows.append([r["topology"], r["backend"], r["device"], str(r["batch"]), r["op"], r["routing"], r["load"],
                     f"{r['evaluations_per_s']:.3g}", f"{r['microseconds_per_evaluation']:.3g}"])
    goals = "\n".join(f"- `{k}`: {v:.4g}" if isinstance(v, float) else f"- `{k}`: {v}" for k, v in data["goals"].items())
    return goals + "\n\n" + table(["topology", "backend", "device", "batch", "op", "routing", "load", "evals/s",
                                   "µs/eval"], rows)


def lp(data: dict) -> str:
    rows = [[r["topology"], str(r["pairs"]), r["formulation"], f"{r['solve']['median_s'] * 1e3:.2f}",
             f"{r['build']['median_s'] * 1e3:.2f}", f"{r['wall']['median_s'] * 1e3:.2f}", str(r["solve"]["count"])]
            for r in data["results"]]
    return table(["topology", "pairs", "formulation", "solve ms (median)", "build ms", "wall ms", "matrices"], rows)


def learning(data: dict) -> str:
    parts = []
    summary = data.get("summary", {})
    rows = []
    for agent, s in summary.items():
        if agent.endswith("baselines"):
            continue
        fmt = lambda xs: " / ".join(f"{x:.3f}" for x in xs)  # noqa: E731
        reach = " / ".join("never" if x is None else f"{x:.0f}" for x in s["seconds_to_heldout_median_1.10"])
        kept = " / ".join(str(x) for x in s["selected_step"]) if "selected_step" in s else "last"
        rows.append([agent, fmt(s["median"]), fmt(s["p90"]), fmt(s["max"]),
                     " / ".join(f"{x:.0f}" for x in s["train_seconds"]), reach, kept])
    if rows:
        parts.append(table(["agent", "median (per seed)", "p90", "max", "train s", "s to median ≤ 1.10",
                            "kept checkpoint (step)"], rows))
    for key, label in (("baselines", "split-routing baseline"), ("path_selection_baselines", "path-selection baseline")):
        if key in summary:
            parts.append(table([label, "median", "p90", "max"],
                               [[k, f"{v['median']:.3f}", f"{v['p90']:.3f}", f"{v['max']:.3f}"]
                                for k, v in summary[key].items()]))
    if data.get("decision_time"):
        parts.append(table(["topology", "pairs", "policy", "ms per decision (matrix)", "ms per flow"],
                           [[r["topology"], str(r["pairs"]), r["policy"], f"{r['seconds_per_decision'] * 1e3:.3f}",
                             f"{r['seconds_per_flow'] * 1e3:.3f}" if "seconds_per_flow" in r else ""]
                            for r in data["decision_time"]]))
    return "\n\n".join(parts)


def generalization(data: dict) -> str:
    def seed_rows(policy: str, evaluation: dict) -> list[list[str]]:
        return [[policy, label, " / ".join(f"{r['median']:.3f}" for r in result["runs"]),
                 " / ".join(f"{r['p90']:.3f}" for r in result["runs"])] for label, result in evaluation.items()]

    def baseline_rows(baselines: dict) -> list[list[str]]:
        return [[name, label, f"{s['median']:.3f}", f"{s['p90']:.3f}"]
                for label, by_name in baselines.items() for name, s in by_name.items()]

    rows = [row for key, policy in (("gnn", "gnn (twin)"), ("gnn_runs", "rlte train run"), ("ppo_gnn", "ppo_gnn"))
            for setting, r in data.get(key, {}).items() for row in seed_rows(f"{policy}, {setting}", r["evaluation"])]
    parts = [table(["policy, trained on", "evaluated on", "median (per seed)", "p90"],
                   rows + baseline_rows(data.get("baselines", {})))]
    for key, policy in (("dqn_gnn", "dqn_gnn, abilene"), ("dqn_gnn_mixed", "dqn_gnn, abilene + 4 synthetic networks")):
        paths = data.get(key)
        if paths:
            parts.append(table(["path selection, trained on", "evaluated on", "median (per seed)", "p90"],
                               seed_rows(policy, paths["evaluation"]) + baseline_rows(paths["baselines"])))
    return "\n\n".join(parts)


def hashing(data: dict) -> str:
    def cell(entry: dict) -> str:
        return f"{entry['mean_gap'] * 100:+.1f}% ± {entry['gap_spread'] * 100:.1f}% (max {entry['max_abs_gap_from_mean'] * 100:.1f}% off)"

    return table(["measured on", "routings", "measured ÷ twin − 1", "measured ÷ hashing model − 1"],
                 [[name, str(entry["routings"]), cell(entry["twin"]), cell(entry["hashed"])]
                  for name, entry in data["summary"].items()])


def sweep(data: dict) -> str:
    rows = [[name, f"{data[name]['wall_seconds']:.0f}",
             " / ".join(f"{r['train_seconds']:.0f}" for r in data[name]["runs"]),
             " / ".join(str(r["threads"]["busy_threads"]) for r in data[name]["runs"] if "threads" in r)]
            for name in ("sequential", "joblib_2")]
    return (table(["launcher", "wall s (4 runs)", "each run's training s", "working threads per run"], rows)
            + f"\n\nspeed-up {data['speedup']:.2f}x")


def search(data: dict) -> str:
    def row(name: str, entry: dict) -> list[str]:
        params = ", ".join(f"{key.rpartition('.')[2]} {value:.3g}" if isinstance(value, float) else
                           f"{key.rpartition('.')[2]} {value}" for key, value in entry["params"].items())
        return [name, params, f"{entry['validation_median']:.4f}", f"{entry['heldout_median']:.4f}",
                f"{entry['heldout_p90']:.4f}"]

    rows = [row("defaults", data["defaults"]), row(f"best of {len(data['trials'])} trials", data["best_trial"])]
    return table(["", "settings", "validation median", "held-out median", "held-out p90"], rows)


def devices(data: dict) -> str:
    training = [[r["case"], r["machine"], r["device"], f"{r['budget']} {r['unit']}", f"{r['train_seconds']:.1f}",
                 f"{r[r['unit'] + '_per_second']:.3g} {r['unit']}/s"] for r in data.get("training", [])]
    twin = [[r["case"], r["machine"], r["device"], f"{r['pairs']} pairs, batch {r['batch']}",
             f"{r['seconds_per_call'] * 1e3:.1f} ms", f"{r['matrices_per_second']:.3g} matrices/s"]
            for r in data.get("twin", [])]
    return (table(["training", "machine", "device", "budget", "train s", "throughput"], training) + "\n\n"
            + table(["twin forward + backward", "machine", "device", "size", "per batch", "throughput"], twin))


def main() -> None:
    for name, render in (("twin_throughput", twin), ("lp_solve", lp), ("learning", learning),
                         ("gnn_generalization", generalization), ("ovs_hashing", hashing), ("sweep", sweep),
                         ("search", search), ("devices", devices)):
        path = RESULTS / f"{name}.json"
        if path.exists():
            sys.stdout.write(f"## {name}\n\n{render(json.loads(path.read_text()))}\n\n")


if __name__ == "__main__":
    main()
