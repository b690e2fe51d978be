"""The Gymnasium environments: API checkers, errors, determinism, and rewards and
observations against hand-computed cases on the triangle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import PathSelectionEnv, SplitRoutingEnv, ratios_from_action
from topologies import TopologyError, TrafficError, k_shortest_paths, load_traffic

from tests.networks import A_TO_C, a_to_c_traffic, triangle


def pair(pathset, o: int, d: int) -> int:
    return pathset.pair_index[(o, d)]


@pytest.mark.parametrize("env_id", sorted(envs.ENV_IDS.values()))
def test_registered_envs_pass_both_checkers(env_id):
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(env_id).unwrapped, warn=False)


@pytest.mark.parametrize("make", [
    lambda: SplitRoutingEnv(triangle(), load_traffic("gravity", triangle(), count=20, seed=1), k=2, history=2,
                            episode_length=5),
    lambda: PathSelectionEnv(triangle(), load_traffic("gravity", triangle(), count=20, seed=1), k=2,
                             flows_per_pair=3),
])
def test_small_envs_pass_both_checkers(make):
    gym_check_env(make(), skip_render_check=True)
    sb3_check_env(make(), warn=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"topology": "atlantis"}, "atlantis"),
    ({"k": 0}, "must be an integer >= 1, got 0"),
    ({"history": 0}, "history"),
    ({"traffic": np.ones((10, 5, 5))}, "5"),
    ({"reward": "normalized"}, "optimal_mlu"),
    ({"reward": "throughput"}, "unknown reward"),
    ({"optimal_mlu": np.ones(3)}, "one value per traffic matrix"),
    ({"episode_length": 0}, "episode_length"),
    ({"spread_weight": -0.5}, "spread_weight must be a finite number >= 0, got -0.5"),
    ({"spread_weight": float("nan")}, "spread_weight must be a finite number >= 0"),
    ({"spread_weight": 0.1}, "spread_weight > 0 .* needs optimal_mlu"),
])
def test_split_routing_rejects_bad_parameters(kwargs, message):
    with pytest.raises((ValueError, TopologyError, TrafficError, KeyError), match=message):
        SplitRoutingEnv(**{"traffic": "abilene-test", **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    ({"k": -1}, "k"), ({"flows_per_pair": 0}, "flows_per_pair"), ({"backend": "ns3"}, "unknown backend"),
    ({"traffic": np.ones((10, 4, 4))}, "4"), ({"utilization_norm": 0.5}, "utilization_norm"),
    ({"utilization_norm": float("nan")}, "utilization_norm"),
])
def test_path_selection_rejects_bad_parameters(kwargs, message):
    with pytest.raises((ValueError, TopologyError, TrafficError), match=message):
        PathSelectionEnv(**{"traffic": "abilene-test", **kwargs})


def test_split_routing_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'ns3'; choose one of twin, mininet"):
        SplitRoutingEnv(triangle(), a_to_c_traffic(), k=2, history=1, backend="ns3")


def test_path_selection_runs_its_routing_on_the_backend():
    """The finished episode's routing goes to the backend; the twin must measure what the env tracked."""
    env = PathSelectionEnv(triangle(), a_to_c_traffic(), k=2)
    env.reset(seed=0, options={"tm_index": 0})
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(1)
    assert info["measured_mlu"] == pytest.approx(info["final_mlu"])


def rollout(env, seed: int, steps: int = 12):
    observation, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [observation]
    for _ in range(steps):
        observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trace += [observation, np.array([reward])]
        if terminated or truncated:
            trace.append(env.reset()[0])
    return np.concatenate([np.ravel(x) for x in trace])


@pytest.mark.parametrize("make", [
    lambda: SplitRoutingEnv(triangle(), load_traffic("gravity", triangle(), count=30, seed=2), k=2, history=2,
                            episode_length=4),
    lambda: PathSelectionEnv(triangle(), load_traffic("gravity", triangle(), count=30, seed=2), k=2, flows_per_pair=2),
])
def test_same_seed_same_episode_and_different_seed_differs(make):
    np.testing.assert_array_equal(rollout(make(), 7), rollout(make(), 7))
    assert not np.array_equal(rollout(make(), 7), rollout(make(), 8))


