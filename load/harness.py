"""What the benchmarks share: CPU accounting from /proc, and waiting for a `v2x serve --processes N` service."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.processes import READY_LINE


def proc_cpu_s(pid: int | str) -> tuple[str, float]:
    """(command name, user + system CPU seconds) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (`serve --processes N` is a supervisor of N processes)."""
    total = 0.0
    with contextlib.suppress(OSError):
        total += proc_cpu_s(pid)[1]
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                total += tree_cpu_s(int(child))
    return total


async def wait_all_processes(proc: subprocess.Popen[bytes], processes: int, log_tail: Callable[[int], str],
                             what: str, timeout_s: float = 120.0) -> None:
    """With several processes, until the supervisor said every one serves (a health check on the shared port
    reaches only one of them); at once with one."""
    deadline = time.monotonic() + timeout_s
    while processes > 1 and READY_LINE not in log_tail(200):
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} service exited with {proc.returncode}:\n{log_tail(30)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {what} service's processes did not all serve within {timeout_s:g} s:\n"
                               f"{log_tail(30)}")
        await asyncio.sleep(0.2)


def free_port() -> int:
    """A TCP port free on loopback right now (for a service the benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..1) of values already sorted; NaN for none."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class ServiceProcess:
    """A service the benchmark started (`v2x serve ...`), its gRPC port and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
