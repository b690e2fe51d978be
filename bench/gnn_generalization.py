"""Cross-topology generalization of the graph policies (issue #3), written to
``bench/results/gnn_generalization.json``.

Two graph policies, each routing every evaluation set with the weights it learned (routing
each next matrix from the 3 before it, scored as MLU ÷ optimum through the twin), next to
shortest path, ECMP and the LP on the previous matrix:

- the gradient-trained :class:`agents.gnn.LinkGNN`, one per setting and seed: trained on
  Abilene's real training week only (with its cost-refinement rounds, and as one pass
  without them, side by side), on Abilene plus synthetic gravity traffic on NSFNET, or on
  Abilene plus the four synthetic networks of ``agent=gradient_gnn_mixed`` (its
  ``also_train_on``, read from that config);
- the same network as ``rlte train agent=gradient_gnn``, ``agent=gradient_gnn_mixed`` and
  ``agent=gradient_gnn_diverse`` train it (the whole training week; the mixed one also on its
  four synthetic networks, the diverse one on NSFNET, Sprint and 16 Topology Zoo backbones):
  the runs of ``bench/learning.py`` under ``bench/runs/`` when they exist, else trained here the same way;
  scored on three more unseen backbones of the Topology Zoo too (ZOO_UNSEEN, as PPO's graph
  policy is), beside ECMP and LP-previous;
- PPO with the graph policy (``agent=ppo_gnn``), trained on Abilene's real training week by
  ``rlte train``: the runs of ``bench/learning.py`` under ``bench/runs/ppo_gnn_seed*`` when
  they exist, else trained here the same way; and (part ``ppo_gnn_mixed``) the same policy
  with its rollouts also on ``gradient_gnn_mixed``'s four synthetic networks
  (``agent=ppo_gnn_mixed``, ``bench/runs/ppo_gnn_mixed_seed*``).

DQN with the graph Q-network (``agent=dqn_gnn``, from ``bench/runs/dqn_gnn_seed*`` or trained
the same way) plays path selection on the same sets (each matrix's flows, one per pair, in
random order, each put on one path), against greedy least-loaded, shortest path and the LP's
split of the same matrix rounded to whole flows; part ``dqn_gnn_mixed`` the same Q-network
trained on ``gradient_gnn_mixed``'s four synthetic networks too (``agent=dqn_gnn_mixed``).

``--parts`` picks what to run (default all: gnn, gnn_runs, ppo_gnn, ppo_gnn_mixed, dqn_gnn, dqn_gnn_mixed); with ``--merge`` the
other parts are kept from the existing results file.

Evaluation sets: Abilene's real test week (every 24th matrix; seen topology, unseen
traffic), B4's real matrices (unseen topology and traffic), and gravity traffic on a
Waxman random WAN of 30 nodes and 84 links (unseen, almost three times Abilene's size).
(GEANT under gravity traffic is no test: a stub link bounds its MLU, so even shortest path
is optimal there.)
Runs on one CPU thread; a few minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write  # noqa: E402
from experiments import BENCH_CONFIG_DIR, load_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

MIXED_AGENT = BENCH_CONFIG_DIR / "training_mix" / "four_networks.yaml"  # the *_mixed agents' also_train_on
SEEDS = (0, 1, 2)
ZOO_UNSEEN = {  # label -> (topology, synthetic traffic model), for the `rlte train` runs (part gnn_runs)
    "janetbackbone hotspot (unseen zoo backbone, 29 nodes)": ("zoo:Janetbackbone", "hotspot"),
    "arnes bimodal (unseen zoo backbone, 34 nodes)": ("zoo:Arnes", "bimodal"),
    "surfnet hotspot (unseen zoo backbone, 50 nodes)": ("zoo:Surfnet", "hotspot"),
}
K = 4
HISTORY = 3


# the gradient learner's `rlte train` runs that part gnn_runs scores (bench/learning.py's, trained here if missing)
GNN_RUNS = ("gradient_gnn", "gradient_gnn_mixed", "gradient_gnn_diverse")
PARTS = ("gnn", "gnn_runs", "ppo_gnn", "ppo_gnn_mixed", "dqn_gnn", "dqn_gnn_mixed")
# PPO's graph-policy parts: part -> (the agent config its runs trained, what they trained on)
PPO_RUNS = {"ppo_gnn": ("ppo_gnn", "abilene"),
            "ppo_gnn_mixed": ("ppo_gnn_mixed", "abilene + 4 synthetic networks (ppo_gnn_mixed)")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--merge", action="store_true", help="keep the parts not run now from the results file")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")

    import torch
    from omegaconf import OmegaConf

    from agents.evaluation import evaluate_policies
    from agents.gnn import GNNPolicy, GNNSettings, TrainingSet, train_gnn
    from agents.policy import LPPolicy, ecmp, shortest_path
    from experiments.data import cached_optimum, extra_training
    from topologies import k_shortest_paths, load_topology, load_traffic

    torch.set_num_threads(1)
    path = ROOT / "bench" / "results" / "gnn_generalization.json"
    previous = json.loads(path.read_text()) if args.merge and path.exists() else {}

    def sequence(topology_name: str, traffic: str, **options) -> tuple:
        topology = load_topology(topology_name)
        matrices = np.array(load_traffic(traffic, topology, **options).matrices, dtype=np.float64)
        return topology, k_shortest_paths(topology, K), matrices

    abilene, abilene_paths, abilene_train = sequence("abilene", "abilene-train")
    abilene_train = abilene_train[::2]  # every 10 minutes: a week in 1,008 matrices
    evaluation = {}
    for label, (name, traffic, options, every) in {
        "abilene test week (seen topology)": ("abilene", "abilene-test", {}, 24),
        "b4 real (unseen topology)": ("b4", "b4", {}, 1),
        "waxman:30 gravity (unseen random WAN, 30 nodes)": ("waxman:30", "gravity", {"count": 40, "seed": 2}, 1),
    }.items():
        topology, paths, matrices = sequence(name, traffic, **options)
        indices = np.arange(HISTORY, len(matrices), every)
        evaluation[label] = (topology, paths, matrices, indices, cached_optimum(topology, matrices[indices]))

    results: dict = {**previous, "machine": machine(), "k": K, "history": HISTORY, "seeds": list(SEEDS),
                     "baselines": {}}
    if "gnn" in parts or "settings" not in results:  # merged gnn results keep the settings they ran with
        results["settings"] = vars(GNNSettings())
    for label, (topology, paths, matrices, indices, optimum) in evaluation.items():
        baselines = [shortest_path(topology), ecmp(topology), LPPolicy("lp_previous", paths, tie_break="min_load")]
        _, scores = evaluate_policies(baselines, matrices, indices, optimal=optimum)
        results["baselines"][label] = {name: s.summary() for name, s in scores.items()}
        print(label, {name: round(s.summary()["median"], 3) for name, s in scores.items()}, flush=True)

    if "gnn" in parts:
        _, nsfnet_paths, nsfnet_train = sequence("nsfnet", "gravity", count=300, seed=1)
        abilene_set = TrainingSet(abilene_paths, abilene_train, cached_optimum(abilene, abilene_train))
        nsfnet_set = TrainingSet(nsfnet_paths, nsfnet_train, cached_optimum(nsfnet_paths.topology, nsfnet_train))
        # setting -> (training sets, cost-refinement rounds); "one pass" is the network without refinement
        mixed = extra_training(OmegaConf.load(MIXED_AGENT).also_train_on, K, HISTORY)
        training = {
            "abilene": ([abilene_set], GNNSettings.rounds),
            "abilene, one pass": ([abilene_set], 0),
            "abilene+nsfnet": ([abilene_set, nsfnet_set], GNNSettings.rounds),
            "abilene+mixed": ([abilene_set, *mixed], GNNSettings.rounds),
        }
        results["gnn"] = {}
        for setting, (sets, rounds) in training.items():
            per_set: dict[str, list[dict]] = {label: [] for label in evaluation}
            train_seconds = []
            for seed in SEEDS:
                started = time.perf_counter()
                net, losses = train_gnn(sets, GNNSettings(history=HISTORY, rounds=rounds, seed=seed))
                train_seconds.append(time.perf_counter() - started)
                score_everywhere(lambda paths: GNNPolicy(paths, net, f"gnn[{setting}]"), evaluation, per_set,
                                 f"{setting} seed {seed}", seed=seed, final_training_loss=losses[-1])
            results["gnn"][setting] = {"rounds": rounds, "train_seconds_mean": statistics.mean(train_seconds),
                                       "evaluation": summarized(per_set)}

    zoo = {}
    if {"gnn_runs", *PPO_RUNS} & set(parts):
        # more unseen networks for the `rlte train` runs: Topology Zoo backbones under other
        # traffic models, 21 matrices each (GEANT 2012 and CESNET under gravity or diurnal
        # traffic were left out: every routing, ECMP included, is optimal there)
        for label, (name, traffic) in ZOO_UNSEEN.items():
            topology, paths, matrices = sequence(name, traffic, count=24, seed=5)
            indices = np.arange(HISTORY, len(matrices))
            zoo[label] = (topology, paths, matrices, indices, cached_optimum(topology, matrices[indices]))
        results["zoo_baselines"] = {}
        for label, (topology, paths, matrices, indices, optimum) in zoo.items():
            baselines = [ecmp(topology), LPPolicy("lp_previous", paths, tie_break="min_load")]
            _, scores = evaluate_policies(baselines, matrices, indices, optimal=optimum)
            results["zoo_baselines"][label] = {name: s.summary() for name, s in scores.items()}

    if "gnn_runs" in parts:
        results["gnn_runs"] = {}
        for agent in GNN_RUNS:
            per_set = {label: [] for label in {**evaluation, **zoo}}
            for seed in SEEDS:
                run_dir = trained_run(agent, seed)
                trained = load_run(run_dir).policy
                score_everywhere(lambda paths: trained.on(paths, f"{agent}[run]"), {**evaluation, **zoo}, per_set,
                                 f"{agent} seed {seed}", seed=seed, run_dir=str(run_dir.relative_to(ROOT)))
            results["gnn_runs"][agent] = {"evaluation": summarized(per_set)}

    for part, (agent, trained_on) in PPO_RUNS.items():
        if part not in parts:
            continue
        ppo_runs: dict[str, list[dict]] = {label: [] for label in {**evaluation, **zoo}}
        for seed in SEEDS:
            run_dir = trained_run(agent, seed)
            trained = load_run(run_dir).policy  # with the run's own encoding
            score_everywhere(lambda paths: trained.on(paths, f"{agent}[run]"), {**evaluation, **zoo}, ppo_runs,
                             f"{agent} seed {seed}", seed=seed, run_dir=str(run_dir.relative_to(ROOT)))
        results.setdefault("ppo_gnn", {})[trained_on] = {"evaluation": summarized(ppo_runs)}

    for agent in ("dqn_gnn", "dqn_gnn_mixed"):
        if agent in parts:
            results[agent] = path_selection_part(evaluation, abilene_paths, agent)
    write("gnn_generalization", results)


def trained_run(agent: str, seed: int) -> Path:
    """The run directory of ``bench/learning.py``'s run of ``agent`` and ``seed``, trained now if missing."""
    from bench.learning import run_dir, train_runs

    if not (run_dir(agent, seed) / "metrics.json").exists():
        train_runs([agent], [seed])
    return run_dir(agent, seed)


