"""The graph view of split routing (envs.graph) and the PPO graph policy (agents.sb3): hand-computed
link graph and link-cost softmin, observations against the twin, checkers, one set of weights
for any topology, save/load, a short run that learns, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from agents.gnn import LinkGraph, link_features
from agents.sb3 import GraphActorCriticPolicy, SB3GraphSplitPolicy, make_model
from envs import PathSelectionEnv, SplitRoutingEnv
from envs.graph import COST_SPAN, GraphObservation, LinkCostActions, graph_wrapped, link_graph_edges
from envs.twin import FluidTwin
from topologies import Routing, k_shortest_paths, load_topology, load_traffic

from .networks import triangle
from .test_controller import ring


def test_link_graph_of_the_triangle_by_hand():
    # links a→b 0, b→a 1, b→c 2, c→b 3, a→c 4, c→a 5: each feeds the one link that goes on
    edges = link_graph_edges(triangle())
    assert [tuple(e) for e in edges.T] == [(0, 2), (1, 4), (2, 5), (3, 1), (4, 3), (5, 0)]


def test_graph_observation_follows_the_twin_and_the_flat_observation():
    topology = load_topology("abilene")
    traffic = load_traffic("abilene-test", topology)
    env = GraphObservation(SplitRoutingEnv(topology, traffic, history=3, random_start=False))
    observation, _ = env.reset(seed=0)
    pathset = env.unwrapped.pathset
    observation, *_ = env.step(env.action_space.sample())  # now the last column is the agent's own routing
    links, t = observation["links"], 4
    matrices = np.array(traffic.matrices[t - 3:t])
    equal = FluidTwin(pathset).link_loads(matrices, Routing.uniform(pathset).ratios) / topology.capacities
    np.testing.assert_allclose(links[:, :3], (equal / equal.max()).T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(links[:, 3], topology.capacities / topology.capacities.max(), rtol=1e-6)
    flat_utilization = env.unwrapped._observation()[-topology.num_links:]
    np.testing.assert_allclose(links[:, 4], flat_utilization, rtol=1e-5, atol=1e-7)
    # the gradient-trained GNN reads the same first h + 1 features
    demands = torch.as_tensor(pathset.demands(matrices), dtype=torch.float32)[None]
    np.testing.assert_allclose(links[:, :4], link_features(LinkGraph(pathset), demands)[0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(observation["link_graph"], link_graph_edges(topology))


def test_link_costs_give_a_softmin_of_path_costs():
    topology = ring(5)
    env = LinkCostActions(SplitRoutingEnv(topology, "gravity", k=2, history=1, action_scale=3.0,
                                          traffic_options={"count": 4, "seed": 1}))
    pathset = env.unwrapped.pathset
    p = pathset.pair_index[(0, 1)]  # around a 5-ring: 1 hop one way, 4 hops the other
    hops = np.array([len(path) for path in pathset.paths[p]])

    def ratios(action):
        return env.unwrapped.ratios(env.action(np.asarray(action, dtype=np.float32)))[p]

    # every link costs 0.5: the 4-hop path costs 1.5 more, so its share is e^(-3 · 1.5) of the direct one
    expected = np.exp(-3.0 * 0.5 * (hops - hops.min()))
    np.testing.assert_allclose(ratios(np.zeros(topology.num_links)), expected / expected.sum(), rtol=1e-6)
    # the direct link at full cost (1), the rest free (0): 1 against 0, the long path wins by e^3
    action = -np.ones(topology.num_links)
    action[topology.link_index[(0, 1)]] = 1.0
    share = ratios(action)
    assert share[hops.argmax()] / share[hops.argmin()] == pytest.approx(np.exp(3.0), rel=1e-6)
    # differences beyond COST_SPAN saturate at the smallest share the action allows
    action = np.ones(topology.num_links)
    action[topology.link_index[(0, 1)]] = -1.0
    share = ratios(action)
    assert COST_SPAN < 4.0 and share[hops.argmax()] / share[hops.argmin()] == pytest.approx(np.exp(-3.0 * COST_SPAN))


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")  # checking the wrappers is the point
def test_graph_wrapped_environment_passes_both_checkers():
    env = graph_wrapped(SplitRoutingEnv(triangle(), "gravity", k=2, history=2, traffic_options={"count": 20, "seed": 1}))
    check_env(env, skip_render_check=True)
    with pytest.warns(UserWarning, match="unconventional shape"):  # 2-D arrays: needs the graph policy, as intended
        sb3_check_env(env)


def policy_for(topology, history: int = 2) -> GraphActorCriticPolicy:
    env = graph_wrapped(SplitRoutingEnv(topology, "gravity", k=3, history=history,
                                        traffic_options={"count": history + 2, "seed": 1}))
    return GraphActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-3, hidden=16, layers=2)


def test_one_set_of_weights_routes_any_topology():
    torch.manual_seed(0)
    policies = [policy_for(t) for t in (triangle(), ring(6), load_topology("abilene"))]
    shapes = [{name: tuple(p.shape) for name, p in policy.state_dict().items()} for policy in policies]
    assert shapes[0] == shapes[1] == shapes[2]
    trained = policies[0]
    for topology in (ring(6), load_topology("abilene")):
        pathset = k_shortest_paths(topology, 3)
        adapter = SB3GraphSplitPolicy(trained, k_shortest_paths(triangle(), 3), 2, 3.0).on(pathset)
        matrices = np.array(load_traffic("gravity", topology, count=2, seed=1).matrices)
        ratios = adapter.route(matrices)
        assert ratios.shape == (pathset.num_pairs, pathset.k)
        np.testing.assert_allclose(ratios.sum(axis=1), 1.0, atol=1e-9)
        assert (ratios[~np.array(pathset.mask)] == 0).all()
        for name, value in adapter.model.state_dict().items():  # the trained weights, unchanged
            torch.testing.assert_close(value, trained.state_dict()[name])


@pytest.fixture(scope="module")
def abilene_week():
    from experiments.data import cached_optimum

    topology = load_topology("abilene")
    matrices = np.array(load_traffic("abilene-train", topology).matrices)[:400:4]
    return topology, matrices, cached_optimum(topology, matrices)


def score(policy: SB3GraphSplitPolicy, matrices: np.ndarray, optimum: np.ndarray) -> float:
    twin = FluidTwin(policy.pathset)
    policy.reset()
    return float(np.mean([twin.mlu(matrices[t], policy.route(matrices[t - 2:t])) / optimum[t]
                          for t in range(2, len(matrices))]))


def test_short_graph_ppo_run_improves_on_the_untrained_policy_and_survives_save_and_load(abilene_week, tmp_path):
    topology, matrices, optimum = abilene_week
    env = graph_wrapped(SplitRoutingEnv(topology, matrices, history=2, reward="normalized", optimal_mlu=optimum,
                                        episode_length=32))
    model = make_model("ppo", env, {"gamma": 0.0, "n_steps": 128, "batch_size": 64, "learning_rate": 1e-3},
                       seed=0, policy="graph", policy_options={"hidden": 32, "layers": 2, "log_std_init": -1.0})
    pathset = env.unwrapped.pathset
    before = score(SB3GraphSplitPolicy(model, pathset, 2, 3.0), matrices, optimum)
    model.learn(2048)
    adapter = SB3GraphSplitPolicy(model, pathset, 2, 3.0)
    after = score(adapter, matrices, optimum)
    assert after < before - 0.3, (before, after)  # measured: 2.85 -> 1.12
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", device="cpu")
    assert isinstance(loaded.policy, GraphActorCriticPolicy) and loaded.policy.hidden == 32
    assert score(SB3GraphSplitPolicy(loaded, pathset, 2, 3.0), matrices, optimum) == pytest.approx(after, rel=1e-9)


def test_graph_pieces_refuse_what_they_cannot_serve():
    with pytest.raises(TypeError, match="need a SplitRoutingEnv"):
        GraphObservation(PathSelectionEnv(triangle(), "gravity", k=2, traffic_options={"count": 4, "seed": 1}))
    flat = SplitRoutingEnv(triangle(), "gravity", k=2, history=1, traffic_options={"count": 4, "seed": 1})
    with pytest.raises(ValueError, match="needs the graph observation"):
        GraphActorCriticPolicy(flat.observation_space, flat.action_space, lambda _: 1e-3)
    with pytest.raises(ValueError, match="one cost per link"):
        GraphActorCriticPolicy(GraphObservation(flat).observation_space, flat.action_space, lambda _: 1e-3)
    with pytest.raises(ValueError, match="graph policy is an actor-critic policy for PPO"):
        make_model("dqn", flat, {}, seed=0, policy="graph")
    with pytest.raises(ValueError, match="unknown policy 'cnn'"):
        make_model("ppo", flat, {}, seed=0, policy="cnn")
