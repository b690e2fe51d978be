"""Learning agents on small networks: the gradient learner, short PPO and DQN runs that must
improve on the untrained policy, the SB3 adapters and make_model, the path-selection rules
(LP-rounded, least norm increase, scoring on a live backend), hyperparameter schedules,
exploration decay, shared starts and group-baseline PPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO

from agents.flows import first_path, from_model, least_loaded, play
from agents.gradient import GradientSettings, train_gradient
from agents.sb3 import SB3SplitPolicy
from envs import PathSelectionEnv, SplitRoutingEnv
from envs.twin import FluidTwin
from topologies import k_shortest_paths

from tests.networks import triangle


def greedy_split_score(model, topology, traffic, optimum) -> float:
    """Mean normalized MLU of a split-routing model's deterministic actions over the whole sequence."""
    env = SplitRoutingEnv(topology, traffic, k=2, history=1, reward="normalized", optimal_mlu=optimum,
                          random_start=False, episode_length=None)
    observation, _ = env.reset(seed=0)
    scores, done = [], False
    while not done:
        action, _ = model.predict(observation, deterministic=True)
        observation, _, terminated, truncated, info = env.step(action)
        scores.append(info["normalized_mlu"])
        done = terminated or truncated
    return float(np.mean(scores))


def test_gradient_learner_finds_the_optimal_split_on_the_triangle():
    """Only a→c traffic, at varying volume: the optimum always sends 4/9 direct, 5/9 via b."""
    topology = triangle()
    volumes = np.random.default_rng(0).uniform(1e6, 4e6, 40)
    tms = np.zeros((40, 3, 3))
    tms[:, 0, 2] = volumes
    pathset = k_shortest_paths(topology, 2)
    optimum = volumes / 9e6  # 4/9 of the volume on the 4 Mb/s link
    torch.manual_seed(0)
    policy, losses = train_gradient(pathset, tms, optimum, GradientSettings(history=2, hidden=(32,), epochs=150,
                                                                             batch_size=8, learning_rate=3e-3))
    assert losses[-1] < losses[0] and losses[-1] < 1.01
    ratios = policy.route(tms[:2])
    p = pathset.pair_index[(0, 2)]
    direct = pathset.paths[p].index((topology.link_index[(0, 2)],))
    assert ratios[p, direct] == pytest.approx(4 / 9, abs=0.02)
    assert FluidTwin(pathset).mlu(tms[2], ratios) / optimum[2] < 1.02


def test_short_ppo_run_improves_on_the_untrained_policy(triangle_traffic):
    topology, traffic, optimum = triangle_traffic
    env = SplitRoutingEnv(topology, traffic, k=2, history=1, reward="normalized", optimal_mlu=optimum, episode_length=16)
    model = PPO("MlpPolicy", env, gamma=0.0, n_steps=128, batch_size=64, learning_rate=1e-3, seed=0,
                policy_kwargs={"net_arch": [64, 64], "log_std_init": -2.0})
    before = greedy_split_score(model, topology, traffic, optimum)
    model.learn(3000)
    after = greedy_split_score(model, topology, traffic, optimum)
    assert after < before - 0.05, (before, after)  # measured: 1.169 -> 1.058


def test_short_dqn_run_improves_on_the_untrained_policy(triangle_traffic):
    topology, traffic, optimum = triangle_traffic
    env = PathSelectionEnv(topology, traffic, k=2, flows_per_pair=4, optimal_mlu=optimum)
    model = DQN("MlpPolicy", env, seed=0, learning_starts=200, exploration_fraction=0.3, target_update_interval=200,
                learning_rate=1e-3, policy_kwargs={"net_arch": [64, 64]})
    indices = np.arange(len(traffic))
    before = np.mean(play(env, from_model(model), indices) / optimum)
    model.learn(5000)
    after = np.mean(play(env, from_model(model), indices) / optimum)
    assert after < before - 0.1, (before, after)  # measured: 1.45 -> 1.19
    # the classic rules bracket it: greedy least-loaded is strong, shortest path is not
    assert np.mean(play(env, least_loaded, indices) / optimum) < np.mean(play(env, first_path, indices) / optimum)