def test_split_routing_reward_and_observation_hand_computed():
    """a→c 4 Mb/s over direct a→c (4 Mb/s) and a-b-c (10, 5 Mb/s). An equal split loads a→c
    to 0.5, b→c to 0.4, a→b to 0.2. The optimum sends 16/9 Mb/s direct: MLU 4/9."""
    env = SplitRoutingEnv(triangle(), a_to_c_traffic(), k=2, history=1, reward="normalized",
                          optimal_mlu=np.full(4, 4 / 9), random_start=False, episode_length=None)
    observation, info = env.reset(seed=0)
    ps = env.pathset
    p = pair(ps, 0, 2)
    assert info["tm_index"] == 1
    demands = observation[:ps.num_pairs]
    np.testing.assert_allclose(demands, np.eye(ps.num_pairs)[p])  # scale-free: the largest demand is 1
    np.testing.assert_allclose(observation[ps.num_pairs:], [0.4, 0, 0.8, 0, 1.0, 0], atol=1e-7)  # equal split at reset

    observation, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert info["mlu"] == pytest.approx(0.5)
    assert reward == pytest.approx((4 / 9) / 0.5)
    assert info["normalized_mlu"] == pytest.approx(9 / 8)
    assert info["delivered_bps"] == pytest.approx(A_TO_C) and info["drops_bps"] == pytest.approx(0)
    np.testing.assert_allclose(observation[ps.num_pairs:], [0.4, 0, 0.8, 0, 1.0, 0], atol=1e-7)
    assert not terminated and not truncated

    # the optimal split as an action: logit = log(ratio) / action_scale
    direct = ps.paths[p].index((ps.topology.link_index[(0, 2)],))
    optimal = np.zeros(2)
    optimal[direct], optimal[1 - direct] = 4 / 9, 5 / 9
    action = np.zeros((ps.num_pairs, 2))
    action[p] = np.log(optimal) / env.action_scale - np.log(optimal).max() / env.action_scale
    _, reward, _, _, info = env.step(action.ravel().astype(np.float32))
    assert info["mlu"] == pytest.approx(4 / 9, rel=1e-6) and reward == pytest.approx(1.0, rel=1e-6)
    _, _, _, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert truncated  # 4 matrices, history 1: three steps


def test_split_routing_mlu_reward_is_relative_to_equal_split():
    env = SplitRoutingEnv(triangle(), a_to_c_traffic(), k=2, history=1, reward="mlu", random_start=False)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert reward == pytest.approx(-1.0) and "normalized_mlu" not in info


def test_split_routing_spread_reward_hand_computed():
    """The equal split of the hand-computed case loads a→b, b→c, a→c to 0.2, 0.4, 0.5: ÷ the
    optimum 4/9 that is 0.45, 0.9, 1.125, on Fortz–Thorup's pieces of slope 3, 10 (= 70 there)
    and 70: φ = 3·0.45 − 2/3, 11/3 and 11/3 + 70·0.225; the three reverse links cost 0."""
    phi = (3 * 0.45 - 2 / 3) + 11 / 3 + (11 / 3 + 70 * 0.225)
    for weight in (0.0, 0.1, 2.0):
        env = SplitRoutingEnv(triangle(), a_to_c_traffic(), k=2, history=1, reward="normalized",
                              optimal_mlu=np.full(4, 4 / 9), spread_weight=weight, random_start=False)
        env.reset(seed=0)
        _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert reward == pytest.approx((4 / 9) / 0.5 - weight * phi / 6)
        assert info.get("spread_cost", phi / 6) == pytest.approx(phi / 6)  # reported when charged
        assert ("spread_cost" in info) == (weight > 0)
    env = SplitRoutingEnv(triangle(), a_to_c_traffic(), k=2, history=1, reward="mlu",
                          optimal_mlu=np.full(4, 4 / 9), spread_weight=0.1, random_start=False)
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(np.zeros(env.action_space.shape, np.float32))
    assert reward == pytest.approx(-1.0 - 0.1 * phi / 6)  # on the MLU reward too


def test_ratios_from_action_is_a_masked_softmax():
    ps = k_shortest_paths(triangle(), 2)
    action = np.random.default_rng(0).uniform(-3, 3, ps.num_slots)  # outside the box: clipped
    ratios = ratios_from_action(action, ps.mask, 3.0)
    np.testing.assert_allclose(ratios.sum(axis=1), 1.0)
    clipped = np.clip(action, -1, 1).reshape(ps.num_pairs, 2) * 3.0
    np.testing.assert_allclose(ratios[:, 0] / ratios[:, 1], np.exp(clipped[:, 0] - clipped[:, 1]))


