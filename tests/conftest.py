"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from topologies import Topology

from .networks import triangle

# The networks under test are small: one thread each is fastest, and several threads per
# process oversubscribe a shared 2-core machine (a short PPO run went from 16 s to 35 s).
torch.set_num_threads(1)


@pytest.fixture
def tri() -> Topology:
    return triangle()
