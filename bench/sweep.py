"""Sweeps past one process (issue 36), written to ``bench/results/sweep.json`` and
``bench/results/search.json``:

- ``sweep``: the wall time of a 4-seed sweep of a small real config (the default agent on
  Abilene's real traffic, 60k steps: about 45 s a run here) run one after another (Hydra's
  basic launcher) and two at a time (``hydra/launcher=joblib hydra.launcher.n_jobs=2``), each
  run's own training time, and each job's thread pools as the process that ran it saw them
  (:class:`ThreadUsage`: the caps, and how many threads did the work);
- ``threads``: two jobs side by side with ``threads=1`` and with ``threads=2`` (the gradient
  agent, whose products can use a second thread): the caps and working threads follow the
  setting (kept in ``sweep.json`` as ``thread_caps``);
- ``search``: ``search=ppo_costs_spread`` (Hydra's Optuna sweeper, TPE) for 8 trials on the
  same small budget, two at a time, against the default settings at that budget: the
  validation median (the search's objective) and the held-out test-week median of the best
  trial and of the defaults.

Every run is a plain `rlte train` run, kept under ``bench/runs/sweep/``. Runs are timed
whole (interpreter start, Hydra, data, training, the final table). Run it with nothing else
on the cores: ``flock /tmp/rlte-heavy.lock .venv/bin/python bench/sweep.py`` (~14 min;
``--parts threads`` alone ~1 min).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, rlte_train, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "bench" / "runs" / "sweep"
CONFIG = ["agent=ppo_costs_spread", "topology=abilene", "traffic=abilene-real", "agent.total_timesteps=60000"]
SEEDS = "0,1,2,3"
# the thread-cap check: torch's products on Abilene's full batch, large enough to use a second thread
CAPS_CONFIG = ["agent=gradient", "agent.epochs=20", "eval.with_baselines=false", "eval.periodic_every=100000"]
THREAD_REPORT = "threads.json"
# a job's threads that did at least this share of its process's CPU time count as working
BUSY_SHARE = 0.05


def thread_cpu_seconds() -> list[float]:
    """CPU seconds (user + system) of each live thread of this process, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = []
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime
    return sorted(seconds, reverse=True)


