"""Baseline policies and their evaluation: a static policy scored as the twin scores it, the
clairvoyant LP and the history each LP practice needs, single-path routing, and scores
measured on a live backend beside the twin's."""

from __future__ import annotations

import numpy as np
import pytest

from agents import LPPolicy, StaticPolicy, evaluate_policies, first_index, ospf, shortest_path
from agents.evaluation import decide, history_for
from envs import FluidTwin
from envs.backend import TwinBackend
from topologies import TopologyError, k_shortest_paths, load_topology, load_traffic, union_pathsets


def test_static_policy_scores_equal_a_direct_twin_evaluation():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    policy = ospf(topo)
    indices = np.arange(0, 2016, 400)
    optimum, scores = evaluate_policies([policy], tms, indices)
    direct = FluidTwin(policy.pathset).mlu(tms[indices], policy.routing.ratios)
    np.testing.assert_allclose(scores["ospf"].mlu, direct)
    np.testing.assert_allclose(scores["ospf"].normalized_mlu, direct / optimum)
    assert (scores["ospf"].normalized_mlu >= 1 - 1e-9).all()


def test_oracle_is_optimal_and_history_rules():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    paths = k_shortest_paths(topo, 4)
    oracle, previous = LPPolicy("oracle", paths, clairvoyant=True), LPPolicy("previous", paths)
    assert first_index([oracle]) == 0 and first_index([oracle, previous]) == 1
    np.testing.assert_array_equal(history_for(previous, tms, 5), tms[4:5])
    np.testing.assert_array_equal(history_for(oracle, tms, 5), tms[5:6])
    with pytest.raises(ValueError, match="needs 1 matrices of history before index 0"):
        history_for(previous, tms, 0)
    _, scores = evaluate_policies([oracle], tms, [3, 900])
    np.testing.assert_allclose(scores["oracle"].normalized_mlu, 1.0, rtol=1e-6)


def test_single_path_policy_sends_everything_on_one_path():
    """Its decision, for any traffic: each pair's whole demand on one path, a hop-shortest one
    (hop counts from networkx's breadth-first search on the topology, not from the path set)."""
    import networkx as nx

    topology = load_topology("geant")
    policy = shortest_path(topology)
    assert isinstance(policy, StaticPolicy)
    hops = dict(nx.all_pairs_shortest_path_length(topology.to_networkx()))
    pathset = policy.pathset
    gravity = load_traffic("gravity", topology, count=2, seed=0).matrices
    for history in (gravity, np.zeros_like(gravity[:1])):  # static: the same decision whatever the traffic
        ratios = policy.route(history)
        assert ratios.shape == (pathset.num_pairs, pathset.k)
        assert set(np.unique(ratios)) <= {0.0, 1.0} and (ratios.sum(axis=1) == 1.0).all()
        for (src, dst), row, candidates in zip(pathset.pairs, ratios, pathset.paths):
            path = candidates[int(np.argmax(row))]
            assert topology.link_src[path[0]] == src and topology.link_dst[path[-1]] == dst
            assert len(path) == hops[topology.nodes[src].name][topology.nodes[dst].name], (src, dst)


def test_policies_on_a_live_backend_are_scored_by_what_it_measured_beside_the_twin():
    topo = load_topology("abilene")
    tms = load_traffic("abilene-test", topo).matrices
    paths = k_shortest_paths(topo, 4)
    policies = [shortest_path(topo), ospf(topo), LPPolicy("lp_previous", paths)]
    carried = union_pathsets(paths, *(p.pathset for p in policies))
    backend = TwinBackend(carried, load_factor=1.25)  # a stand-in live backend: headers add load
    indices = np.array([24, 500, 1000])
    optimum, twin_scores = evaluate_policies(policies, tms, indices)
    runs = []
    _, live = evaluate_policies(policies, tms, indices, optimal=optimum, backend=backend,
                                progress=lambda name, count: runs.append((name, count)))
    assert runs == [(p.name, 1) for p in policies for _ in indices]  # one unit per measured run
    for policy in policies:
        twin, measured = twin_scores[policy.name], live[policy.name]
        np.testing.assert_allclose(measured.twin_normalized_mlu, twin.normalized_mlu)
        # the policy's own paths lifted onto the carried set route the same load: 1.25 × the twin's MLU
        np.testing.assert_allclose(measured.mlu, 1.25 * twin.mlu, rtol=1e-9)
        np.testing.assert_allclose(measured.normalized_mlu, 1.25 * twin.normalized_mlu, rtol=1e-9)
        ratios, _ = decide(policy, tms, indices)
        ratios = np.broadcast_to(ratios, (len(indices), *policy.pathset.mask.shape))
        scaled = TwinBackend(policy.pathset, 1.25)
        direct = [scaled.run(policy.pathset.demands(tms[t]), r) for t, r in zip(indices, ratios)]
        np.testing.assert_allclose(measured.drop_fraction, [m.drops_bps / m.offered_bps for m in direct], atol=1e-12)
        assert live[policy.name].summary()["twin_median"] == pytest.approx(np.median(twin.normalized_mlu))
    assert (live["shortest_path"].drop_fraction > 0).all()  # the raw Abilene volumes overload hop-shortest paths
    with pytest.raises(TopologyError, match="is not in the target path set"):
        evaluate_policies([ospf(topo)], tms, indices, optimal=optimum, backend=TwinBackend(paths))
