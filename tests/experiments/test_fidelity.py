"""Fidelity's report without a network: rankings compared with ties (hand-made samples)."""

from __future__ import annotations

import numpy as np

from experiments.fidelity import RANK_TOLERANCE, FidelityReport, Sample, same_order


def sample(tm: int, routing: str, twin_mlu: float, measured_mlu: float) -> Sample:
    return Sample(tm, routing, np.array([twin_mlu, 0.1]), np.array([measured_mlu, 0.1]), 1.0)


def test_routings_tied_in_the_twin_may_come_in_any_order_on_the_wire():
    # fat_tree:4 under gravity traffic: ECMP and the LP tie in the twin (0.45 against 0.45 + 3e-9)
    report = FidelityReport("fat_tree_4", [sample(0, "shortest_path", 0.90, 0.89), sample(0, "ecmp", 0.45, 0.452),
                                           sample(0, "lp", 0.45 + 3e-9, 0.448)])
    ranking = report.ranking()[0]
    assert ranking["twin"] == ["ecmp", "lp", "shortest_path"] and ranking["measured"] == ["lp", "ecmp", "shortest_path"]
    assert ranking["same"] and report.to_dict()["same_ranking"]
    assert report.to_dict()["ranking_tolerance"] == RANK_TOLERANCE


def test_a_real_reversal_is_still_a_different_ranking():
    report = FidelityReport("abilene", [sample(3, "ecmp", 0.60, 0.40), sample(3, "lp", 0.50, 0.70)])
    assert not report.ranking()[3]["same"] and not report.to_dict()["same_ranking"]
    # within the tolerance in either place, a swap is noise; past it in both, it is not
    assert same_order({"a": 1.0, "b": 1.015}, {"a": 1.015, "b": 1.0})
    assert not same_order({"a": 1.0, "b": 1.05}, {"a": 1.05, "b": 1.0})
    assert same_order({"a": 1.0, "b": 1.05}, {"a": 1.01, "b": 1.0})  # the wire cannot tell them apart
