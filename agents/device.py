"""Which torch device a training runs on: the run's ``device`` setting made concrete.

``auto`` picks CUDA only where a GPU can pay: a network that trains on whole batches of
matrices through the differentiable twin with message passing over every link (the gradient
learner's graph network). Small MLPs stay on the CPU: each step is a few small matrix products,
which a GPU's launch latency and host copies outweigh. So do Stable-Baselines3's agents, whose
rollouts step the numpy twin one decision at a time (SB3 advises the CPU for PPO without a CNN
and warns when it is put on a GPU); ``device=cuda`` still puts them there. An explicit ``cuda``
on a machine without one is an error, not a quiet CPU run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a device is resolved: the run's config is checked without it
    import torch

SETTING = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_setting(setting: str, key: str = "device") -> None:
    """Refuse a setting that is none of auto, cpu, cuda, cuda:N (without touching a GPU)."""
    if not isinstance(setting, str) or not SETTING.fullmatch(setting):
        raise ValueError(f"{key} must be auto, cpu, cuda or cuda:N, got {setting!r}")


def resolve_device(setting: str, *, gpu_pays: bool, key: str = "device") -> torch.device:
    """The device ``setting`` names on this machine. ``auto``: CUDA when torch sees one and
    ``gpu_pays`` (the model is worth a GPU, see the module text), else the CPU. A ValueError
    when ``setting`` names a CUDA device this machine does not have."""
    import torch

    check_device_setting(setting, key)
    if setting == "auto":
        return torch.device("cuda" if gpu_pays and torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"{key}={setting}: torch {torch.__version__} ({build}) sees no CUDA device on this "
                             f"machine; use {key}=cpu, or {key}=auto to take a GPU only where there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{key}={setting}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    return device


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s weights are (the CPU for a module without any)."""
    import torch

    return next(module.parameters(), torch.empty(0)).device
