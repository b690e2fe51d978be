"""Hydra entry points behind `rlte train` (full Hydra: overrides, `-m` multirun, run
directories) and `rlte eval` (a finished run's own config plus dotted overrides)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .config_keys import CONFIG_DIR as CONFIG_PATH, check_known_keys, leaf_keys

console = Console()
CONFIG_DIR = str(CONFIG_PATH)  # Hydra takes the config path as a string


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
def train_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from .cli import USER_ERRORS, print_error
    from .train import run_training

    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    try:
        metrics = run_training(cfg, run_dir)
    except USER_ERRORS as exc:  # a bad config or input: one line and exit status 2, as the other commands
        # Hydra made the run directory before the job started; drop it when it holds nothing
        # but Hydra's own files, so a refused run leaves no empty run behind
        if {entry.name for entry in run_dir.iterdir()} <= {".hydra", f"{hydra_config.job.name}.log"}:
            shutil.rmtree(run_dir)
        print_error(exc)
        sys.exit(2)
    final = metrics["final"]
    print_table(f"{metrics['agent']} on {metrics['topology']} (seed {metrics['seed']}): normalized MLU, held-out",
                {name: {"summary": s} for name, s in final.items()})
    console.print(f"trained in {metrics['train_seconds']:.0f} s · run directory {run_dir}", highlight=False)
    return final[metrics["agent"]]["median"]  # what a sweeper would minimise


def run_train(args: list[str]) -> None:
    sys.argv = ["rlte train", *args]
    train_main()


EVAL_GROUPS = ("backend", "topology", "traffic")  # config groups `rlte eval` picks by name, as `rlte train` does


def group_config(group: str, name: str) -> DictConfig:
    """The config group ``group``'s option ``name`` (what `group=NAME` selects in `rlte train`)."""
    path = CONFIG_PATH / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown {group} {name!r}; choose one of {', '.join(known)}")
    return OmegaConf.load(path)


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


def run_eval(args: list[str]) -> None:
    """`rlte eval run=DIR [backend=mininet] [eval.every=6] [out=FILE] [any.dotted=override]`."""
    from .data import load_run_topology, prepare
    from .run_config import check_config, check_same_topology
    from .train import evaluate_run, load_trained

    if {"--help", "-h"} & set(args):
        print(EVAL_USAGE)
        return

    # backend=NAME (topology=, traffic=) picks a config group option, as in `rlte train`; the rest are dotted overrides
    groups = [arg for arg in args if arg.partition("=")[0] in EVAL_GROUPS]
    overrides = OmegaConf.from_dotlist([arg for arg in args if arg not in groups])
    if "run" not in overrides:
        raise ValueError("say which run to evaluate: rlte eval run=runs/<run directory> [eval.every=24] [out=FILE]")
    run_dir = Path(str(overrides.pop("run")))
    out = overrides.pop("out", None)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); runs are under runs/")
    trained = OmegaConf.load(run_dir / "config.yaml")
    cfg = trained.copy()
    for group, _, name in (arg.partition("=") for arg in groups):
        cfg[group] = group_config(group, name)
    cfg = OmegaConf.merge(cfg, overrides)
    if cfg.topology != trained.topology or cfg.traffic != trained.traffic:
        if out is None:  # keep the run's own table: a score elsewhere goes beside it
            out = run_dir / f"eval_{cfg.topology.name}_{cfg.traffic.name}.json"
        # the drift guard asks whether the traffic left what the policy trained on, which other
        # traffic did from the start: no guarded row there unless asked for (eval.guard=true)
        if OmegaConf.select(overrides, "eval.guard") is None:
            cfg.eval.guard = False
    check_config(cfg, training=False)
    check_known_keys(cfg, leaf_keys(overrides, ""))
    data = prepare(cfg)
    check_same_topology(cfg, load_run_topology(trained), data.topology)
    model = load_trained(cfg, data, run_dir)
    report, _ = evaluate_run(cfg, data, model, run_dir, Path(out) if out else None)
    where = "" if cfg.backend.name == "twin" else f", measured on {cfg.backend.name}"
    print_table(f"{cfg.agent.name} on {data.topology.name}: normalized MLU on {len(report['tm_index'])} held-out "
                f"matrices{where}", report["policies"])
    console.print(f"written to {out or run_dir / 'eval.json'}", highlight=False)
