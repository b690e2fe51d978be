"""Which settings a run's config may hold, read off the config files themselves.

Hydra refuses `rlte train env.spred_weight=0.1` (no such key), but `+env.spred_weight=0.1`
adds the key and `rlte eval run=DIR eval.evrey=6` merges it into a plain config: without
this check either would run as if it had not been typed. A setting is known when some
config file that fits the run has it: the options of its group of the same kind
(``env.kind``; ``agent.algorithm`` and ``agent.policy``; a traffic dataset or a synthetic
model; ``backend.name``), or ``train.yaml`` for the top level. So a key that only another
kind of environment or agent reads (``env.flows_per_pair`` in split routing) is refused
too, since nothing would read it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).parent / "conf"
GROUPS = ("topology", "traffic", "env", "agent", "backend")

# Settings whose contents another checker owns: they are known as a whole, not key by key
# (SB3's constructor, the policy class and extra_training name what is wrong inside them).
OPEN_SETTINGS = {"agent.hyperparameters", "agent.policy_options", "agent.also_train_on", "eval.baselines"}
# The settings that pick an option's kind (and its name): every kind has them, set or defaulted.
KIND_SETTINGS = {"env.kind", "agent.name", "agent.algorithm", "agent.policy", "traffic.name", "backend.name",
                 "topology.name"}


def leaf_keys(node: object, prefix: str) -> Iterator[str]:
    """Dotted keys of a config's settings, stopping at the open ones."""
    if OmegaConf.is_dict(node) and prefix not in OPEN_SETTINGS:
        for key, value in node.items_ex(resolve=False):
            if key != "defaults":
                yield from leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix


def kind_of(group: str, option: DictConfig) -> tuple:
    """What decides which settings of ``group`` mean something: options of one kind share them."""
    if group == "env":
        return (option.get("kind"),)
    if group == "agent":
        return option.get("algorithm"), option.get("policy", "mlp")
    if group == "traffic":
        return ("dataset" in option,)
    if group == "backend":
        return (option.get("name"),)
    return ()


@functools.cache
def _group_options(group: str) -> tuple[DictConfig, ...]:
    """Every option of a config group, with its own defaults list merged in (ppo_costs_spread
    extends ppo_costs, gradient_gnn_mixed extends gradient_gnn and includes
    ``/training_mix/four_networks@_here_``)."""
    files = {path.stem: OmegaConf.load(path) for path in sorted((CONFIG_DIR / group).glob("*.yaml"))}

    def base(entry: str) -> DictConfig | None:
        if entry in files:
            return composed(entry)
        if entry.startswith("/") and entry.endswith("@_here_"):  # another group's file, merged in place
            return OmegaConf.load(CONFIG_DIR / f"{entry[1:-len('@_here_')]}.yaml")
        return None

    def composed(name: str) -> DictConfig:
        own = files[name]
        bases = [base(entry) for entry in own.get("defaults", []) if isinstance(entry, str)]
        return OmegaConf.merge(*(found for found in bases if found is not None), own)

    return tuple(composed(name) for name in files)


def known_keys(group: str, kind: tuple) -> set[str]:
    """The dotted settings (``group.key``) of the options of ``group`` whose kind is ``kind``."""
    return {key for option in _group_options(group) if kind_of(group, option) == kind
            for key in leaf_keys(option, group)}


@functools.cache
def top_level_keys() -> frozenset[str]:
    train = OmegaConf.load(CONFIG_DIR / "train.yaml")
    return frozenset(key for key in leaf_keys(train, "") if not key.startswith("hydra."))


def describe_kind(group: str, kind: tuple) -> str:
    """The kind of ``group``'s option, as the settings that pick it are written."""
    if group == "env":
        return f"env.kind={kind[0]}"
    if group == "agent":
        return f"agent.algorithm={kind[0]} agent.policy={kind[1]}"
    if group == "traffic":
        return "traffic from a real dataset" if kind[0] else "synthetic traffic"
    if group == "backend":
        return f"backend={kind[0]}"
    return "the run (train.yaml)"


def check_known_keys(cfg: DictConfig, keys: Iterable[str] | None = None) -> None:
    """Refuse a setting of ``cfg`` (or only those of ``keys``, e.g. the ones a user typed)
    that no config file of its kind has, naming it, the kind and the settings it does have."""
    known, kinds = set(top_level_keys()) | KIND_SETTINGS, {}
    for group in GROUPS:
        option = cfg.get(group)
        if OmegaConf.is_dict(option):
            kinds[group] = kind_of(group, option)
            known |= known_keys(group, kinds[group]) or set(leaf_keys(option, group))
    for key in sorted(set(leaf_keys(cfg, "")) if keys is None else keys):
        if key in known or any(key.startswith(f"{open_key}.") for open_key in OPEN_SETTINGS):
            continue
        group = key.partition(".")[0] if "." in key else ""
        siblings = sorted(k for k in known if k.partition(".")[0] == group and "." in k) if group else \
            sorted(k for k in known if "." not in k)
        last = {sibling.rpartition(".")[2]: sibling for sibling in siblings}  # compared without the shared prefix
        nearest = difflib.get_close_matches(key.rpartition(".")[2], list(last), n=1)
        hint = f"did you mean {last[nearest[0]]}? " if nearest else ""
        raise ValueError(f"unknown setting {key}: no config file for {describe_kind(group, kinds.get(group, ()))} "
                         f"has it, so nothing would read it; {hint}its settings: {', '.join(siblings)}")
