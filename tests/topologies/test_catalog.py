"""Topologies by name: curated set, every Topology Zoo network, generators."""

from __future__ import annotations

import pytest

from topologies import TopologyError, endpoint_mask, fat_tree, leaf_spine, load_topology, load_zoo, waxman, zoo_names


@pytest.mark.parametrize(
    "name, nodes, links",
    [("abilene", 12, 30), ("geant", 40, 122), ("nsfnet", 13, 30), ("b4", 12, 38),
     ("uscarrier", 158, 378), ("kdl", 754, 1790), ("asn2k", 1739, 8558)],
)
def test_curated_topologies(name, nodes, links):
    topo = load_topology(name)
    assert (topo.num_nodes, topo.num_links) == (nodes, links)
    assert topo.name == name


def test_abilene_has_real_weights_names_and_coordinates():
    topo = load_topology("abilene")
    assert topo.has_weights
    assert topo.node_names[:3] == ("ATLAM5", "ATLAng", "CHINng")
    assert all(n.has_coordinates for n in topo.nodes)
    # Los Angeles - Houston is ~2,200 km: ~11 ms at 2e8 m/s
    link = next(l for l in topo.links if (l.src, l.dst) == ("LOSAng", "HSTNng"))
    assert link.delay_s == pytest.approx(11.0e-3, rel=0.03)


def test_every_topology_zoo_network_loads():
    names = zoo_names()
    assert len(names) == 276
    repaired = 0
    for name in names:
        topo = load_zoo(name)
        assert topo.num_nodes >= 2
        repaired += any(note.startswith("repair") for note in topo.notes)
    assert repaired >= 23  # the disconnected networks and Interoute's self-loop are repaired, and say so


def test_zoo_by_file_name_prefix_and_case():
    assert load_topology("Geant2012").num_nodes == 40
    assert load_topology("zoo:Abilene").num_nodes == 11  # the Zoo's own Abilene, not the curated one
    assert load_topology("geant2012").num_nodes == 40


def test_generator_specs():
    assert load_topology("fat_tree:4").num_nodes == 20
    assert load_topology("leaf_spine:2,3").num_links == 12
    assert load_topology("waxman:n=12,seed=3") == waxman(12, 3)


@pytest.mark.parametrize(
    "name, message",
    [("abilen", "unknown topology 'abilen'.*did you mean abilene"), ("Geant20", "did you mean"),
     ("fat_tree:3", "even integer k"), ("fat_tree:k=4,q=1", "bad arguments for fat_tree"), ("", "non-empty")],
)
def test_bad_names_get_clear_errors(name, message):
    with pytest.raises(TopologyError, match=message):
        load_topology(name)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_fat_tree_structure(k):
    topo = fat_tree(k)
    roles = [n.role for n in topo.nodes]
    assert roles.count("core") == (k // 2) ** 2
    assert roles.count("aggregation") == roles.count("edge") == k * k // 2
    assert topo.num_links == 2 * 2 * k * (k // 2) ** 2  # agg-edge and agg-core, both directions
    graph = topo.to_networkx()
    assert all(graph.out_degree(n) == k for n in topo.node_names if not n.startswith("p") or "agg" in n)
    assert endpoint_mask(topo).sum() == k * k // 2


def test_leaf_spine_and_waxman():
    topo = leaf_spine(4, 6)
    assert topo.num_links == 2 * 4 * 6 and endpoint_mask(topo).sum() == 6
    a, b = waxman(30, seed=5), waxman(30, seed=5)
    assert a.fingerprint() == b.fingerprint()  # reproducible
    assert waxman(30, seed=6).fingerprint() != a.fingerprint()
    # the name tells every draw apart, so several-topology runs' per-topology scores do too
    assert [waxman(30, 5, **shape).name for shape in ({}, {"beta": 0.4}, {"alpha": 0.6, "beta": 0.4})] == [
        "waxman_n30_s5", "waxman_n30_s5_b0.4", "waxman_n30_s5_a0.6_b0.4"]
    assert load_topology("waxman:30,seed=5,beta=0.4").name == "waxman_n30_s5_b0.4"
    sparse = waxman(40, seed=1, alpha=0.05, beta=0.05)  # very sparse draw: components get joined
    assert len(sparse.strong_components()) == 1
