"""One module per kind of agent, and the registry `rlte train` and `rlte eval` dispatch through.

A kind of agent is a :class:`Learner`: the schema of its ``agent`` config (a dataclass in
Hydra's ConfigStore), the checks its settings need beyond their types, how it builds its
trainer, where its model is saved and how it loads, and what a trained model becomes for
scoring: a RoutingPolicy (split routing) or a flow chooser (path selection). Adding a kind is
one module here that calls :func:`register` (found by :func:`discover`) and a YAML file under
``conf/agent/`` that names its schema; nothing else dispatches on ``agent.algorithm``.

Modules here import torch and Stable-Baselines3 only inside the methods that need them, so
the command line starts without them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import torch

    from agents.gnn import TrainingSet
    from agents.policy import RoutingPolicy
    from experiments.data import ExtraEntry, RunData
    from experiments.progress import Progress

Trainer = Callable[["Progress"], Any]  # trains, checkpointing through Progress; returns the kept model


class Learner:
    """A kind of agent, named by ``agent.algorithm``. Subclasses set the class attributes and
    override what their environment kind needs (``routing_policy`` for split routing,
    ``chooser`` for path selection)."""

    algorithm: str                 # agent.algorithm
    env_kind: str                  # the environment it learns in (env.kind)
    model_file: str                # the kept checkpoint's name in a run directory
    schemas: dict[str, type]       # agent.policy -> the agent config's dataclass

    def schema(self, policy: str) -> type:
        if policy not in self.schemas:
            raise ValueError(f"agent.policy must be one of {', '.join(self.schemas)} for agent.algorithm="
                             f"{self.algorithm}, got {policy!r}")
        return self.schemas[policy]

    def check(self, cfg: DictConfig) -> None:
        """Refuse settings that do not go together (each already has its schema's type)."""
        if cfg.env.kind != self.env_kind:
            raise ValueError(f"agent {self.algorithm!r} learns in env={self.env_kind}, not env={cfg.env.kind}")
        expected, given = self.schema(cfg.agent.policy), OmegaConf.get_type(cfg.agent)
        if given in self.schemas.values() and given is not expected:
            raise ValueError(f"agent.policy={cfg.agent.policy} takes {expected.__name__}'s settings, and this agent "
                             f"config holds {given.__name__}'s: pick an agent config made for that policy")
        if cfg.agent.also_train_on and cfg.agent.policy != "graph":
            raise ValueError("agent.also_train_on is for the graph policies (agent.policy=graph), whose weights "
                             f"fit any topology; not agent.algorithm={self.algorithm} agent.policy={cfg.agent.policy}")

    def routes_any_topology(self, cfg: DictConfig) -> bool:
        """Whether the trained weights fit topologies other than the run's (no weight's shape depends on it)."""
        return cfg.agent.policy == "graph"

    def gpu_pays(self, cfg: DictConfig) -> bool:
        """Whether ``device=auto`` trains this kind on a GPU when there is one (:mod:`agents.device`)."""
        return False

    def device(self, cfg: DictConfig) -> torch.device:
        """Where this run trains: its ``device`` setting on this machine (``auto``: :meth:`gpu_pays`)."""
        from agents.device import resolve_device

        return resolve_device(cfg.device, gpu_pays=self.gpu_pays(cfg))

    def trainer(self, cfg: DictConfig, data: RunData, run_dir: Path,
                extra: Sequence[tuple[ExtraEntry, TrainingSet]] = (), resume: Path | None = None) -> Trainer:
        """The training, with everything that can refuse the config built already (before the
        run writes anything). ``extra``: ``agent.also_train_on``'s loaded sets; ``resume``: a
        checkpoint written by an interrupted run of the same config, to continue from."""
        raise NotImplementedError

    def load(self, cfg: DictConfig, data: RunData, path: Path) -> Any:
        """The model saved at ``path``."""
        raise NotImplementedError

    def routing_policy(self, cfg: DictConfig, data: RunData, model: Any) -> RoutingPolicy:
        """A split-routing model as a RoutingPolicy on the run's path set."""
        raise NotImplementedError(f"agent {self.algorithm!r} does not route splits")

    def chooser(self, cfg: DictConfig, data: RunData, model: Any) -> Callable:
        """A path-selection model as a flow chooser (agents.flows)."""
        raise NotImplementedError(f"agent {self.algorithm!r} does not choose paths")

    def export_module(self, cfg: DictConfig, data: RunData, model: Any) -> torch.nn.Module:
        """The trained model as one torch module for export (experiments.export): the pair-demand
        history (1, H, P) float32, in the topology's own units, -> split ratios (1, P, K),
        everything the policy does in between inside it. A ValueError saying why a kind cannot."""
        raise ValueError(f"agent.algorithm={self.algorithm} cannot be exported: only split-routing policies "
                         f"that map the demand history to split ratios export (agent.algorithm=gradient or ppo)")

    def export_policy(self, cfg: DictConfig, data: RunData, model: Any) -> RoutingPolicy:
        """The policy an export must decide as, on every held-out window (experiments.export's
        parity check): the run's own, unless a kind's policy remembers earlier answers."""
        return self.routing_policy(cfg, data, model)


LEARNERS: dict[str, Learner] = {}


def register(learner: type[Learner]) -> type[Learner]:
    """Class decorator: make the kind known under its ``algorithm``."""
    LEARNERS[learner.algorithm] = learner()
    return learner


def discover() -> dict[str, Learner]:
    """Import every module of this package once, so each registers its kinds."""
    if not LEARNERS:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
    return LEARNERS


def learner(algorithm: str) -> Learner:
    """The kind of agent named ``algorithm``, or a ValueError naming the known ones."""
    known = discover()
    if algorithm not in known:
        raise ValueError(f"unknown agent algorithm {algorithm!r}; choose one of {', '.join(known)}")
    return known[algorithm]


def agent_schemas() -> dict[str, type]:
    """Every kind's agent schemas by their ConfigStore name (``base_<algorithm>`` for the MLP
    policy, ``base_<algorithm>_graph`` for the graph one)."""
    return {(f"base_{kind.algorithm}" if policy == "mlp" else f"base_{kind.algorithm}_{policy}"): schema
            for kind in discover().values() for policy, schema in kind.schemas.items()}


__all__ = ["LEARNERS", "Learner", "Trainer", "agent_schemas", "discover", "learner", "register"]
