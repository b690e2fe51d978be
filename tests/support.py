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


def wait_for_port(port: int, process, seconds: float = 60.0) -> None:
    """Until something listens on ``port`` of 127.0.0.1 (``process``, which must stay alive, opens it)."""
    import socket
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")
