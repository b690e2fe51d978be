"""A run stopped by a signal keeps its latest checkpoint, says so, and resumes where it stopped;
without a terminal, training prints progress lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.support import ROOT, compose_train

SMALL_GRADIENT = ("agent=gradient", "agent.epochs=6", "agent.hidden=[16]", "topology=b4", "traffic=b4-real",
                  "eval.every=3", "eval.periodic_every=2000", "eval.with_baselines=false")


def signal_at(monkeypatch, step: int, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` to this process when training reports ``step`` (as `kill` would, mid-run)."""
    from experiments.progress import Progress

    real = Progress.log

    def log(self, at: int, total: int, unit: str, **values: float) -> None:
        if at == step:
            os.kill(os.getpid(), signum)
        real(self, at, total, unit, **values)

    monkeypatch.setattr(Progress, "log", log)


def test_a_gradient_run_stopped_by_sigterm_resumes_to_the_model_it_would_have_trained(tmp_path, monkeypatch):
    from experiments.data import prepare
    from experiments.progress import read_state
    from experiments.train import TrainingInterrupted, load_trained, run_training

    monkeypatch.setenv("RLTE_CACHE", str(tmp_path / "cache"))
    cfg = compose_train(*SMALL_GRADIENT)
    whole = run_training(cfg, tmp_path / "whole")
    with monkeypatch.context() as patched:
        signal_at(patched, 3)  # during epoch 3's report: training stops after epoch 4, checkpointed
        with pytest.raises(TrainingInterrupted, match="SIGTERM: training stopped at 4 of 6 epochs"):
            run_training(cfg, tmp_path / "stopped")
    stopped = tmp_path / "stopped"
    state = read_state(stopped)
    assert (state["status"], state["step"], state["reason"]) == ("interrupted", 4, "SIGTERM")
    assert [point["step"] for point in state["curve"]] == [0, 2, 4]
    assert not (stopped / "model.pt").exists() and (stopped / "last_model.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back
    latest = load_trained(cfg, prepare(cfg), stopped)  # what rlte eval scores meanwhile
    with pytest.raises(ValueError, match="finished training; nothing to resume"):
        run_training(cfg, tmp_path / "whole", resume=True)

    resumed = run_training(cfg, stopped, resume=True)
    assert read_state(stopped)["status"] == "finished" and not (stopped / "last_model.pt").exists()
    assert [point["step"] for point in resumed["curve"]] == [point["step"] for point in whole["curve"]] == [0, 2, 4, 6]
    # optimizer, schedule and batch order restored: the same weights as the run that was never stopped
    finished, reference = torch.load(stopped / "model.pt"), torch.load(tmp_path / "whole" / "model.pt")
    assert all(torch.equal(finished["state_dict"][key], value) for key, value in reference["state_dict"].items())
    assert not all(torch.equal(param, reference["state_dict"][key]) for key, param in latest.state_dict().items())
    for key in ("median", "p90", "max"):
        assert resumed["final"]["gradient"][key] == pytest.approx(whole["final"]["gradient"][key], rel=1e-9)


def test_a_ppo_run_stopped_by_ctrl_c_resumes_to_its_step_count(tmp_path, monkeypatch):
    from experiments.learners import learner
    from experiments.progress import read_state
    from experiments.train import TrainingInterrupted, run_training

    monkeypatch.setenv("RLTE_CACHE", str(tmp_path / "cache"))
    cfg = compose_train("agent.total_timesteps=768", "agent.hyperparameters.n_steps=64",
                        "agent.hyperparameters.batch_size=64", "agent.net_arch=[16]", "topology=b4",
                        "traffic=b4-real", "eval.every=3", "eval.periodic_every=256", "eval.with_baselines=false")
    with monkeypatch.context() as patched:
        signal_at(patched, 300, signal.SIGINT)
        with pytest.raises(TrainingInterrupted, match="SIGINT: training stopped at 304 of 768 steps"):
            run_training(cfg, tmp_path / "run")
    state = read_state(tmp_path / "run")
    assert (state["status"], state["step"]) == ("interrupted", 304)
    assert [point["step"] for point in state["curve"]] == [0, 256, 304]
    resumed = run_training(cfg, tmp_path / "run", resume=True)
    assert [point["step"] for point in resumed["curve"]] == [0, 256, 304, 512, 768]
    model = learner("ppo").load(cfg, None, tmp_path / "run" / "model.zip")
    assert model.num_timesteps == 768


def rlte(*args: str, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from experiments.cli import main; main()", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def test_rlte_train_killed_says_how_to_resume_and_eval_says_what_it_scores(tmp_path):
    """As a user sees it: `kill` mid-run, `rlte eval` on the stopped run, `rlte train resume=`."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "RLTE_CACHE": str(tmp_path / "cache")}
    training = rlte("train", *SMALL_GRADIENT, "agent.epochs=400", f"hydra.run.dir={run_dir}", env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run_dir / "last_model.pt").exists():
        time.sleep(0.2)
    assert (run_dir / "last_model.pt").exists(), training.communicate(timeout=60)
    training.send_signal(signal.SIGTERM)
    out, err = training.communicate(timeout=120)
    assert training.returncode == 128 + signal.SIGTERM, (out, err)
    assert "SIGTERM: training stopped at" in out and f"rlte train resume={run_dir} continues it" in out.replace("\n", "")
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "interrupted" and 0 < state["step"] < 400

    scoring = rlte("eval", f"run={run_dir}", env=env)
    out, err = scoring.communicate(timeout=300)
    assert scoring.returncode == 0, err
    flat = " ".join(out.split())
    assert f"note: run {run_dir} was interrupted by SIGTERM at {state['step']} of 400 epochs" in flat
    assert "scoring its latest checkpoint" in flat

    resuming = rlte("train", f"resume={run_dir}", "seed=3", env=env)
    out, err = resuming.communicate(timeout=60)
    assert resuming.returncode == 2 and "takes no other settings" in err


def test_training_without_a_terminal_prints_progress_lines(tmp_path, monkeypatch, capsys):
    import experiments.progress
    from experiments.train import run_training

    monkeypatch.setenv("RLTE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(experiments.progress, "LOG_EVERY_S", 0.0)
    run_training(compose_train(*SMALL_GRADIENT), tmp_path / "run")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gradient: ")]
    assert [line.split(" · ")[0] for line in lines] == [f"gradient: {epoch}/6 epochs" for epoch in range(1, 7)]
    assert "held-out median" in lines[-1] and " loss " in lines[-1]