def path_selection_part(evaluation: dict, training_paths, agent: str = "dqn_gnn") -> dict:
    """DQN graph policy of ``agent``'s runs (trained on Abilene, and for dqn_gnn_mixed on four
    synthetic networks too), playing path selection on every evaluation set, beside the
    path-selection baselines (MLU ÷ optimum of splittable routing)."""
    from agents.flows import baseline_choosers, score_choosers
    from envs import PathSelectionEnv

    trained = {seed: load_run(trained_run(agent, seed)).policy for seed in SEEDS}
    part: dict = {"baselines": {}, "evaluation": {}}
    for label, (topology, paths, matrices, indices, optimum) in evaluation.items():
        env = PathSelectionEnv(topology, matrices, pathset=paths)
        runs = []
        for seed, chooser in trained.items():
            scores = score_choosers(env, {agent: chooser.on(paths)}, indices, optimum)[agent]
            runs.append({"seed": seed, **scores.summary()})
            report(f"{agent} seed {seed}", label, runs[-1])
        part["evaluation"] |= summarized({label: runs})
        part["baselines"][label] = {name: scores.summary() for name, scores in
                                    score_choosers(env, baseline_choosers(), indices, optimum).items()}
        print(label, {name: round(s["median"], 3) for name, s in part["baselines"][label].items()}, flush=True)
    return part


def score_everywhere(route_on, sets: dict, per_set: dict[str, list[dict]], tag: str, **row) -> None:
    """Score the same weights on every set (``route_on(paths)``: the policy on that set's path
    set) and append its summary, after ``row``, to the set's runs in ``per_set``."""
    from agents.evaluation import evaluate_policies

    for label, (_, paths, matrices, indices, optimum) in sets.items():
        policy = route_on(paths)
        _, scores = evaluate_policies([policy], matrices, indices, optimal=optimum)
        per_set[label].append({**row, **scores[policy.name].summary()})
        report(tag, label, per_set[label][-1])


def summarized(per_set: dict[str, list[dict]]) -> dict:
    return {label: {"runs": runs, "median_of_medians": statistics.median(r["median"] for r in runs),
                    "median_of_p90": statistics.median(r["p90"] for r in runs)} for label, runs in per_set.items()}


def report(policy: str, label: str, scores: dict) -> None:
    print(f"{policy:22s} {label}: median {scores['median']:.3f} p90 {scores['p90']:.3f}", flush=True)


if __name__ == "__main__":
    main()
