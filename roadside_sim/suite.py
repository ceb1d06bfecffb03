"""Where the suite is: the run file a running `v2x run` leaves for its user's commands ($XDG_RUNTIME_DIR/v2x/run.json,
else <temp dir>/v2x-<uid>/run.json; a documented file, read here without importing the suite's code)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def run_file() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "v2x" / "run.json"
    return Path(tempfile.gettempdir()) / f"v2x-{os.getuid()}" / "run.json"


def read_run_file(path: Path | None = None) -> dict[str, Any] | None:
    """The running suite's targets and keys; None when no run of this user is up."""
    p = path or run_file()
    try:
        if p.stat().st_uid != os.getuid():
            return None
        data = json.loads(p.read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None
