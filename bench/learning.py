"""Learning bars (issue #3), written to ``bench/results/learning.json``:

- the Abilene table: train on the real training week, score on the test week (routing
  each next matrix from its history), for the gradient learner (MLP and refining graph
  network, the latter also trained on four synthetic networks besides Abilene:
  ``gradient_gnn_mixed``, or on 18 more networks: ``gradient_gnn_diverse``), PPO (MLP acting
  per path or per link, the latter also with the spread reward: ``ppo_costs_spread``; graph
  policy; ``--agents ppo_gnn_refine`` adds the refining graph policy, not a default: ~9 min
  per seed) and DQN (on its own environment, against greedy least-loaded and shortest path),
  over several seeds;
- decision time per traffic matrix of each learned policy against the path LP it
  replaces, on abilene, geant and kdl (100 random nodes: 9,900 pairs); path-selection
  agents decide per flow, so theirs is also given per flow;
- training wall time until the held-out median normalized MLU first reaches 1.10;
- each split-routing agent guarded by LP-previous while the traffic lies outside its training
  envelope (``<agent>_guarded`` in every run's table, ``summary.<agent>.guarded``).

Besides the agents' own configs, VARIANTS are runs of an agent with other settings, named
in ``--agents`` like an agent: ``*_validated`` keep the checkpoint with the best median on
the last day of the training week (cut from training: ``eval.validation=288``) instead of
the last one; ``ppo_costs_group`` is ``ppo_costs`` with ``agent.advantage=group``.

Each training run is a normal `rlte train` run (its directory is kept under bench/runs/).
Runs one at a time; torch and BLAS use one thread each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


VARIANTS: dict[str, tuple[str, list[str]]] = {
    "dqn_gnn_validated": ("dqn_gnn", ["eval.validation=288", "eval.periodic_every=2500"]),
    # as measured: ppo_gnn's settings before it trained 300k steps with a decaying rate
    "ppo_gnn_validated": ("ppo_gnn", ["eval.validation=288", "agent.total_timesteps=100000",
                                      "agent.hyperparameters.learning_rate=0.0003"]),
    # the advantage from the other environments' rewards on the same matrix, no critic in it
    "ppo_costs_group": ("ppo_costs", ["agent.advantage=group"]),
}


def run_dir(agent: str, seed: int) -> Path:
    """Where the benchmark keeps the training run of ``agent`` with ``seed``."""
    return ROOT / "bench" / "runs" / f"{agent}_seed{seed}"


def train_runs(names: list[str], seeds: list[int]) -> list[dict]:
    """Train each of ``names`` (an agent config, or one of VARIANTS) with every seed."""
    from experiments import BENCH_CONFIG_DIR, compose, train_config

    rows = []
    for name in names:
        agent, overrides = VARIANTS.get(name, (name, []))
        for seed in seeds:
            cfg = compose(f"agent={agent}", f"seed={seed}", *overrides, config_dirs=[BENCH_CONFIG_DIR])
            directory = run_dir(name, seed)
            started = time.perf_counter()
            metrics = train_config(cfg, directory).metrics
            rows.append({**metrics, "agent": name, "policy": agent, "seed": seed, "overrides": overrides,
                         "machine": machine(),  # merged results keep each run's own versions
                         "run_dir": str(directory.relative_to(ROOT)), "wall_seconds": time.perf_counter() - started})
            final = metrics["final"][cfg.agent.name]
            print(f"{name:9s} seed {seed}: median {final['median']:.3f} p90 {final['p90']:.3f} "
                  f"max {final['max']:.3f}  train {metrics['train_seconds']:.0f} s", flush=True)
    return rows


def decision_times(repeats: int = 20) -> list[dict]:
    """Seconds per decision (one routing for one matrix) of each learned policy and of the path LP."""
    import torch
    from stable_baselines3 import PPO

    from agents.gnn import GNNPolicy, LinkGNN
    from agents.gradient import GradientPolicy, SplitRatioNet
    from agents.lp import path_lp
    from agents.sb3 import GraphActorCriticPolicy, SB3GraphSplitPolicy, SB3SplitPolicy
    from bench.twin_throughput import build
    from envs import SplitRoutingEnv
    from envs.graph import LinkCostActions, graph_wrapped
    from topologies import load_traffic

    torch.set_num_threads(1)
    rows = []
    for name, spec, endpoints, lp_repeats in (("abilene", "abilene", None, 10), ("geant", "geant", None, 3),
                                              ("kdl_100_nodes", "kdl", 100, 1)):
        topology, pathset = build(spec, 4, endpoints)
        tms = load_traffic("gravity", topology, count=4, seed=1).matrices
        keep = np.zeros((topology.num_nodes,) * 2, dtype=bool)
        keep[pathset.pairs[:, 0], pathset.pairs[:, 1]] = True
        tms = tms * keep
        gradient = GradientPolicy(pathset, SplitRatioNet(pathset, 3))
        gradient_gnn = GNNPolicy(pathset, LinkGNN(3, hidden=64, layers=3, rounds=5))  # agent=gradient_gnn's shape
        env = SplitRoutingEnv(topology, tms, pathset=pathset, history=3, episode_length=1)
        ppo = SB3SplitPolicy(PPO("MlpPolicy", env, policy_kwargs={"net_arch": [256, 256]}, device="cpu"),
                             pathset, 3, 3.0)
        ppo_costs = SB3SplitPolicy(PPO("MlpPolicy", LinkCostActions(env), policy_kwargs={"net_arch": [256, 256]},
                                       device="cpu"), pathset, 3, 3.0, link_costs=True)
        graph_env, refine_env = graph_wrapped(env), graph_wrapped(env, paths=True)
        ppo_gnn = SB3GraphSplitPolicy(GraphActorCriticPolicy(graph_env.observation_space, graph_env.action_space,
                                                             lambda _: 0.0), pathset, 3, 3.0)
        ppo_gnn_refine = SB3GraphSplitPolicy(GraphActorCriticPolicy(refine_env.observation_space,
                                                                    refine_env.action_space, lambda _: 0.0, rounds=5),
                                             pathset, 3, 3.0)  # agent=ppo_gnn_refine's shape
        shape = {"topology": name, "nodes": topology.num_nodes, "pairs": pathset.num_pairs, "paths_per_pair": 4}

        def timed(fn, count):
            samples = []
            for _ in range(count):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        windows = np.stack([tms[:3]] * 256)
        measured = {
            "gradient_mlp": timed(lambda: gradient.route(tms[:3]), repeats),
            "gradient_mlp_batched_256": timed(lambda: gradient.route_batch(windows), 3) / 256,
            "gradient_gnn": timed(lambda: gradient_gnn.route(tms[:3]), repeats),
            "ppo_mlp": timed(lambda: ppo.route(tms[:3]), repeats),
            "ppo_costs": timed(lambda: ppo_costs.route(tms[:3]), repeats),
            "ppo_gnn": timed(lambda: ppo_gnn.route(tms[:3]), repeats),
            "ppo_gnn_refine": timed(lambda: ppo_gnn_refine.route(tms[:3]), repeats),
            "path_lp": timed(lambda: path_lp(pathset, tms[3]), lp_repeats),
        }
        if name != "kdl_100_nodes":  # minutes per solve there; bench/lp_solve.py has it
            measured["path_lp_balanced"] = timed(lambda: path_lp(pathset, tms[3], tie_break="balanced"), lp_repeats)
        for policy, seconds in measured.items():
            rows.append({**shape, "policy": policy, "seconds_per_decision": seconds})
            print(f"{name:14s} {policy:26s} {seconds * 1e3:10.3f} ms", flush=True)
        for policy, seconds in path_choice_times(topology, pathset, tms, repeats).items():
            # a path-selection agent decides per flow; a matrix is one flow per pair
            rows.append({**shape, "policy": policy, "seconds_per_flow": seconds,
                         "seconds_per_decision": seconds * pathset.num_pairs})
            print(f"{name:14s} {policy:26s} {seconds * 1e3:10.3f} ms per flow", flush=True)
    return rows


def path_choice_times(topology, pathset, tms: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per flow of the DQN policies (MLP and graph) choosing a path."""
    from stable_baselines3.dqn.policies import DQNPolicy

    from agents.flows import from_model
    from agents.sb3 import SB3GraphPathChooser, GraphQPolicy
    from envs import PathSelectionEnv
    from envs.graph import graph_wrapped

    env = PathSelectionEnv(topology, tms, pathset=pathset)
    graph_space = graph_wrapped(env).observation_space
    choosers = {
        "dqn_mlp": from_model(DQNPolicy(env.observation_space, env.action_space, lambda _: 0.0, net_arch=[128, 128])),
        "dqn_gnn": SB3GraphPathChooser(GraphQPolicy(graph_space, env.action_space, lambda _: 0.0, hidden=32, layers=2,
                                                    net_arch=[64]), pathset),
    }
    times = {}
    for policy, choose in choosers.items():
        observation, _ = env.reset(seed=0, options={"tm_index": 0})
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            action = choose(env, observation)
            samples.append(time.perf_counter() - start)
            observation, *_ = env.step(action)
        times[policy] = statistics.median(samples)
    return times


