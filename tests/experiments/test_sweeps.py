"""Sweeps past one process: Hydra's joblib and submitit launchers (submitit's local executor;
the Slurm config up to the sbatch script it submits), each job's thread caps as its own
process saw them, run directories that `rlte summary` reads unchanged, and the Optuna search
whose objective is each trial's validation median, never the test week's."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from omegaconf import OmegaConf

from tests.support import ROOT, rlte

# a run of a few seconds: the gradient learner, one epoch on B4 (24 matrices train, 12 held out)
TINY = ["agent=gradient", "agent.epochs=1", "agent.hidden=[16]", "topology=b4", "traffic=b4-real", "eval.every=3",
        "eval.periodic_every=1000", "eval.baselines=[lp_previous]"]
THREADS = "+hydra.callbacks.threads._target_=bench.sweep.ThreadUsage"
# a search trial of a few seconds: PPO for 256 steps on B4, validated on 6 matrices
SEARCH_TINY = ["topology=b4", "traffic=b4-real", "agent.total_timesteps=256", "agent.hyperparameters.n_steps=64",
               "agent.hyperparameters.batch_size=64", "agent.net_arch=[16]", "eval.every=3", "eval.periodic_every=128",
               "eval.baselines=[lp_previous]", "eval.validation=6"]


def environment(tmp_path) -> dict:
    return {"RLTE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}  # bench.sweep for the callback


def run_dirs(sweep) -> list:
    return sorted(p for p in sweep.iterdir() if (p / "config.yaml").is_file())


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"]], ids=["joblib", "submitit_local"])
def test_a_launcher_runs_each_job_in_its_own_process_capped_to_its_threads(launcher, tmp_path):
    sweep = tmp_path / "sweep"
    result = rlte("train", "-m", *launcher, "seed=0,1", *TINY, THREADS, f"hydra.sweep.dir={sweep}",
                  cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(sweep)
    assert [r.name for r in runs] == ["0_gradient_seed0", "1_gradient_seed1"]  # the layout of a sequential sweep
    reports = []
    for run in runs:
        for name in ("config.yaml", "model.pt", "metrics.json", "eval.json"):
            assert (run / name).is_file(), f"{run.name} lacks {name}"
        reports.append(json.loads((run / "threads.json").read_text()))
    assert len({r["pid"] for r in reports}) == 2  # two worker processes, one job each
    for report in reports:  # threads=1: torch, BLAS and OpenMP capped, and one thread did the work
        assert report["torch_threads"] == 1 and report["pools"], report
        assert all(pool["num_threads"] == 1 for pool in report["pools"]), report
        assert report["busy_threads"] == 1, report

    summary = tmp_path / "summary.json"
    result = rlte("summary", str(sweep), "--out", str(summary), cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    [group] = json.loads(summary.read_text())["groups"]
    assert [run["seed"] for run in group["runs"]] == [0, 1]
    tables = [json.loads((run / "eval.json").read_text())["policies"] for run in runs]
    medians = [t["gradient"]["summary"]["median"] for t in tables]
    assert group["policies"]["gradient"]["median"] == pytest.approx(medians)


@pytest.mark.slow
def test_the_slurm_config_reaches_sbatch_with_its_settings(tmp_path):
    """No cluster here: a stand-in sbatch keeps the script submitit hands it and refuses the job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", 'cp "$1" "$SBATCH_RECORD"\necho "sbatch: no cluster here" >&2\nexit 1\n'),
                       ("srun", "exit 1\n")):
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\n" + body)
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "sbatch.sh"
    result = rlte("train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=debug",
                  "hydra.launcher.timeout_min=30", "hydra.launcher.array_parallelism=2", "threads=2", "seed=0,1,2",
                  *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                  env_extra={**environment(tmp_path), "SBATCH_RECORD": str(record),
                             "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert result.returncode != 0 and "sbatch: no cluster here" in result.stderr, result.stderr[-3000:]
    script = record.read_text()
    for line in ("#SBATCH --partition=debug", "#SBATCH --time=30", "#SBATCH --cpus-per-task=2",  # cpus: threads
                 "#SBATCH --array=0-2%2", "#SBATCH --job-name=rlte-train"):
        assert line in script.splitlines(), script
    assert "--gpus-per-node" not in script  # none asked for: left out, not 0 (a GPU-less cluster may refuse 0)


def test_a_launcher_without_its_plugin_or_slurm_is_refused_in_one_line(monkeypatch):
    from experiments import sweeps

    monkeypatch.setattr(sweeps, "find_spec", lambda module: None)
    with pytest.raises(ValueError, match=r"hydra/launcher=joblib needs the Hydra plugin hydra_joblib_launcher: "
                                         r"install rlte's sweep extra"):
        sweeps.check_launch(["-m", "hydra/launcher=joblib", "seed=0,1"])
    with pytest.raises(ValueError, match="needs the Hydra plugin hydra_optuna_sweeper"):
        sweeps.check_launch(["-m", "search=ppo_costs_spread"])
    monkeypatch.undo()
    monkeypatch.setattr(sweeps.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="this machine has no sbatch: run it on the cluster's login node"):
        sweeps.check_launch(["-m", "hydra/launcher=slurm"])
    sweeps.check_launch(["-m", "seed=0,1"])  # a plain sweep needs nothing


def test_a_search_storage_optuna_cannot_open_or_a_used_sweep_dir_is_refused_in_one_line(tmp_path):
    from experiments import sweeps

    with pytest.raises(ValueError, match=re.escape(
            "hydra.sweeper.storage=runs/x.db: Optuna cannot open it as a study database (Could not parse SQLAlchemy "
            "URL from string 'runs/x.db'); give an SQLAlchemy URL, e.g. hydra.sweeper.storage=sqlite:///")):
        sweeps.check_launch(["-m", "search=ppo_costs_spread", "hydra.sweeper.storage=runs/x.db"])
    with pytest.raises(ValueError, match=r"storage=nosuchdialect://x: Optuna cannot open it as a study database "
                                         r"\(Can't load plugin: sqlalchemy.dialects:nosuchdialect\)"):
        sweeps.check_launch(["-m", "search=ppo_costs_spread", "hydra.sweeper.storage=nosuchdialect://x"])
    database = tmp_path / "new" / "folder" / "search.db"  # an SQLite file's folder is made
    for single_or_help in ([], ["-m", "--help"]):  # nothing to store: no database is made
        sweeps.check_launch([*single_or_help, f"hydra.sweeper.storage=sqlite:///{database}"])
        assert not database.exists()
    sweeps.check_launch(["-m", "search=ppo_costs_spread", f"hydra.sweeper.storage='sqlite:///{database}'"])
    assert database.is_file()
    used = tmp_path / "sweep"
    (used / "0_ppo_costs_spread_seed0").mkdir(parents=True)
    (used / "0_ppo_costs_spread_seed0" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=f"hydra.sweep.dir={re.escape(str(used))} already holds a sweep's runs, "
                                         "and a search that continues its study numbers its runs from 0 again"):
        sweeps.check_launch(["-m", "search=ppo_costs_spread", f"hydra.sweeper.storage=sqlite:///{database}",
                             f"hydra.sweep.dir={used}"])


@pytest.mark.slow
def test_a_search_minimises_each_trials_validation_median(tmp_path):
    """Two trials of the shipped search on a tiny budget: Optuna's best value is the least of the
    trials' validation medians (their kept checkpoints'), as each trial printed it."""
    sweep = tmp_path / "search"
    tiny = SEARCH_TINY
    result = rlte("train", "-m", "search=ppo_costs_spread", "hydra.sweeper.n_trials=2", *tiny,
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(sweep)
    assert [r.name for r in runs] == ["0_ppo_costs_spread_seed0", "1_ppo_costs_spread_seed0"]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    validation = [m["selected_checkpoint"]["validation_median"] for m in metrics]
    printed = [float(v) for v in re.findall(r"search objective: validation median (\S+)", result.stdout)]
    assert printed == pytest.approx(validation, abs=5e-5)  # each trial's objective, as it returned it
    for run, m in zip(runs, metrics):  # the searched settings reached the run
        config = OmegaConf.load(run / "config.yaml")
        assert 0.0 <= config.env.spread_weight <= 0.3 and -2.5 <= config.agent.policy_options.log_std_init <= -0.5
        assert config.eval.validation == 6 and m["final"]["ppo_costs_spread"]["median"] >= 1.0 - 1e-9
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(min(validation), rel=1e-12)
    assert best.best_value not in [m["final"]["ppo_costs_spread"]["median"] for m in metrics]  # not the test week

    result = rlte("train", "-m", "search=ppo_costs_spread", "hydra.sweeper.n_trials=2", *tiny, "eval.validation=0",
                  f"hydra.sweep.dir={tmp_path / 'refused'}", cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: a search minimises the median normalized MLU "
                                                             "on validation matrices, and this run has none")
    assert not [p for p in (tmp_path / "refused").glob("*") if p.is_dir()]  # refused before training: no run left


@pytest.mark.slow
def test_a_stored_search_run_again_continues_its_study_with_new_trials(tmp_path):
    """Two trials with the study in SQLite, then the same command again: the database (read with
    optuna itself) holds four complete trials, the second search's numbered on from the first's,
    with settings of their own (the sampler's seed moved on by the trials stored), and each with
    the value its run reported; the second search's best is the whole study's."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies' / 'search.db'}"
    # the seed searched too: at this budget every trial keeps its step-0 checkpoint, which only the seed changes
    search = ["train", "-m", "search=ppo_costs_spread", "hydra.sweeper.n_trials=2", "seed=range(0,1000)",
              *SEARCH_TINY, f"hydra.sweeper.storage={storage}"]
    outputs = []
    for part in ("first", "second"):
        result = rlte(*search, f"hydra.sweep.dir={tmp_path / part}", cwd=tmp_path, env_extra=environment(tmp_path))
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout + result.stderr)
    assert "continuing study" not in outputs[0]
    assert ("continuing study ppo_costs_spread_b4 (" + storage + "): 2 trials so far, 2 complete; sampler seed 2"
            in outputs[1]), outputs[1][-3000:]

    study = optuna.load_study(study_name="ppo_costs_spread_b4", storage=storage)
    assert [(t.number, t.state) for t in study.trials] == [(n, optuna.trial.TrialState.COMPLETE) for n in range(4)]
    runs = run_dirs(tmp_path / "first") + run_dirs(tmp_path / "second")  # each search numbers its runs from 0
    assert [r.name.partition("_")[0] for r in runs] == ["0", "1", "0", "1"]
    for trial, run in zip(study.trials, runs):  # trial 2k+j is search k's job j: its settings, its value
        config = OmegaConf.load(run / "config.yaml")
        assert trial.params == {"agent.hyperparameters.learning_rate": config.agent.hyperparameters.learning_rate,
                                "agent.policy_options.log_std_init": config.agent.policy_options.log_std_init,
                                "env.spread_weight": config.env.spread_weight, "seed": config.seed}
        reported = json.loads((run / "metrics.json").read_text())["selected_checkpoint"]["validation_median"]
        assert trial.value == pytest.approx(reported, rel=1e-12)
    first, second = ({tuple(sorted(t.params.items())) for t in study.trials[k:k + 2]} for k in (0, 2))
    assert not first & second  # new trials, not the first search's start-up trials again
    values = [t.value for t in study.trials]
    assert len(set(values)) > 1, values  # (else the value check above could not tell trials apart)
    assert OmegaConf.load(tmp_path / "second" / "optimization_results.yaml").best_value == min(values)

    result = rlte(*search, f"hydra.sweep.dir={tmp_path / 'first'}", cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: hydra.sweep.dir={tmp_path / 'first'} already "
                                                             "holds a sweep's runs")
    result = rlte(*search[:-1], "hydra.sweeper.storage=runs/x.db", cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [(  # one line, not SQLAlchemy's traceback
        "error: hydra.sweeper.storage=runs/x.db: Optuna cannot open it as a study database (Could not parse "
        "SQLAlchemy URL from string 'runs/x.db'); give an SQLAlchemy URL, e.g. "
        "hydra.sweeper.storage=sqlite:///runs/search/abilene.db")]
    assert len(optuna.load_study(study_name="ppo_costs_spread_b4", storage=storage).trials) == 4


def test_a_storage_set_in_a_config_file_that_optuna_cannot_open_is_one_error_line(tmp_path):
    """The command line's storage is checked before Hydra starts; one set in a config reaches the sweeper."""
    config_dir = tmp_path / "conf" / "search"
    config_dir.mkdir(parents=True)
    (config_dir / "stored.yaml").write_text("# @package _global_\ndefaults:\n  - ppo_costs_spread\n\n"
                                            "hydra:\n  sweeper:\n    storage: nosuchdialect://x\n")
    result = rlte("train", "-m", "-cd", str(tmp_path / "conf"), "search=stored", "hydra.sweeper.n_trials=1",
                  *SEARCH_TINY, cwd=tmp_path, env_extra=environment(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: hydra.sweeper.storage=nosuchdialect://x: Optuna cannot open it as a study database "
                     "(Can't load plugin: sqlalchemy.dialects:nosuchdialect); give an SQLAlchemy URL, e.g. "
                     "hydra.sweeper.storage=sqlite:///runs/search/abilene.db"], result.stderr[-3000:]
    assert not list(tmp_path.glob("runs/**/config.yaml"))  # no trial ran
