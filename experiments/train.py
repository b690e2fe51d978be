"""`rlte train` and `rlte eval`: build the run's data and environment from the Hydra config,
train the configured agent with TensorBoard logging and periodic held-out scores, save
the model, and compare it on held-out traffic with every baseline.

A run directory holds: ``config.yaml`` (resolved), ``model.zip`` (SB3) or ``model.pt``
(gradient learner), ``metrics.json`` (training curve, wall time, final table), ``eval.json``
(the comparison table; rewritten by `rlte eval`), and ``tb/`` (TensorBoard logs).

Training runs in the twin. `rlte eval run=DIR backend=mininet` scores a finished run on the
emulated network instead: every routing is installed by the controller and its matrix
replayed as packets, and the table shows what was measured beside what the twin predicted.

What the config's settings mean, and which configs are refused, is :mod:`experiments.run_config`.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.evaluation import PolicyScores, evaluate_policies
from agents.guard import DriftGuard, lp_guard
from agents.policy import baseline_policies
from envs.backend import Backend, make_backend
from envs.graph import LinkCostActions, graph_wrapped
from envs.path_selection import PathSelectionEnv
from envs.split_routing import SharedStarts, SplitRoutingEnv
from topologies import PathSet, union_pathsets

from .compare import write_json_atomically
from .data import ExtraEntry, RunData, ScoredSequence, extra_held_out, extra_sets, prepare
from .plotting import cdf_figure, topology_figure
from .run_config import (agent_actions, agent_advantage, agent_policy, baseline_names, check_config,
                         policy_options)

if TYPE_CHECKING:
    from agents.gnn import TrainingSet  # imported where the graph learners train, not at start-up

TARGET_NORMALIZED_MLU = 1.10  # training wall time is reported to first reach this held-out median
SB3_MODEL, GRADIENT_MODEL = "model.zip", "model.pt"  # the kept checkpoint; last_<name> is the last one


def model_file(cfg: DictConfig) -> str:
    """The kept checkpoint's file name in a run directory: SB3's zip or the gradient learner's torch file."""
    return GRADIENT_MODEL if cfg.agent.algorithm == "gradient" else SB3_MODEL


# ---------------------------------------------------------------------------- environments
def env_kwargs(cfg: DictConfig, data: RunData, on: TrainingSet | None = None) -> dict[str, Any]:
    """The environment's arguments: on the run's training data, or on ``on``, another
    topology's (an ``agents.gnn.TrainingSet`` of ``agent.also_train_on``)."""
    if on is None:
        common = {"topology": data.topology, "traffic": data.train, "pathset": data.pathset,
                  "optimal_mlu": data.train_optimum}
    else:
        common = {"topology": on.pathset.topology, "traffic": on.matrices, "pathset": on.pathset,
                  "optimal_mlu": on.optimal_mlu}
    if cfg.env.kind == "split_routing":
        return {**common, "history": int(cfg.env.history), "reward": cfg.env.reward,
                "spread_weight": float(cfg.env.get("spread_weight", 0.0)),
                "episode_length": int(cfg.env.episode_length), "action_scale": float(cfg.env.action_scale)}
    return {**common, "flows_per_pair": int(cfg.env.flows_per_pair),
            "bottleneck_weight": float(cfg.env.bottleneck_weight),
            "utilization_norm": float(cfg.env.utilization_norm)}


