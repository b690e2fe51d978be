"""Hydra entry points behind `rlte train` (full Hydra: overrides, `-m` multirun, run
directories) and `rlte eval` (a finished run's own config plus dotted overrides)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

console = Console()
CONFIG_DIR = str(Path(__file__).parent / "conf")


def print_table(title: str, policies: dict[str, dict]) -> None:
    table = Table(title=title)
    for column in ("policy", "median", "p90", "max", "drops", "decision time"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name, p in policies.items():
        s = p["summary"]
        drops = f"{100 * s['mean_drop_fraction']:.2f}%" if "mean_drop_fraction" in s else "-"
        table.add_row(name, f"{s['median']:.3f}", f"{s['p90']:.3f}", f"{s['max']:.3f}", drops,
                      f"{s['decision_time_s'] * 1e3:.3f} ms")
    console.print(table)


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base=None)
def train_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from .train import run_training

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    metrics = run_training(cfg, run_dir)
    final = metrics["final"]
    print_table(f"{metrics['agent']} on {metrics['topology']} (seed {metrics['seed']}): normalized MLU, held-out",
                {name: {"summary": s} for name, s in final.items()})
    console.print(f"trained in {metrics['train_seconds']:.0f} s · run directory {run_dir}", highlight=False)
    return final[metrics["agent"]]["median"]  # what a sweeper would minimise


def run_train(args: list[str]) -> None:
    sys.argv = ["rlte train", *args]
    train_main()


def run_eval(args: list[str]) -> None:
    """`rlte eval run=DIR [eval.every=6] [out=FILE] [traffic.dataset=...]`."""
    from .data import prepare
    from .train import evaluate_run, load_trained

    overrides = OmegaConf.from_dotlist(args)
    if "run" not in overrides:
        raise ValueError("say which run to evaluate: rlte eval run=runs/<run directory> [eval.every=24] [out=FILE]")
    run_dir = Path(str(overrides.pop("run")))
    out = overrides.pop("out", None)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml); runs are under runs/")
    cfg = OmegaConf.merge(OmegaConf.load(run_dir / "config.yaml"), overrides)
    data = prepare(cfg)
    model = load_trained(cfg, data, run_dir)
    report, _ = evaluate_run(cfg, data, model, run_dir, Path(out) if out else None)
    print_table(f"{cfg.agent.name} on {data.topology.name}: normalized MLU on {len(report['tm_index'])} held-out matrices",
                report["policies"])
    console.print(f"written to {out or run_dir / 'eval.json'}", highlight=False)
