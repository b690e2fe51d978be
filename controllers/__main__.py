"""``python -m controllers CONFIG.json``: start a controller from a saved ControllerConfig
(how the Mininet backend starts its own; users run ``rlte controller``)."""

import sys
from pathlib import Path

from .main import ControllerConfig, run_controller

if len(sys.argv) != 2:
    sys.exit("usage: python -m controllers CONFIG.json")
run_controller(ControllerConfig.model_validate_json(Path(sys.argv[1]).read_text()))