def make_vec_env(cfg: DictConfig, data: RunData, on: TrainingSet | None = None):
    """The run's vectorized training environments (on ``on``'s topology instead, see env_kwargs)."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    vec_class = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}.get(cfg.env.vec_env)
    if vec_class is None:
        raise ValueError(f"env.vec_env must be dummy or subproc, got {cfg.env.vec_env!r}")
    env_class = SplitRoutingEnv if cfg.env.kind == "split_routing" else PathSelectionEnv
    # a refining graph policy routes inside itself, so it observes the candidate paths too
    refines = int(policy_options(cfg).get("rounds", 0)) > 0
    wrapper = functools.partial(graph_wrapped, paths=refines) if agent_policy(cfg) == "graph" else None
    if agent_actions(cfg) == "link_costs":
        wrapper = LinkCostActions
    if agent_advantage(cfg) == "group":  # every env on the same matrix at each step
        wrapper = functools.partial(shared_starts_then, int(cfg.seed), wrapper)
    return sb3_make_vec_env(env_class, n_envs=int(cfg.env.n_envs), seed=int(cfg.seed), wrapper_class=wrapper,
                            vec_env_cls=vec_class, env_kwargs=env_kwargs(cfg, data, on))


def shared_starts_then(schedule_seed: int, wrapper: Callable | None, env):
    """``env`` starting its episodes on the shared schedule, then wrapped by ``wrapper``."""
    env = SharedStarts(env, schedule_seed)
    return env if wrapper is None else wrapper(env)


# ---------------------------------------------------------------------------- evaluation
def learned_policy(cfg: DictConfig, data: RunData, model):
    """The trained split-routing model as a RoutingPolicy."""
    if cfg.agent.algorithm == "gradient":
        if agent_policy(cfg) == "graph":
            from agents.gnn import GNNPolicy

            return GNNPolicy(data.pathset, model, name=cfg.agent.name)
        from agents.gradient import GradientPolicy

        return GradientPolicy(data.pathset, model, name=cfg.agent.name)
    from agents.sb3 import SB3GraphSplitPolicy, SB3SplitPolicy

    if agent_policy(cfg) == "graph":
        return SB3GraphSplitPolicy(model, data.pathset, int(cfg.env.history), float(cfg.env.action_scale),
                                   name=cfg.agent.name)
    return SB3SplitPolicy(model, data.pathset, int(cfg.env.history), float(cfg.env.action_scale),
                          name=cfg.agent.name, link_costs=agent_actions(cfg) == "link_costs")


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
    replay = ReplaySettings(flows_per_pair=int(options.flows_per_pair), warmup_s=float(options.warmup_s),
                            window_s=float(options.window_s),
                            flow_addresses=str(options.get("flow_addresses", ReplaySettings.flow_addresses)))
    with make_backend(options.name, pathset, capacity_scale=float(options.capacity_scale), replay=replay) as backend:
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
        policies += baseline_policies(data.topology, data.train.matrices, k=int(cfg.paths),
                                      names=baseline_names(cfg))
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
    from agents.flows import baseline_choosers, from_model, score_choosers

    choosers = {}
    if model is not None:
        if agent_policy(cfg) == "graph":
            from agents.sb3 import SB3GraphPathChooser

            choosers[cfg.agent.name] = SB3GraphPathChooser(model, data.pathset)
        else:
            choosers[cfg.agent.name] = from_model(model)
    if baselines:
        choosers |= baseline_choosers(baseline_names(cfg))

    def scores(backend: Backend | str, **live_options) -> dict[str, PolicyScores]:
        env = PathSelectionEnv(data.topology, sequence.traffic, pathset=data.pathset,
                               flows_per_pair=int(cfg.env.flows_per_pair), backend=backend)
        return score_choosers(env, choosers, indices, sequence.optimum_at(indices), seed=int(cfg.seed),
                              **live_options)

    if not live:
        with scoring_bar("scoring", len(choosers) * len(indices), "matrix") if bar else nullcontext() as progress:
            return scores("twin", progress=progress)
    runs = len(choosers) * len(indices)
    with live_backend(cfg, data.pathset) as backend, \
            scoring_bar(f"measuring on {cfg.backend.name}", runs, "run") as progress:
        return scores(backend, progress=progress, measured=True)


def score(cfg: DictConfig, data: RunData, model, sequence: ScoredSequence, indices: np.ndarray, *,
          baselines: bool, live: bool = False, bar: bool = False) -> dict[str, PolicyScores]:
    """The model (and, with ``baselines``, every baseline) on ``sequence``'s matrices ``indices``;
    ``live``: measured on the config's backend (the twin's prediction beside each score), with a
    progress bar; ``bar``: a progress bar on the twin too (the final table's LPs take minutes on
    large networks; the periodic scores under the training bar go without)."""
    scorer = score_path_selection if cfg.env.kind == "path_selection" else score_split_routing
    return scorer(cfg, data, model, sequence, indices, baselines=baselines, live=live, bar=bar)


# ---------------------------------------------------------------------------- TensorBoard
class TEWriter:
    """Traffic-engineering metrics and figures, beside SB3's own scalars."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def scores(self, step: int, scores: PolicyScores, topology: str | None = None) -> None:
        """Held-out scores at ``step``: the run's own (``heldout/...``) or, for a several-topology
        run, another topology's it trains on (``heldout/<topology>/...``)."""
        prefix = "heldout" if topology is None else f"heldout/{topology}"
        x = scores.normalized_mlu
        for key, value in (("mean", x.mean()), ("median", np.median(x)), ("p90", np.percentile(x, 90))):
            self.writer.add_scalar(f"{prefix}/normalized_mlu_{key}", float(value), step)
        if scores.drop_fraction is not None:
            self.writer.add_scalar(f"{prefix}/drop_fraction", float(scores.drop_fraction.mean()), step)
            self.writer.add_scalar(f"{prefix}/throughput_fraction", float(1 - scores.drop_fraction.mean()), step)
        self.writer.flush()

    def validation(self, step: int, median: float) -> None:
        self.writer.add_scalar("validation/normalized_mlu_median", median, step)

    def figures(self, step: int, data: RunData, table: dict[str, PolicyScores], utilization: np.ndarray | None) -> None:
        import matplotlib.pyplot as plt

        figure = cdf_figure({name: s.normalized_mlu for name, s in table.items()})
        self.writer.add_figure("heldout/normalized_mlu_cdf", figure, step)
        plt.close(figure)
        if utilization is not None:
            figure = topology_figure(data.topology, link_values=utilization, value_label="mean link utilization")
            self.writer.add_figure("heldout/link_utilization", figure, step)
            plt.close(figure)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def mean_utilization(data: RunData, policy, indices: np.ndarray) -> np.ndarray:
    """Mean link utilization of a RoutingPolicy over held-out matrices (for the heatmap)."""
    from agents.evaluation import history_for
    from envs.twin import FluidTwin

    if hasattr(policy, "reset"):
        policy.reset()
    ratios = np.stack([policy.route(history_for(policy, data.test.matrices, int(t))) for t in indices])
    loads = FluidTwin(data.pathset).link_loads(data.test.matrices[indices], ratios)
    return (loads / data.topology.capacities).mean(axis=0)