def test_path_selection_hand_computed():
    """Two 2 Mb/s flows a→c: the first on the direct link (utilization 0.5), the second on
    a-b-c (b→c 0.4). Reference u_ref = equal-split MLU = 0.5."""
    env = PathSelectionEnv(triangle(), a_to_c_traffic(1), k=2, flows_per_pair=2)
    observation, info = env.reset(seed=0, options={"tm_index": 0})
    ps = env.pathset
    p = pair(ps, 0, 2)
    direct = ps.paths[p].index((ps.topology.link_index[(0, 2)],))
    assert info["flows"] == 2
    np.testing.assert_allclose(env.candidate_bottlenecks()[[direct, 1 - direct]], [0.5, 0.4])
    e = ps.topology.num_links
    np.testing.assert_allclose(observation[:e], 0)
    np.testing.assert_allclose(observation[e:e + 2][[direct, 1 - direct]], [1.0, 0.8])  # ÷ u_ref

    observation, reward, terminated, _, info = env.step(direct)
    assert reward == pytest.approx(-1.0) and info["mlu"] == pytest.approx(0.5) and not terminated
    np.testing.assert_allclose(env.candidate_bottlenecks()[[direct, 1 - direct]], [1.0, 0.4])
    _, reward, terminated, _, info = env.step(1 - direct)
    assert reward == pytest.approx(0.0) and terminated and info["final_mlu"] == pytest.approx(0.5)


def test_path_selection_norm_reward_charges_every_flow_hand_computed():
    """The same two flows with the 2-norm: the second flow, which the MLU reward does not
    charge, adds a→b 0.2 and b→c 0.4 to a→c's 0.5: −(√0.45 − 0.5) ÷ 0.5."""
    env = PathSelectionEnv(triangle(), a_to_c_traffic(1), k=2, flows_per_pair=2, utilization_norm=2)
    env.reset(seed=0, options={"tm_index": 0})
    ps = env.pathset
    direct = ps.paths[pair(ps, 0, 2)].index((ps.topology.link_index[(0, 2)],))
    _, reward, _, _, info = env.step(direct)
    assert reward == pytest.approx(-1.0) and info["mlu"] == pytest.approx(0.5)
    _, reward, _, _, info = env.step(1 - direct)
    assert reward == pytest.approx(-(np.sqrt(0.45) - 0.5) / 0.5)
    assert info["final_mlu"] == pytest.approx(0.5)  # scored by the MLU whatever the reward


@pytest.mark.parametrize("norm", [np.inf, 4.0])
def test_path_selection_episode_return_is_minus_final_congestion(norm):
    traffic = load_traffic("gravity", triangle(), count=5, seed=3)
    env = PathSelectionEnv(triangle(), traffic, k=2, flows_per_pair=3, optimal_mlu=np.full(5, 0.25),
                           utilization_norm=norm)
    env.reset(seed=1)
    total, done = 0.0, False
    rng = np.random.default_rng(0)
    while not done:
        _, reward, done, _, info = env.step(int(rng.integers(2)))
        total += reward
    utilization = env.utilization()
    final = utilization.max() if norm == np.inf else (utilization ** norm).sum() ** (1 / norm)
    assert total == pytest.approx(-final / 0.25)
    assert info["normalized_mlu"] == pytest.approx(info["final_mlu"] / 0.25)
    assert info["final_mlu"] == pytest.approx(utilization.max())


def test_vector_envs_gymnasium_and_sb3_subprocess():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    traffic = load_traffic("gravity", triangle(), count=20, seed=1)
    kwargs = {"topology": triangle(), "traffic": traffic, "k": 2, "history": 2, "episode_length": 3}
    vector = gym.vector.SyncVectorEnv([lambda: SplitRoutingEnv(**kwargs)] * 3)
    observations, _ = vector.reset(seed=0)
    assert observations.shape == (3, vector.single_observation_space.shape[0])
    observations, rewards, *_ = vector.step(vector.action_space.sample())
    assert rewards.shape == (3,) and np.all(rewards < 0)
    vector.close()

    sub = make_vec_env(PathSelectionEnv, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                       env_kwargs={"topology": triangle(), "traffic": traffic, "k": 2})
    try:
        sub.reset()
        observations, rewards, dones, infos = sub.step(np.array([0, 1]))
        assert observations.shape == (2, sub.observation_space.shape[0]) and len(infos) == 2
    finally:
        sub.close()
