"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch

from agents.lp import optimal_mlu
from topologies import Topology, load_traffic

from tests.networks import triangle

# The networks under test are small: one thread each is fastest, and several threads per
# process oversubscribe a shared 2-core machine (a short PPO run went from 16 s to 35 s).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_stay_in_pytest_tmp(tmp_path_factory):
    """A model trained without a TensorBoard folder makes SB3 create an empty
    /tmp/SB3-<time> folder per run, unless SB3_LOGDIR names one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))
        yield


@pytest.fixture
def tri() -> Topology:
    return triangle()


@pytest.fixture(scope="module")
def triangle_traffic():
    topology = triangle()
    traffic = load_traffic("gravity", topology, count=60, seed=1)
    return topology, traffic, optimal_mlu(topology, traffic.matrices)
