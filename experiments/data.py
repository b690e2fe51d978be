"""What a training or evaluation run learns from and is judged on, built from its config:
the topology and candidate paths, a training and a held-out traffic sequence (scaled as the
config says), and the exact optimum of every matrix — computed once and cached on disk, so
normalized rewards cost nothing during training.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from agents.drift import DriftDetector
from agents.lp import optimal_mlu
from topologies import (PathSet, Topology, TopologyError, TrafficEnvelope, TrafficError, TrafficSequence,
                        k_shortest_paths, load_topology, load_traffic)
from topologies.traffic import (DATASET_TRAINING, MODELS, REAL_DATASETS, check_dataset_topology,
                                training_and_held_out)

if TYPE_CHECKING:
    from agents.gnn import TrainingSet  # torch: imported where the graph learners train

HISTORY_PAD = 12  # held-out matrices carry this much preceding history when the data has it


def cache_dir() -> Path:
    return Path(os.environ.get("RLTE_CACHE", Path.home() / ".cache" / "rlte"))


def cached_optimum(topology: Topology, matrices: np.ndarray) -> np.ndarray:
    """Exact optimal MLU per matrix, cached by topology fingerprint and matrix bytes."""
    matrices = np.ascontiguousarray(matrices, dtype=np.float64)
    key = hashlib.sha256(topology.fingerprint().encode() + matrices.tobytes()).hexdigest()[:32]
    path = cache_dir() / "optima" / f"{key}.npy"
    if path.exists():
        cached = np.load(path)
        if cached.shape == (len(matrices),):
            return cached
    optimum = optimal_mlu(topology, matrices)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(partial, optimum)
    os.replace(partial, path)  # atomic: a concurrent run never reads half a file
    return optimum


@dataclass(frozen=True)
class ScoredSequence:
    """Matrices a run is judged on, each routed from the history before it: the first ``pad``
    matrices are that history only (not scored); ``optimum`` is the exact optimal MLU of
    every scored matrix."""

    traffic: TrafficSequence
    optimum: np.ndarray
    pad: int

    @property
    def name(self) -> str:
        return self.traffic.name

    @property
    def matrices(self) -> np.ndarray:
        return self.traffic.matrices

    def indices(self, every: int, limit: int | None = None) -> np.ndarray:
        """Indices into ``matrices`` to score: every ``every``-th scored matrix (or ``limit`` evenly spaced)."""
        scored = np.arange(self.pad, len(self.traffic))
        if limit is not None and limit < len(scored):
            return scored[np.linspace(0, len(scored) - 1, limit).round().astype(int)]
        return scored[::every]

    def optimum_at(self, indices: np.ndarray) -> np.ndarray:
        return self.optimum[np.asarray(indices) - self.pad]


@dataclass(frozen=True)
class RunData:
    topology: Topology
    pathset: PathSet
    train: TrafficSequence
    train_optimum: np.ndarray
    test: ScoredSequence                      # held out: the final table and the TensorBoard curves
    validation: ScoredSequence | None = None  # cut from the end of the training sequence: picks the checkpoint
    envelope: TrafficEnvelope | None = None   # the training traffic's, for the drift-guarded row (eval.guard)
    guard_skipped: str = ""                   # why there is no guarded row although eval.guard asked for one


DRIFT_WINDOW = 6


def fit_drift_detector(data: RunData, blocks: int) -> DriftDetector | None:
    """KS / JS drift statistics of the traffic the policy trains on (agents.drift), beside its
    envelope, over windows of 6 matrices (what bench/drift.py measured), fewer when ``blocks``
    such windows do not fit in the training traffic; None without an envelope or when not even
    windows of one matrix fit."""
    window = min(DRIFT_WINDOW, len(data.train.matrices) // blocks)
    if data.envelope is None or window < 1:
        return None
    return DriftDetector.fit(data.train, window=window, blocks=blocks, envelope=data.envelope)


def check_whole_number(key: str, value: object, minimum: int) -> None:
    """Refuse a setting that is not a whole number >= ``minimum``, naming its key (where int()
    would say only "invalid literal", or the run would fail later)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be a whole number >= {minimum}, got {value!r}")


EXTRA_TRAINING_KEYS = {"topology", "traffic", "count", "seed"}


@dataclass(frozen=True)
class ExtraEntry:
    """One entry of ``agent.also_train_on``, checked and loaded: its topology, its traffic's
    name and the training sequence drawn (or read) for it."""

    topology: Topology
    traffic: str
    count: int
    seed: int
    training: TrafficSequence
    label: str = ""  # what its TensorBoard scores are filed under (see extra_entries)

    @property
    def matrices(self) -> np.ndarray:
        return np.asarray(self.training.matrices, dtype=np.float64)


