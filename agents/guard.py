"""A learned policy guarded by a classic one: route with the fallback while the traffic has
drifted out of the envelope the policy was trained in (:class:`topologies.TrafficEnvelope`).

A policy that maps demands to routings has only ever seen its training traffic; when pairs
carry far more of the total than they ever did there, it extrapolates, where an LP on the
latest matrix adapts. The guard is a :class:`~agents.policy.RoutingPolicy` like any other, so
evaluation scores it alike.
"""

from __future__ import annotations

import numpy as np

from topologies import TrafficEnvelope

from .policy import LPPolicy, RoutingPolicy


class DriftGuard:
    """``policy`` on traffic inside ``envelope``, ``fallback`` while it has drifted out.

    The guarded policy decides every matrix, also while its answer is not used (shadow mode),
    so a stateful policy's own state stays what it would be without the guard. ``fell_back``
    records, per decision since the last :meth:`reset`, whether the fallback's routing was
    returned.
    """

    def __init__(self, policy: RoutingPolicy, fallback: RoutingPolicy, envelope: TrafficEnvelope,
                 name: str | None = None) -> None:
        if policy.clairvoyant or fallback.clairvoyant:
            raise ValueError("a drift guard routes from history: neither policy may see the matrix it routes")
        if not policy.pathset.same_paths(fallback.pathset):
            raise ValueError(f"policy {policy.name!r} and fallback {fallback.name!r} route different path sets")
        if envelope.num_nodes != policy.pathset.topology.num_nodes:
            raise ValueError(f"the envelope covers {envelope.num_nodes} nodes, topology "
                             f"{policy.pathset.topology.name!r} has {policy.pathset.topology.num_nodes}")
        self.policy, self.fallback, self.envelope = policy, fallback, envelope
        self.name = name or f"{policy.name}_guarded"
        self.pathset = policy.pathset
        self.history = max(policy.history, fallback.history, envelope.window)
        self.clairvoyant = False
        self.fell_back: list[bool] = []

    def reset(self) -> None:
        for inner in (self.policy, self.fallback):
            if hasattr(inner, "reset"):
                inner.reset()
        self.fell_back = []

    def route(self, history: np.ndarray) -> np.ndarray:
        if len(history) < self.history:
            raise ValueError(f"{self.name} routes from the last {self.history} matrices, got {len(history)}")
        own = self.policy.route(history[len(history) - max(self.policy.history, 1):])
        drifted = self.envelope.drifted(history)
        self.fell_back.append(drifted)
        if not drifted:
            return own
        return self.fallback.route(history[len(history) - max(self.fallback.history, 1):])


def lp_guard(policy: RoutingPolicy, envelope: TrafficEnvelope) -> DriftGuard:
    """``policy`` guarded by LP-previous (the ``min_load`` tie-break, as the baseline) within
    ``envelope`` (e.g. ``TrafficEnvelope.fit`` of its training traffic)."""
    return DriftGuard(policy, LPPolicy("lp_previous", policy.pathset, tie_break="min_load"), envelope)
