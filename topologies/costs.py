"""Link costs of utilization: Fortz and Thorup's convex piecewise-linear φ, cheap on idle
links and steeply dearer as a link nears the bottleneck. The balanced LP tie-break
(``agents.lp``) minimizes its sum among MLU-optimal routings, and split routing's spread
reward (``envs.split_routing``) charges its mean, both over utilization relative to the
optimal MLU.
"""

from __future__ import annotations

import numpy as np

# (slope, u where the piece starts, φ there), u relative to the optimal MLU: Fortz–Thorup's
# pieces up to the optimum (the LP never exceeds it; past it the last slope goes on).
FORTZ_THORUP_PIECES: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0), (3.0, 1 / 3, 1 / 3), (10.0, 2 / 3, 4 / 3), (70.0, 0.9, 11 / 3))
_SLOPES, _STARTS, _VALUES = np.array(FORTZ_THORUP_PIECES).T  # once: the spread reward calls φ every step


def fortz_thorup_cost(relative_utilization: np.ndarray) -> np.ndarray:
    """φ(u) elementwise, for utilization ``u`` ≥ 0 relative to the optimal MLU (1 at the optimum)."""
    u = np.asarray(relative_utilization, dtype=np.float64)
    return np.max(_SLOPES * (u[..., None] - _STARTS) + _VALUES, axis=-1)  # convex: the largest piece
