"""The shape of a run's config: a dataclass per kind of config group option, registered in
Hydra's ConfigStore, so Hydra itself refuses an unknown key or a wrong type before a run starts.

Each YAML option under ``conf/`` names its schema first in its defaults list
(``- base_split_routing``); the agents' schemas live beside their learners
(:mod:`experiments.learners`). What a type cannot say (a whole number's smallest value, a
name among several) each dataclass checks in ``__post_init__``, which runs when
:func:`typed` turns a composed config into objects.

:func:`schema_for` rebuilds the same typed shape for a config read back from a run directory
(`rlte eval`), picked by the settings that choose each option's kind: ``env.kind``,
``agent.algorithm`` and ``agent.policy``, a traffic ``dataset`` or synthetic ``model``, and
``backend.name``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from agents.device import check_device_setting


def whole(key: str, value: object, minimum: int) -> None:
    """Refuse a whole number below ``minimum``, naming its key (the schema already refused a non-integer)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}")


@dataclass
class Checked:
    """What a schema's types cannot say, declared per class and checked in ``__post_init__``
    (a subclass's rules add to its bases'); errors name the setting as ``GROUP.field``."""

    GROUP: ClassVar[str] = ""
    MINIMUMS: ClassVar[Mapping[str, int]] = {}              # whole numbers and their smallest values
    CHOICES: ClassVar[Mapping[str, tuple[str, ...]]] = {}   # names among several
    POSITIVE: ClassVar[tuple[str, ...]] = ()                # numbers > 0
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ()            # finite numbers >= 0

    def _rules(self, kind: str) -> dict:
        """The class's ``kind`` rules merged with its bases' (a tuple's names map to None)."""
        merged: dict = {}
        for klass in reversed(type(self).__mro__):
            if found := vars(klass).get(kind):
                merged.update(found if isinstance(found, Mapping) else dict.fromkeys(found))
        return merged

    def __post_init__(self) -> None:
        def setting(name: str) -> str:
            return f"{self.GROUP}.{name}" if self.GROUP else name

        for name, minimum in self._rules("MINIMUMS").items():
            if (value := getattr(self, name)) is not None:
                whole(setting(name), value, minimum)
        for name, choices in self._rules("CHOICES").items():
            if (value := getattr(self, name)) not in choices:
                raise ValueError(f"{setting(name)} must be one of {', '.join(choices)}, got {value!r}")
        for name in self._rules("POSITIVE"):
            if (value := getattr(self, name)) is not None and not value > 0:
                raise ValueError(f"{setting(name)} must be > 0, got {value!r}")
        for name in self._rules("NON_NEGATIVE"):
            if math.isnan(value := getattr(self, name)) or value < 0:
                raise ValueError(f"{setting(name)} must be a finite number >= 0, got {value!r}")


# ---------------------------------------------------------------------------- groups
@dataclass
class TopologyConfig:
    name: str = MISSING
    spec: Optional[str] = None  # a generator spec or file when the name is not the catalog's


@dataclass
class TrafficConfig(Checked):
    GROUP = "traffic"
    POSITIVE = ("target_mlu",)
    name: str = MISSING
    target_mlu: Optional[float] = None  # scale so the held-out optimal MLU peaks (or each matrix sits) here


@dataclass
class DatasetTrafficConfig(TrafficConfig):
    MINIMUMS = {"split": 1}
    dataset: str = MISSING
    split: Optional[int] = None  # one sequence: the first `split` matrices train, the rest are held out


@dataclass
class SyntheticTrafficConfig(TrafficConfig):
    MINIMUMS = {"count": 1}
    model: Optional[str] = None  # the traffic model (default: the option's name)
    count: int = 200             # training matrices, and as many held out


@dataclass
class EnvConfig(Checked):
    GROUP = "env"
    MINIMUMS = {"n_envs": 1}
    CHOICES = {"vec_env": ("dummy", "subproc")}
    kind: str = MISSING
    n_envs: int = 1
    vec_env: str = "dummy"


@dataclass
class SplitRoutingEnvConfig(EnvConfig):
    MINIMUMS = {"history": 1, "episode_length": 1}
    NON_NEGATIVE = ("spread_weight",)
    kind: str = "split_routing"
    history: int = 3
    reward: str = "normalized"
    spread_weight: float = 0.0
    episode_length: int = 128
    action_scale: float = 3.0
    n_envs: int = 4


@dataclass
class PathSelectionEnvConfig(EnvConfig):
    MINIMUMS = {"flows_per_pair": 1}
    kind: str = "path_selection"
    flows_per_pair: int = 1
    bottleneck_weight: float = 0.0
    utilization_norm: float = math.inf


@dataclass
class AgentConfig(Checked):
    """What every agent has; each learner's own schema extends it (:mod:`experiments.learners`)."""

    GROUP = "agent"
    CHOICES = {"policy": ("mlp", "graph")}
    name: str = MISSING
    algorithm: str = MISSING
    policy: str = "mlp"  # mlp: a flat observation; graph: the graph view, weights that fit any topology
    # more topologies to train on ({topology, traffic, count, seed} each); graph policies only
    also_train_on: Optional[List[Dict[str, Any]]] = None


@dataclass
class BackendConfig:
    name: str = MISSING


@dataclass
class TwinBackendConfig(BackendConfig):
    name: str = "twin"


