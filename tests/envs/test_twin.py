"""The fluid twin against hand-computed cases, the LP's own loads, and the torch twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.lp import path_lp
from envs.twin import FluidTwin, QueueModel
from envs.twin_torch import TorchFluidTwin
from topologies import k_shortest_paths, load_topology, waxman

from tests.networks import triangle

A, B, C = 0, 1, 2
AB, BA, BC, CB, AC, CA = range(6)  # link order of networks.triangle()


def triangle_case(demand_ac: float, ratios_ac, demand_bc: float = 0.0):
    tri = triangle()
    ps = k_shortest_paths(tri, 2)  # pair (a, c): slot 0 direct a→c, slot 1 a→b→c
    tm = np.zeros((3, 3))
    tm[A, C], tm[B, C] = demand_ac, demand_bc
    ratios = np.zeros((ps.num_pairs, 2))
    ratios[:, 0] = 1.0
    ratios[ps.pair_index[(A, C)]] = ratios_ac
    return ps, tm, ratios


def test_loads_utilization_delay_and_drops_by_hand():
    ps, tm, ratios = triangle_case(12e6, [0.25, 0.75])
    result = FluidTwin(ps, QueueModel(packet_bits=12_000, buffer_s=0.05)).evaluate(tm, ratios)
    loads = np.zeros(6)
    loads[[AC, AB, BC]] = [3e6, 9e6, 9e6]
    np.testing.assert_allclose(result.link_loads[0], loads)
    np.testing.assert_allclose(result.utilization[0][[AB, BC, AC]], [0.9, 1.8, 0.75])
    assert result.mlu[0] == pytest.approx(1.8)
    # direct: 4 ms + M/M/1 wait 0.75/0.25 × 12000/4e6 = 9 ms
    # via b: 1 ms + 0.9/0.1 × 12000/1e7 = 10.8 ms, then 2 ms + full 50 ms buffer (overloaded)
    p = ps.pair_index[(A, C)]
    np.testing.assert_allclose(result.path_delay[0, p], [13e-3, 63.8e-3])
    assert result.pair_delay[0, p] == pytest.approx(0.25 * 13e-3 + 0.75 * 63.8e-3)
    # only b→c is over capacity: 9 arrive, 5 leave
    assert result.link_drops[0, BC] == pytest.approx(4e6)
    assert result.carried_loads[0, BC] == pytest.approx(5e6)
    assert result.delivered[0, p] == pytest.approx(8e6)
    assert (result.throughput[0], result.drops[0]) == pytest.approx((8e6, 4e6))
    assert result.converged


def test_traffic_dropped_upstream_never_arrives_downstream():
    ps, tm, ratios = triangle_case(30e6, [0.0, 1.0])
    result = FluidTwin(ps).evaluate(tm, ratios)
    # a→b passes 10 of 30; b→c receives 10 (not 30) and passes 5
    assert result.link_drops[0, AB] == pytest.approx(20e6)
    assert result.link_drops[0, BC] == pytest.approx(5e6)
    assert result.throughput[0] == pytest.approx(5e6)
    assert result.utilization[0, BC] == pytest.approx(6.0)  # offered utilization still counts all 30


def test_competing_flows_share_a_bottleneck_in_proportion_to_arrival():
    ps, tm, ratios = triangle_case(30e6, [0.0, 1.0], demand_bc=10e6)
    result = FluidTwin(ps).evaluate(tm, ratios)
    # b→c receives 10 from a (after a→b) + 10 from b: passes 5/20 of each
    assert result.delivered[0, ps.pair_index[(A, C)]] == pytest.approx(2.5e6)
    assert result.delivered[0, ps.pair_index[(B, C)]] == pytest.approx(2.5e6)
    assert result.link_drops[0, BC] == pytest.approx(15e6)


def test_shared_routing_and_per_matrix_routings_agree_and_single_matrix_is_unbatched():
    ps, tm, ratios = triangle_case(12e6, [0.25, 0.75], demand_bc=2e6)
    twin = FluidTwin(ps)
    batch = np.stack([tm, 2 * tm, 0.5 * tm])
    shared = twin.link_loads(batch, ratios)
    each = twin.link_loads(batch, np.stack([ratios] * 3))
    np.testing.assert_allclose(shared, each)
    np.testing.assert_allclose(shared[1], 2 * shared[0])
    assert np.ndim(twin.mlu(tm, ratios)) == 0 and twin.link_loads(tm, ratios).shape == (6,)
    assert twin.mlu(batch, ratios).shape == (3,)


def test_input_errors_name_the_shapes():
    ps, tm, ratios = triangle_case(1.0, [1.0, 0.0])
    twin = FluidTwin(ps)
    with pytest.raises(ValueError, match="N=3"):
        twin.mlu(np.zeros((4, 4)), ratios)
    with pytest.raises(ValueError, match=r"split ratios must be \(6, 2\)"):
        twin.mlu(tm, ratios[:, :1])
    with pytest.raises(ValueError, match=r"\(2, \*\(6, 2\)\)"):
        twin.mlu(np.stack([tm, tm]), np.stack([ratios] * 3))


def test_twin_reproduces_the_lp_solutions_own_loads():
    topo = load_topology("abilene")
    ps = k_shortest_paths(topo, 4)
    from topologies import load_traffic

    tm = load_traffic("abilene-test", topo).matrices[100]
    for tie_break in ("none", "min_load", "balanced"):
        solution = path_lp(ps, tm, tie_break=tie_break)
        twin = FluidTwin(ps)
        np.testing.assert_allclose(twin.link_loads(tm, solution.ratios), solution.link_loads, rtol=1e-9)
        assert twin.mlu(tm, solution.ratios) == pytest.approx(solution.mlu, rel=1e-9)


def random_case(n: int, seed: int, batch: int, k: int = 3):
    rng = np.random.default_rng(seed)
    topo = waxman(n, seed, capacity_bps=1e6)
    ps = k_shortest_paths(topo, k)
    tms = rng.exponential(3e4, (batch, n, n)) * (rng.random((batch, n, n)) < 0.7)
    ratios = rng.random((batch, ps.num_pairs, ps.k)) * ps.mask
    ratios /= ratios.sum(-1, keepdims=True)
    return ps, tms, ratios


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 10), seed=st.integers(0, 1000), batch=st.integers(1, 4))
def test_flow_conservation_and_bounds(n, seed, batch):
    ps, tms, ratios = random_case(n, seed, batch)
    result = FluidTwin(ps).evaluate(tms, ratios)
    demand = result.demands.sum(-1)
    np.testing.assert_allclose(demand - result.throughput, result.link_drops.sum(-1), rtol=1e-7, atol=1e-3)
    assert (result.delivered <= result.demands * (1 + 1e-9) + 1e-9).all()
    assert (result.carried_loads <= ps.topology.capacities * (1 + 1e-9)).all()
    no_overload = result.mlu <= 1.0
    np.testing.assert_allclose(result.drops[no_overload], 0.0, atol=1e-6)
    assert result.converged


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 9), seed=st.integers(0, 1000), batch=st.integers(1, 3))
def test_numpy_torch_and_sparse_twins_agree(n, seed, batch):
    ps, tms, ratios = random_case(n, seed, batch)
    reference = FluidTwin(ps).evaluate(tms, ratios)
    for twin in (FluidTwin(ps, dense_limit=0), TorchFluidTwin(ps), TorchFluidTwin(ps, dense_limit=0)):
        result = twin.evaluate(tms, ratios)
        for field in ("link_loads", "utilization", "mlu", "path_delay", "pair_delay", "carried_loads",
                      "link_drops", "delivered", "throughput", "drops"):
            got = getattr(result, field)
            got = got.numpy() if isinstance(got, torch.Tensor) else got
            np.testing.assert_allclose(got, getattr(reference, field), rtol=1e-9, atol=1e-6, err_msg=field)
        shared = twin.link_loads(tms, ratios[0])
        shared = shared.numpy() if isinstance(shared, torch.Tensor) else shared
        np.testing.assert_allclose(shared, FluidTwin(ps).link_loads(tms, ratios[0]), rtol=1e-9, atol=1e-6)


# dense_limit=0: the sparse products, COO under autograd and CSR without (envs.twin_torch.SparseProduct)
@pytest.mark.parametrize("dense_limit", [None, 0], ids=["dense", "sparse"])
def test_torch_gradient_of_mlu_is_the_bottleneck_incidence(dense_limit):
    ps, tms, ratios = random_case(8, 3, 1)
    twin = TorchFluidTwin(ps) if dense_limit is None else TorchFluidTwin(ps, dense_limit=dense_limit)
    r = torch.tensor(ratios[0], requires_grad=True)
    mlu = twin.mlu(tms[0], r)
    mlu.backward()
    util = FluidTwin(ps).link_loads(tms[0], ratios[0]) / ps.topology.capacities
    bottleneck = int(np.argmax(util))
    demand = ps.demands(tms[0])
    expected = ps.incidence[bottleneck].toarray().reshape(ps.num_pairs, ps.k) * demand[:, None]
    expected /= ps.topology.capacities[bottleneck]
    np.testing.assert_allclose(r.grad.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("dense_limit", [None, 0], ids=["dense", "sparse"])
def test_torch_gradient_through_drops_matches_finite_differences(dense_limit):
    # Direct path has headroom (3 of 4 Mb/s), the path via b is cut to 5 at b→c: shifting
    # traffic to the direct path adds it all to throughput, so d(throughput)/d(shift) = 12e6.
    ps, tm, ratios = triangle_case(12e6, [0.25, 0.75])
    twin = TorchFluidTwin(ps) if dense_limit is None else TorchFluidTwin(ps, dense_limit=dense_limit)
    r = torch.tensor(ratios, requires_grad=True)
    twin.evaluate(tm, r).throughput.sum().backward()
    p = ps.pair_index[(A, C)]
    eps = 1e-4
    shifted = ratios.copy()
    shifted[p] += [eps, -eps]
    base = FluidTwin(ps).evaluate(tm, ratios).throughput[0]
    numeric = (FluidTwin(ps).evaluate(tm, shifted).throughput[0] - base) / eps
    analytic = float(r.grad[p, 0] - r.grad[p, 1])
    assert numeric == pytest.approx(12e6, rel=1e-6)
    assert analytic == pytest.approx(numeric, rel=1e-6)


def test_long_path_fallback_gives_the_same_drops(monkeypatch):
    """Long paths make the sparse upstream operator too big; the running-sum fallback must agree."""
    import envs.twin as twin_module

    ps, tms, ratios = random_case(9, 11, 3)
    tms = tms * 40  # overload links so the drop fixed point runs
    with_operator = FluidTwin(ps).evaluate(tms, ratios)
    monkeypatch.setattr(twin_module, "UPSTREAM_LIMIT", 0)
    for twin in (FluidTwin(ps), TorchFluidTwin(ps)):
        assert twin._UP is None
        result = twin.evaluate(tms, ratios)
        delivered = result.delivered.numpy() if isinstance(result.delivered, torch.Tensor) else result.delivered
        np.testing.assert_allclose(delivered, with_operator.delivered, rtol=1e-10)
    assert (with_operator.drops > 0).all()


def test_float32_twin_matches_float64_to_single_precision():
    ps, tms, ratios = random_case(8, 5, 4)
    exact = FluidTwin(ps).mlu(tms, ratios)
    fast = FluidTwin(ps, dtype=np.float32).mlu(tms, ratios)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=1e-5)


@pytest.mark.parametrize("make", [FluidTwin, TorchFluidTwin], ids=["numpy", "torch"])
def test_drops_only_for_overloaded_matrices_in_memory_bounded_chunks(monkeypatch, make):
    """A batch mixing overloaded and normal matrices, split into one-matrix chunks, gives
    the same answer as evaluating each matrix alone."""
    import envs.twin as twin_module

    ps, tms, ratios = random_case(8, 21, 5)
    tms = tms * np.array([60.0, 0.01, 60.0, 0.01, 60.0])[:, None, None]
    alone = [make(ps).evaluate(tms[i:i + 1], ratios[i:i + 1]) for i in range(5)]
    monkeypatch.setattr(twin_module, "CHUNK_ELEMENTS", 1)
    together = make(ps).evaluate(tms, ratios)
    as_numpy = lambda x: x.numpy() if isinstance(x, torch.Tensor) else x  # noqa: E731
    for i in range(5):
        np.testing.assert_allclose(as_numpy(together.delivered[i]), as_numpy(alone[i].delivered[0]), rtol=1e-12)
    drops = as_numpy(together.drops)
    assert (drops[[0, 2, 4]] > 0).all() and (drops[[1, 3]] == 0).all()


def test_demand_vectors_give_the_same_answers_as_matrices():
    ps, tms, ratios = random_case(7, 4, 3)
    twin = FluidTwin(ps)
    demands = twin.demands(tms)
    np.testing.assert_allclose(twin.mlu(None, ratios, demands=demands), twin.mlu(tms, ratios))
    np.testing.assert_allclose(twin.link_loads(None, ratios[0], demands=demands[0]), twin.link_loads(tms[0], ratios[0]))
    np.testing.assert_allclose(twin.evaluate(None, ratios, demands=demands).delivered, twin.evaluate(tms, ratios).delivered)
    with pytest.raises(ValueError, match="not both or neither"):
        twin.mlu(tms, ratios, demands=demands)
    with pytest.raises(ValueError, match=r"demands must be"):
        twin.mlu(None, ratios, demands=demands[:, :3])