def test_sb3_adapter_sees_what_the_environment_shows(triangle_traffic):
    """The adapter's observation (history + utilization of its own last routing) equals the env's."""
    topology, traffic, optimum = triangle_traffic
    env = SplitRoutingEnv(topology, traffic, k=2, history=2, random_start=False, episode_length=None)
    model = PPO("MlpPolicy", env, seed=0, n_steps=64, batch_size=64)
    policy = SB3SplitPolicy(model, env.pathset, history=2, action_scale=env.action_scale)
    seen = []
    policy.model = type("Spy", (), {"predict": lambda self, obs, deterministic: (seen.append(obs) or
                                                                                  model.predict(obs, deterministic=True))})()
    observation, _ = env.reset(seed=0)
    for t in range(2, 6):
        ratios = policy.route(traffic.matrices[t - 2:t])
        np.testing.assert_allclose(seen[-1], observation, atol=1e-6)
        observation, *_ = env.step(model.predict(observation, deterministic=True)[0])
        np.testing.assert_allclose(ratios, env.ratios(model.predict(seen[-1], deterministic=True)[0]))


def test_sb3_adapter_with_link_cost_actions_routes_as_the_environment_does(triangle_traffic):
    """A model trained under LinkCostActions answers with one cost per link; the adapter
    decodes it into the same split the wrapped environment applies."""
    from envs.graph import LinkCostActions

    topology, traffic, _ = triangle_traffic
    env = LinkCostActions(SplitRoutingEnv(topology, traffic, k=2, history=2, random_start=False, episode_length=None))
    model = PPO("MlpPolicy", env, seed=0, n_steps=64, batch_size=64)
    assert model.action_space.shape == (topology.num_links,)
    policy = SB3SplitPolicy(model, env.unwrapped.pathset, history=2, action_scale=env.unwrapped.action_scale,
                            link_costs=True)
    observation, _ = env.reset(seed=0)
    for t in range(2, 6):
        ratios = policy.route(traffic.matrices[t - 2:t])
        action = model.predict(observation, deterministic=True)[0]
        np.testing.assert_allclose(ratios, env.unwrapped.ratios(env.action(action)))
        observation, *_ = env.step(action)


@pytest.mark.parametrize("algorithm, policy, hyperparameters, options, message", [
    ("ppo", "mlp", {"lerning_rate": 1e-3}, {}, r"agent.hyperparameters: PPO takes no lerning_rate; it takes .*learning_rate"),
    ("dqn", "mlp", {"seed": 3}, {}, r"agent.hyperparameters.seed is set by seed, not here"),
    ("ppo", "mlp", {}, {"log_std": -1}, r"agent.policy_options: ActorCriticPolicy takes no log_std; it takes .*log_std_init"),
    ("ppo", "mlp", {}, {"net_arch": [8]}, r"agent.policy_options.net_arch is set by agent.net_arch, not here"),
    ("dqn", "graph", {}, {"hiden": 8}, r"agent.policy_options: GraphQPolicy takes no hiden; it takes .*hidden"),
])
def test_make_model_names_a_keyword_sb3_does_not_take(triangle_traffic, algorithm, policy, hyperparameters, options,
                                                      message):
    from agents.sb3 import make_model
    from envs.graph import graph_wrapped

    topology, traffic, optimum = triangle_traffic
    env = PathSelectionEnv(topology, traffic, k=2, optimal_mlu=optimum) if algorithm == "dqn" else \
        SplitRoutingEnv(topology, traffic, k=2, history=1, optimal_mlu=optimum)
    if policy == "graph":
        env = graph_wrapped(env)
    with pytest.raises(ValueError, match=message):
        make_model(algorithm, env, hyperparameters, seed=0, policy=policy, policy_options=options)