@dataclass
class MininetBackendConfig(BackendConfig, Checked):
    GROUP = "backend"
    MINIMUMS = {"flows_per_pair": 1}
    CHOICES = {"flow_addresses": ("even", "sequential")}
    POSITIVE = ("capacity_scale", "window_s")
    NON_NEGATIVE = ("warmup_s",)
    name: str = "mininet"
    capacity_scale: float = 0.001
    flows_per_pair: int = 32
    flow_addresses: str = "even"
    warmup_s: float = 1.0
    window_s: float = 2.0


@dataclass
class EvalConfig(Checked):
    GROUP = "eval"
    MINIMUMS = {"every": 1, "periodic_matrices": 1, "periodic_every": 1, "validation": 0, "guard_blocks": 2}
    every: int = 24              # final table: every N-th held-out matrix
    periodic_matrices: int = 32  # held-out matrices scored during training
    periodic_every: int = 10000  # environment steps between those scores (gradient learner: /1000 epochs)
    periodic_also_train_on: bool = True
    with_baselines: bool = True
    baselines: Optional[List[str]] = None  # by name; None: every one
    validation: int = 0          # matrices cut from the end of the training sequence to pick the checkpoint
    guard: bool = True           # split routing: also score the agent guarded by LP-previous
    guard_blocks: int = 7


@dataclass
class RunConfig(Checked):
    MINIMUMS = {"seed": 0, "paths": 1, "threads": 1}
    topology: TopologyConfig = MISSING
    traffic: TrafficConfig = MISSING
    env: EnvConfig = MISSING
    agent: AgentConfig = MISSING
    backend: BackendConfig = MISSING
    seed: int = 0
    paths: int = 4    # candidate hop-shortest paths per pair
    threads: int = 1  # torch / BLAS threads per run
    device: str = "auto"  # torch device for training: auto, cpu, cuda, cuda:N (agents.device)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device_setting(self.device)


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "topology": {"base_topology": TopologyConfig},
    "traffic": {"base_dataset": DatasetTrafficConfig, "base_synthetic": SyntheticTrafficConfig},
    "env": {"base_split_routing": SplitRoutingEnvConfig, "base_path_selection": PathSelectionEnvConfig},
    "backend": {"base_twin": TwinBackendConfig, "base_mininet": MininetBackendConfig},
}
ENV_SCHEMAS = {"split_routing": SplitRoutingEnvConfig, "path_selection": PathSelectionEnvConfig}
BACKEND_SCHEMAS = {"twin": TwinBackendConfig, "mininet": MininetBackendConfig}


def register() -> None:
    """Put every schema in Hydra's ConfigStore (the agents' too), where the YAML options name them."""
    from .learners import agent_schemas

    store = ConfigStore.instance()
    store.store(name="base_train", node=RunConfig)
    for group, schemas in {**GROUP_SCHEMAS, "agent": agent_schemas()}.items():
        for name, schema in schemas.items():
            store.store(group=group, name=name, node=schema)


def is_schema(name: str) -> bool:
    """Whether a config group's option ``name`` is a schema, not an option a user picks."""
    return name.startswith("base_")


def schema_for(cfg: DictConfig) -> DictConfig:
    """The typed, struct shape of ``cfg``'s kind: each group's schema picked by its kind settings,
    to merge a config read from a file into (unknown keys and wrong types then refused)."""
    from .learners import learner

    def kind_of(key: str, choices: dict[str, type]) -> type:
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(choices)}")
        return choices[value]

    shape = OmegaConf.structured(RunConfig)
    shape.topology = OmegaConf.structured(TopologyConfig)
    shape.traffic = OmegaConf.structured(DatasetTrafficConfig if "dataset" in cfg.traffic else SyntheticTrafficConfig)
    shape.env = OmegaConf.structured(kind_of("env.kind", ENV_SCHEMAS))
    shape.agent = OmegaConf.structured(learner(cfg.agent.algorithm).schema(cfg.agent.get("policy", "mlp")))
    shape.backend = OmegaConf.structured(kind_of("backend.name", BACKEND_SCHEMAS))
    return shape


def unknown_setting(key: str, known: list[str]) -> str:
    """Why ``key`` is refused: no schema there has it; the nearest known name and the settings there are."""
    prefix, _, name = key.rpartition(".")
    full = sorted(f"{prefix}.{field}" if prefix else field for field in known)
    nearest = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {prefix + '.' if prefix else ''}{nearest[0]}? " if nearest else ""
    return f"unknown setting {key}: nothing would read it; {hint}its settings: {', '.join(full)}"


def check_known_keys(node: DictConfig, prefix: str = "") -> None:
    """Refuse a key no schema has: Hydra's ``+key=value`` adds one past the struct flag."""
    schema = OmegaConf.get_type(node)
    known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        path = f"{prefix}.{key}" if prefix else str(key)
        if known is not None and key not in known:
            raise ValueError(unknown_setting(path, known))
        value = node._get_node(key)
        if known is not None and OmegaConf.is_dict(value):
            check_known_keys(value, path)


def typed(cfg: DictConfig) -> RunConfig:
    """``cfg`` as objects, each group's ``__post_init__`` checking what its type cannot say,
    after every key is found in its schema."""
    check_known_keys(cfg)
    return OmegaConf.to_object(cfg)
