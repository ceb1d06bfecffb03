"""Waiting in tests on what the code under test does, not on the clock: one helper for every test."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def assert_eventually(check: Callable[[], bool | Awaitable[bool]], what: str, within_s: float = 20.0,
                            every_s: float = 0.05) -> None:
    """Returns as soon as `check()` (awaited when it returns an awaitable) is true; fails naming `what` when it is
    still false after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(every_s)