def route_flows(env, choose, tm_index: int = 0) -> tuple[list[tuple[int, int]], dict]:
    """One path-selection episode on matrix ``tm_index``: each flow's (pair, path), and the last step's info."""
    observation, _ = env.reset(seed=0, options={"tm_index": tm_index})
    routed, done = [], False
    while not done:
        pair, _ = env.current_flow
        observation, _, done, _, info = env.step(choose(env, observation))
        routed.append((pair, info["path"]))
    return routed, info


def test_lp_rounded_follows_the_lp_split_in_whole_flows():
    """a→c 4 Mb/s in 9 flows: the LP sends 4/9 direct, so rounding puts 4 flows there, 5 via b."""
    from agents.flows import LPRounded

    topology = triangle()
    tm = np.zeros((1, 3, 3))
    tm[0, 0, 2] = 4e6
    env = PathSelectionEnv(topology, tm, k=2, flows_per_pair=9)
    routed, info = route_flows(env, LPRounded())
    paths = [path for _, path in routed]
    ps = env.pathset
    direct = ps.paths[ps.pair_index[(0, 2)]].index((topology.link_index[(0, 2)],))
    assert paths.count(direct) == 4 and info["final_mlu"] == pytest.approx(4 / 9)


def test_lp_rounded_rounds_the_tie_broken_split_not_the_solvers_vertex():
    """a→e's 1 Mb/s fills the spur and fixes the MLU at 1; a→c's 2 Mb/s in 2 flows may split any
    way under it. The balanced tie-break splits it evenly, and so does min_load (both paths have
    2 hops), so once one flow has taken a path, that path has its share and the other flow takes
    the other. HiGHS's own vertex puts all of a→c on one path, and both flows would follow it."""
    from agents.flows import LPRounded
    from tests.networks import square_with_spur

    topology = square_with_spur()
    tm = np.zeros((1, 5, 5))
    tm[0, 0, 4], tm[0, 0, 2] = 1e6, 2e6
    env = PathSelectionEnv(topology, tm, k=2, flows_per_pair=2)
    ac = env.pathset.pair_index[(0, 2)]
    for tie_break in ("balanced", "min_load"):
        routed, info = route_flows(env, LPRounded(tie_break))
        ac_paths = [path for pair, path in routed if pair == ac]
        assert sorted(ac_paths) == [0, 1], tie_break
        assert info["final_mlu"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown tie_break 'even'; use one of none, min_load, balanced"):
        LPRounded("even")


def test_lp_previous_rounded_follows_the_previous_matrix_split():
    """Matrix 0 loads b→c with 8 Mb/s, and its LP sends a→c's 2 Mb/s all via d; matrix 1 has a→c
    alone, which its own LP splits evenly. Rounding the previous split puts both a→c flows of
    matrix 1 via d, rounding its own one on each path; before matrix 0 there is no previous
    split, and every path is short of the equal one, so one flow takes each."""
    from agents.flows import BASELINE_CHOOSERS, LPRounded
    from tests.networks import square_with_spur

    topology = square_with_spur()
    tms = np.zeros((2, 5, 5))
    tms[0, 1, 2], tms[0, 0, 2], tms[1, 0, 2] = 8e6, 2e6, 2e6
    env = PathSelectionEnv(topology, tms, k=2, flows_per_pair=2)
    ac = env.pathset.pair_index[(0, 2)]
    via_d = env.pathset.paths[ac].index((topology.link_index[(0, 3)], topology.link_index[(3, 2)]))

    def ac_paths(choose, tm_index: int) -> list[int]:
        return sorted(path for pair, path in route_flows(env, choose, tm_index)[0] if pair == ac)

    assert ac_paths(LPRounded(previous=True), 1) == [via_d, via_d]
    assert ac_paths(LPRounded(), 1) == [0, 1]
    assert ac_paths(LPRounded(previous=True), 0) == [0, 1]
    assert ac_paths(BASELINE_CHOOSERS["lp_previous_rounded"](), 1) == [via_d, via_d]


def test_least_norm_increase_weighs_every_link_the_flow_loads():
    """One 2 Mb/s flow a→c on the idle triangle. Direct, it puts 0.5 on a→c; via b, 0.2 on a→b
    and 0.4 on b→c. Raised norms: 1-norm 0.5 against 0.6 (direct), 4-norm 0.5 against
    (0.2⁴ + 0.4⁴)^¼ ≈ 0.406 (via b), ∞-norm 0.5 against 0.4 (via b, as least-loaded)."""
    from agents.flows import LeastNormIncrease

    tm = np.zeros((1, 3, 3))
    tm[0, 0, 2] = 2e6
    env = PathSelectionEnv(triangle(), tm, k=2)
    observation, _ = env.reset(seed=0)
    ps = env.pathset
    direct = ps.paths[ps.pair_index[(0, 2)]].index((ps.topology.link_index[(0, 2)],))
    via_b = 1 - direct
    for order, expected in ((1, [0.5, 0.6]), (4, [0.5, (0.2 ** 4 + 0.4 ** 4) ** 0.25]), (np.inf, [0.5, 0.4])):
        np.testing.assert_allclose(env.candidate_congestion_increases(order)[[direct, via_b]], expected)
    assert LeastNormIncrease(1)(env, observation) == direct
    assert LeastNormIncrease(4)(env, observation) == via_b == least_loaded(env, observation)
    with pytest.raises(ValueError, match="order must be >= 1"):
        LeastNormIncrease(0.5)
    with pytest.raises(ValueError, match="order must be >= 1"):
        env.candidate_congestion_increases(0.0)


def test_path_selection_on_a_live_backend_is_scored_by_what_it_measured(triangle_traffic):
    """A stand-in live backend (the twin with every demand × 1.25): each chooser's MLU is the
    measured one, 1.25 × the flows' own final MLU, which stays beside it as the twin's."""
    from agents.flows import play_episodes, score_choosers
    from envs.backend import TwinBackend

    topology, traffic, optimum = triangle_traffic
    pathset = k_shortest_paths(topology, 2)
    live = PathSelectionEnv(topology, traffic, pathset=pathset, flows_per_pair=3, backend=TwinBackend(pathset, 1.25))
    twin = PathSelectionEnv(topology, traffic, pathset=pathset, flows_per_pair=3)
    indices = [0, 5, 9]
    scores = score_choosers(live, {"least_loaded": least_loaded, "first_path": first_path}, indices, optimum[indices],
                            measured=True)
    for name, choose in (("least_loaded", least_loaded), ("first_path", first_path)):
        final = play_episodes(twin, choose, indices).final_mlu
        np.testing.assert_allclose(scores[name].twin_normalized_mlu, final / optimum[indices])
        np.testing.assert_allclose(scores[name].mlu, 1.25 * final)
        assert scores[name].drop_fraction.shape == (3,) and (scores[name].decision_time_s > 0).all()
    assert score_choosers(twin, {"first_path": first_path}, indices, optimum[indices])["first_path"] \
        .twin_normalized_mlu is None  # not measured: nothing to set beside the twin's own score


def test_lin_hyperparameters_decay_linearly_to_zero_and_survive_save_and_load(triangle_traffic, tmp_path):
    from agents.sb3 import make_model

    topology, traffic, optimum = triangle_traffic
    env = SplitRoutingEnv(topology, traffic, k=2, history=1, optimal_mlu=optimum)
    model = make_model("ppo", env, {"learning_rate": "lin_0.001", "clip_range": "lin_0.2", "n_steps": 64,
                                    "batch_size": 64, "n_epochs": 1}, seed=0)
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.25) == pytest.approx(2.5e-4)
    assert model.clip_range(0.5) == pytest.approx(0.1)
    model.learn(192)  # three updates, each after its 64 steps: at progress remaining 2/3, 1/3, 0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0
    model.save(tmp_path / "model.zip")
    assert PPO.load(tmp_path / "model.zip", device="cpu").lr_schedule(0.5) == pytest.approx(5e-4)
    for bad in ("0.001", "exp_0.1", "lin_fast"):
        with pytest.raises(ValueError, match=f"learning_rate must be a number or 'lin_<number>'.*{bad!r}"):
            make_model("ppo", env, {"learning_rate": bad}, seed=0)


