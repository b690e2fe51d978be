"""Timing and reporting helpers for the benchmarks (JSON out, median of repeats)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def time_call(fn: Callable[[], object], *, repeats: int = 5, min_seconds: float = 0.05,
              sync: Callable[[], None] | None = None) -> dict:
    """Median seconds per call over ``repeats`` timed loops, each at least ``min_seconds`` long."""
    fn()  # warm-up (allocations, caches, lazy init)
    if sync:
        sync()
    calls = 1
    while True:  # calibrate the loop length
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync:
            sync()
        if time.perf_counter() - start >= min_seconds or calls >= 1 << 20:
            break
        calls *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync:
            sync()
        samples.append((time.perf_counter() - start) / calls)
    return {"seconds_per_call": statistics.median(samples), "min_seconds_per_call": min(samples),
            "calls_per_repeat": calls, "repeats": repeats}


def machine() -> dict:
    info = {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in handle if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # a plain path LP returns whichever of its tied optima the solver picks, and the solver's
    # version moves that (LP-previous on Abilene was 1.068 with highspy 1.15, 1.058 with 1.16,
    # before agents.lp made the tie-breaks unique)
    for module in ("scipy", "highspy", "torch", "stable_baselines3"):
        try:
            info[module] = version(module)
        except PackageNotFoundError:
            pass
    return info


def write(name: str, payload: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # replaced whole: an interrupted write leaves the old file
    partial.write_text(json.dumps(payload, indent=1) + "\n")
    partial.replace(path)
    print(f"wrote {path}")
    return path


def rlte_train(*args: str) -> float:
    """Run `rlte train ARGS` from the repository (bench/ importable, for Hydra callbacks there);
    its wall seconds. A failure ends the benchmark with the run's stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", "from experiments.cli import main; main()", "train", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"rlte train {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds
