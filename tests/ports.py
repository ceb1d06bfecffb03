"""Ports for servers the tests start as processes of their own, on ports chosen before those processes bind them.

A port from bind(0) lies in Linux's ephemeral range (32768-60999), where every outgoing connection on the machine
(PostgreSQL, Redis, gRPC clients, other engineers' tests) also takes its local port: between a test choosing one and
its server binding it, a connection may take it, and the server fails with "address in use". These come from below
that range, checked free, together with the offsets the caller will also bind (a replica's metrics port is the
service's + 100 per process: services/common/processes.py METRICS_STRIDE).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000
TRIES = 500


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*offsets: int) -> int:
    """A TCP port on 127.0.0.1, below the ephemeral range, free now together with `port + offset` for each offset."""
    high = _ephemeral_low() - max((0, *offsets))
    if high <= LOWEST:  # no room below the range on this machine: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    for _ in range(TRIES):
        port = random.randrange(LOWEST, high)
        if all(_bindable(port + o) for o in (0, *offsets)):
            return port
    raise RuntimeError(f"no free port in {LOWEST}..{high} after {TRIES} tries")
