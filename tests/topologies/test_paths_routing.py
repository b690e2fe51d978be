"""Candidate paths, the incidence matrix, and split-ratio routings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies import (Node, PathSet, Routing, RoutingError, Topology, TopologyError, bidirectional_links,
                        equal_cost_paths, fortz_thorup_cost, k_shortest_paths, load_topology, per_hop_ecmp_ratios, waxman)

from tests.networks import ecmp_fan


def test_k_shortest_paths_on_the_triangle(tri):
    ps = k_shortest_paths(tri, 2, "hop")
    assert ps.num_pairs == 6 and ps.k == 2
    p = ps.pair_index[(0, 2)]
    assert ps.paths[p] == ((4,), (0, 2))  # a→c direct, then a→b→c
    assert ps.node_path(p, 1) == ["a", "b", "c"]
    assert ps.hops[p].tolist() == [1, 2]
    np.testing.assert_allclose(ps.propagation_delay[p], [4e-3, 3e-3])
    by_latency = k_shortest_paths(tri, 2, "latency")
    assert by_latency.paths[p] == ((0, 2), (4,))  # 3 ms via b beats 4 ms direct


def test_incidence_matrix_entries(tri):
    ps = k_shortest_paths(tri, 2)
    dense = ps.incidence.toarray()
    assert dense.shape == (tri.num_links, ps.num_slots)
    for p, candidates in enumerate(ps.paths):
        for k in range(ps.k):
            column = dense[:, p * ps.k + k]
            expected = np.zeros(tri.num_links)
            if k < len(candidates):
                expected[list(candidates[k])] = 1
            np.testing.assert_array_equal(column, expected)


def test_masks_for_pairs_with_fewer_paths():
    abilene = load_topology("abilene")
    ps = k_shortest_paths(abilene, 4)
    # ATLAM5 hangs off ATLAng by one link: ATLAM5 -> ATLAng has exactly one simple path
    p = ps.pair_index[(0, 1)]
    assert ps.mask[p].tolist() == [True, False, False, False]
    assert np.isnan(ps.propagation_delay[p, 1])


def test_link_table_lists_each_paths_links_padded_past_the_last_link():
    ps = k_shortest_paths(load_topology("abilene"), 4)
    table, pad = ps.link_table, ps.topology.num_links
    assert table.shape == (ps.num_pairs, ps.k, max(len(path) for c in ps.paths for path in c))
    for p, candidates in enumerate(ps.paths):
        for k in range(ps.k):
            path = candidates[k] if k < len(candidates) else ()
            assert table[p, k, :len(path)].tolist() == list(path)
            assert (table[p, k, len(path):] == pad).all()
    assert not table.flags.writeable


def test_edge_disjoint_paths_share_no_link():
    topo = load_topology("geant")
    ps = k_shortest_paths(topo, 3, disjoint=True)
    for candidates in ps.paths:
        links = [l for path in candidates for l in path]
        assert len(links) == len(set(links))
    assert ps.mask.sum(axis=1).max() == 3


def test_single_shortest_path_ties_go_to_the_lowest_link_index():
    fan = ecmp_fan()
    ps = k_shortest_paths(fan, 1, pairs=[(0, 5)])
    equal = equal_cost_paths(fan, pairs=[(0, 5)])
    assert len(equal.paths[0]) == 3
    assert ps.paths[0][0] == equal.paths[0][0] == min(equal.paths[0])


def test_per_hop_ecmp_matches_the_hand_computation():
    fan = ecmp_fan()
    ps = equal_cost_paths(fan, pairs=[(0, 5)])
    shares = {tuple(ps.node_path(0, k)): r for k, r in enumerate(per_hop_ecmp_ratios(ps)[0])}
    assert shares == pytest.approx({("s", "a", "x", "t"): 0.5, ("s", "b", "x", "t"): 0.25, ("s", "b", "y", "t"): 0.25})


def test_ecmp_ratios_need_the_complete_equal_cost_set():
    # s→{a,b}→m→{c,d}→t has four equal paths; keeping the two "parallel" ones leaves the
    # crossing ones out, so routers' per-hop shares no longer add up to 1.
    edges = [("s", "a"), ("s", "b"), ("a", "m"), ("b", "m"), ("m", "c"), ("m", "d"), ("c", "t"), ("d", "t")]
    cross = Topology("cross", tuple(Node(n) for n in "sabmcdt"),
                     tuple(bidirectional_links([(u, v, 1.0, 0.0, 1.0) for u, v in edges])))
    full = equal_cost_paths(cross, pairs=[(0, 6)])
    assert len(full.paths[0]) == 4
    assert per_hop_ecmp_ratios(full)[0] == pytest.approx([0.25] * 4)
    parallel = [p for k, p in enumerate(full.paths[0]) if full.node_path(0, k)[1:4:2] in (["a", "c"], ["b", "d"])]
    with pytest.raises(RoutingError, match="not a complete equal-cost set"):
        per_hop_ecmp_ratios(PathSet(cross, full.pairs, (tuple(parallel),)))


def test_equal_cost_path_limit():
    with pytest.raises(TopologyError, match="more than 2 equal-cost"):
        equal_cost_paths(ecmp_fan(), max_paths=2)


def test_same_paths_is_equality_of_the_candidates_not_of_the_objects(tri):
    built, again = k_shortest_paths(tri, 2), k_shortest_paths(tri, 2)
    assert built is not again and built.same_paths(again) and again.same_paths(built)
    assert not built.same_paths(k_shortest_paths(tri, 1))
    assert not built.same_paths(k_shortest_paths(tri, 2, "latency"))  # another metric orders other paths first


def test_bad_path_requests(tri):
    with pytest.raises(TopologyError, match="positive integer"):
        k_shortest_paths(tri, 0)
    with pytest.raises(TopologyError, match="same origin and destination"):
        k_shortest_paths(tri, 1, pairs=[(1, 1)])
    with pytest.raises(TopologyError, match="outside"):
        k_shortest_paths(tri, 1, pairs=[(0, 9)])
    with pytest.raises(TopologyError, match="not a walk"):
        PathSet(tri, [(0, 2)], (((2,),),))
    with pytest.raises(TopologyError, match="repeats a node"):
        PathSet(tri, [(0, 2)], (((0, 1, 4),),))
    with pytest.raises(TopologyError, match="link index outside"):
        PathSet(tri, [(0, 2)], (((99,),),))
    with pytest.raises(TopologyError, match="do not fit"):
        k_shortest_paths(tri, 1).demands(np.zeros((4, 4)))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 14), seed=st.integers(0, 10_000), k=st.integers(1, 4))
def test_k_shortest_paths_are_valid_sorted_and_distinct(n, seed, k):
    topo = waxman(n, seed)
    ps = k_shortest_paths(topo, k)  # PathSet validates every path is a simple origin->destination walk
    hops = np.where(ps.mask, ps.hops, ps.hops.max() + 1)  # a finite filler: inf - inf warns in np.diff
    assert (np.diff(hops, axis=1)[ps.mask[:, 1:]] >= 0).all()  # non-decreasing length
    for candidates in ps.paths:
        assert len(set(candidates)) == len(candidates)
    single = k_shortest_paths(topo, 1)
    np.testing.assert_array_equal(single.hops[:, 0], ps.hops[:, 0])  # same shortest length


def test_routing_validation(tri):
    ps = k_shortest_paths(tri, 2)
    assert Routing.uniform(ps).ratios.sum(axis=1) == pytest.approx(np.ones(6))
    assert Routing.first_path(ps).ratios[:, 0].tolist() == [1.0] * 6
    ratios = Routing.uniform(ps).ratios.copy()
    ratios[2] = [0.7, 0.7]
    with pytest.raises(RoutingError, match=r"pair 2 \(b -> a\) split ratios sum to 1.4"):
        Routing(ps, ratios)
    ratios[2] = [1.5, -0.5]
    with pytest.raises(RoutingError, match="negative"):
        Routing(ps, ratios)
    ratios[2] = [np.nan, 1.0]
    with pytest.raises(RoutingError, match="non-finite"):
        Routing(ps, ratios)
    with pytest.raises(RoutingError, match=r"shape \(6, 3\)"):
        Routing(ps, np.ones((6, 3)) / 3)
    abilene = k_shortest_paths(load_topology("abilene"), 4)
    bad = Routing.uniform(abilene).ratios.copy()
    bad[0] = [0.5, 0.5, 0, 0]  # ATLAM5 -> ATLAng has only one path
    with pytest.raises(RoutingError, match="path slot it does not have"):
        Routing(abilene, bad)
    tiny = Routing.first_path(ps).ratios.copy()
    tiny[0] = [1 + 1e-9, -1e-9]  # solver noise is cleaned, not rejected
    assert Routing(ps, tiny).ratios[0].tolist() == [1.0, 0.0]


def test_fortz_thorup_cost_hand_computed_and_convex():
    """φ at its breakpoints (0, 1/3, 2/3, 9/10 of the optimum: 0, 1/3, 4/3, 11/3) and past the
    last (slope 70), elementwise on any shape."""
    u = np.array([0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 0.9, 1.0, 1.2])
    expected = [0.0, 1 / 6, 1 / 3, 1 / 3 + 3 / 6, 4 / 3, 11 / 3, 11 / 3 + 7, 11 / 3 + 21]
    np.testing.assert_allclose(fortz_thorup_cost(u), expected, atol=1e-12)
    np.testing.assert_allclose(fortz_thorup_cost(u.reshape(2, 4)), np.reshape(expected, (2, 4)), atol=1e-12)


@given(st.floats(0, 2), st.floats(0, 2), st.floats(0, 1))
def test_fortz_thorup_cost_is_convex_and_increasing(a, b, t):
    mix = fortz_thorup_cost(t * a + (1 - t) * b)
    assert mix <= t * fortz_thorup_cost(a) + (1 - t) * fortz_thorup_cost(b) + 1e-9
    assert fortz_thorup_cost(max(a, b)) >= fortz_thorup_cost(min(a, b))
