"""Scoring a run: its trained model (through its kind, :mod:`experiments.learners`) and the
baselines on held-out matrices, in the twin or measured on a live backend, and the table
a run directory keeps as ``eval.json``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agents.evaluation import PolicyScores, evaluate_policies
from agents.guard import DriftGuard, lp_guard
from agents.policy import baseline_policies
from envs.backend import Backend, make_backend
from envs.path_selection import PathSelectionEnv
from topologies import PathSet, union_pathsets

from .compare import write_json_atomically
from .data import RunData, ScoredSequence
from .learners import learner
from .run_config import baseline_names


def learned_policy(cfg: DictConfig, data: RunData, model):
    """The trained split-routing model as a RoutingPolicy."""
    return learner(cfg.agent.algorithm).routing_policy(cfg, data, model)


def guarded_policy(cfg: DictConfig, data: RunData, model) -> DriftGuard:
    """The trained model guarded by LP-previous within the training traffic's envelope."""
    return lp_guard(learned_policy(cfg, data, model), data.envelope)


@contextmanager
def live_backend(cfg: DictConfig, pathset: PathSet) -> Iterator[Backend]:
    """The config's live backend carrying ``pathset``, started and torn down around the block."""
    from envs.emulation import require_emulation
    from envs.mininet_backend import ReplaySettings

    require_emulation()  # not root, no Mininet, OVS not running: one clear error before anything starts
    options = cfg.backend
    replay = ReplaySettings(flows_per_pair=options.flows_per_pair, warmup_s=options.warmup_s,
                            window_s=options.window_s, flow_addresses=options.flow_addresses)
    with make_backend(options.name, pathset, capacity_scale=options.capacity_scale, replay=replay) as backend:
        yield backend


@contextmanager
def scoring_bar(description: str, total: int, unit: str) -> Iterator[Callable[[str, int], None]]:
    """A progress bar over ``total`` units of scoring (decisions on the twin, runs of seconds each
    on a live backend), as the ``progress`` callback of the scorers; the postfix names the policy."""
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit=unit) as bar:
        def progress(name: str, count: int) -> None:
            bar.set_postfix_str(name)
            bar.update(count)

        yield progress


def score_split_routing(cfg: DictConfig, data: RunData, model, sequence: ScoredSequence, indices: np.ndarray, *,
                        baselines: bool, with_drops: bool = True, live: bool = False,
                        bar: bool = False) -> dict[str, PolicyScores]:
    policies = [learned_policy(cfg, data, model)]
    if data.envelope is not None:  # a second instance: the guard keeps its policy's state its own
        policies.append(guarded_policy(cfg, data, model))
    if baselines:
        policies += baseline_policies(data.topology, data.train.matrices, k=cfg.paths, names=baseline_names(cfg))
    evaluate = functools.partial(evaluate_policies, policies, sequence.matrices, indices,
                                 optimal=sequence.optimum_at(indices))
    if not live:
        with scoring_bar("scoring", len(policies) * len(indices), "decision") if bar else nullcontext() as progress:
            return evaluate(with_drops=with_drops, progress=progress)[1]
    # one emulated network carries every policy's paths (ECMP's and OSPF's are not all among the K shortest)
    pathsets = {id(policy.pathset): policy.pathset for policy in policies}
    with live_backend(cfg, union_pathsets(data.pathset, *pathsets.values())) as backend, \
            scoring_bar(f"measuring on {cfg.backend.name}", len(policies) * len(indices), "run") as progress:
        return evaluate(backend=backend, progress=progress)[1]


def score_path_selection(cfg: DictConfig, data: RunData, model, sequence: ScoredSequence, indices: np.ndarray, *,
                         baselines: bool, live: bool = False, bar: bool = False) -> dict[str, PolicyScores]:
    """The path-selection model (None: the baselines alone) and, with ``baselines``, every baseline
    rule, each playing ``sequence``'s matrices ``indices`` with the run's seed as flow order."""
    from agents.flows import baseline_choosers, score_choosers

    choosers = {}
    if model is not None:
        choosers[cfg.agent.name] = learner(cfg.agent.algorithm).chooser(cfg, data, model)
    if baselines:
        choosers |= baseline_choosers(baseline_names(cfg))

    def scores(backend: Backend | str, **live_options) -> dict[str, PolicyScores]:
        env = PathSelectionEnv(data.topology, sequence.traffic, pathset=data.pathset,
                               flows_per_pair=cfg.env.flows_per_pair, backend=backend)
        return score_choosers(env, choosers, indices, sequence.optimum_at(indices), seed=cfg.seed, **live_options)

    if not live:
        with scoring_bar("scoring", len(choosers) * len(indices), "matrix") if bar else nullcontext() as progress:
            return scores("twin", progress=progress)
    runs = len(choosers) * len(indices)
    with live_backend(cfg, data.pathset) as backend, \
            scoring_bar(f"measuring on {cfg.backend.name}", runs, "run") as progress:
        return scores(backend, progress=progress, measured=True)


