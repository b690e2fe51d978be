"""The graph neural router: valid ratios on any topology, hand-computed softmin, scale-free features, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.gnn import GNNPolicy, GNNSettings, LinkGNN, LinkGraph, TrainingSet, link_features, train_gnn
from agents.lp import optimal_mlu
from envs.twin import FluidTwin
from topologies import Routing, k_shortest_paths, load_topology, load_traffic
from tests.networks import diamond, ring


@pytest.mark.parametrize("rounds", [0, 2])
def test_one_network_routes_topologies_of_any_size_with_valid_ratios(rounds):
    torch.manual_seed(0)
    net = LinkGNN(history=2, hidden=16, layers=2, rounds=rounds)
    sizes = set()
    for topology in (diamond(), ring(6), load_topology("abilene")):
        pathset = k_shortest_paths(topology, 3)
        policy = GNNPolicy(pathset, net)
        matrices = np.array(load_traffic("gravity", topology, count=2, seed=1).matrices)
        ratios = policy.route(matrices)
        assert ratios.shape == (pathset.num_pairs, pathset.k)
        np.testing.assert_allclose(ratios.sum(axis=1), 1.0, atol=1e-6)
        assert (ratios[~np.array(pathset.mask)] == 0).all() and (ratios >= 0).all()
        sizes.add(sum(p.numel() for p in net.parameters()))
    assert len(sizes) == 1  # the weights do not depend on the topology


def test_equal_link_costs_give_the_softmin_over_path_lengths():
    net = LinkGNN(history=1, hidden=8, layers=1)
    with torch.no_grad():  # every link costs softplus(0.5), whatever the traffic
        net.cost.weight.zero_()
        net.cost.bias.fill_(0.5)
        net.log_sharpness.fill_(np.log(2.0))
    topology = ring(5)
    pathset = k_shortest_paths(topology, 2)
    graph = LinkGraph(pathset)
    demands = torch.ones(1, 1, pathset.num_pairs)
    ratios = net(graph, demands)[0].detach().numpy()
    cost = np.log1p(np.exp(0.5))
    p = pathset.pair_index[(0, 1)]  # around a 5-ring: 1 hop one way, 4 hops the other
    hops = [len(path) for path in pathset.paths[p]]
    expected = np.exp(-2.0 * cost * np.array(hops))
    np.testing.assert_allclose(ratios[p, :2], expected / expected.sum(), rtol=1e-5)


def test_refinement_rounds_rescale_costs_relative_to_each_other_only():
    """Each round multiplies link costs by e^(step − mean step over the links). A constant step
    (rescale output b) is a common factor and changes nothing: the rounds leave the one-pass
    softmin of path lengths (hand-computed on a 5-ring), however large b and R are. Uncentred,
    that common factor sharpened the softmin until every pair used one path (a training collapse)."""
    torch.manual_seed(0)
    rounds, bias = 8, 3.0
    net = LinkGNN(history=1, hidden=8, layers=1, rounds=rounds)
    with torch.no_grad():
        net.cost.weight.zero_()
        net.cost.bias.fill_(0.5)
        net.log_sharpness.fill_(0.0)
        net.refinement.step.weight.zero_()
        net.refinement.step.bias.fill_(bias)
    pathset = k_shortest_paths(ring(5), 2)
    ratios = net(LinkGraph(pathset), torch.rand(1, 1, pathset.num_pairs) + 0.1)[0].detach().numpy()
    cost = np.log1p(np.exp(0.5))
    p = pathset.pair_index[(0, 1)]
    expected = np.exp(-cost * np.array([len(path) for path in pathset.paths[p]]))
    np.testing.assert_allclose(ratios[p, :2], expected / expected.sum(), rtol=1e-5)
    with torch.no_grad():  # a step that differs between links does move the split
        net.refinement.step.weight.normal_()
    moved = net(LinkGraph(pathset), torch.rand(1, 1, pathset.num_pairs) + 0.1)[0].detach().numpy()
    assert np.abs(moved[p, :2] - expected / expected.sum()).max() > 1e-3


def test_saved_network_loads_with_its_shape_and_routes_alike(tmp_path):
    torch.manual_seed(1)
    net = LinkGNN(history=2, hidden=8, layers=2, rounds=2)
    net.save(tmp_path / "gnn.pt")
    loaded = LinkGNN.load(tmp_path / "gnn.pt")
    assert (loaded.history, loaded.hidden, loaded.layers, loaded.rounds) == (2, 8, 2, 2)
    pathset = k_shortest_paths(load_topology("abilene"), 3)
    matrices = np.array(load_traffic("gravity", pathset.topology, count=2, seed=0).matrices)
    np.testing.assert_allclose(GNNPolicy(pathset, loaded).route(matrices), GNNPolicy(pathset, net).route(matrices))
    with pytest.raises(ValueError, match="rounds must be >= 0"):
        LinkGNN(history=1, rounds=-1)


def test_loading_a_file_that_is_not_that_network_says_so(tmp_path):
    from agents.gradient import SplitRatioNet

    SplitRatioNet(k_shortest_paths(diamond(), 2), history=2, hidden=(4,)).save(tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match=r"mlp.pt: not a saved LinkGNN \(a saved SplitRatioNet\)"):
        LinkGNN.load(tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match="its weights do not fit this SplitRatioNet"):  # trained for another path set
        SplitRatioNet.load(k_shortest_paths(ring(6), 2), tmp_path / "mlp.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a saved LinkGNN"):
        LinkGNN.load(tmp_path / "junk.pt")
    torch.save({"state_dict": {}, "history": 2}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="missing hidden, layers, rounds"):
        LinkGNN.load(tmp_path / "partial.pt")
    # written before the class name was saved: still loads
    net = LinkGNN(history=2, hidden=8, layers=2, rounds=1)
    torch.save({"state_dict": net.state_dict(), "history": 2, "hidden": 8, "layers": 2, "rounds": 1},
               tmp_path / "old.pt")
    assert LinkGNN.load(tmp_path / "old.pt").rounds == 1


def test_link_features_are_scale_free_and_follow_the_twin():
    pathset = k_shortest_paths(load_topology("abilene"), 4)
    graph = LinkGraph(pathset)
    matrices = np.array(load_traffic("abilene-test", pathset.topology).matrices[:3])
    demands = torch.as_tensor(pathset.demands(matrices), dtype=torch.float32)[None]
    features = link_features(graph, demands)
    torch.testing.assert_close(features, link_features(graph, demands * 1000.0), rtol=1e-5, atol=1e-6)
    utilization = FluidTwin(pathset).link_loads(matrices, Routing.uniform(pathset).ratios) / pathset.topology.capacities
    np.testing.assert_allclose(features[0, :, :3].T.numpy(), utilization / utilization.max(), rtol=1e-4, atol=1e-6)
    capacity = pathset.topology.capacities
    np.testing.assert_allclose(features[0, :, 3].numpy(), capacity / capacity.max(), rtol=1e-6)


@pytest.mark.parametrize("rounds", [0, 2])
def test_training_lowers_normalized_mlu_below_the_untrained_network(rounds):
    # Abilene's real traffic: on gravity traffic even an untrained refining network is within 0.1% of the optimum
    topology = load_topology("abilene")
    pathset = k_shortest_paths(topology, 3)
    matrices = np.array(load_traffic("abilene-train", topology).matrices[:60])
    optimum = optimal_mlu(topology, matrices)
    settings = GNNSettings(history=2, hidden=16, layers=2, rounds=rounds, epochs=8, learning_rate=3e-3, seed=0)
    untrained, _ = train_gnn([TrainingSet(pathset, matrices, optimum)], GNNSettings(**{**vars(settings), "epochs": 0}))
    trained, losses = train_gnn([TrainingSet(pathset, matrices, optimum)], settings)

    def score(net) -> float:
        policy = GNNPolicy(pathset, net)
        ratios = policy.route_batch(np.stack([matrices[t - 2:t] for t in range(2, 60)]))
        mlu = FluidTwin(pathset).mlu(matrices[2:], ratios)
        return float(np.mean(mlu / optimum[2:]))

    assert losses[-1] < losses[0]
    assert score(trained) < score(untrained) - 0.02
    assert score(trained) >= 1.0 - 1e-6  # the optimum is a bound


def test_bad_training_input_is_a_clear_error():
    pathset = k_shortest_paths(diamond(), 2)
    matrices = np.array(load_traffic("gravity", pathset.topology, count=3, seed=0).matrices)
    with pytest.raises(ValueError, match="too few"):
        train_gnn([TrainingSet(pathset, matrices, np.ones(3))], GNNSettings(history=3, epochs=1))
    with pytest.raises(ValueError, match="optimal MLU"):
        train_gnn([TrainingSet(pathset, matrices, np.ones(2))], GNNSettings(history=1, epochs=1))
    with pytest.raises(ValueError, match="history"):
        train_gnn([TrainingSet(pathset, matrices, np.ones(3))], GNNSettings(history=0, epochs=1))


def test_messages_are_means_over_the_links_fed_and_feeding():
    from agents.gnn import _mean_into

    edges = torch.tensor([[0, 0, 1], [1, 2, 2]])  # link 0 feeds 1 and 2, link 1 feeds 2
    values = torch.tensor([[[1.0], [2.0], [4.0]]])
    feeds, fed = edges
    count_fed = torch.bincount(feeds, minlength=3).clamp_min(1).float()
    count_feeding = torch.bincount(fed, minlength=3).clamp_min(1).float()
    ahead = _mean_into(values, feeds, fed, count_fed)[0, :, 0]
    behind = _mean_into(values, fed, feeds, count_feeding)[0, :, 0]
    assert ahead.tolist() == [3.0, 4.0, 0.0] and behind.tolist() == [0.0, 1.0, 1.5]


def _spoke():
    """A⇄B⇄C and a one-way detour B→D→C. Links: 0 A→B, 1 B→A, 2 B→C, 3 C→B, 4 B→D, 5 D→C."""
    from topologies import Link, Node, Topology

    links = [("A", "B"), ("B", "A"), ("B", "C"), ("C", "B"), ("B", "D"), ("D", "C")]
    return Topology("spoke", tuple(Node(n) for n in "ABCD"), tuple(Link(u, v, 1e9) for u, v in links))


def test_the_linear_link_adjacency_gives_the_hand_computed_means():
    """Link a feeds b when a ends where b starts and b is not a's reverse (by hand on _spoke):
    A→B feeds B→C and B→D; C→B feeds B→A and B→D; B→C is fed by A→B only (C→B is its
    reverse); B→D, with no reverse, is fed by A→B and C→B."""
    from agents.gnn import LinkAdjacency

    h = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])[None, :, None]
    ahead, behind = LinkAdjacency.of(_spoke()).means(h)
    assert ahead[0, :, 0].tolist() == [10.0, 0.0, 0.0, 9.0, 32.0, 8.0]
    assert behind[0, :, 0].tolist() == [0.0, 8.0, 1.0, 32.0, 4.5, 16.0]


@pytest.mark.parametrize("spec", ["spoke", "abilene", "geant", "fat_tree:4", "b4", "waxman:40"])
def test_message_passing_over_the_adjacency_equals_it_over_the_edge_list(spec):
    """The O(links) means equal the edge list's (the graph observation's) on real and generated
    networks, and on one with one-way links."""
    from agents.gnn import LinkAdjacency, LinkMessagePassing
    from envs.graph import link_graph_edges

    topology = _spoke() if spec == "spoke" else load_topology(spec)
    torch.manual_seed(0)
    module = LinkMessagePassing(in_features=3, hidden=16, layers=3)
    features = torch.randn(2, topology.num_links, 3)
    over_edges = module(features, torch.as_tensor(link_graph_edges(topology)))
    over_adjacency = module(features, LinkAdjacency.of(topology))
    torch.testing.assert_close(over_adjacency, over_edges, rtol=1e-5, atol=1e-5)


@st.composite
def strongly_connected(draw):
    """A directed cycle over n nodes (strongly connected) plus random extra links, some one-way,
    some with their reverse, in a random order; no self-loops or duplicates (as Topology demands)."""
    from topologies import Link, Node, Topology

    n = draw(st.integers(2, 9))
    links = {(i, (i + 1) % n) for i in range(n)}
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    links |= {(u, v) for u, v in extra if u != v}
    ordered = draw(st.permutations(sorted(links)))
    return Topology("random", tuple(Node(f"n{i}") for i in range(n)),
                    tuple(Link(f"n{u}", f"n{v}", 1e9) for u, v in ordered))


@settings(max_examples=60, deadline=None)
@given(topology=strongly_connected(), seed=st.integers(0, 2**16))
def test_adjacency_means_equal_the_edge_list_means_on_any_network(topology, seed):
    from agents.gnn import LinkAdjacency, _mean_into
    from envs.graph import link_graph_edges

    h = torch.randn(2, topology.num_links, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    feeds, fed = torch.as_tensor(link_graph_edges(topology))
    links = topology.num_links
    fed_count = torch.bincount(feeds, minlength=links).clamp_min(1).double()
    feeding_count = torch.bincount(fed, minlength=links).clamp_min(1).double()
    ahead, behind = LinkAdjacency.of(topology).means(h)
    torch.testing.assert_close(ahead, _mean_into(h, feeds, fed, fed_count), rtol=0, atol=1e-12)
    torch.testing.assert_close(behind, _mean_into(h, fed, feeds, feeding_count), rtol=0, atol=1e-12)