class ThreadUsage(Callback):
    """A Hydra callback (``+hydra.callbacks.threads._target_=bench.sweep.ThreadUsage``): after
    each job, in the process that ran it (a joblib or submitit worker), writes ``threads.json``
    to the job's directory: torch's thread count, each BLAS / OpenMP pool's cap, and the CPU
    seconds of each of the process's threads (the work a cap lets through)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        import torch
        from threadpoolctl import threadpool_info

        cpu = thread_cpu_seconds()
        total = sum(cpu) or 1.0
        report = {"pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                  "pools": [{"user_api": p["user_api"], "internal_api": p["internal_api"],
                             "num_threads": p["num_threads"]} for p in threadpool_info()],
                  "thread_cpu_seconds": [round(s, 2) for s in cpu if s > 0],
                  "busy_threads": sum(s >= BUSY_SHARE * total for s in cpu)}
        out = Path(config.hydra.runtime.output_dir) / THREAD_REPORT
        out.write_text(json.dumps(report, indent=1))


def runs_in(sweep_dir: Path) -> list[Path]:
    """The run directories of a sweep, in job order."""
    return sorted((p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()),
                  key=lambda p: int(p.name.split("_", 1)[0]))


def run_record(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    record = {"run": str(run.relative_to(ROOT)), "seed": metrics["seed"], "train_seconds": metrics["train_seconds"],
              "heldout_median": metrics["final"][metrics["agent"]]["median"]}
    if (run / THREAD_REPORT).is_file():
        record["threads"] = json.loads((run / THREAD_REPORT).read_text())
    return record


def measure_sweep() -> dict:
    """The same 4-seed sweep, one run after another and two at a time."""
    callback = "+hydra.callbacks.threads._target_=bench.sweep.ThreadUsage"
    launchers = {"sequential": [], "joblib_2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
    out: dict[str, Any] = {}
    for name, launcher in launchers.items():
        sweep_dir = RUNS / name
        shutil.rmtree(sweep_dir, ignore_errors=True)
        args = ["-m", *launcher, f"seed={SEEDS}", *CONFIG, callback, f"hydra.sweep.dir={sweep_dir}"]
        seconds = rlte_train(*args)
        out[name] = {"command": "rlte train " + " ".join(a for a in args if a != callback),
                     "wall_seconds": seconds, "runs": [run_record(r) for r in runs_in(sweep_dir)]}
        print(f"{name}: {seconds:.0f} s", flush=True)
    return out


def measure_thread_caps() -> dict:
    """Two jobs side by side (joblib) with threads=1 and with threads=2, each job's pools and
    working threads: the caps hold in the workers, and the count of working threads follows them."""
    out = {}
    for threads in (1, 2):
        sweep_dir = RUNS / f"threads_{threads}"
        shutil.rmtree(sweep_dir, ignore_errors=True)
        args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", f"threads={threads}",
                *CAPS_CONFIG, "+hydra.callbacks.threads._target_=bench.sweep.ThreadUsage",
                f"hydra.sweep.dir={sweep_dir}"]
        seconds = rlte_train(*args)
        out[f"threads_{threads}"] = {"command": "rlte train " + " ".join(args), "wall_seconds": seconds,
                                     "runs": [run_record(r) for r in runs_in(sweep_dir)]}
        print(f"threads={threads}: {seconds:.0f} s", flush=True)
    return out


def measure_search(trials: int) -> dict:
    """``trials`` trials of the shipped search, two at a time, and the defaults at the same budget."""
    sweep_dir, defaults_dir = RUNS / "search", RUNS / "defaults"
    for folder in (sweep_dir, defaults_dir):
        shutil.rmtree(folder, ignore_errors=True)
    args = ["-m", "search=ppo_costs_spread", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            f"hydra.sweeper.n_trials={trials}", *CONFIG, f"hydra.sweep.dir={sweep_dir}"]
    search_seconds = rlte_train(*args)
    defaults_args = [*CONFIG, "eval.validation=288", f"hydra.run.dir={defaults_dir}"]
    defaults_seconds = rlte_train(*defaults_args)

    space = OmegaConf.load(ROOT / "experiments" / "conf" / "search" / "ppo_costs_spread.yaml").hydra.sweeper.params

    def scores(run: Path) -> dict:
        """A run's searched settings (as its config.yaml has them) and its scores."""
        config = OmegaConf.load(run / "config.yaml")
        metrics = json.loads((run / "metrics.json").read_text())
        return {"params": {key: OmegaConf.select(config, key) for key in space},
                "validation_median": metrics["selected_checkpoint"]["validation_median"],
                "selected_step": metrics["selected_checkpoint"]["step"],
                "heldout_median": metrics["final"][metrics["agent"]]["median"],
                "heldout_p90": metrics["final"][metrics["agent"]]["p90"],
                "lp_previous_heldout_median": metrics["final"]["lp_previous"]["median"]}

    trials_out = [{"trial": int(run.name.split("_", 1)[0]), **scores(run)} for run in runs_in(sweep_dir)]
    best = min(trials_out, key=lambda t: t["validation_median"])
    optuna_best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    return {"command": "rlte train " + " ".join(args), "wall_seconds": search_seconds,
            "defaults_command": "rlte train " + " ".join(defaults_args), "defaults_wall_seconds": defaults_seconds,
            "search_space": OmegaConf.to_container(space), "trials": trials_out, "best_trial": best,
            "optuna_best_value": optuna_best.best_value, "defaults": scores(defaults_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="sweep,threads,search",
                        help="sweep, threads (the thread-cap check, kept in sweep.json), search; comma-separated")
    parser.add_argument("--trials", type=int, default=8, help="search trials")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"sweep", "threads", "search"}:
        parser.error(f"--parts takes sweep, threads and search, got {args.parts!r}")
    info = machine()
    if parts & {"sweep", "threads"}:
        path = RESULTS / "sweep.json"
        payload = json.loads(path.read_text()) if path.exists() else {}  # the part not rerun is kept
        if "sweep" in parts:
            sweep = measure_sweep()
            sequential, parallel = sweep["sequential"]["wall_seconds"], sweep["joblib_2"]["wall_seconds"]
            payload |= {"benchmark": "sweep", "machine": info, "config": CONFIG, "seeds": SEEDS, **sweep,
                        "speedup": sequential / parallel}
        if "threads" in parts:
            payload["thread_caps"] = {"config": CAPS_CONFIG, **measure_thread_caps()}
        write("sweep", payload)
    if "search" in parts:
        write("search", {"benchmark": "search", "machine": info, "config": CONFIG, **measure_search(args.trials)})


if __name__ == "__main__":
    main()
