"""`rlte compare`: how congested is a network under every baseline and the optimum?

Resolves a topology and traffic, runs the standard baseline set through the fluid twin on
every ``every``-th matrix, normalizes by the exact multicommodity-flow optimum and returns
a :class:`CompareReport` (the JSON that ``--out`` writes).

Training data for ``lp_mean``: a real dataset's designated training week; for synthetic
models, ``count`` more matrices of the same process generated before the evaluated ones
(one sequence of 2×count, split in half), so the model's structure is shared.

History: when the training matrices directly precede the evaluated ones in time (synthetic
sequences, and ``abilene-test`` after ``abilene-train``), policies that need the previous
matrix can route index 0 too; otherwise evaluation starts at the first index with history.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from agents import baseline_policies, evaluate_policies, first_index, scaled_with_optimum
from topologies import Topology, TrafficSequence, load_topology
from topologies.traffic import training_and_held_out


class PolicyResult(BaseModel):
    mlu: list[float]
    normalized_mlu: list[float]
    decision_time_s: list[float]
    summary: dict[str, float]


class CompareReport(BaseModel):
    """The JSON written by ``rlte compare --out``; the first five keys are a stable interface."""

    topology: str
    traffic: str
    tm_index: list[int]
    optimal_mlu: list[float]
    policies: dict[str, PolicyResult]
    topology_fingerprint: str
    settings: dict[str, object]
    notes: list[str]


@dataclass(frozen=True)
class CompareSettings:
    topology: str = "abilene"
    traffic: str = "abilene-test"
    every: int = 1
    start: int | None = None
    paths: int = 4
    count: int = 100
    seed: int = 0
    target_mlu: float | None = None
    scale_mode: str = "auto"


@dataclass(frozen=True)
class ResolvedTraffic:
    evaluated: TrafficSequence
    training: TrafficSequence
    contiguous: bool                   # training directly precedes the evaluated matrices in time
    optimum: np.ndarray | None = None  # optimal MLU of every evaluated matrix, when already known


def resolve_traffic(settings: CompareSettings, topology: Topology) -> ResolvedTraffic:
    """The matrices to evaluate and their training matrices, scaled when a target MLU is set."""
    training, evaluated, contiguous = training_and_held_out(settings.traffic, topology, count=settings.count,
                                                            seed=settings.seed)
    if settings.target_mlu is None:
        return ResolvedTraffic(evaluated, training, contiguous)
    mode = settings.scale_mode
    if mode == "auto":
        mode = "peak" if evaluated.interval_s is not None else "each"
    scaled = scaled_with_optimum(topology, evaluated, settings.target_mlu, mode)
    if mode == "each":
        training = scaled_with_optimum(topology, training, settings.target_mlu, mode).sequence
    else:  # the same factor keeps training and evaluated matrices on one scale
        training = training.scaled(scaled.factor, scaled.sequence.notes[-1])
    return ResolvedTraffic(scaled.sequence, training, contiguous, scaled.optimum)


def run_compare(settings: CompareSettings, progress: Callable[[str, int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> CompareReport:
    """Evaluate the baseline set; ``on_total(units)`` announces the work, ``progress`` reports it."""
    if settings.every < 1:
        raise ValueError(f"--every must be >= 1, got {settings.every}")
    if settings.count < 1:
        raise ValueError(f"--count must be >= 1, got {settings.count}")
    topology = load_topology(settings.topology)
    traffic = resolve_traffic(settings, topology)
    evaluated, training, contiguous = traffic.evaluated, traffic.training, traffic.contiguous
    policies = baseline_policies(topology, training.matrices, k=settings.paths)
    # With contiguous training data the evaluated matrices continue it: prepend it as history.
    offset = len(training) if contiguous else 0
    timeline = np.concatenate([training.matrices, evaluated.matrices]) if contiguous else evaluated.matrices
    earliest = max(first_index(policies) - offset, 0)
    start = earliest if settings.start is None else settings.start
    if start < earliest:
        raise ValueError(f"--start {start} is too early: lp_previous needs the matrix before it")
    indices = np.arange(start, len(evaluated), settings.every)
    if len(indices) == 0:
        raise ValueError(f"no matrices to evaluate: {len(evaluated)} matrices, start {start}")
    known = None if traffic.optimum is None else traffic.optimum[indices]
    if on_total:  # one unit per matrix per policy, plus the optimum when it must be solved
        on_total(len(indices) * (len(policies) + (known is None)))
    optimum, scores = evaluate_policies(policies, timeline, indices + offset, optimal=known, progress=progress)
    return CompareReport(
        topology=topology.name,
        traffic=settings.traffic,
        tm_index=indices.tolist(),
        optimal_mlu=optimum.tolist(),
        policies={
            name: PolicyResult(mlu=s.mlu.tolist(), normalized_mlu=s.normalized_mlu.tolist(),
                               decision_time_s=s.decision_time_s.tolist(), summary=s.summary())
            for name, s in scores.items()
        },
        topology_fingerprint=topology.fingerprint(),
        settings={**settings.__dict__, "start": int(start), "path_metric": "hop",
                  "history_from_training": contiguous},
        notes=list(topology.notes) + list(evaluated.notes),
    )


def write_json_atomically(path: Path, payload: str) -> None:
    """Write via a temporary file and rename, so a failure never leaves a half-written file."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_json(report: CompareReport) -> str:
    return json.dumps(report.model_dump(), indent=1)
