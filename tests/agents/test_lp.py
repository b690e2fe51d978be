"""LP answers: hand-computed optimum, monotone in paths, bounded by the exact MCF, scale-invariant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.lp import mcf_optimum, optimal_mlu, path_lp, scale_to_optimal_mlu, scaled_with_optimum
from topologies import Link, Topology, fortz_thorup_cost, k_shortest_paths, load_topology, load_traffic, waxman

from tests.networks import square_with_spur, triangle


def test_hand_computed_split_on_the_triangle():
    tri = triangle()
    tm = np.zeros((3, 3))
    tm[0, 2] = 12e6
    # direct 4 Mb/s vs via b (bottleneck 5 Mb/s): x/4 = (12 - x)/5  ->  x = 16/3, MLU = 4/3
    solution = path_lp(k_shortest_paths(tri, 2), tm)
    assert solution.mlu == pytest.approx(4 / 3, rel=1e-7)
    p = k_shortest_paths(tri, 2).pair_index[(0, 2)]
    assert solution.ratios[p] == pytest.approx([4 / 9, 5 / 9], rel=1e-6)
    assert mcf_optimum(tri, tm).mlu == pytest.approx(4 / 3, rel=1e-7)
    assert path_lp(k_shortest_paths(tri, 1), tm).mlu == pytest.approx(3.0)  # all on the direct 4 Mb/s link


def test_no_demand_means_zero_mlu():
    tri = triangle()
    assert path_lp(k_shortest_paths(tri, 2), np.zeros((3, 3))).mlu == 0.0
    assert mcf_optimum(tri, np.zeros((3, 3))).mlu == 0.0


def test_bad_matrices_are_rejected():
    ps = k_shortest_paths(triangle(), 2)
    with pytest.raises(ValueError, match="3x3"):
        path_lp(ps, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        mcf_optimum(triangle(), -np.ones((3, 3)))
    with pytest.raises(ValueError, match="unknown tie_break"):
        path_lp(ps, np.ones((3, 3)), tie_break="random")


def test_the_callers_matrix_is_not_modified():
    tm = load_traffic("abilene-test").matrices[5]
    before = tm.copy()
    mcf_optimum(load_topology("abilene"), tm)
    np.testing.assert_array_equal(tm, before)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e3, 1e6])
def test_answers_do_not_depend_on_units(scale):
    """DESIGN.md: unscaled LPs (capacities ~1e10, demands ~1e6) gave wrong 'optimal' answers."""
    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    tm = load_traffic("abilene-test", topo).matrices[7]
    reference_path, reference_mcf = path_lp(ps, tm).mlu, mcf_optimum(topo, tm).mlu
    assert path_lp(ps, tm * scale).mlu == pytest.approx(reference_path * scale, rel=1e-6)
    assert mcf_optimum(topo, tm * scale).mlu == pytest.approx(reference_mcf * scale, rel=1e-6)
    tiny = tm * 1e-4  # demands ~1e4 bit/s against 1e10 capacities
    scaled_caps = Topology("x", topo.nodes, tuple(Link(l.src, l.dst, l.capacity_bps * 1e3, l.delay_s, l.weight)
                                                  for l in topo.links))
    assert mcf_optimum(scaled_caps, tiny).mlu == pytest.approx(reference_mcf * 1e-7, rel=1e-6)


def test_four_hop_shortest_paths_reach_the_exact_optimum_on_abilene():
    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    tms = load_traffic("abilene-test", topo).matrices
    for t in range(0, 2016, 200):
        assert path_lp(ps, tms[t]).mlu == pytest.approx(mcf_optimum(topo, tms[t]).mlu, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(5, 12), seed=st.integers(0, 5000))
def test_optimum_never_increases_with_more_paths_and_never_beats_mcf(n, seed):
    topo = waxman(n, seed)
    tm = load_traffic("bimodal", topo, count=1, seed=seed).matrices[0]
    exact = mcf_optimum(topo, tm).mlu
    previous = np.inf
    for k in (1, 2, 3, 5):
        value = path_lp(k_shortest_paths(topo, k), tm).mlu
        assert value <= previous * (1 + 1e-7)
        assert value >= exact * (1 - 1e-7)
        previous = value


def test_tie_breaks_keep_the_optimum_and_do_what_they_say():
    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    tm = load_traffic("abilene-train", topo).matrices[300]
    plain, shortest, balanced = (path_lp(ps, tm, tie_break=t) for t in ("none", "min_load", "balanced"))
    assert shortest.mlu == pytest.approx(plain.mlu, rel=2e-6)
    assert balanced.mlu == pytest.approx(plain.mlu, rel=2e-6)
    assert shortest.link_loads.sum() <= plain.link_loads.sum() * (1 + 1e-6)
    assert shortest.link_loads.sum() <= balanced.link_loads.sum() * (1 + 1e-6)
    u = lambda s: s.link_loads / topo.capacities  # noqa: E731
    # the balanced routing has fewer links near the maximum utilization
    assert (u(balanced) > 0.9 * plain.mlu).sum() <= (u(plain) > 0.9 * plain.mlu).sum()
    # and the least Fortz–Thorup cost of the three, as topologies.fortz_thorup_cost prices it
    cost = lambda s: fortz_thorup_cost(u(s) / plain.mlu).sum()  # noqa: E731
    assert cost(balanced) <= min(cost(plain), cost(shortest)) * (1 + 1e-6)
    assert cost(balanced) < cost(shortest)


def _split_of_a_to_c(topo, tie_break: str) -> np.ndarray:
    """a→c's split when a→e (0.9 Mb/s on its 1 Mb/s spur) fixes the MLU at 0.9 and a→c sends 4 Mb/s."""
    ps = k_shortest_paths(topo, 2)
    names = [node.name for node in topo.nodes]
    tm = np.zeros((5, 5))
    tm[names.index("a"), names.index("e")] = 0.9e6
    tm[names.index("a"), names.index("c")] = 4e6
    solution = path_lp(ps, tm, tie_break=tie_break)
    assert solution.mlu == pytest.approx(0.9, rel=2e-6)
    pair = ps.pair_index[(names.index("a"), names.index("c"))]
    paths = [[topo.links[e].dst for e in ps.paths[pair][k]] for k in range(2)]
    # order the split as (via b, via d)
    return solution.ratios[pair] if "b" in paths[0] else solution.ratios[pair][::-1]


