"""Twin versus emulation: the same traffic matrices under the same routings, in both.

Routings: shortest path, hop-by-hop ECMP and the path LP optimum, all expressed over
one candidate set (K shortest ∪ all equal-cost paths) so the controller carries each.
Every matrix is scaled so the worst routing's twin MLU is ``peak_mlu`` (default 0.9):
utilization is compared where nothing is dropped, which is what port counters measure.

Calibration: the twin leaves per-packet headers out; the emulation carries them. One
load factor α (measured ≈ α × twin, least squares) is fitted on the first half of the
samples and the errors are reported before and after on the other half.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from agents.lp import path_lp
from envs.backend import Backend, TwinBackend
from topologies import (PathSet, Routing, Topology, equal_cost_paths, k_shortest_paths, lift_ratios,
                        per_hop_ecmp_ratios, union_pathsets)

ROUTINGS = ("shortest_path", "ecmp", "lp")
# Two routings whose MLUs are within this share of each other are tied: their measured order is
# noise (the emulation's MLU is off the twin's by about this much after calibration)
RANK_TOLERANCE = 0.02


def same_order(twin: dict[str, float], measured: dict[str, float], tolerance: float = RANK_TOLERANCE) -> bool:
    """Whether the routings' MLUs rank them alike in the twin and measured: only a pair that both
    order, each by more than ``tolerance`` (relative to the larger), in opposite directions disagrees."""
    def ordered(values: dict[str, float], a: str, b: str) -> int:
        difference = values[a] - values[b]
        return 0 if abs(difference) <= tolerance * max(values[a], values[b]) else (1 if difference > 0 else -1)

    return all(ordered(twin, a, b) * ordered(measured, a, b) >= 0 for a, b in combinations(twin, 2))


@dataclass
class FidelitySettings:
    k: int = 4
    peak_mlu: float = 0.9
    routings: tuple[str, ...] = ROUTINGS

    def __post_init__(self) -> None:
        unknown = set(self.routings) - set(ROUTINGS)
        if unknown or not self.routings:
            raise ValueError(f"routings must be among {', '.join(ROUTINGS)}; got {sorted(unknown) or 'none'}")
        if not 0 < self.peak_mlu <= 1.0:
            raise ValueError(f"peak_mlu must be in (0, 1]: counters cannot measure offered load above capacity, "
                             f"got {self.peak_mlu}")


def fidelity_pathset(topology: Topology, k: int) -> PathSet:
    """The union the emulated network carries; its first K paths per pair are the K shortest."""
    return union_pathsets(k_shortest_paths(topology, k), equal_cost_paths(topology))


class Routings:
    """The compared routings over ``pathset``: the static ones computed once, the LP per matrix."""

    def __init__(self, pathset: PathSet, k: int) -> None:
        topo = pathset.topology
        self.pathset = pathset
        self.candidates = k_shortest_paths(topo, k)
        shortest, ecmp = k_shortest_paths(topo, 1), equal_cost_paths(topo)
        self.static = {
            "shortest_path": lift_ratios(Routing.first_path(shortest).ratios, shortest, pathset),
            "ecmp": lift_ratios(per_hop_ecmp_ratios(ecmp), ecmp, pathset),
        }

    def ratios(self, name: str, matrix: np.ndarray) -> np.ndarray:
        if name == "lp":
            solution = path_lp(self.candidates, matrix, tie_break="min_load")
            return lift_ratios(solution.ratios, self.candidates, self.pathset)
        if name not in self.static:
            raise ValueError(f"unknown routing {name!r}")
        return self.static[name]


@dataclass
class Sample:
    tm_index: int
    routing: str
    twin: np.ndarray      # (E,) utilization
    measured: np.ndarray  # (E,)
    delivered_fraction: float


@dataclass
class FidelityReport:
    topology: str
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def errors(self, samples: list[Sample], load_factor: float = 1.0) -> dict:
        twin = np.concatenate([s.twin for s in samples]) * load_factor
        measured = np.concatenate([s.measured for s in samples])
        absolute = np.abs(measured - twin)
        mlu_twin = np.array([s.twin.max() * load_factor for s in samples])
        mlu_measured = np.array([s.measured.max() for s in samples])
        mlu_error = np.abs(mlu_measured - mlu_twin) / mlu_twin
        return {"utilization_mae": float(absolute.mean()), "utilization_p95": float(np.quantile(absolute, 0.95)),
                "mlu_relative_error_mean": float(mlu_error.mean()),
                "mlu_relative_error_max": float(mlu_error.max())}

    def ranking(self, tolerance: float = RANK_TOLERANCE) -> dict:
        """Per matrix: routings ordered by MLU in the twin and in the emulation, and whether the
        orders agree with MLUs within ``tolerance`` of each other taken as ties (:func:`same_order`)."""
        by_tm: dict[int, list[Sample]] = {}
        for s in self.samples:
            by_tm.setdefault(s.tm_index, []).append(s)
        out = {}
        for t, samples in by_tm.items():
            twin = [s.routing for s in sorted(samples, key=lambda s: s.twin.max())]
            measured = [s.routing for s in sorted(samples, key=lambda s: s.measured.max())]
            same = same_order({s.routing: float(s.twin.max()) for s in samples},
                              {s.routing: float(s.measured.max()) for s in samples}, tolerance)
            out[t] = {"twin": twin, "measured": measured, "same": same}
        return out

    def calibration(self) -> dict:
        """Fit α on the first half of the samples, report before/after on the second (all, if one sample)."""
        half = len(self.samples) // 2
        fit, check = (self.samples[:half], self.samples[half:]) if half else (self.samples, self.samples)
        twin = np.concatenate([s.twin for s in fit])
        measured = np.concatenate([s.measured for s in fit])
        alpha = float(twin @ measured / (twin @ twin))
        return {"load_factor": alpha, "fitted_on": len(fit), "checked_on": len(check),
                "held_out": bool(half), "before": self.errors(check), "after": self.errors(check, alpha)}

    def to_dict(self) -> dict:
        ranking = self.ranking()
        return {
            "topology": self.topology,
            "notes": self.notes,
            "errors": self.errors(self.samples),
            "same_ranking": all(r["same"] for r in ranking.values()),
            "ranking_tolerance": RANK_TOLERANCE,  # relative MLU difference counted as a tie
            "ranking": {str(t): r for t, r in ranking.items()},
            "calibration": self.calibration(),
            "samples": [{"tm_index": s.tm_index, "routing": s.routing, "twin_mlu": float(s.twin.max()),
                         "measured_mlu": float(s.measured.max()), "delivered_fraction": s.delivered_fraction,
                         "twin_utilization": s.twin.round(5).tolist(),
                         "measured_utilization": s.measured.round(5).tolist()} for s in self.samples],
        }


def run_fidelity(pathset: PathSet, matrices: np.ndarray, tm_indices: list[int], emulated: Backend,
                 settings: FidelitySettings, progress=None) -> FidelityReport:
    """``emulated`` must carry ``pathset`` (a MininetBackend built on it)."""
    topo = pathset.topology
    twin = TwinBackend(pathset)
    report = FidelityReport(topo.name)
    candidates = Routings(pathset, settings.k)
    for t in tm_indices:
        matrix = np.asarray(matrices[t], dtype=np.float64)
        demands = pathset.demands(matrix)
        routings = {name: candidates.ratios(name, matrix) for name in settings.routings}
        # utilization is linear in the demands: predict once, then scale with them
        predicted = {name: twin.utilization(demands, ratios) for name, ratios in routings.items()}
        scale = settings.peak_mlu / max(utilization.max() for utilization in predicted.values())
        for name, ratios in routings.items():
            measured = emulated.run(demands * scale, ratios)
            report.samples.append(Sample(t, name, predicted[name] * scale, measured.utilization,
                                         measured.delivered_fraction))
            if progress is not None:
                progress()
    return report
