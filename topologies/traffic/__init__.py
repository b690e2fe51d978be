"""Traffic: matrix sequences, synthetic models, real datasets."""

from __future__ import annotations

from ..model import Topology
from .datasets import DATASET_PRECEDED_BY, DATASET_TOPOLOGY, DATASET_TRAINING, REAL_DATASETS, abilene, b4, read_flat_matrices
from .envelope import TrafficEnvelope
from .generators import MODELS, bimodal, diurnal, gravity, hotspot, uniform
from .model import TrafficError, TrafficSequence

__all__ = ["DATASET_PRECEDED_BY", "DATASET_TOPOLOGY", "DATASET_TRAINING", "MODELS", "REAL_DATASETS", "TrafficError",
           "TrafficEnvelope", "TrafficSequence", "abilene", "b4", "bimodal", "diurnal", "gravity", "hotspot",
           "check_dataset_topology", "load_traffic", "read_flat_matrices", "training_and_held_out", "uniform"]


def load_traffic(name: str, topology: Topology | None = None, *, count: int = 100, seed: int = 0,
                 **model_options) -> TrafficSequence:
    """A real dataset by name, or ``count`` matrices of a synthetic model for ``topology``."""
    if name in REAL_DATASETS:
        sequence = REAL_DATASETS[name]()
        if topology is not None:
            sequence.check_topology(topology)
        return sequence
    if name in MODELS:
        if topology is None:
            raise TrafficError(f"synthetic traffic {name!r} needs a topology")
        return MODELS[name](topology, count, seed, **model_options)
    raise _unknown(name)


def _unknown(name: str) -> TrafficError:
    return TrafficError(f"unknown traffic {name!r}; real: {', '.join(REAL_DATASETS)}; synthetic: {', '.join(MODELS)}")


def check_dataset_topology(name: str, topology: Topology) -> None:
    """Refuse a real dataset on a topology it was not measured on (sizes may match by chance)."""
    expected = DATASET_TOPOLOGY[name]
    if topology.name != expected:
        raise TrafficError(f"traffic {name!r} is measured on topology {expected!r}, not {topology.name!r}; "
                           f"use a synthetic model ({', '.join(MODELS)}) instead")


def training_and_held_out(name: str, topology: Topology, *, count: int = 100, seed: int = 0
                          ) -> tuple[TrafficSequence, TrafficSequence, bool]:
    """Traffic ``name`` for ``topology`` as (training, held-out, contiguous).

    A real dataset is the held-out sequence, paired with its training dataset; ``contiguous``
    says the held-out sequence directly continues the training one in time. A synthetic model
    draws ``2·count`` matrices from ``seed``: the first half trains (contiguous).
    """
    if name in REAL_DATASETS:
        check_dataset_topology(name, topology)
        training = DATASET_TRAINING[name]
        return (load_traffic(training, topology), load_traffic(name, topology),
                DATASET_PRECEDED_BY.get(name) == training)
    if name in MODELS:
        both = load_traffic(name, topology, count=2 * count, seed=seed)
        return both[:count], both[count:], True
    raise _unknown(name)
