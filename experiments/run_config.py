"""Which run configs are refused: :func:`check_config` runs before anything trains or is written
(`rlte train` and `rlte eval` both call it). The config's shape and types are the schemas'
(:mod:`experiments.schema`), refused by Hydra itself; here come what a type cannot say (each
group's ``__post_init__``), what the agent's kind refuses (:meth:`experiments.learners.Learner.check`),
and the baselines named.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from agents.policy import check_baseline_names
from topologies import Topology

from .learners import learner
from .schema import typed


def check_config(cfg: DictConfig, *, training: bool = True) -> None:
    """Refuse a config whose settings are out of range or do not go together; ``training``:
    for `rlte train`, which runs in the twin only."""
    kind = learner(cfg.agent.algorithm)
    typed(cfg)
    kind.check(cfg)
    baseline_names(cfg)
    if training and cfg.backend.name != "twin":
        raise ValueError(f"training runs in the twin (backend=twin): a step on {cfg.backend.name} takes seconds, so "
                         f"a run would take weeks; train in the twin, then score the run there: "
                         f"rlte eval run=<run directory> backend={cfg.backend.name}")
    if training:
        kind.device(cfg)  # device=cuda on a machine without one: refused before anything is prepared


def baseline_names(cfg: DictConfig) -> list[str] | None:
    """``eval.baselines``: the baselines the table scores, by name (None: every one), refused
    naming the unknown one and every known one (a live run's time grows with each)."""
    names = cfg.eval.baselines
    if names is None:
        return None
    if cfg.env.kind == "path_selection":
        from agents.flows import BASELINE_CHOOSERS as known
    else:
        from agents.policy import BASELINES as known
    return check_baseline_names(list(OmegaConf.to_container(names)), list(known),
                                f"{cfg.env.kind} baseline (eval.baselines)")


def check_same_topology(cfg: DictConfig, trained_on: Topology, scored_on: Topology) -> None:
    """Refuse to score weights that fit only the topology they were trained on on another one
    (graph policies have no weight whose shape depends on the topology)."""
    if not learner(cfg.agent.algorithm).routes_any_topology(cfg) and trained_on.fingerprint() != scored_on.fingerprint():
        raise ValueError(f"agent {cfg.agent.name} (agent.policy={cfg.agent.policy}) has weights for "
                         f"{trained_on.name} only, not {scored_on.name}: only graph policies (agent.policy=graph) "
                         "route topologies they were not trained on")
