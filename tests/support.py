"""Helpers for the tests that drive training and the `rlte` command: the repository root,
the config `rlte train` composes, and `rlte` run in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compose_train(*overrides: str):
    """The config `rlte train -cd bench/conf OVERRIDES` composes (the experiment variants too)."""
    from experiments import BENCH_CONFIG_DIR, compose

    return compose(*overrides, config_dirs=[BENCH_CONFIG_DIR])


def rlte(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", "from experiments.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)
