"""Background loops: how one tells a stop request from an error it must ride out."""

from __future__ import annotations

import asyncio


def raise_if_stopping() -> None:
    """Re-raises a pending cancellation. A loop that retries on any error must not retry when its task was
    asked to stop: a library that turns the CancelledError into an error of its own (a connection reset,
    a timeout that fires together with the cancel) would otherwise leave it retrying forever, and whoever
    awaits it (a clean stop, a test's teardown) waiting forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
