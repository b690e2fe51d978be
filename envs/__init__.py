"""Realizations of a topology and the environments built on them: the fluid digital twin,
the backend interface (the twin; Mininet in ``envs.mininet_backend``), and two Gymnasium environments,
registered as ``rlte/SplitRouting-v0`` (continuous split ratios) and
``rlte/PathSelection-v0`` (one discrete path per arriving flow).
The torch twin lives in ``envs.twin_torch`` (imports torch)."""

import gymnasium as gym

from .backend import Backend, Measurement, TwinBackend, make_backend
from .path_selection import PathSelectionEnv
from .split_routing import SplitRoutingEnv, SplitRoutingObservation, ratios_from_action
from .twin import FluidTwin, QueueModel, TwinResult

ENV_IDS = {"split_routing": "rlte/SplitRouting-v0", "path_selection": "rlte/PathSelection-v0"}

for _id, _entry in ((ENV_IDS["split_routing"], "envs.split_routing:SplitRoutingEnv"),
                    (ENV_IDS["path_selection"], "envs.path_selection:PathSelectionEnv")):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry)

__all__ = ["Backend", "ENV_IDS", "FluidTwin", "Measurement", "PathSelectionEnv", "QueueModel", "SplitRoutingEnv",
           "SplitRoutingObservation", "TwinBackend", "TwinResult", "make_backend", "ratios_from_action"]