def extra_entries(specs: Sequence[Mapping], history: int, default_seed: int = 0) -> list[ExtraEntry]:
    """Each entry of ``agent.also_train_on``: a topology (catalog name, generator spec or file)
    and its traffic: a synthetic model, ``count`` matrices (default 200) drawn with ``seed``
    (default ``default_seed``), or a real dataset of that topology (all its matrices: count
    and seed are refused there). Each needs more than ``history`` matrices. Errors name the entry.
    Each entry's label is its topology's name, with the traffic's (and then the seed) after it
    where two entries share a topology (and traffic): the shortest no other entry has."""
    entries = []
    for i, spec in enumerate(specs):
        where = f"agent.also_train_on[{i}]"
        if OmegaConf.is_config(spec):
            spec = OmegaConf.to_container(spec)
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a mapping with topology and traffic, got {spec!r}")
        entry = "an entry has topology, traffic and optionally count, seed"
        if missing := {"topology", "traffic"} - set(spec):
            raise ValueError(f"{where}: missing {sorted(missing)} ({entry})")
        if unknown := set(spec) - EXTRA_TRAINING_KEYS:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} ({entry})")
        if str(spec["traffic"]) in REAL_DATASETS and (drawn := sorted({"count", "seed"} & set(spec))):
            raise ValueError(f"{where}: {drawn} draw a synthetic model's matrices; {spec['traffic']!r} is a real "
                             f"dataset and trains with all of its matrices (drop {' and '.join(drawn)})")
        count, seed = spec.get("count", 200), spec.get("seed", default_seed)
        check_whole_number(f"{where}.count", count, history + 1)
        check_whole_number(f"{where}.seed", seed, 0)
        try:
            topology = load_topology(str(spec["topology"]))
            traffic = load_traffic(str(spec["traffic"]), topology, count=count, seed=seed)
        except (TopologyError, TrafficError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if len(traffic) <= history:
            raise TrafficError(f"{where}: {traffic.name!r} has {len(traffic)} matrices; training on it needs "
                               f"more than env.history={history}")
        entries.append(ExtraEntry(topology, str(spec["traffic"]), count, seed, traffic))

    def labels(entry: ExtraEntry) -> tuple[str, str, str]:
        name = entry.topology.name
        return name, f"{name}-{entry.traffic}", f"{name}-{entry.traffic}-seed{entry.seed}"

    return [replace(entry, label=next(label for depth, label in enumerate(labels(entry))
                                      if depth == 2 or sum(labels(other)[depth] == label for other in entries) == 1))
            for entry in entries]


def training_set(entry: ExtraEntry, paths: int) -> TrainingSet:
    """The ``agents.gnn.TrainingSet`` of an ``agent.also_train_on`` entry, with ``paths`` candidate paths per pair."""
    from agents.gnn import TrainingSet  # torch: only the graph learners' training needs it

    return TrainingSet(k_shortest_paths(entry.topology, paths), entry.matrices,
                       cached_optimum(entry.topology, entry.matrices))


def extra_sets(specs: Sequence[Mapping], paths: int, history: int, default_seed: int = 0
               ) -> list[tuple[ExtraEntry, TrainingSet]]:
    """Each entry of ``agent.also_train_on`` (:func:`extra_entries`) with its
    ``agents.gnn.TrainingSet`` (``paths`` candidate paths per pair): what a several-topology
    run trains on and is scored on, loaded once."""
    return [(entry, training_set(entry, paths)) for entry in extra_entries(specs, history, default_seed)]


def extra_training(specs: Sequence[Mapping], paths: int, history: int, default_seed: int = 0) -> list[TrainingSet]:
    """The ``agents.gnn.TrainingSet`` of each entry of ``agent.also_train_on`` (:func:`extra_sets`)."""
    return [trained for _, trained in extra_sets(specs, paths, history, default_seed)]


def held_out_after(entry: ExtraEntry) -> tuple[TrafficSequence, TrafficSequence, bool] | None:
    """What an ``agent.also_train_on`` entry's run never trains on, as (history, held-out,
    contiguous), or None when there is nothing: a synthetic model's next ``count`` matrices
    (its draw of ``2·count`` from the same seed, as a run's own synthetic traffic is split;
    the same structure, new noise), or the real dataset held out after the entry's (Abilene's
    test week after ``abilene-train``; ``b4`` trains on all there is)."""
    if entry.traffic in MODELS:
        return training_and_held_out(entry.traffic, entry.topology, count=entry.count, seed=entry.seed)
    later = [name for name, training in DATASET_TRAINING.items() if training == entry.traffic and name != entry.traffic]
    return training_and_held_out(later[0], entry.topology) if later else None


def extra_held_out(extra: Sequence[tuple[ExtraEntry, TrainingSet]]) -> list[tuple[str, RunData]]:
    """(label, data) for each entry of :func:`extra_sets` that has held-out traffic
    (:func:`held_out_after`), ``data.test`` being that traffic, to score a several-topology run
    on every topology it trains on, under the entry's label (:func:`extra_entries`)."""
    scored = []
    for entry, trained in extra:
        if (split := held_out_after(entry)) is None:
            continue
        before, held_out, contiguous = split  # before: the held-out matrices' own past, for their history
        test = _with_history(before, held_out, cached_optimum(entry.topology, held_out.matrices), contiguous)
        scored.append((entry.label, RunData(entry.topology, trained.pathset, entry.training, trained.optimal_mlu,
                                            test)))
    return scored


def _with_history(before: TrafficSequence, scored: TrafficSequence, optimum: np.ndarray,
                  contiguous: bool) -> ScoredSequence:
    """``scored`` with up to HISTORY_PAD matrices of ``before`` in front when they are its past."""
    pad = min(HISTORY_PAD, len(before)) if contiguous else 0
    matrices = np.concatenate([before.matrices[len(before) - pad:], scored.matrices]) if pad else scored.matrices
    return ScoredSequence(TrafficSequence(scored.name, matrices, scored.interval_s, scored.notes), optimum, pad)


def split_validation(train: TrafficSequence, train_optimum: np.ndarray, count: int, contiguous: bool
                     ) -> tuple[TrafficSequence, np.ndarray, ScoredSequence | None]:
    """Cut the last ``count`` matrices off the training sequence as a validation sequence
    (0: none). Training never sees them; they pick the checkpoint, so the held-out
    sequence is not used to choose anything."""
    if count == 0:
        return train, train_optimum, None
    if not 0 < count <= len(train) // 2:
        raise TrafficError(f"eval.validation={count} must be between 0 and half the "
                           f"{len(train)} training matrices")
    rest = len(train) - count
    kept, cut = train[:rest], replace(train[rest:], name=f"{train.name} (validation)")
    return kept, train_optimum[:rest], _with_history(kept, cut, train_optimum[rest:], contiguous)


def load_run_topology(cfg: DictConfig) -> Topology:
    return load_topology(cfg.topology.get("spec") or cfg.topology.name)


def prepare(cfg: DictConfig) -> RunData:
    topology = load_run_topology(cfg)
    traffic = cfg.traffic
    target = traffic.target_mlu
    factor = 1.0
    # optimal MLU scales with the traffic: optima of matrices scaled here are derived, not solved again
    train_optimum = held_out_optimum = None
    if "dataset" in traffic:
        name = traffic.dataset
        if name not in REAL_DATASETS:
            raise TrafficError(f"unknown dataset {name!r}; real datasets: {', '.join(REAL_DATASETS)}")
        if traffic.split:  # one sequence: the first `split` matrices train
            check_dataset_topology(name, topology)
            held_out = load_traffic(name, topology)
            split = traffic.split
            if not 0 < split < len(held_out):
                raise TrafficError(f"split {split} must leave matrices on both sides of {len(held_out)}")
            train, held_out, contiguous = held_out[:split], held_out[split:], True
        else:
            train, held_out, contiguous = training_and_held_out(name, topology)
        if target:
            held_out_optimum = cached_optimum(topology, held_out.matrices)
            factor = target / float(held_out_optimum.max())
            held_out_optimum = held_out_optimum * factor
            train_optimum = cached_optimum(topology, train.matrices) * factor
    else:
        model = traffic.model or traffic.name
        if model not in MODELS:
            raise TrafficError(f"unknown traffic model {model!r}; choose one of {', '.join(MODELS)}")
        train, held_out, contiguous = training_and_held_out(model, topology, count=traffic.count, seed=cfg.seed)
        if target:  # each matrix to the target: synthetic matrices have no common scale to keep
            train = train.scaled(target / cached_optimum(topology, train.matrices))
            held_out = held_out.scaled(target / cached_optimum(topology, held_out.matrices))
            train_optimum, held_out_optimum = np.full(len(train), target), np.full(len(held_out), target)
    train = train.scaled(factor) if factor != 1.0 else train
    held_out = held_out.scaled(factor) if factor != 1.0 else held_out
    pathset = k_shortest_paths(topology, cfg.paths)
    if train_optimum is None:
        train_optimum = cached_optimum(topology, train.matrices)
    if held_out_optimum is None:
        held_out_optimum = cached_optimum(topology, held_out.matrices)
    test = _with_history(train, held_out, held_out_optimum, contiguous)
    train, train_optimum, validation = split_validation(train, train_optimum, cfg.eval.validation, contiguous)
    envelope, guard_skipped = None, ""
    if cfg.env.kind == "split_routing" and cfg.eval.guard:
        try:  # fitted on what the policy trains on
            envelope = TrafficEnvelope.fit(train, window=cfg.env.history, blocks=cfg.eval.guard_blocks)
        except TrafficError as exc:  # an optional row: too little traffic to calibrate it must not stop the run
            guard_skipped = f"no drift-guarded row: {exc}"
            warnings.warn(guard_skipped, stacklevel=2)
    return RunData(topology, pathset, train, train_optimum, test, validation, envelope, guard_skipped)