def test_exploration_decay_sets_the_log_std_on_its_schedule_and_freezes_it(triangle_traffic):
    from agents.sb3 import ExplorationDecay, make_model

    topology, traffic, optimum = triangle_traffic
    env = SplitRoutingEnv(topology, traffic, k=2, history=1, optimal_mlu=optimum)
    model = make_model("ppo", env, {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "learning_rate": 1e-2},
                       seed=0, policy_options={"log_std_init": -1.0})
    seen = []

    class Watch(ExplorationDecay):
        def _on_rollout_start(self) -> None:
            super()._on_rollout_start()
            seen.append(model.policy.log_std.detach().clone())

    model.learn(256, callback=Watch(-1.0, -3.0))  # 4 rollouts, starting at progress 0, 1/4, 2/4, 3/4 of training
    for log_std, expected in zip(seen, (-1.0, -1.5, -2.0, -2.5), strict=True):
        np.testing.assert_allclose(log_std.numpy(), expected, rtol=1e-6)
    # the updates after the last rollout did not move it (a learned log std would have moved at lr 1e-2)
    np.testing.assert_allclose(model.policy.log_std.detach().numpy(), -2.5, rtol=1e-6)
    assert ExplorationDecay(-1.0, -3.0).log_std(0.0) == -3.0
    with pytest.raises(ValueError, match="ExplorationDecay end must be a finite number .* got 'low'"):
        ExplorationDecay(-1.0, "low")
    dqn = DQN("MlpPolicy", PathSelectionEnv(topology, traffic, k=2, flows_per_pair=2, optimal_mlu=optimum),
              learning_starts=8, seed=0)
    with pytest.raises(TypeError, match="ExplorationDecay needs a Gaussian policy with a log_std parameter"):
        dqn.learn(16, callback=ExplorationDecay(-1.0, -3.0))


