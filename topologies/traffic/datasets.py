"""Real traffic matrices shipped with rlte, and the flat-matrix file loader.

* ``abilene-train`` / ``abilene-test``: two weeks of real 5-minute Abilene TMs (2016 each).
  Values are read in kbit/s like the topology's capacities, so MLU is link load ÷
  capacity in the dataset's own units.
* ``b4``: 36 real B4 TMs, in the topology file's capacity unit (Mbit/s assumed for both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..resources import DATA
from ..model import TopologyError
from ..readers._common import read_text
from .model import TrafficError, TrafficSequence


def read_flat_matrices(
    path: str | Path, num_nodes: int, *, unit_bps: float = 1.0, name: str | None = None,
    interval_s: float | None = None,
) -> TrafficSequence:
    """One flattened row-major N×N matrix per line (whitespace or comma separated)."""
    path = Path(path)
    try:
        text = read_text(path)
    except TopologyError as exc:
        raise TrafficError(str(exc)) from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != num_nodes * num_nodes:
            raise TrafficError(f"{path}:{lineno}: {len(fields)} values, expected {num_nodes}x{num_nodes}="
                               f"{num_nodes * num_nodes}")
        try:
            rows.append(np.array(fields, dtype=np.float64))
        except ValueError:
            bad = next(f for f in fields if not _is_float(f))
            raise TrafficError(f"{path}:{lineno}: {bad!r} is not a number") from None
        if not np.isfinite(rows[-1]).all() or (rows[-1] < 0).any():
            raise TrafficError(f"{path}:{lineno}: values must be finite and non-negative")
    if not rows:
        raise TrafficError(f"{path}: no traffic matrices in file")
    matrices = np.stack(rows).reshape(-1, num_nodes, num_nodes) * unit_bps
    return TrafficSequence(name or path.stem, matrices, interval_s, (f"source: {path.name}",))


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def abilene(split: str) -> TrafficSequence:
    """Real Abilene TMs: ``split`` is ``train`` or ``test`` (one week each, 5-minute steps)."""
    if split not in ("train", "test"):
        raise TrafficError(f"Abilene split must be 'train' or 'test', got {split!r}")
    return read_flat_matrices(DATA / "abilene" / f"AbileneTM.{split}.txt.gz", 12, unit_bps=1e3,
                              name=f"abilene-{split}", interval_s=300.0)


def b4() -> TrafficSequence:
    """36 real B4 TMs (12 nodes), in Mbit/s like the b4 topology's capacities."""
    return read_flat_matrices(DATA / "wan" / "B4.real_tms.txt", 12, unit_bps=1e6, name="b4")


REAL_DATASETS = {
    "abilene-train": lambda: abilene("train"),
    "abilene-test": lambda: abilene("test"),
    "b4": b4,
}
# Which topology each real dataset belongs to, and which sequence serves as its training data.
DATASET_TOPOLOGY = {"abilene-train": "abilene", "abilene-test": "abilene", "b4": "b4"}
DATASET_TRAINING = {"abilene-train": "abilene-train", "abilene-test": "abilene-train", "b4": "b4"}
# Datasets that directly continue another in time, so their first matrices have history there.
# (The step from the last training to the first test matrix changes demand by 17%, like an
# ordinary 5-minute step — median 12%, p90 16.5% — while unrelated weeks differ by 37-78%.)
DATASET_PRECEDED_BY = {"abilene-test": "abilene-train"}
