"""Small networks whose answers can be computed by hand."""

from __future__ import annotations

import numpy as np

from topologies import Node, Topology, bidirectional_links

GBPS = 1e9

A_TO_C = 4e6  # b/s: the only demand in the hand-computed cases


def triangle() -> Topology:
    """a-b 10 Mb/s 1 ms, b-c 5 Mb/s 2 ms, a-c 4 Mb/s 4 ms (both directions); weights 1, 1, 3.

    Link order: a→b, b→a, b→c, c→b, a→c, c→a.
    """
    edges = [("a", "b", 10e6, 1e-3, 1.0), ("b", "c", 5e6, 2e-3, 1.0), ("a", "c", 4e6, 4e-3, 3.0)]
    return Topology("triangle", (Node("a"), Node("b"), Node("c")), tuple(bidirectional_links(edges)))


def ecmp_fan() -> Topology:
    """s→{a, b}; a→x; b→{x, y}; x, y→t: three 3-hop s→t paths where per-hop ECMP gives
    s-a-x-t 1/2, s-b-x-t 1/4, s-b-y-t 1/4 (per-path equal split would give 1/3 each)."""
    edges = [("s", "a"), ("s", "b"), ("a", "x"), ("b", "x"), ("b", "y"), ("x", "t"), ("y", "t")]
    return Topology("fan", tuple(Node(n) for n in "sabxyt"),
                    tuple(bidirectional_links([(u, v, 1e9, 1e-3, 1.0) for u, v in edges])))


def square_with_spur(a_d_capacity: float = 10e6) -> Topology:
    """The square a-b-c-d-a (10 Mb/s; a-d ``a_d_capacity``) with a 1 Mb/s spur a-e.

    a→c has two 2-hop paths, a-b-c and a-d-c; a→e has only a-e, so a demand there fixes the
    MLU and leaves a→c's split free wherever it stays under it.
    """
    edges = [("a", "b", 10e6, 1e-3, 1.0), ("b", "c", 10e6, 1e-3, 1.0), ("c", "d", 10e6, 1e-3, 1.0),
             ("a", "d", a_d_capacity, 1e-3, 1.0), ("a", "e", 1e6, 1e-3, 1.0)]
    return Topology("square_with_spur", tuple(Node(n) for n in "abcde"), tuple(bidirectional_links(edges)))


def diamond() -> Topology:
    """A-B-D and A-C-D, plus a stub E hanging off D."""
    edges = [("A", "B"), ("B", "D"), ("A", "C"), ("C", "D"), ("D", "E")]
    return Topology("diamond", tuple(Node(n) for n in "ABCDE"),
                    tuple(bidirectional_links((a, b, 10 * GBPS, 0.001, 1.0) for a, b in edges)))


def ring(n: int = 4) -> Topology:
    names = [f"r{i}" for i in range(n)]
    return Topology("ring", tuple(Node(x) for x in names),
                    tuple(bidirectional_links((names[i], names[(i + 1) % n], GBPS, 0.0, 1.0) for i in range(n))))


def a_to_c_traffic(count: int = 4) -> np.ndarray:
    tm = np.zeros((count, 3, 3))
    tm[:, 0, 2] = A_TO_C
    return tm
