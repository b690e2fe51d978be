"""Hydra entry points behind `rlte train` (full Hydra: overrides, `-m` multirun, run
directories) and `rlte eval` (a finished run's own config plus dotted overrides)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from .schema import register

console = Console()
CONFIG_PATH = Path(__file__).parent / "conf"
CONFIG_DIR = str(CONFIG_PATH)  # Hydra takes the config path as a string
register()  # the schemas the config files name, before Hydra composes them


def print_table(title: str, policies: dict[str, dict]) -> None:
    live = any("twin_median" in p["summary"] for p in policies.values())  # measured on the emulated network
    table = Table(title=title)
    columns = ("policy", "median", "p90", "max", *(("twin median",) if live else ()), "drops", "decision time")
    for column in columns:
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, p in policies.items():
        s = p["summary"]
        drops = f"{100 * s['mean_drop_fraction']:.2f}%" if "mean_drop_fraction" in s else "-"
        twin = (f"{s['twin_median']:.3f}",) if live else ()
        table.add_row(name, f"{s['median']:.3f}", f"{s['p90']:.3f}", f"{s['max']:.3f}", *twin, drops,
                      f"{s['decision_time_s'] * 1e3:.3f} ms")
    console.print(table)


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base=None)
def train_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from .sweeps import searching

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    return train_and_report(cfg, run_dir, leave={".hydra", f"{hydra_config.job.name}.log"},
                            search=searching(hydra_config))


def train_and_report(cfg: DictConfig, run_dir: Path, *, resume: bool = False, leave: set[str] | None = None,
                     search: bool = False) -> float | None:
    """Train (or ``resume``) a run, print its table; bad input or a stop by signal ends the
    process with one line. ``leave``: the files of a directory Hydra made, which a refused run
    removes with it (so a refused run leaves no empty run behind). Returns what a searching
    sweeper minimises (:func:`experiments.sweeps.objective`); ``search``: one runs this job, so a
    run without validation matrices is refused and the objective is printed."""
    from .cli import USER_ERRORS, print_error
    from .sweeps import objective, require_validation
    from .train import TrainingInterrupted, run_training

    try:
        if search:
            require_validation(cfg)
        metrics = run_training(cfg, run_dir, resume=resume)
    except USER_ERRORS as exc:  # a bad config or input: one line and exit status 2, as the other commands
        if leave is not None and {entry.name for entry in run_dir.iterdir()} <= leave:
            shutil.rmtree(run_dir)
        print_error(exc)
        sys.exit(2)
    except TrainingInterrupted as exc:
        console.print(f"stopped: {exc}", highlight=False)
        sys.exit(128 + signal.Signals[exc.reason].value)
    final = metrics["final"]
    print_table(f"{metrics['agent']} on {metrics['topology']} (seed {metrics['seed']}): normalized MLU, held-out",
                {name: {"summary": s} for name, s in final.items()})
    console.print(f"trained in {metrics['train_seconds']:.0f} s · run directory {run_dir}", highlight=False)
    value = objective(metrics)  # never the held-out median above: a search must not tune on the test week
    if search:
        console.print(f"search objective: validation median {value:.4f} (kept checkpoint, step "
                      f"{metrics['selected_checkpoint']['step']:,})", highlight=False)
    return value


def config_error_line(exc: Exception) -> str:
    """Hydra's or OmegaConf's refusal of a config as one line: the override it refused, what is
    wrong, and for an unknown key the nearest known one and the settings there are."""
    from .schema import is_schema, unknown_setting

    cause = exc.__cause__ if isinstance(exc, HydraException) and exc.__cause__ is not None else exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    if isinstance(cause, MissingConfigException) and cause.options is not None:  # an unknown group option
        options = [name for name in cause.options if not is_schema(name)]
        return f"{lines[0]}; choose one of {', '.join(options)}"
    message = lines[0] if lines else type(cause).__name__
    if cause is not exc and (override := str(exc).splitlines()[0].strip()):
        message = f"{override.rstrip('.')}: {message}"
    schema = getattr(cause, "object_type", None)
    known = [field.name for field in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and known and key.rpartition(".")[2] not in known:
        message = unknown_setting(key, known)
    return message


def run_train(args: list[str]) -> None:
    """`rlte train [overrides]` through Hydra, or `rlte train resume=DIR` (an unfinished run)."""
    from .cli import agent_names, print_error
    from .sweeps import check_launch

    if any(arg.startswith("resume=") for arg in args):
        run_resume(args)
        return
    check_launch(args)
    if {"--help", "-h"} & set(args):
        from .schema import is_schema

        console.print("usage: rlte train [group=NAME ...] [key=value ...] [-m] [-cd bench/conf] | resume=runs/DIR\n\n"
                      "Config groups (group=NAME):", highlight=False, markup=False)
        console.print(f"  agent: {', '.join(agent_names())} (the first is the default; experiment variants: "
                      "-cd bench/conf agent=NAME, from bench/conf/agent)", highlight=False)
        for group in ("topology", "traffic", "env", "backend", "search"):
            options = sorted(path.stem for path in (CONFIG_PATH / group).glob("*.yaml") if not is_schema(path.stem))
            console.print(f"  {group}: {', '.join(options)}", highlight=False)
        console.print("  hydra/launcher (with -m): joblib, submitit_local, slurm (docs/sweeps.md)", highlight=False)
        console.print()
    sys.argv = ["rlte train", *args]
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's refusals reach us, to print as one line
    try:
        train_main()
    except (HydraException, OmegaConfBaseException) as exc:
        print_error(ValueError(config_error_line(exc)))
        sys.exit(2)
    except Exception:
        from . import sweeps

        # a search's study storage set in a config file reaches the sweeper unchecked by
        # check_launch (it reads the command line); sweeps.ContinueStudy found it cannot be opened
        if sweeps.storage_problem is None:
            raise
        print_error(ValueError(sweeps.storage_problem))
        sys.exit(2)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def run_resume(args: list[str]) -> None:
    """`rlte train resume=DIR`: continue an interrupted run with the config it was made with."""
    if len(args) != 1:
        raise ValueError("rlte train resume=DIR takes no other settings: the run continues with the config it "
                         "was made with")
    run_dir = Path(args[0].partition("=")[2])
    train_and_report(read_run_config(run_dir), run_dir, resume=True)


def read_run_config(run_dir: Path) -> DictConfig:
    """A run directory's config, typed by its kind's schemas."""
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); runs are under runs/")
    return typed_config(OmegaConf.load(run_dir / "config.yaml"))


def typed_config(plain: DictConfig) -> DictConfig:
    """``plain`` merged into the schemas of its kind (:func:`experiments.schema.schema_for`):
    unknown keys and wrong types refused in one line, as `rlte train` refuses them."""
    from .schema import schema_for

    try:
        return OmegaConf.merge(schema_for(plain), plain)
    except OmegaConfBaseException as exc:
        raise ValueError(config_error_line(exc)) from None


EVAL_GROUPS = ("backend", "topology", "traffic")  # config groups `rlte eval` picks by name, as `rlte train` does


def group_config(group: str, name: str) -> DictConfig:
    """The config group ``group``'s option ``name`` (what `group=NAME` selects in `rlte train`)."""
    path = CONFIG_PATH / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown {group} {name!r}; choose one of {', '.join(known)}")
    option = OmegaConf.load(path)
    option.pop("defaults", None)  # its schema: typed_config picks it by the option's kind
    return option


