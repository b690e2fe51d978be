"""Experiments: Hydra configs and entry points (`rlte train`, `rlte eval`, ...), reports and
TensorBoard. The public Python API is :mod:`experiments.api`: ``compose``, ``train_config``,
``load_run``, ``score_run`` (imported on first use, so the command line starts fast)."""

from __future__ import annotations

API = ("BENCH_CONFIG_DIR", "Run", "baselines_only", "compose", "load_run", "score_run", "train_config")


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


__all__ = list(API)
