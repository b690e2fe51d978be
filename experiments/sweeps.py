"""`rlte train` under Hydra's sweepers and launchers: what it hands back to a sweeper that
searches (Optuna's, conf/search/), and what is refused before a sweep starts.

A search's objective is the kept checkpoint's median normalized MLU on the validation matrices
cut from the end of the training sequence (``eval.validation``), never the held-out test week,
which stays for the final table. Launchers (joblib, submitit) and Hydra's grid sweeper ignore
the value; a run outside a search prints and writes what it always did.

A search whose study is stored (``hydra.sweeper.storage=sqlite:///FILE``) continues it when run
again: the sweeper loads the study by name, and :class:`ContinueStudy` makes the new trials new."""

from __future__ import annotations

import logging
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

# Hydra's grid sweeper (`-m a=1,2`): it never reads a job's return value
GRID_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# the plugin each option needs (pyproject's `sweep` extra installs them)
PLUGINS = {"hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
           "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
           "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
           "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
           "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper",
           "search=": "hydra_plugins.hydra_optuna_sweeper"}
STORAGE, SWEEP_DIR = "hydra.sweeper.storage", "hydra.sweep.dir"
log = logging.getLogger(__name__)
# Why the search's study storage could not be opened, when ContinueStudy found so before the
# sweeper started (a storage set in a config file): the sweeper's own error is then a traceback
# from SQLAlchemy, which rlte train reports as this one line instead.
storage_problem: str | None = None


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
    settings = dict(override(arg) for arg in args if "=" in arg)
    sweeping = any(arg in ("-m", "--multirun") for arg in args) and not any(arg in ("-h", "--help") for arg in args)
    if sweeping and settings.get(STORAGE) not in (None, "", "null"):  # a single run or --help makes no database
        open_storage(settings[STORAGE])
        sweep = Path(settings.get(SWEEP_DIR) or ".")
        if SWEEP_DIR in settings and any(sweep.glob("*/config.yaml")):
            raise ValueError(f"{SWEEP_DIR}={sweep} already holds a sweep's runs, and a search that continues its "
                             "study numbers its runs from 0 again: leave hydra.sweep.dir out (a new dated folder "
                             "each time) or give a new one")


def override(arg: str) -> tuple[str, str]:
    """A command-line override as (key, value), without its +/++ prefix and the value's quotes."""
    key, _, value = arg.partition("=")
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return key.lstrip("+"), value


def open_storage(url: str) -> Any:
    """Optuna's storage at ``url`` (an SQLite file's folder made first), or a one-line refusal
    (SQLAlchemy's and optuna's own are tracebacks from inside the sweeper)."""
    try:
        from optuna.storages import get_storage
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        return None  # no sweep extra: the search itself is refused above
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return get_storage(url)
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise ValueError(storage_refusal(exc, url)) from None


def storage_refusal(exc: BaseException, url: str | None = None) -> str:
    """Why a search's study database cannot be used, as one line (``url``: as it was given)."""
    reason = (str(exc).splitlines() or [type(exc).__name__])[0]
    return (f"{STORAGE}{'' if url is None else '=' + url}: Optuna cannot open it as a study database ({reason}); "
            f"give an SQLAlchemy URL, e.g. {STORAGE}=sqlite:///runs/search/abilene.db")


class ContinueStudy(Callback):
    """The search configs' Hydra callback (``hydra.callbacks.study``). When the study is stored
    and already holds trials, the sweeper continues it (optuna's ``load_if_exists``), and this
    adds the number of stored trials to the sampler's seed before the sweeper makes the sampler:
    with the seed as configured, TPE's random start-up trials would repeat the first search's.
    A new study keeps the configured seed, so a search is reproduced with or without storage."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global storage_problem
        sweeper = config.hydra.sweeper
        storage, name = sweeper.get("storage"), sweeper.get("study_name")
        if storage is None or name is None:
            return
        import optuna
        from optuna.trial import TrialState
        from sqlalchemy.exc import SQLAlchemyError

        try:
            open_storage(str(storage))
        except ValueError as exc:  # the sweeper fails on it next; rlte train reports this line then
            storage_problem = str(exc)
            return
        try:
            trials = optuna.load_study(study_name=name, storage=str(storage)).trials
        except KeyError:  # not in the database yet: the sweeper creates it
            return
        except SQLAlchemyError as exc:
            log.warning(f"could not read study {name} in {storage} ({exc}); the sweeper opens it itself")
            return
        if not trials:
            return
        sampler = sweeper.get("sampler")
        if sampler is not None and sampler.get("seed") is not None:
            with read_write(sampler):
                sampler.seed = int(sampler.seed) + len(trials)
        complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
        running = sum(trial.state == TrialState.RUNNING for trial in trials)  # a stopped search's: TPE skips them
        log.info(f"continuing study {name} ({storage}): {len(trials)} trials so far, {complete} complete"
                 f"{f', {running} left running by a stopped search' if running else ''}; sampler seed "
                 f"{sampler.get('seed') if sampler is not None else None}")


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
