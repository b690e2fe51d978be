"""`rlte summary`: the tables of several runs (a multirun's seeds, or runs made apart) side by
side: each policy's median, p90 and max per run, their mean and spread over the runs, and in
how many runs it beat a reference policy (LP on the previous matrix by default) on the same
matrices.

Runs are pooled only when they differ in their seed alone: the same resolved config beside
the table (``config.yaml``, less ``seed`` and the settings that only pick which rows are
scored), and a table of the same agent, topology, traffic and backend on the same held-out
matrices (``tm_index``). A run trained with another setting, scored with another
``eval.every`` or on another network (``eval_<topology>_<traffic>.json``) is a group of its
own, titled with the settings that set it apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPORT_KEYS = ("agent", "topology", "traffic", "backend", "seed", "tm_index", "policies")
DEFAULT_REFERENCE = "lp_previous"
# config settings that do not make runs differ: the seed, and which rows (not how) are scored
NOT_POOLING_KEYS = {"seed", "threads", "eval.baselines", "eval.with_baselines"}


def flat_settings(config: object, prefix: str = "") -> dict[str, str]:
    """A run's config as dotted key -> value (JSON text, so lists compare and hash)."""
    if isinstance(config, dict):
        out: dict[str, str] = {}
        for key, value in config.items():
            out |= flat_settings(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: json.dumps(config, sort_keys=True)}


@dataclass(frozen=True)
class RunTable:
    """One table a run wrote (``eval.json``, or ``eval_<topology>_<traffic>.json``)."""

    path: Path
    agent: str
    topology: str
    traffic: str
    backend: str
    seed: int
    tm_index: tuple[int, ...]
    policies: dict[str, dict[str, float]]  # policy -> its summary (median, p90, max, ...)
    settings: frozenset[tuple[str, str]] = frozenset()  # the run's config, less NOT_POOLING_KEYS

    @property
    def group(self) -> tuple:
        return self.agent, self.topology, self.traffic, self.backend, self.tm_index, self.settings

    @classmethod
    def read(cls, path: Path) -> "RunTable":
        try:
            report = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a readable table: {exc}") from None
        if not isinstance(report, dict) or (missing := [key for key in REPORT_KEYS if key not in report]):
            raise ValueError(f"{path} is not an rlte eval table: it lacks "
                             f"{', '.join(missing) if isinstance(report, dict) else 'every key'}")
        policies = report["policies"]
        for name, row in policies.items():
            summary = row.get("summary") if isinstance(row, dict) else None
            if not isinstance(summary, dict) or not all(isinstance(summary.get(k), (int, float))
                                                         for k in ("median", "p90", "max")):
                raise ValueError(f"{path}: policy {name!r} has no summary with median, p90 and max")
        return cls(path, str(report["agent"]), str(report["topology"]), str(report["traffic"]),
                   str(report["backend"]), int(report["seed"]), tuple(int(i) for i in report["tm_index"]),
                   {name: row["summary"] for name, row in policies.items()}, run_settings(path.parent))


