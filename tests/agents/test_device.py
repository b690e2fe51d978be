"""The ``device`` setting: which device each kind trains on, the refusals of a device this
machine lacks, and (on a machine with CUDA) that training there learns what it learns on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.device import check_device_setting, module_device, resolve_device
from agents.gnn import GNNPolicy, GNNSettings, LinkGNN, TrainingSet, train_gnn
from agents.gradient import GradientSettings, SplitRatioNet, train_gradient
from agents.lp import optimal_mlu
from topologies import k_shortest_paths, load_topology, load_traffic

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="this machine has no CUDA device")


@pytest.mark.parametrize("setting", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "", "auto "])
def test_a_device_setting_that_names_no_device_is_refused(setting):
    with pytest.raises(ValueError, match=r"device must be auto, cpu, cuda or cuda:N"):
        check_device_setting(setting)


@pytest.mark.parametrize("cuda, gpu_pays, expected", [
    (False, False, "cpu"), (False, True, "cpu"), (True, False, "cpu"), (True, True, "cuda")])
def test_auto_takes_cuda_only_when_present_and_the_model_is_worth_it(monkeypatch, cuda, gpu_pays, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto", gpu_pays=gpu_pays) == torch.device(expected)
    assert resolve_device("cpu", gpu_pays=gpu_pays) == torch.device("cpu")


def test_cuda_on_a_machine_without_it_is_an_error_not_a_quiet_cpu_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for setting in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"device={setting}: torch .* sees no CUDA device on this machine; "
                                             r"use device=cpu"):
            resolve_device(setting, gpu_pays=True)


def test_a_cuda_index_past_the_machine_s_devices_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1", gpu_pays=False) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device=cuda:2: this machine has 2 CUDA device\(s\), numbered from 0"):
        resolve_device("cuda:2", gpu_pays=False)


@pytest.fixture(scope="module")
def b4():
    topology = load_topology("b4")
    pathset = k_shortest_paths(topology, 3)
    matrices = load_traffic("b4").matrices[:16]
    return pathset, matrices, np.array([optimal_mlu(topology, m) for m in matrices])


def test_a_policy_routes_where_its_network_is_and_answers_in_numpy(b4):
    pathset, matrices, optimum = b4
    policy, _ = train_gradient(pathset, matrices, optimum, GradientSettings(history=2, hidden=(8,), epochs=1),
                               device="cpu")
    assert policy.device == torch.device("cpu")
    ratios = policy.route(matrices[:2])
    assert isinstance(ratios, np.ndarray) and ratios.shape == (pathset.num_pairs, pathset.k)
    np.testing.assert_allclose(ratios.sum(axis=1), 1.0, atol=1e-6)


@needs_cuda
def test_the_gradient_mlp_learns_on_cuda_what_it_learns_on_the_cpu(b4, tmp_path):
    pathset, matrices, optimum = b4
    settings = GradientSettings(history=2, hidden=(16,), epochs=5)
    cpu_policy, cpu_losses = train_gradient(pathset, matrices, optimum, settings, device="cpu")
    gpu_policy, gpu_losses = train_gradient(pathset, matrices, optimum, settings, device="cuda")
    assert gpu_policy.device.type == "cuda"
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-3)  # same seed, same batches; float32 sums differ
    np.testing.assert_allclose(gpu_policy.route(matrices[:2]), cpu_policy.route(matrices[:2]), atol=1e-3)
    gpu_policy.net.save(tmp_path / "model.pt")  # saved from the GPU, loaded where there is none
    assert module_device(SplitRatioNet.load(pathset, tmp_path / "model.pt")).type == "cpu"


@needs_cuda
def test_the_graph_network_learns_on_cuda_what_it_learns_on_the_cpu(b4, tmp_path):
    pathset, matrices, optimum = b4
    settings = GNNSettings(history=2, hidden=8, layers=1, rounds=1, epochs=3)
    cpu_net, cpu_losses = train_gnn([TrainingSet(pathset, matrices, optimum)], settings, device="cpu")
    gpu_net, gpu_losses = train_gnn([TrainingSet(pathset, matrices, optimum)], settings, device="cuda")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-3)
    routed = GNNPolicy(pathset, gpu_net).route(matrices[:2])
    np.testing.assert_allclose(routed, GNNPolicy(pathset, cpu_net).route(matrices[:2]), atol=1e-3)
    gpu_net.save(tmp_path / "model.pt")
    assert module_device(LinkGNN.load(tmp_path / "model.pt")).type == "cpu"


@needs_cuda
@pytest.mark.parametrize("overrides, stop_at, budget", [
    (["agent=gradient_gnn", "agent.epochs=3", "agent.hidden=8", "agent.layers=1", "agent.rounds=2"], 1, 3),
    (["agent.total_timesteps=768", "agent.hyperparameters.n_steps=64", "agent.hyperparameters.batch_size=64",
      "agent.net_arch=[16]"], 300, 768),
])
def test_a_run_stopped_on_cuda_resumes_there_and_scores(tmp_path, monkeypatch, overrides, stop_at, budget):
    """The whole run on the GPU: periodic scoring, a stop, the resume from the CPU-loaded state, the table."""
    from experiments.train import TrainingInterrupted, run_training
    from tests.experiments.test_resume import signal_at
    from tests.support import compose_train

    monkeypatch.setenv("RLTE_CACHE", str(tmp_path / "cache"))
    cfg = compose_train(*overrides, "device=cuda", "topology=b4", "traffic=b4-real", "eval.every=3",
                        "eval.periodic_every=256", "eval.with_baselines=false")
    with monkeypatch.context() as patched:
        signal_at(patched, stop_at)
        with pytest.raises(TrainingInterrupted):
            run_training(cfg, tmp_path / "run")
    resumed = run_training(cfg, tmp_path / "run", resume=True)
    assert resumed["device"] == "cuda" and resumed["curve"][-1]["step"] == budget
    assert min(point["median"] for point in resumed["curve"]) >= 1.0 - 1e-6  # the optimum bounds every score