# ---------------------------------------------------------------------------- training
class Progress:
    """Periodic scores during training: the held-out curve (TensorBoard, time to target) and,
    when the run has a validation sequence, which checkpoint to keep. The held-out matrices
    are only watched; only the validation ones (cut from the training sequence) choose.
    ``also``: (label, data) of the other topologies a several-topology run trains on, whose
    held-out matrices are scored beside the run's own (watched too, never choosing)."""

    def __init__(self, cfg: DictConfig, data: RunData, writer: TEWriter, run_dir: Path,
                 also: Sequence[tuple[str, RunData]] = ()) -> None:
        self.cfg, self.data, self.writer = cfg, data, writer
        self.path = run_dir / model_file(cfg)  # where the kept checkpoint goes
        limit = int(cfg.eval.periodic_matrices)
        self.indices = data.test.indices(int(cfg.eval.every), limit=limit)
        self.also = [(label, other, other.test.indices(int(cfg.eval.every), limit=limit)) for label, other in also]
        self.validation_indices = data.validation.indices(1, limit=limit) if data.validation else None
        self.start = time.perf_counter()
        self.others_seconds = 0.0  # spent scoring the other topologies
        self.curve: list[dict[str, Any]] = []  # step, seconds, median, p90 (other_topologies, validation)
        self.seconds_to_target: float | None = None
        self.selected: dict[str, float] | None = None  # the best checkpoint on validation so far

    @property
    def selects(self) -> bool:
        return self.validation_indices is not None

    def _median(self, model, sequence: ScoredSequence, indices: np.ndarray,
                data: RunData | None = None) -> tuple[PolicyScores, float]:
        scores = score(self.cfg, data or self.data, model, sequence, indices, baselines=False)[self.cfg.agent.name]
        return scores, float(np.median(scores.normalized_mlu))

    def elapsed(self) -> float:
        """Seconds since training started, less those spent scoring the other topologies (so a
        several-topology run's training time and time to target count what a one-topology run's do)."""
        return time.perf_counter() - self.start - self.others_seconds

    def _score_others(self, step: int, model) -> dict[str, dict[str, float]]:
        started, points = time.perf_counter(), {}
        for label, other, indices in self.also:
            scores, median = self._median(model, other.test, indices, other)
            self.writer.scores(step, scores, topology=label)
            points[label] = {"median": median, "p90": float(np.percentile(scores.normalized_mlu, 90))}
        self.others_seconds += time.perf_counter() - started
        return points

    def __call__(self, step: int, model) -> bool:
        """Score ``model`` at ``step``; True when it is the best on validation so far (keep it)."""
        scores, median = self._median(model, self.data.test, self.indices)
        self.writer.scores(step, scores)
        elapsed = self.elapsed()
        point = {"step": step, "seconds": elapsed, "median": median,
                 "p90": float(np.percentile(scores.normalized_mlu, 90))}
        if self.seconds_to_target is None and median <= TARGET_NORMALIZED_MLU:
            self.seconds_to_target = elapsed
        if self.also:
            point["other_topologies"] = self._score_others(step, model)
        best = False
        if self.selects:
            _, point["validation_median"] = self._median(model, self.data.validation, self.validation_indices)
            self.writer.validation(step, point["validation_median"])
            best = self.selected is None or point["validation_median"] < self.selected["validation_median"]
            if best:
                self.selected = {"step": step, "validation_median": point["validation_median"], "median": median}
        self.curve.append(point)
        return best

    # Models are SB3 algorithms, agents.gradient.SplitRatioNet or agents.gnn.LinkGNN: all have save(path).
    def checkpoint(self, step: int, model) -> None:
        """Score ``model`` at ``step``; save it as the run's model when validation says it is the best so far."""
        if self(step, model):
            model.save(self.path)

    def kept(self, last):
        """The model a finished run keeps: the ``last`` one without validation, else the best on
        validation (already saved; the last goes beside it as last_<name>)."""
        if not self.selects:
            last.save(self.path)
            return last
        last.save(self.path.with_name(f"last_{self.path.name}"))
        return load_trained(self.cfg, self.data, self.path.parent)