def previous_results(out: str | None) -> dict:
    """The results file this run replaces (empty when there is none)."""
    import json

    path = Path(out) if out else ROOT / "bench" / "results" / "learning.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rescore_baselines(results: dict) -> None:
    """Score the baselines again and put them in every run's final table: for when a baseline
    changed or was added and the learned policies did not (their scores are kept).

    Split routing: `rlte compare` on every 24th matrix of the test week scores the same
    matrices, from the same history, as a training run's final evaluation. Path selection: the
    rules play the run's matrices with the run's seed, so in the flow order its table had.
    """
    from experiments.compare import CompareSettings, run_compare

    report = run_compare(CompareSettings(topology="abilene", traffic="abilene-test", every=24))
    split_routing = {name: policy.summary for name, policy in report.policies.items()}
    path_selection: dict[int, dict] = {}  # by seed: the flow order
    for run in results["abilene_runs"]:
        if "lp_previous" in run["final"]:
            fresh = split_routing
        elif run["seed"] in path_selection:
            fresh = path_selection[run["seed"]]
        else:
            fresh = path_selection[run["seed"]] = path_selection_baselines(run["seed"])
        stale = set(run["final"]) - {run_policy(run), guarded_name(run)}
        if not stale <= set(fresh):  # a baseline added since the run is added to its table
            raise SystemExit(f"{run['agent']} seed {run['seed']}: its baselines {sorted(stale - set(fresh))} "
                             f"are not among the ones rescored, {sorted(fresh)}")
        run["final"].update(fresh)
        run["baselines_rescored_on"] = machine()


