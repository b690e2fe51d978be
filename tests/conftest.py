"""Shared fixtures."""

from __future__ import annotations

import pytest

from topologies import Topology

from .networks import triangle


@pytest.fixture
def tri() -> Topology:
    return triangle()
