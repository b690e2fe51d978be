"""Exporting PPO's split-routing policies (experiments.export_ppo): the bundle unrolls the
policy's loop through the network (it observes the utilization its own previous routing
caused) from the environment's reset state, and decides as the trained policy does when
stepped alike, as the environment itself would have it decide, for the link-cost MLP, the
per-slot MLP and the graph policy with and without refinement rounds."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents.bundle import load_bundle
from agents.evaluation import history_for
from experiments import BENCH_CONFIG_DIR, compose, load_run, train_config
from topologies import k_shortest_paths, load_topology

TINY = ("topology=b4", "traffic=b4-real", "eval.every=3", "eval.periodic_every=1000", "eval.with_baselines=false",
        "agent.total_timesteps=128", "agent.hyperparameters.n_steps=32", "agent.hyperparameters.batch_size=32")
COSTS = ("agent=ppo_costs_spread", "agent.net_arch=[16]", *TINY)
GRAPH = ("agent=ppo_gnn", "agent.policy_options.hidden=8", "agent.policy_options.layers=1", *TINY)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """PPO's default agent (an MLP acting with link costs) and its graph policy, trained tiny,
    each exported once."""
    from experiments.export import export_bundle

    root = tmp_path_factory.mktemp("export_ppo")
    trained = {}
    for name, overrides in (("costs", COSTS), ("graph", GRAPH)):
        run = train_config(compose(*overrides, config_dirs=[BENCH_CONFIG_DIR]), root / f"run_{name}")
        trained[name] = (run, root / f"bundle_{name}", export_bundle(run, root / f"bundle_{name}"))
    return trained


def sharpened(run, factor: float = 30.0):
    """The run loaded afresh with its action head's weights × ``factor``: 128 steps leave the
    mean action near 0 (SB3 initialises that head with gain 0.01), where the utilization the
    policy observes hardly moves a decision; sharpened, it does, so parity tests the loop."""
    fresh = load_run(run.directory)
    with torch.no_grad():
        for parameter in fresh.model.policy.action_net.parameters():
            parameter.mul_(factor)
    return fresh


def env_decisions(run, start: int, steps: int) -> list[np.ndarray]:
    """The ratios the trained model sets in its own training environment (the run's wrappers,
    deterministic actions) over ``steps`` matrices of the held-out sequence from ``start``."""
    from envs.split_routing import SplitRoutingEnv
    from experiments.learners import learner

    cfg, data = run.config, run.data
    env = SplitRoutingEnv(data.topology, data.test.matrices, pathset=data.pathset, history=cfg.env.history,
                          reward="mlu", episode_length=steps, random_start=False, action_scale=cfg.env.action_scale)
    wrapper = learner("ppo").wrapper(cfg)
    wrapped = wrapper(env) if wrapper else env
    observation, _ = wrapped.reset(options={"start": start})
    decisions = []
    for _ in range(steps):
        action, _ = run.model.predict(observation, deterministic=True)
        decisions.append(env.ratios(wrapped.action(action) if wrapper else action))
        observation, *_ = wrapped.step(action)
    return decisions


@pytest.mark.parametrize("kind", ["costs", "graph"])
def test_a_ppo_bundle_decides_as_the_trained_policy_stepped_from_reset(runs, kind):
    from experiments.export_ppo import UnrolledPolicy, unroll_for

    run, bundle_dir, manifest = runs[kind]
    data, cfg = run.data, run.config
    unroll = unroll_for(cfg.env.history)
    history = cfg.env.history + unroll - 1
    assert manifest.kind == f"ppo/{cfg.agent.policy}" and (unroll, manifest.history) == (8, history) == (8, 10)
    assert manifest.input.shape == [1, history, data.pathset.num_pairs]
    assert 0 <= manifest.parity_max_abs_diff <= 1e-5
    bundle = load_bundle(bundle_dir, topology=data.topology, pathset=data.pathset)
    reference = UnrolledPolicy(run.policy)
    for t in data.test.indices(1):
        window = history_for(reference, data.test.matrices, int(t))
        assert np.abs(bundle.decide(window) - reference.route(window)).max() <= 1e-5
    # the run's own adapter, reset and routing the 8 matrices up to t one after another: its last answer
    t = int(data.test.indices(1)[-1])
    policy = run.policy
    policy.reset()
    for routed in range(t - unroll + 1, t + 1):
        ratios = policy.route(data.test.matrices[routed - cfg.env.history:routed])
    np.testing.assert_allclose(bundle.decide(data.test.matrices[:t]), ratios, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["costs", "graph"])
def test_the_unrolled_graph_is_the_environments_loop(runs, kind, tmp_path):
    """Where the policy's previous routing matters, the export still decides as the training
    environment has the policy decide over the same matrices, and not as one decision from
    an equal split would."""
    from experiments.export import export_bundle
    from experiments.export_ppo import unroll_for

    run = sharpened(runs[kind][0])
    manifest = export_bundle(run, tmp_path / "bundle")
    assert manifest.parity_max_abs_diff <= 1e-5
    bundle = load_bundle(tmp_path / "bundle")
    matrices, unroll = run.data.test.matrices, unroll_for(run.config.env.history)
    moved = 0.0
    for t in run.data.test.indices(4):
        decisions = env_decisions(run, int(t) - unroll + 1, unroll)
        ratios = bundle.decide(matrices[:t])
        np.testing.assert_allclose(ratios, decisions[-1], rtol=0, atol=1e-5)
        moved = max(moved, float(np.abs(ratios - env_decisions(run, int(t), 1)[0]).max()))
    assert moved > 1e-3  # the loop mattered: one decision from the reset state routes otherwise


def fresh_model(variant: str, pathset, matrices: np.ndarray, history: int):
    """An untrained PPO model for ``variant`` on its training environment's spaces, its weights
    × 5 so that every input moves its decisions."""
    from stable_baselines3.common.env_util import make_vec_env

    from agents.sb3 import make_model
    from envs.graph import LinkCostActions, graph_wrapped
    from envs.split_routing import SplitRoutingEnv

    wrapper = {"slots": None, "link_costs": LinkCostActions, "graph": graph_wrapped,
               "refining": functools.partial(graph_wrapped, paths=True)}[variant]
    env = make_vec_env(SplitRoutingEnv, n_envs=1, seed=0, wrapper_class=wrapper,
                       env_kwargs={"topology": pathset.topology, "traffic": matrices, "pathset": pathset,
                                   "history": history, "episode_length": 8})
    graph = variant in ("graph", "refining")
    options = {"hidden": 16, "layers": 2, **({"rounds": 2} if variant == "refining" else {})} if graph else {}
    model = make_model("ppo", env, {"n_steps": 16, "batch_size": 16}, net_arch=[32], seed=0,
                       policy="graph" if graph else "mlp", policy_options=options)
    env.close()
    with torch.no_grad():
        for parameter in model.policy.parameters():
            parameter.mul_(5.0)
    return model


@pytest.mark.parametrize("variant", ["slots", "link_costs", "graph", "refining"])
def test_every_ppo_policy_exports_its_unrolled_loop_exactly(variant):
    from agents.bundle import inference_session
    from agents.sb3 import SB3GraphSplitPolicy, SB3SplitPolicy
    from experiments.export import onnx_bytes
    from experiments.export_ppo import UnrolledPolicy, export_module

    pathset = k_shortest_paths(load_topology("b4"), 4)
    n = pathset.topology.num_nodes
    rng = np.random.default_rng(1)
    matrices = rng.gamma(0.5, 1e9, size=(30, n, n)) * (1 - np.eye(n))
    model = fresh_model(variant, pathset, matrices, history=3)
    if variant in ("graph", "refining"):
        adapter = SB3GraphSplitPolicy(model, pathset, 3, 3.0)
    else:
        adapter = SB3SplitPolicy(model, pathset, 3, 3.0, link_costs=variant == "link_costs")
    reference = UnrolledPolicy(adapter)
    session = inference_session(onnx_bytes(export_module(model, pathset, 3, 3.0, link_costs=variant == "link_costs"),
                                           reference.history, pathset.num_pairs))
    worst = moved = 0.0
    for t in range(reference.history, len(matrices)):
        window = matrices[t - reference.history:t]
        (graph,) = session.run(None, {"demands": pathset.demands(window).astype(np.float32)[None]})
        ratios = reference.route(window)
        worst = max(worst, float(np.abs(graph[0] - ratios).max()))
        adapter.reset()
        moved = max(moved, float(np.abs(adapter.route(window) - ratios).max()))
    assert worst <= 1e-5
    assert moved > 1e-4  # the unrolled decisions differ from one decision from the reset state


def test_rlte_policy_export_writes_a_ppo_bundle(runs, tmp_path):
    from experiments.cli import app

    run, _, _ = runs["costs"]
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["policy", "export", f"run={run.directory}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (f"bundle {out}: policy ppo_costs_spread (ppo/mlp) for b4, H=10, parity max |diff|"
            in " ".join(result.output.split()))
    assert load_bundle(out).manifest.parity_max_abs_diff <= 1e-5


def test_dqn_still_cannot_export(tmp_path):
    from experiments.api import Run
    from experiments.export import export_bundle

    cfg = compose("agent=dqn_gnn", *TINY[:5])
    with pytest.raises(ValueError, match="agent.algorithm=dqn cannot be exported: it chooses one path per flow"):
        export_bundle(Run(tmp_path, cfg, None, object()), tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