def path_selection_baselines(seed: int) -> dict[str, dict]:
    """The path-selection rules' summaries on a DQN run's final-table matrices, flows drawn from ``seed``."""
    from experiments import BENCH_CONFIG_DIR, baselines_only, compose, score_run

    scores = score_run(baselines_only(compose("agent=dqn", f"seed={seed}", config_dirs=[BENCH_CONFIG_DIR])))
    return {name: score.summary() for name, score in scores.items()}


def run_policy(run: dict) -> str:
    """The run's agent's row in its final table (a variant's row is its agent config's)."""
    return run.get("policy", run["agent"])


def guarded_name(run: dict) -> str:
    """The final table's row of the run's agent guarded by LP-previous (agents.guard)."""
    return f"{run_policy(run)}_guarded"


def rescore_guarded(results: dict) -> None:
    """Score the drift-guarded row of every split-routing run that lacks one, from the model its
    run directory kept (the guarded policy runs the agent in shadow on every matrix, so the row
    is what the run's own final table would hold). A directory whose model does not score the
    run's own row again (a later run written over it) is left out."""
    from experiments import load_run, score_run

    for run in results["abilene_runs"]:
        if "lp_previous" not in run["final"] or guarded_name(run) in run["final"]:
            continue
        directory = ROOT / run["run_dir"]
        try:
            loaded = load_run(directory, "eval.guard=true")
        except FileNotFoundError:
            print(f"{run['agent']} seed {run['seed']}: no model in {run['run_dir']}; train it again for its "
                  f"guarded row", flush=True)
            continue
        table = score_run(loaded, baselines=False)
        own, recorded = table[run_policy(run)].summary(), run["final"][run_policy(run)]
        if any(not np.isclose(own[key], recorded[key], rtol=1e-9) for key in ("median", "p90", "max")):
            print(f"{run['agent']} seed {run['seed']}: {run['run_dir']} holds another run than the results "
                  f"file's; train it again for its guarded row", flush=True)
            continue
        guarded = table[guarded_name(run)].summary()
        run["final"][guarded_name(run)] = guarded
        run["guard_rescored_on"] = machine()
        print(f"{run['agent']} seed {run['seed']}: guarded median {guarded['median']:.3f} "
              f"p90 {guarded['p90']:.3f}", flush=True)