def shared_start_envs(traffic_setup, n_envs: int, *, shared: bool = True, **env_options):
    """``n_envs`` split-routing envs seeded 0, 1, ... as SB3 seeds a vector env's, on the shared schedule or not."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.split_routing import SharedStarts

    topology, traffic, optimum = traffic_setup

    def make():
        env = SplitRoutingEnv(topology, traffic, k=2, history=1, reward="normalized", optimal_mlu=optimum,
                              episode_length=5, **env_options)
        return SharedStarts(env, schedule_seed=7) if shared else env

    venv = DummyVecEnv([make] * n_envs)
    venv.seed(0)
    return venv


def walk_matrices(venv, steps: int) -> np.ndarray:
    """(steps, envs) tm_index of every env at every step, acting at random."""
    venv.reset()
    seen = []
    for _ in range(steps):
        *_, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(venv.num_envs)]))
        seen.append([info["tm_index"] for info in infos])
    return np.array(seen)


def test_shared_starts_put_every_env_on_the_same_matrix_and_repeat_when_seeded(triangle_traffic):
    from envs.split_routing import SharedStarts

    seen = walk_matrices(shared_start_envs(triangle_traffic, 3), 40)  # 8 episodes of 5 steps
    assert (seen == seen[:, :1]).all()
    starts = seen[::5, 0]
    assert len(set(starts.tolist())) > 3 and (np.diff(seen[:, 0].reshape(8, 5), axis=1) == 1).all()
    np.testing.assert_array_equal(walk_matrices(shared_start_envs(triangle_traffic, 3), 40), seen)  # seeded: repeats
    apart = walk_matrices(shared_start_envs(triangle_traffic, 3, shared=False), 40)
    assert (apart != apart[:, :1]).any()  # each env's own seed scatters them
    fixed = walk_matrices(shared_start_envs(triangle_traffic, 2, random_start=False), 10)
    np.testing.assert_array_equal(fixed[:, 0], [1, 2, 3, 4, 5] * 2)  # no random start: the first matrix with history
    topology, traffic, optimum = triangle_traffic
    named = SharedStarts(SplitRoutingEnv(topology, traffic, k=2, history=1, episode_length=5), schedule_seed=7)
    assert named.reset(seed=0, options={"start": 3})[1]["tm_index"] == 3  # a start the caller names wins
    with pytest.raises(TypeError, match="SharedStarts needs a SplitRoutingEnv underneath, got PathSelectionEnv"):
        SharedStarts(PathSelectionEnv(topology, traffic, k=2, optimal_mlu=optimum), schedule_seed=0)
    with pytest.raises(ValueError, match="schedule_seed must be an integer, got 1.5"):
        SharedStarts(SplitRoutingEnv(topology, traffic, k=2), schedule_seed=1.5)


def test_group_advantages_are_each_reward_minus_the_other_envs_mean():
    from agents.sb3 import group_advantages

    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    np.testing.assert_allclose(group_advantages(rewards), [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0 - 1.5, 0 - 1.5, 3 - 0.0]])
    assert group_advantages(rewards).dtype == np.float32


def test_group_baseline_ppo_trains_on_group_advantages_and_improves(triangle_traffic):
    from agents.sb3 import GroupBaselinePPO, group_advantages, make_model

    topology, traffic, optimum = triangle_traffic
    seen = []

    class Recording(GroupBaselinePPO):
        def train(self) -> None:  # the buffer as the update sees it
            buffer = self.rollout_buffer
            seen.append((buffer.rewards.copy(), buffer.advantages.copy(), buffer.values.copy()))
            super().train()

    model = Recording("MlpPolicy", shared_start_envs(triangle_traffic, 4), gamma=0.0, n_steps=32, batch_size=64,
                      learning_rate=1e-3, seed=0, policy_kwargs={"net_arch": [64, 64], "log_std_init": -2.0})
    before = greedy_split_score(model, topology, traffic, optimum)
    model.learn(3000)
    after = greedy_split_score(model, topology, traffic, optimum)
    assert after < before - 0.05, (before, after)
    rewards, advantages, values = seen[-1]
    np.testing.assert_allclose(advantages, group_advantages(rewards), rtol=1e-6)
    assert not np.allclose(advantages, rewards - values, atol=1e-3)  # not the critic's (SB3's GAE with gamma 0)
    assert type(make_model("ppo", shared_start_envs(triangle_traffic, 2), {"gamma": 0.0}, seed=0,
                           advantage="group")) is GroupBaselinePPO
    with pytest.raises(ValueError, match="the group baseline compares one step's rewards, so it needs gamma 0"):
        GroupBaselinePPO("MlpPolicy", shared_start_envs(triangle_traffic, 2), gamma=0.99)
    with pytest.raises(ValueError, match="n_envs must be >= 2, got 1"):
        GroupBaselinePPO("MlpPolicy", shared_start_envs(triangle_traffic, 1), gamma=0.0)
    with pytest.raises(RuntimeError, match=r"needs every environment on the same matrix .*SharedStarts"):
        GroupBaselinePPO("MlpPolicy", shared_start_envs(triangle_traffic, 3, shared=False), gamma=0.0,
                         n_steps=16, batch_size=16, seed=0).learn(48)
    with pytest.raises(ValueError, match="the group advantage is PPO's .*not dqn's"):
        make_model("dqn", PathSelectionEnv(topology, traffic, k=2, optimal_mlu=optimum), {}, seed=0, advantage="group")
    with pytest.raises(ValueError, match="unknown advantage 'critic'; choose one of gae, group"):
        make_model("ppo", shared_start_envs(triangle_traffic, 2), {}, seed=0, advantage="critic")
