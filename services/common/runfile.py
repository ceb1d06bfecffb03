"""The run file: what a running `v2x run` tells other commands of the same user (where each service listens, the demo
keys, the state of each process), in $XDG_RUNTIME_DIR/v2x/run.json, readable by that user only.

`v2x municipal-status`, `load/soak.py` and the tests read it, so that a suite started with `make run` needs no
configuration to be reached. It holds admin keys: it is written only into a folder of this user that nobody else
may enter, and removed when the run stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_FILE_NAME = "run.json"


def run_file(env: Mapping[str, str] | None = None) -> Path:
    """$XDG_RUNTIME_DIR/v2x/run.json, or <temp dir>/v2x-<uid>/run.json without XDG_RUNTIME_DIR."""
    e = os.environ if env is None else env
    runtime = e.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "v2x" / RUN_FILE_NAME
    return Path(tempfile.gettempdir()) / f"v2x-{os.getuid()}" / RUN_FILE_NAME


def write_private(path: Path, data: Mapping[str, Any]) -> None:
    """Replaces `path` with `data` as JSON, readable by this user only. Raises PermissionError when the folder
    belongs to someone else or others may enter it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path.parent} is not a private folder of this user")
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_live(path: Path) -> dict[str, Any] | None:
    """What a run that is still running left in `path`; None when there is no such file, it is not this user's, it
    is malformed or the run that wrote it (its `pid`) is gone."""
    try:
        if path.stat().st_uid != os.getuid():
            return None
        raw = json.loads(path.read_text())
        pid = int(raw["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return raw if isinstance(raw, dict) and alive(pid) else None


def remove_if_ours(path: Path, pid: int) -> None:
    """Removes `path` if the run `pid` wrote it (a later run may have replaced it)."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if int(json.loads(path.read_text())["pid"]) == pid:
            path.unlink()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a process of another user answers PermissionError: it exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