SCORERS = {"split_routing": score_split_routing, "path_selection": score_path_selection}


def score(cfg: DictConfig, data: RunData, model, sequence: ScoredSequence, indices: np.ndarray, *,
          baselines: bool, live: bool = False, bar: bool = False) -> dict[str, PolicyScores]:
    """The model (and, with ``baselines``, every baseline) on ``sequence``'s matrices ``indices``;
    ``live``: measured on the config's backend (the twin's prediction beside each score), with a
    progress bar; ``bar``: a progress bar on the twin too (the final table's LPs take minutes on
    large networks; the periodic scores under the training bar go without)."""
    return SCORERS[cfg.env.kind](cfg, data, model, sequence, indices, baselines=baselines, live=live, bar=bar)


def mean_utilization(data: RunData, policy, indices: np.ndarray) -> np.ndarray:
    """Mean link utilization of a RoutingPolicy over held-out matrices (for the heatmap)."""
    from agents.evaluation import history_for
    from envs.twin import FluidTwin

    if hasattr(policy, "reset"):
        policy.reset()
    ratios = np.stack([policy.route(history_for(policy, data.test.matrices, int(t))) for t in indices])
    loads = FluidTwin(data.pathset).link_loads(data.test.matrices[indices], ratios)
    return (loads / data.topology.capacities).mean(axis=0)


def table_json(cfg: DictConfig, data: RunData, indices: np.ndarray, table: dict[str, PolicyScores]) -> dict:
    def scores(s: PolicyScores) -> dict:
        row = {"summary": s.summary(), "mlu": s.mlu.tolist(), "normalized_mlu": s.normalized_mlu.tolist()}
        if s.twin_normalized_mlu is not None:  # measured live: what the twin predicted, and what was dropped
            row |= {"twin_normalized_mlu": s.twin_normalized_mlu.tolist(), "drop_fraction": s.drop_fraction.tolist()}
        return row

    report = {"topology": data.topology.name, "traffic": data.test.name, "agent": cfg.agent.name,
              "seed": cfg.seed, "backend": cfg.backend.name, "tm_index": [int(i) - data.test.pad for i in indices],
              "optimal_mlu": data.test.optimum_at(indices).tolist(),
              "policies": {name: scores(s) for name, s in table.items()}}
    if cfg.backend.name != "twin":  # how the matrices were replayed
        report["backend_settings"] = OmegaConf.to_container(cfg.backend)
    if data.envelope is not None:  # when the guarded row fell back, and why
        envelope, matrices = data.envelope, data.test.matrices
        report["guard"] = {"fallback": "lp_previous", "window": envelope.window, "threshold": envelope.threshold,
                           "drift_score": [envelope.score(matrices[: int(i)]) for i in indices],
                           "fell_back": [envelope.drifted(matrices[: int(i)]) for i in indices]}
    elif data.guard_skipped:
        report["guard"] = {"skipped": data.guard_skipped}
    return report


def evaluate_run(cfg: DictConfig, data: RunData, model, run_dir: Path,
                 out: Path | None = None) -> tuple[dict, dict[str, PolicyScores]]:
    """Score the trained model and the baselines on the held-out matrices; write the JSON report."""
    indices = data.test.indices(cfg.eval.every)
    table = score(cfg, data, model, data.test, indices, baselines=cfg.eval.with_baselines,
                  live=cfg.backend.name != "twin", bar=True)
    report = table_json(cfg, data, indices, table)
    write_json_atomically(out or run_dir / "eval.json", json.dumps(report, indent=1))
    log_table(run_dir, f"eval/{cfg.backend.name}/{data.topology.name}/{cfg.traffic.name}", table)
    return report, table


def log_table(run_dir: Path, prefix: str, table: dict[str, PolicyScores]) -> None:
    """The table in the run's TensorBoard log too (``tb/eval``), each scoring one step after the
    last: ``rlte eval`` twin and live tables side by side with the training curves. Each scoring
    writes one event file, so the tables already logged are the files already there."""
    from .progress import TEWriter

    log_dir = run_dir / "tb" / "eval"
    step = len(list(log_dir.glob("events.out.tfevents.*"))) if log_dir.is_dir() else 0
    writer = TEWriter(log_dir)
    try:
        writer.table(prefix, table, step)
    finally:
        writer.close()
