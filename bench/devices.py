"""Training and twin throughput per torch device: `rlte train device=D` for each kind of
trainer, and the differentiable twin's forward + backward pass that the gradient learners
train through, on this machine's CPU and on CUDA when torch sees a GPU.

Training cases run `rlte train` with a small budget and nothing scored but one held-out matrix
(eval settings below), and read ``train_seconds`` from the run's metrics.json: environment
steps per second (PPO) or epochs per second (gradient learners), as a user's run sees them.
The twin case times ``TorchFluidTwin.link_loads`` + MLU + backward for a batch of split ratios
(what one training batch costs) on Abilene and on 100 random Kdl nodes (9,900 pairs, K=4).
Every record names its device, and the JSON the machine (CPU model, GPU name).

``python -m bench.devices`` (~7 min on this machine's CPU; writes bench/results/devices.json,
keeping the records of a device not rerun, so a GPU machine's run adds its own beside the CPU's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, machine, rlte_train, time_call, write  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "devices"
# nothing scored during training but one held-out matrix at the start and at the end
QUIET_EVAL = ["eval.with_baselines=false", "eval.guard=false", "eval.every=2016", "eval.periodic_matrices=1",
              "eval.periodic_every=1000000000", "eval.validation=0"]
# name, agent, config directory (None: the shipped one), the budget override, its unit, the budget
TRAINING = [
    ("gradient_mlp", "gradient", None, "agent.epochs", "epochs", 20),
    ("gradient_gnn", "gradient_gnn", None, "agent.epochs", "epochs", 2),
    ("ppo_mlp", "ppo_costs_spread", None, "agent.total_timesteps", "steps", 8192),
    ("ppo_gnn", "ppo_gnn", "bench/conf", "agent.total_timesteps", "steps", 2048),
]
TWIN = [("abilene", "abilene", None), ("kdl_100_nodes", "kdl", 100)]
TWIN_BATCH = 1024


def train_case(name: str, agent: str, config_dir: str | None, budget_key: str, unit: str, budget: int,
               device: str, threads: int) -> dict:
    """One `rlte train` at ``budget`` on ``device``; its training seconds and throughput."""
    run_dir = RUNS / f"{name}_{device.replace(':', '')}"
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [*(["-cd", config_dir] if config_dir else []), f"agent={agent}", f"{budget_key}={budget}",
            f"device={device}", f"threads={threads}", *QUIET_EVAL, f"hydra.run.dir={run_dir}"]
    wall = rlte_train(*args)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    seconds = metrics["train_seconds"]
    return {"case": name, "agent": agent, "device": metrics["device"], "threads": threads, "unit": unit,
            "budget": budget, "train_seconds": seconds, f"{unit}_per_second": budget / seconds,
            "wall_seconds": wall, "command": "rlte train " + " ".join(args)}


def twin_case(name: str, spec: str, endpoints: int | None, device: str) -> dict:
    """Seconds per training batch through the torch twin: loads, MLU, and the backward pass."""
    import torch

    from bench.twin_throughput import build, random_inputs
    from envs.twin_torch import TorchFluidTwin

    topology, pathset = build(spec, 4, endpoints)
    demands, ratios = random_inputs(pathset, TWIN_BATCH)
    twin = TorchFluidTwin(pathset, device=device, dtype=torch.float32)
    demands = torch.as_tensor(demands, dtype=torch.float32, device=device)
    logits = torch.as_tensor(np.log(ratios + 1e-9), dtype=torch.float32, device=device).requires_grad_()
    capacities = torch.as_tensor(np.array(topology.capacities), dtype=torch.float32, device=device)

    def step() -> None:
        loads = twin.link_loads(None, torch.softmax(logits, dim=-1), demands=demands)
        (loads / capacities).amax(dim=1).mean().backward()

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    timing = time_call(step, repeats=5, min_seconds=0.2, sync=sync)
    return {"case": name, "device": device, "pairs": pathset.num_pairs, "links": topology.num_links,
            "batch": TWIN_BATCH, **timing, "matrices_per_second": TWIN_BATCH / timing["seconds_per_call"]}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="cpu,cuda", help="devices to measure (cuda is left out without a GPU)")
    parser.add_argument("--parts", default="training,twin", help="training, twin; comma-separated")
    parser.add_argument("--cases", default=",".join(case[0] for case in TRAINING + TWIN))
    parser.add_argument("--threads", type=int, default=1, help="each run's torch / BLAS threads")
    args = parser.parse_args()
    devices = [d for d in args.devices.split(",") if d]
    if not torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
        print("torch sees no CUDA device here: measuring the CPU only", flush=True)
        devices = [d for d in devices if not d.startswith("cuda")]
    cases, parts = set(args.cases.split(",")), set(args.parts.split(","))
    path = RESULTS / "devices.json"
    payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "devices", "machines": {}}
    info = machine()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    payload["machines"][info.get("gpu") or info.get("cpu", "unknown")] = info

    def machine_name(device: str) -> str:
        """What ran a record: the GPU's name for CUDA, the CPU's model otherwise."""
        return info["gpu"] if device.startswith("cuda") else info.get("cpu", "unknown")

    def keep(records: list[dict], fresh: list[dict]) -> list[dict]:
        """Earlier records of another machine or device beside this run's."""
        done = {(r["case"], r["machine"], r["device"]) for r in fresh}
        return [r for r in records if (r["case"], r["machine"], r["device"]) not in done] + fresh

    for device in devices:
        if "training" in parts:
            fresh = []
            for case in TRAINING:
                if case[0] in cases:
                    fresh.append({**train_case(*case, device=device, threads=args.threads),
                                  "machine": machine_name(device)})
                    print(json.dumps(fresh[-1]), flush=True)
            payload["training"] = keep(payload.get("training", []), fresh)
        if "twin" in parts:
            torch.set_num_threads(args.threads)
            fresh = [{**twin_case(*case, device=device), "machine": machine_name(device)}
                     for case in TWIN if case[0] in cases]
            for record in fresh:
                print(json.dumps(record), flush=True)
            payload["twin"] = keep(payload.get("twin", []), fresh)
        write("devices", payload)


if __name__ == "__main__":
    main()