def summarize(results: dict) -> dict:
    """Per agent, its seeds' final median / p90 / max and times; each environment's baselines."""
    summary = {}
    for agent in dict.fromkeys(r["agent"] for r in results["abilene_runs"]):
        runs = [r for r in results["abilene_runs"] if r["agent"] == agent]
        finals = [r["final"][run_policy(r)] for r in runs]
        summary[agent] = {key: [f[key] for f in finals] for key in ("median", "p90", "max")}
        guarded = [r["final"].get(guarded_name(r)) for r in runs]
        if all(guarded):  # split routing: the agent guarded by LP-previous while the traffic drifted
            summary[agent]["guarded"] = {key: [g[key] for g in guarded] for key in ("median", "p90", "max")}
        summary[agent]["train_seconds"] = [r["train_seconds"] for r in runs]
        summary[agent]["seconds_to_heldout_median_1.10"] = [r["seconds_to_heldout_median_1.10"] for r in runs]
        if any(r.get("selected_checkpoint") for r in runs):  # runs that kept their best on validation
            summary[agent]["selected_step"] = [(r.get("selected_checkpoint") or {}).get("step") for r in runs]
    # each environment's baselines, from the first run in it (path selection has its own)
    for key, marker in (("baselines", "lp_previous"), ("path_selection_baselines", "least_loaded")):
        source = next((r for r in results["abilene_runs"] if marker in r["final"]), None)
        if source:
            summary[key] = {k: v for k, v in source["final"].items() if k not in summary and k != guarded_name(source)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--agents",
                        default="gradient,gradient_gnn,gradient_gnn_mixed,gradient_gnn_diverse,ppo,ppo_costs,"
                                "ppo_costs_spread,ppo_gnn,dqn,dqn_gnn",
                        help=f"agent configs, or variants: {', '.join(VARIANTS)}")
    parser.add_argument("--out")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of agents not trained now from the existing results file")
    parser.add_argument("--keep-timing", action="store_true",
                        help="keep the decision times of the existing results file instead of measuring them")
    parser.add_argument("--rescore-baselines", action="store_true",
                        help="only score the baselines again, in the existing results file")
    parser.add_argument("--rescore-guarded", action="store_true",
                        help="only score the drift-guarded rows missing from the existing results file's "
                             "split-routing runs, from the models in their run directories")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if args.rescore_baselines or args.rescore_guarded:
        results = previous_results(args.out)
        if not results.get("abilene_runs"):
            parser.error("--rescore-*: the results file has no runs to rescore")
        if args.rescore_baselines:
            rescore_baselines(results)
        if args.rescore_guarded:
            rescore_guarded(results)
        results["summary"] = summarize(results)
        write("learning", results, args.out)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [name for name in args.agents.split(",") if name]
    previous = previous_results(args.out)  # read before the first write
    kept = [r for r in previous.get("abilene_runs", []) if r["agent"] not in names] if args.merge else []
    results = {"benchmark": "learning", "machine": machine(), "seeds": seeds, "abilene_runs": kept}
    if args.keep_timing and "decision_time" not in previous:
        parser.error("--keep-timing: the results file has no decision times to keep")
    results["decision_time"] = previous["decision_time"] if args.keep_timing else decision_times()
    if not args.keep_timing:  # keep fresh decision times through a long training; the file's runs stay until replaced
        write("learning", {**previous, "decision_time": results["decision_time"]} if previous else results, args.out)
    results["abilene_runs"] = kept + train_runs(names, seeds)
    results["summary"] = summarize(results)
    write("learning", results, args.out)


if __name__ == "__main__":
    main()
