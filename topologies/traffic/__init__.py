"""Traffic: matrix sequences, synthetic models, real datasets."""

from __future__ import annotations

from ..model import Topology
from .datasets import DATASET_PRECEDED_BY, DATASET_TOPOLOGY, DATASET_TRAINING, REAL_DATASETS, abilene, b4, read_flat_matrices
from .generators import MODELS, bimodal, diurnal, gravity, hotspot, uniform
from .model import TrafficError, TrafficSequence

__all__ = ["DATASET_PRECEDED_BY", "DATASET_TOPOLOGY", "DATASET_TRAINING", "MODELS", "REAL_DATASETS", "TrafficError",
           "TrafficSequence", "abilene", "b4", "bimodal", "diurnal", "gravity", "hotspot",
           "load_traffic", "read_flat_matrices", "uniform"]


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
    raise TrafficError(f"unknown traffic {name!r}; real: {', '.join(REAL_DATASETS)}; "
                       f"synthetic: {', '.join(MODELS)}")
