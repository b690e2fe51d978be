"""The review figures: each directed link drawn apart from its reverse, CDFs that stay apart."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import LineCollection

from experiments.plotting import cdf_figure, link_segments, topology_figure
from topologies import Link, Node, Topology


def two_way_line() -> Topology:
    """a(0,0) <-> b(4,0) <-> c(4,2): a horizontal and a vertical link, each both ways."""
    nodes = [Node("a", latitude=0.0, longitude=0.0), Node("b", latitude=0.0, longitude=4.0),
             Node("c", latitude=2.0, longitude=4.0)]
    links = [Link("a", "b", 1e9), Link("b", "a", 1e9), Link("b", "c", 2e9), Link("c", "b", 2e9)]
    return Topology("line", tuple(nodes), tuple(links))


def test_each_direction_is_moved_to_the_right_of_its_travel():
    topology = two_way_line()
    pos = {"a": (0.0, 0.0), "b": (4.0, 0.0), "c": (4.0, 2.0)}
    segments = link_segments(topology, pos, offset=0.1)
    # span (4, 2): a horizontal link moves by 0.1 x 2 in y, a vertical one by 0.1 x 4 in x
    np.testing.assert_allclose(segments[0], [[0, -0.2], [4, -0.2]])   # a->b eastward: right is south
    np.testing.assert_allclose(segments[1], [[4, 0.2], [0, 0.2]])     # b->a westward: right is north
    np.testing.assert_allclose(segments[2], [[4.4, 0], [4.4, 2]])     # b->c northward: right is east
    np.testing.assert_allclose(segments[3], [[3.6, 2], [3.6, 0]])     # c->b southward: right is west


def test_heatmap_keeps_each_directions_own_value():
    topology = two_way_line()
    values = np.array([0.9, 0.1, 0.3, 0.6])
    figure = topology_figure(topology, link_values=values)
    [lines] = [c for c in figure.axes[0].collections if isinstance(c, LineCollection)]
    assert len(lines.get_segments()) == topology.num_links
    np.testing.assert_allclose(lines.get_array(), values)
    colours = lines.to_rgba(lines.get_array())
    assert not np.allclose(colours[0], colours[1])  # the hot direction is not painted over
    np.testing.assert_allclose(colours[0], plt.get_cmap("viridis")(1.0))  # the hottest link tops the scale
    plt.close(figure)
    with pytest.raises(ValueError, match="link_values has shape"):
        topology_figure(topology, link_values=values[:3])


def test_nodes_at_one_place_share_one_label():
    nodes = [Node("x1", latitude=1.0, longitude=1.0), Node("x2", latitude=1.0, longitude=1.0),
             Node("y", latitude=2.0, longitude=3.0)]
    links = (Link("x1", "x2", 1e9), Link("x2", "x1", 1e9), Link("x1", "y", 1e9), Link("y", "x1", 1e9))
    topology = Topology("pop", tuple(nodes), links)
    figure = topology_figure(topology)
    assert sorted(t.get_text() for t in figure.axes[0].texts) == ["x1, x2", "y"]
    plt.close(figure)


def test_cdf_lines_stay_apart_and_the_close_up_frames_the_first_policy():
    values = {f"policy{i}": np.linspace(1.0, 1.0 + 0.1 * (i + 1), 5) for i in range(12)}
    values = {"learned": np.array([1.0, 1.1, 1.2]), **values, "shortest": np.array([2.0, 3.0, 5.0])}
    figure = cdf_figure(values)
    full, close = figure.axes
    styles = [(line.get_color(), line.get_linestyle()) for line in full.get_lines()]
    assert len(styles) == len(values) and len(set(styles)) == len(values)
    assert full.get_lines()[0].get_linewidth() > full.get_lines()[1].get_linewidth()
    low, high = close.get_xlim()
    pad = (1.2 - 1.0) * 0.05
    assert (low, high) == pytest.approx((1.0 - pad, 1.2 + pad))
    assert full.get_xlim()[1] >= 5.0
    plt.close(figure)
    single = cdf_figure(values, close_up=False)
    assert len(single.axes) == 1
    plt.close(single)