Trainer = Callable[[Progress], Any]  # trains, scoring checkpoints through Progress; returns the kept model


def exploration_callbacks(cfg: DictConfig) -> list:
    """``agent.log_std_final``: PPO's log standard deviation falls linearly from the policy's
    ``log_std_init`` to it over training instead of being learned (agents.sb3.ExplorationDecay)."""
    final = cfg.agent.get("log_std_final")
    if final is None:
        return []
    from agents.sb3 import ExplorationDecay

    start = policy_options(cfg).get("log_std_init", 0.0)  # SB3's default
    return [ExplorationDecay(start, final)]


def sb3_trainer(cfg: DictConfig, data: RunData, run_dir: Path,
                extra: Sequence[tuple[ExtraEntry, TrainingSet]] = ()) -> Trainer:
    """The SB3 agent's training, with its environments and model built (so refused here, before
    the run writes anything). ``extra``: :func:`experiments.data.extra_sets` of
    ``agent.also_train_on``, for a graph policy's rollouts on each of them in turn."""
    from stable_baselines3.common.callbacks import BaseCallback

    from agents.sb3 import make_model

    callbacks = exploration_callbacks(cfg)
    envs = [make_vec_env(cfg, data)]
    try:
        envs += [make_vec_env(cfg, data, trained) for _, trained in extra]
        model = make_model(cfg.agent.algorithm, envs[0], OmegaConf.to_container(cfg.agent.hyperparameters),
                           net_arch=list(cfg.agent.get("net_arch") or []), seed=int(cfg.seed),
                           tensorboard_log=str(run_dir / "tb"), policy=agent_policy(cfg),
                           policy_options=policy_options(cfg), advantage=agent_advantage(cfg), also_on=envs[1:],
                           also_labels=[entry.label for entry, _ in extra])
    except BaseException:
        for env in envs:
            env.close()
        raise
    every = int(cfg.eval.periodic_every)

    def train(progress: Progress):
        class Periodic(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next = every

            def _on_step(self) -> bool:
                if self.num_timesteps >= self.next:
                    self.next += every
                    progress.checkpoint(self.num_timesteps, model)
                return True

        progress.checkpoint(0, model)
        with warnings.catch_warnings():  # SB3's progress bar is tqdm.rich, which warns that it is experimental
            warnings.filterwarnings("ignore", message="rich is experimental")
            model.learn(total_timesteps=int(cfg.agent.total_timesteps), callback=[Periodic(), *callbacks],
                        progress_bar=True, tb_log_name=cfg.agent.name)
        if progress.curve[-1]["step"] != model.num_timesteps:  # unless the callback just scored it
            progress.checkpoint(int(model.num_timesteps), model)
        for env in envs:
            env.close()
        return progress.kept(model)

    return train


def gradient_trainer(cfg: DictConfig, data: RunData, run_dir: Path,
                     extra: Sequence[tuple[ExtraEntry, TrainingSet]] = ()) -> Trainer:
    """The gradient learner's training: agents.gradient's MLP (agent.policy=mlp) or agents.gnn's
    LinkGNN (graph), with its settings and untrained network built (so refused here, before the
    run writes anything). ``extra``: :func:`experiments.data.extra_sets`, more topologies for
    the graph network's batches."""
    from tqdm import tqdm

    agent, seed = cfg.agent, int(cfg.seed)
    every = max(1, int(cfg.eval.periodic_every) // 1000)  # epochs between held-out scores
    common = {"history": int(cfg.env.history), "epochs": int(agent.epochs), "batch_size": int(agent.batch_size),
              "learning_rate": float(agent.learning_rate), "weight_decay": float(agent.weight_decay), "seed": seed}
    torch.manual_seed(seed)
    if agent_policy(cfg) == "graph":
        from agents.gnn import GNNSettings, LinkGNN, TrainingSet, train_gnn

        settings = GNNSettings(**common, hidden=int(agent.hidden), layers=int(agent.layers), rounds=int(agent.rounds),
                               max_grad_norm=float(agent.max_grad_norm))
        untrained = LinkGNN(settings.history, settings.hidden, settings.layers, settings.rounds)

        sets = [TrainingSet(data.pathset, data.train.matrices, data.train_optimum), *(trained for _, trained in extra)]

        def fit(on_epoch):
            return train_gnn(sets, settings, on_epoch=on_epoch)[0]
    else:
        from agents.gradient import GradientSettings, SplitRatioNet, train_gradient

        settings = GradientSettings(**common, hidden=tuple(agent.hidden), spread=float(agent.get("spread", 0.0)),
                                    spread_p=float(agent.get("spread_p", 8.0)))
        untrained = SplitRatioNet(data.pathset, settings.history, settings.hidden)

        def fit(on_epoch):
            return train_gradient(data.pathset, data.train.matrices, data.train_optimum, settings,
                                  on_epoch=on_epoch)[0].net

    def train(progress: Progress):
        bar = tqdm(total=int(agent.epochs), desc="gradient epochs", unit="epoch")

        def on_epoch(epoch: int, loss: float, net) -> None:
            progress.writer.writer.add_scalar("train/normalized_mlu", loss, epoch + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if (epoch + 1) % every == 0 or epoch + 1 == int(agent.epochs):
                progress.checkpoint(epoch + 1, net)

        progress.checkpoint(0, untrained)
        net = fit(on_epoch)
        bar.close()
        return progress.kept(net)

    return train


def load_trained(cfg: DictConfig, data: RunData, run_dir: Path):
    if cfg.agent.algorithm == "gradient":
        if agent_policy(cfg) == "graph":
            from agents.gnn import LinkGNN

            return LinkGNN.load(run_dir / model_file(cfg))
        from agents.gradient import SplitRatioNet

        return SplitRatioNet.load(data.pathset, run_dir / model_file(cfg))
    from agents.sb3 import load_model

    return load_model(cfg.agent.algorithm, str(run_dir / model_file(cfg)))


def table_json(cfg: DictConfig, data: RunData, indices: np.ndarray, table: dict[str, PolicyScores]) -> dict:
    def scores(s: PolicyScores) -> dict:
        row = {"summary": s.summary(), "mlu": s.mlu.tolist(), "normalized_mlu": s.normalized_mlu.tolist()}
        if s.twin_normalized_mlu is not None:  # measured live: what the twin predicted, and what was dropped
            row |= {"twin_normalized_mlu": s.twin_normalized_mlu.tolist(), "drop_fraction": s.drop_fraction.tolist()}
        return row

    report = {"topology": data.topology.name, "traffic": data.test.name, "agent": cfg.agent.name,
              "seed": int(cfg.seed), "backend": cfg.backend.name, "tm_index": [int(i) - data.test.pad for i in indices],
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
    indices = data.test.indices(int(cfg.eval.every))
    table = score(cfg, data, model, data.test, indices, baselines=bool(cfg.eval.with_baselines),
                  live=cfg.backend.name != "twin", bar=True)
    report = table_json(cfg, data, indices, table)
    write_json_atomically(out or run_dir / "eval.json", json.dumps(report, indent=1))
    return report, table


def run_training(cfg: DictConfig, run_dir: Path) -> dict:
    check_config(cfg)
    torch.set_num_threads(int(cfg.threads))
    started = time.perf_counter()
    # Everything that can refuse the config runs before anything is written, so bad traffic,
    # topology, environment or agent settings leave the directory as it was
    data = prepare(cfg)
    prepare_s = time.perf_counter() - started
    # agent.also_train_on's topologies, loaded once: trained on (graph policies; refused for the
    # others by check_config) and scored on their held-out traffic too. Path selection routes
    # one matrix per episode, so it needs no history before it.
    extra = extra_sets(cfg.agent.get("also_train_on") or (), int(cfg.paths), int(cfg.env.get("history", 0)),
                       int(cfg.seed))
    trainer = (gradient_trainer if cfg.agent.algorithm == "gradient" else sb3_trainer)(cfg, data, run_dir, extra)
    also = extra_held_out(extra) if cfg.eval.get("periodic_also_train_on", True) else []
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    writer = TEWriter(run_dir / "tb" / "te")
    progress = Progress(cfg, data, writer, run_dir, also=also)
    model = trainer(progress)
    train_s = progress.elapsed()
    report, table = evaluate_run(cfg, data, model, run_dir)
    utilization = None
    if cfg.env.kind == "split_routing":
        utilization = mean_utilization(data, learned_policy(cfg, data, model),
                                       data.test.indices(int(cfg.eval.every)))
    writer.figures(progress.curve[-1]["step"], data, table, utilization)
    writer.close()
    metrics = {"agent": cfg.agent.name, "topology": data.topology.name, "seed": int(cfg.seed),
               "prepare_seconds": prepare_s, "train_seconds": train_s,
               "other_topologies_scoring_seconds": progress.others_seconds,
               "seconds_to_heldout_median_1.10": progress.seconds_to_target, "curve": progress.curve,
               "selected_checkpoint": progress.selected,
               "final": {name: p["summary"] for name, p in report["policies"].items()}}
    write_json_atomically(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
