"""Realizations of a topology: the fluid digital twin (and, later, Gymnasium environments
and the Mininet backend). The torch twin lives in ``envs.twin_torch`` (imports torch)."""

from .twin import FluidTwin, QueueModel, TwinResult

__all__ = ["FluidTwin", "QueueModel", "TwinResult"]
