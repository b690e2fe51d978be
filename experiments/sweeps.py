"""`rlte train` under Hydra's sweepers and launchers: what it hands back to a sweeper that
searches (Optuna's, conf/search/), and what is refused before a sweep starts.

A search's objective is the kept checkpoint's median normalized MLU on the validation matrices
cut from the end of the training sequence (``eval.validation``), never the held-out test week,
which stays for the final table. Launchers (joblib, submitit) and Hydra's grid sweeper ignore
the value; a run outside a search prints and writes what it always did."""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from typing import Any

from omegaconf import DictConfig

# Hydra's grid sweeper (`-m a=1,2`): it never reads a job's return value
GRID_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# the plugin each option needs (pyproject's `sweep` extra installs them)
PLUGINS = {"hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
           "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
           "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
           "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
           "search=": "hydra_plugins.hydra_optuna_sweeper"}


def check_launch(args: list[str]) -> None:
    """Refuse, in one line and before anything runs, a launcher or sweeper whose Hydra plugin is
    not installed, and a Slurm sweep where there is no Slurm (submitit's own refusal is a traceback)."""
    for arg in args:
        for option, module in PLUGINS.items():
            if (arg.startswith(option) if option.endswith("=") else arg == option) and find_spec(module) is None:
                raise ValueError(f"{arg} needs the Hydra plugin {module.rpartition('.')[2]}: install rlte's "
                                 "sweep extra (make train and make test install it; or .venv/bin/pip install -e '.[sweep]')")
        if arg in ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm") and shutil.which("sbatch") is None:
            raise ValueError(f"{arg} submits the sweep to Slurm, and this machine has no sbatch: run it on the "
                             "cluster's login node, or use hydra/launcher=joblib here")


def searching(hydra_config: Any) -> bool:
    """Whether this job runs under a sweeper that reads its return value (any but Hydra's grid)."""
    from hydra.types import RunMode

    return hydra_config.mode == RunMode.MULTIRUN and hydra_config.sweeper.get("_target_") != GRID_SWEEPER


def require_validation(cfg: DictConfig) -> None:
    """Refuse a search with no validation matrices: its only other score is the test week's."""
    if cfg.eval.validation == 0:
        raise ValueError("a search minimises the median normalized MLU on validation matrices, and this run has "
                         "none: set eval.validation=N (matrices cut from the end of the training sequence; "
                         "the search configs in conf/search/ set it), so the test week is never searched on")


def objective(metrics: dict) -> float | None:
    """The kept checkpoint's validation median (None for a run without validation matrices)."""
    selected = metrics.get("selected_checkpoint")
    return None if selected is None else float(selected["validation_median"])
