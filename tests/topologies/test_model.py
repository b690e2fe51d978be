"""The topology model: validation errors, fingerprints, derived arrays."""

from __future__ import annotations

import numpy as np
import pytest

from topologies import Link, Node, Topology, TopologyError, bidirectional_links

from tests.networks import triangle


def nodes(*names: str) -> tuple[Node, ...]:
    return tuple(Node(n) for n in names)


def test_bidirectional_links_make_two_directed_links_with_same_attributes():
    links = bidirectional_links([("a", "b", 5.0, 0.1, 2.0)])
    assert links == [Link("a", "b", 5.0, 0.1, 2.0), Link("b", "a", 5.0, 0.1, 2.0)]


@pytest.mark.parametrize(
    "links, message",
    [
        ([Link("a", "a", 1.0), Link("a", "b", 1.0), Link("b", "a", 1.0)], "self-loop"),
        ([Link("a", "b", 1.0), Link("a", "b", 2.0), Link("b", "a", 1.0)], "duplicate link"),
        ([Link("a", "b", 0.0), Link("b", "a", 1.0)], "non-positive"),
        ([Link("a", "b", -5.0), Link("b", "a", 1.0)], "non-positive"),
        ([Link("a", "b", float("nan")), Link("b", "a", 1.0)], "non-finite"),
        ([Link("a", "b", 1.0, -1.0), Link("b", "a", 1.0)], "negative"),
        ([Link("a", "b", 1.0, 0.0, 0.0), Link("b", "a", 1.0)], "non-positive weight"),
        ([Link("a", "z", 1.0), Link("b", "a", 1.0)], "unknown node 'z'"),
        ([Link("a", "b", 1.0)], "not strongly connected"),
    ],
)
def test_invalid_topologies_are_rejected_with_the_problem_named(links, message):
    with pytest.raises(TopologyError, match=message):
        Topology("bad", nodes("a", "b"), tuple(links))


def test_disconnected_topology_names_the_components():
    links = bidirectional_links([("a", "b", 1.0, 0.0, None), ("c", "d", 1.0, 0.0, None)])
    with pytest.raises(TopologyError, match=r"2 components of sizes \[2, 2\]"):
        Topology("split", nodes("a", "b", "c", "d"), tuple(links))


def test_duplicate_node_and_too_few_nodes():
    with pytest.raises(TopologyError, match="duplicate node 'a'"):
        Topology("dup", nodes("a", "a"), (Link("a", "a", 1.0),))
    with pytest.raises(TopologyError, match="at least 2 nodes"):
        Topology("tiny", nodes("a"), ())


def test_arrays_follow_link_order(tri):
    assert tri.link_src.tolist() == [0, 1, 1, 2, 0, 2]
    assert tri.link_dst.tolist() == [1, 0, 2, 1, 2, 0]
    np.testing.assert_array_equal(tri.capacities, [10e6, 10e6, 5e6, 5e6, 4e6, 4e6])
    with pytest.raises(ValueError):
        tri.capacities[0] = 1.0  # read-only: the topology is immutable


def test_fingerprint_is_stable_and_sensitive_to_what_routing_depends_on(tri):
    again = triangle()
    assert tri.fingerprint() == again.fingerprint()
    renamed = Topology("other name", tri.nodes, tri.links, ("a note",))
    assert renamed.fingerprint() == tri.fingerprint()
    for i, change in enumerate([
        lambda l: Link(l.src, l.dst, l.capacity_bps * 2, l.delay_s, l.weight),
        lambda l: Link(l.src, l.dst, l.capacity_bps, l.delay_s + 1e-3, l.weight),
        lambda l: Link(l.src, l.dst, l.capacity_bps, l.delay_s, 7.0),
    ]):
        links = list(tri.links)
        links[0] = change(links[0])
        assert Topology("t", tri.nodes, tuple(links)).fingerprint() != tri.fingerprint(), i
    reordered = Topology("t", tuple(reversed(tri.nodes)), tri.links)
    assert reordered.fingerprint() != tri.fingerprint()


def test_link_metrics(tri):
    np.testing.assert_array_equal(tri.link_metric("hop"), np.ones(6))
    np.testing.assert_allclose(tri.link_metric("weight"), [1, 1, 1, 1, 3, 3])
    np.testing.assert_allclose(tri.link_metric("invcap"), [1, 1, 2, 2, 2.5, 2.5])
    with pytest.raises(TopologyError, match="unknown path metric"):
        tri.link_metric("bandwidth")
    unweighted = Topology("u", tri.nodes, tuple(Link(l.src, l.dst, l.capacity_bps) for l in tri.links))
    with pytest.raises(TopologyError, match="no link weights"):
        unweighted.link_metric("weight")