EVAL_USAGE = """\
usage: rlte eval run=DIR [backend=mininet] [topology=NAME traffic=NAME] [eval.every=24]
                 [eval.with_baselines=false] [out=FILE] [key=value ...]

Re-scores a finished run (its config.yaml and kept model) on its held-out traffic next to
every baseline (eval.baselines=[lp_previous,lp_mean,...]: only those), prints the table and
writes DIR/eval.json (or FILE). Any dotted key of the run's config may be overridden.
backend=mininet measures every routing on the emulated network instead (root, Mininet, Open
vSwitch; ~5 s per matrix and policy), beside the twin's prediction; backend.window_s,
backend.warmup_s, backend.flows_per_pair, backend.flow_addresses and backend.capacity_scale
set the replay. topology= and traffic= score the same weights on another network or traffic
(graph policies fit any topology; the others only their own); the table then goes to
DIR/eval_<topology>_<traffic>.json, beside the run's own, without the drift-guarded row
(eval.guard=true fits its envelope on that traffic's training part)."""


def scoring_config(run_dir: Path, args: list[str]) -> tuple[DictConfig, DictConfig]:
    """A run's config as trained, and as ``args`` change it for scoring: ``backend=NAME``
    (``topology=``, ``traffic=``) picks a config group option as in `rlte train`, the rest are
    dotted overrides. Scored on another topology or traffic, the drift-guarded row is left out
    unless ``eval.guard`` is given: its question (did the traffic leave what the policy
    trained on?) was answered from the start."""
    trained = read_run_config(run_dir)
    groups = [arg for arg in args if arg.partition("=")[0] in EVAL_GROUPS]
    overrides = OmegaConf.from_dotlist([arg for arg in args if arg not in groups])
    cfg = OmegaConf.create(OmegaConf.to_container(trained))
    for group, _, name in (arg.partition("=") for arg in groups):
        cfg[group] = group_config(group, name)
    cfg = typed_config(OmegaConf.merge(cfg, overrides))
    if (cfg.topology != trained.topology or cfg.traffic != trained.traffic) and \
            OmegaConf.select(overrides, "eval.guard") is None:
        cfg.eval.guard = False
    return trained, cfg


