"""Where the project's config lives (``conf/`` at the project root)."""

import os
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("REGSTUDY_CONF", Path(__file__).resolve().parents[2] / "conf"))
