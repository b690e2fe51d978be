"""The Python API behind `rlte train` and `rlte eval`: compose a run's config, train it, load a
finished run, score it against the baselines. The benchmarks and tests use these, as a user's
script would::

    from experiments import compose, load_run, score_run, train_config

    cfg = compose("agent=gradient", "topology=b4", "traffic=b4-real")
    run = train_config(cfg, "runs/my-gradient")        # or load_run("runs/<a finished run>")
    for name, scores in score_run(run, every=3).items():
        print(name, scores.summary()["median"])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from agents.evaluation import PolicyScores

from .data import RunData, load_run_topology, prepare
from .hydra_app import CONFIG_DIR, scoring_config
from .learners import learner
from .run_config import check_same_topology
from .progress import load_trained
from .scoring import score
from .train import run_training

BENCH_CONFIG_DIR = Path(__file__).resolve().parents[1] / "bench" / "conf"  # the experiment variants, in a checkout


@dataclass(frozen=True)
class Run:
    """A trained run: its directory, typed config, data (topology, paths, traffic, optima) and kept model."""

    directory: Path | None
    config: DictConfig
    data: RunData
    model: Any  # None: no model (score_run then scores the baselines alone)

    @property
    def policy(self):
        """The trained model as it decides: a RoutingPolicy (split routing) or a flow chooser (path selection)."""
        kind = learner(self.config.agent.algorithm)
        make = kind.routing_policy if kind.env_kind == "split_routing" else kind.chooser
        return make(self.config, self.data, self.model)

    @property
    def metrics(self) -> dict:
        """The run's ``metrics.json``: training curve, times and final table."""
        return json.loads((self.directory / "metrics.json").read_text())


def compose(*overrides: str, config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """The config `rlte train OVERRIDES` composes, typed by its schemas; ``config_dirs``: more
    config folders to search (``BENCH_CONFIG_DIR`` for the experiment variants)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    search = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in config_dirs)}]"] \
        if config_dirs else []
    if GlobalHydra.instance().is_initialized():  # e.g. inside a Hydra app: compose beside it
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose("train", overrides=[*search, *overrides])


def train_config(cfg: DictConfig, run_dir: str | Path) -> Run:
    """Train ``cfg`` into ``run_dir`` (scored and saved as `rlte train` does) and load the result."""
    run_training(cfg, Path(run_dir))
    return load_run(run_dir)


def load_run(run_dir: str | Path, *overrides: str) -> Run:
    """A finished run (or an interrupted one's latest checkpoint) from its directory, its config
    changed by ``overrides`` as `rlte eval run=DIR OVERRIDES` changes it (``topology=b4``,
    ``traffic=b4-real``, ``backend=mininet``, dotted keys)."""
    run_dir = Path(run_dir)
    trained, cfg = scoring_config(run_dir, list(overrides))
    data = prepare(cfg)
    check_same_topology(cfg, load_run_topology(trained), data.topology)
    return Run(run_dir, cfg, data, load_trained(cfg, data, run_dir))


def baselines_only(cfg: DictConfig) -> Run:
    """A run of ``cfg`` with no model: its data, for scoring the baselines alone (path selection)."""
    return Run(None, cfg, prepare(cfg), None)


def score_run(run: Run, *, baselines: bool = True, every: int | None = None,
              live: bool = False) -> dict[str, PolicyScores]:
    """The run's model (and, with ``baselines``, every baseline) on every ``every``-th held-out
    matrix (default: the run's ``eval.every``); ``live``: measured on the run's backend."""
    test = run.data.test
    return score(run.config, run.data, run.model, test, test.indices(every or run.config.eval.every),
                 baselines=baselines, live=live)
