"""Propagation delay from node coordinates.

Light in fibre travels at about c/1.47 ≈ 2.04e8 m/s; we use 2e8 m/s along the
great circle. Real fibre routes are longer than great circles, so these delays
are lower bounds, which is how TE papers that derive delay from Topology Zoo
coordinates use them.
"""

from __future__ import annotations

import math

from .model import Node

EARTH_RADIUS_M = 6_371_000.0
FIBRE_SPEED_M_PER_S = 2.0e8
DEFAULT_DELAY_S = 1e-3  # used when an endpoint has no coordinates; recorded in Topology.notes


def great_circle_m(a: Node, b: Node) -> float:
    """Haversine distance in metres between two nodes that both have coordinates."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a.latitude, a.longitude, b.latitude, b.longitude))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def propagation_delay_s(a: Node, b: Node, default_s: float = DEFAULT_DELAY_S) -> tuple[float, bool]:
    """(delay in seconds, whether it came from coordinates)."""
    if a.has_coordinates and b.has_coordinates:
        return great_circle_m(a, b) / FIBRE_SPEED_M_PER_S, True
    return default_s, False
