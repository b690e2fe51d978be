"""Where the bundled data lives (inside the installed package)."""

from importlib import resources
from pathlib import Path

DATA = Path(str(resources.files(__package__) / "data"))
