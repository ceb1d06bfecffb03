"""Which event loop a service process runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str) -> T:
    """Runs `main` to completion on a new loop of the configured kind (Settings.event_loop): Python's own by default,
    the loop grpc.aio is built and tested on (upstream tracks uvloop as untested, grpc/grpc#22753), or uvloop on
    request, which saves ~6 % of a core at 1,000 IDPS reports/s here (load/README.md, "Event loop")."""
    if kind == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