def run_eval(args: list[str]) -> None:
    """`rlte eval run=DIR [backend=mininet] [eval.every=6] [out=FILE] [any.dotted=override]`."""
    from .data import load_run_topology, prepare
    from .progress import load_trained, unfinished
    from .run_config import check_config, check_same_topology
    from .scoring import evaluate_run

    if {"--help", "-h"} & set(args):
        print(EVAL_USAGE)
        return

    overrides = OmegaConf.from_dotlist([arg for arg in args if arg.partition("=")[0] not in EVAL_GROUPS])
    if "run" not in overrides:
        raise ValueError("say which run to evaluate: rlte eval run=runs/<run directory> [eval.every=24] [out=FILE]")
    run_dir = Path(str(overrides.pop("run")))
    out = overrides.pop("out", None)
    rest = [arg for arg in args if arg.partition("=")[0] not in ("run", "out")]
    trained, cfg = scoring_config(run_dir, rest)
    if out is None and (cfg.topology != trained.topology or cfg.traffic != trained.traffic):
        out = run_dir / f"eval_{cfg.topology.name}_{cfg.traffic.name}.json"  # beside the run's own table
    check_config(cfg, training=False)
    data = prepare(cfg)
    check_same_topology(cfg, load_run_topology(trained), data.topology)
    model = load_trained(cfg, data, run_dir)
    if (why := unfinished(run_dir)) is not None:
        console.print(f"note: {why}; scoring its latest checkpoint (rlte train resume={run_dir} continues it)",
                      highlight=False)
    report, _ = evaluate_run(cfg, data, model, run_dir, Path(out) if out else None)
    where = "" if cfg.backend.name == "twin" else f", measured on {cfg.backend.name}"
    print_table(f"{cfg.agent.name} on {data.topology.name}: normalized MLU on {len(report['tm_index'])} held-out "
                f"matrices{where}", report["policies"])
    console.print(f"written to {out or run_dir / 'eval.json'}", highlight=False)
