"""Background loops: one periodic loop for every service, and how it tells a stop request from an error it must ride
out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


def raise_if_stopping() -> None:
    """Re-raises a pending cancellation. A loop that retries on any error must not retry when its task was
    asked to stop: a library that turns the CancelledError into an error of its own (a connection reset,
    a timeout that fires together with the cancel) would otherwise leave it retrying forever, and whoever
    awaits it (a clean stop, a test's teardown) waiting forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def every(interval_s: float, work: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """Runs `work` every `interval_s` until cancelled; a failure is logged (with `what`) and the next turn goes on."""
    while True:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_stopping()
            log.exception("%s failed", what)
        await asyncio.sleep(interval_s)