def run_settings(run_dir: Path) -> frozenset[tuple[str, str]]:
    """The settings of the run a table sits in (none for a table file outside a run directory)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    path = run_dir / "config.yaml"
    if not path.is_file():
        return frozenset()
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
    except (OSError, YAMLError, OmegaConfBaseException) as exc:
        raise ValueError(f"{path} is not a readable run config: {exc}") from None
    return frozenset((k, v) for k, v in flat_settings(config).items() if k not in NOT_POOLING_KEYS)


def table_files(paths: Iterable[Path]) -> list[Path]:
    """The tables under ``paths``: a table file itself, or every ``eval*.json`` in a run
    directory or below a folder of runs (a multirun's), in a stable order."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if path.is_file():
            found.append(path)
            continue
        tables = sorted(p for p in path.rglob("eval*.json") if (p.parent / "config.yaml").is_file())
        if not tables:
            raise ValueError(f"no run tables under {path}: a run directory holds config.yaml and eval.json "
                             "(rlte train writes them; runs are under runs/)")
        found += tables
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class PolicyAcrossRuns:
    """One policy's scores in every run of a group, in the group's run order."""

    runs: tuple[int, ...]      # index into the group's runs where the policy was scored
    median: np.ndarray
    p90: np.ndarray
    max: np.ndarray
    below_reference: int | None  # runs whose median is below the reference's in the same table

    @property
    def median_std(self) -> float:
        """The medians' sample standard deviation over the runs (0 for one run)."""
        return float(self.median.std(ddof=1)) if len(self.median) > 1 else 0.0

    def to_dict(self) -> dict:
        return {"runs": list(self.runs), "median": self.median.tolist(), "p90": self.p90.tolist(),
                "max": self.max.tolist(), "median_mean": float(self.median.mean()), "median_std": self.median_std,
                "p90_mean": float(self.p90.mean()), "max_worst": float(self.max.max()),
                "below_reference": self.below_reference}


@dataclass(frozen=True)
class Group:
    tables: tuple[RunTable, ...]
    policies: dict[str, PolicyAcrossRuns]
    reference: str
    distinct: dict[str, str] | None = None  # its settings that another group of the same agent sets otherwise

    def to_dict(self) -> dict:
        first = self.tables[0]
        return {"agent": first.agent, "topology": first.topology, "traffic": first.traffic,
                "backend": first.backend, "matrices": len(first.tm_index), "reference": self.reference,
                "distinct_settings": self.distinct,
                "runs": [{"table": str(t.path), "seed": t.seed} for t in self.tables],
                "policies": {name: p.to_dict() for name, p in self.policies.items()}}


def summarize(tables: Sequence[RunTable], reference: str = DEFAULT_REFERENCE) -> list[Group]:
    """Pool the tables that scored the same thing; per policy, its scores in each of them."""
    if not tables:
        raise ValueError("no run tables to summarize")
    if not any(reference in t.policies for t in tables):
        known = sorted({name for t in tables for name in t.policies})
        raise ValueError(f"no table scores the reference policy {reference!r}; its tables score "
                         f"{', '.join(known)}")
    by_group: dict[tuple, list[RunTable]] = {}
    for table in tables:
        by_group.setdefault(table.group, []).append(table)
    groups = []
    for members in by_group.values():
        members.sort(key=lambda t: (t.seed, str(t.path)))
        names = list(dict.fromkeys(name for t in members for name in t.policies))  # the tables' own order
        policies = {}
        for name in names:
            runs = tuple(i for i, t in enumerate(members) if name in t.policies)
            scores = {key: np.array([members[i].policies[name][key] for i in runs], dtype=float)
                      for key in ("median", "p90", "max")}
            compared = [i for i in runs if reference in members[i].policies]
            below = None if name == reference or not compared else sum(
                members[i].policies[name]["median"] < members[i].policies[reference]["median"] for i in compared)
            policies[name] = PolicyAcrossRuns(runs, scores["median"], scores["p90"], scores["max"], below)
        groups.append(Group(tuple(members), policies, reference))
    return [replace(group, distinct=distinct_settings(group, groups)) for group in groups]


def distinct_settings(group: Group, groups: Sequence[Group]) -> dict[str, str]:
    """The settings in which ``group`` differs from another group of the same agent."""
    own = dict(group.tables[0].settings)
    distinct: set[str] = set()
    for other in groups:
        if other is not group and other.tables[0].agent == group.tables[0].agent:
            theirs = dict(other.tables[0].settings)
            distinct |= {key for key in own.keys() | theirs.keys() if own.get(key) != theirs.get(key)}
    return {key: own.get(key, "unset") for key in sorted(distinct)}


def summary_json(groups: Sequence[Group]) -> dict:
    return {"groups": [group.to_dict() for group in groups]}


COLUMNS = ("policy", "runs", "median: mean ± sd", "median: range", "p90: mean", "max: worst")


def rows(group: Group) -> list[tuple[str, ...]]:
    """The printed table's rows: COLUMNS, then in how many runs the median was below the
    reference's ("k of n"; the per-run numbers are in the JSON)."""
    out = []
    for name, p in group.policies.items():
        spread = f" ± {p.median_std:.3f}" if len(p.median) > 1 else ""
        below = "—" if p.below_reference is None else f"{p.below_reference} of {len(p.runs)}"
        out.append((name, str(len(p.runs)), f"{p.median.mean():.3f}{spread}",
                    f"{p.median.min():.3f}–{p.median.max():.3f}", f"{p.p90.mean():.3f}", f"{p.max.max():.3f}", below))
    return out


def title(group: Group) -> str:
    first = group.tables[0]
    settings = "".join(f" {key}={value}" for key, value in (group.distinct or {}).items())
    seeds = ", ".join(str(t.seed) for t in group.tables)
    return (f"{first.agent}{settings} on {first.topology} / {first.traffic} ({first.backend}): normalized MLU on "
            f"{len(first.tm_index)} held-out matrices, " +
            (f"{len(group.tables)} runs (seeds {seeds})" if len(group.tables) > 1 else f"1 run (seed {seeds})"))