def test_what_the_tie_breaks_leave_tied_is_split_evenly():
    """Both a→c paths have 2 hops and stay far under the MLU: min_load and balanced (whose
    Fortz–Thorup cost is linear there) are indifferent, and the split is even, not a vertex."""
    topo = square_with_spur()
    for tie_break in ("min_load", "balanced"):
        np.testing.assert_allclose(_split_of_a_to_c(topo, tie_break), [0.5, 0.5], atol=1e-6, err_msg=tie_break)
    # a-d at 1.5 Mb/s: via d carries at most 0.9 × 1.5 = 1.35 of the 4 Mb/s, so the evenest split
    # within the MLU is 0.6625 / 0.3375
    np.testing.assert_allclose(_split_of_a_to_c(square_with_spur(1.5e6), "min_load"), [0.6625, 0.3375], atol=1e-5)


def test_tie_broken_routings_do_not_depend_on_the_vertex_the_solver_returns(monkeypatch):
    """Interior point with crossover lands on another optimal vertex than the default
    simplex; the tie-broken routings (not ``none``'s) come out the same."""
    import functools

    import agents.lp

    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    tm = load_traffic("abilene-train", topo).matrices[300]
    default = {t: path_lp(ps, tm, tie_break=t).ratios for t in ("none", "min_load", "balanced")}
    monkeypatch.setattr(agents.lp, "_solve", functools.partial(agents.lp._solve, solver="ipm"))
    interior = {t: path_lp(ps, tm, tie_break=t).ratios for t in default}
    assert np.abs(interior["none"] - default["none"]).max() > 0.1  # the LP itself has ties here
    for t in ("min_load", "balanced"):  # as sharp as the QP's tolerance (see agents.lp._tie_break)
        np.testing.assert_allclose(interior[t], default[t], atol=1e-3, err_msg=t)


def test_scaling_to_a_target_optimal_mlu():
    topo = load_topology("nsfnet")
    seq = load_traffic("gravity", topo, count=6, seed=2)
    each = scale_to_optimal_mlu(topo, seq, 0.6, mode="each")
    np.testing.assert_allclose(optimal_mlu(topo, each.matrices), 0.6, rtol=1e-6)
    peak = scale_to_optimal_mlu(topo, seq, 0.6, mode="peak")
    assert optimal_mlu(topo, peak.matrices).max() == pytest.approx(0.6, rel=1e-6)
    mean = scale_to_optimal_mlu(topo, seq, 0.6, mode="mean")
    assert optimal_mlu(topo, mean.matrices).mean() == pytest.approx(0.6, rel=1e-6)
    scaled = scaled_with_optimum(topo, seq, 0.6, "peak")
    assert np.ndim(scaled.factor) == 0
    np.testing.assert_allclose(scaled.optimum, optimal_mlu(topo, scaled.sequence.matrices), rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        scale_to_optimal_mlu(topo, seq, 0.0)
    with pytest.raises(ValueError, match="unknown scaling mode"):
        scale_to_optimal_mlu(topo, seq, 0.5, mode="median")


def test_the_evenest_split_survives_a_stalled_interior_point_solve():
    """NSFNET gravity matrix 44 of `rlte compare`'s held-out sequence: Clarabel's defaults stall
    on its least-squares tie-break (InsufficientProgress); the retry settings solve it, and the
    routing is still MLU-optimal."""
    from experiments import compose
    from experiments.data import prepare

    data = prepare(compose("topology=nsfnet", "traffic=gravity"))
    matrix = data.test.matrices[44]
    solution = path_lp(data.pathset, matrix, tie_break="min_load")
    plain = path_lp(data.pathset, matrix)
    assert solution.mlu == pytest.approx(plain.mlu, rel=1e-5)
