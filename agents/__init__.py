"""Routing decisions: the LP optimum, classic baselines, and (later) learned agents.

Every policy answers one question — "given the traffic history, give a routing" — through
:class:`agents.policy.RoutingPolicy`, so evaluation treats baselines and agents alike.
"""

from .evaluation import PolicyScores, evaluate_policies, first_index
from .guard import DriftGuard, lp_guard
from .lp import (LPError, LPSolution, mcf_optimum, optimal_mlu, path_lp, scale_to_optimal_mlu,
                 scaled_with_optimum)
from .policy import LPPolicy, RoutingPolicy, StaticPolicy, baseline_policies, ecmp, lp_on_mean, ospf, shortest_path

__all__ = ["DriftGuard", "LPError", "LPPolicy", "LPSolution", "PolicyScores", "RoutingPolicy", "StaticPolicy",
           "baseline_policies", "ecmp", "evaluate_policies", "first_index", "lp_guard", "lp_on_mean", "mcf_optimum",
           "optimal_mlu", "ospf", "path_lp", "scale_to_optimal_mlu", "scaled_with_optimum", "shortest_path"]
