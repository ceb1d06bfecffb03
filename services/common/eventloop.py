"""Which event loop a service process runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], kind: str) -> T:
    """Runs `main` to completion on a new loop of the configured kind (Settings.event_loop): uvloop by default,
    measured to leave a busy service more of its core (IDPS reports, municipal delivery: load/README.md), or
    asyncio's own."""
    if kind == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
