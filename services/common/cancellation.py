"""Database work that a client's cancellation must not cut in half.

A client that walks away cancels its rpc's task. A query or transaction interrupted there leaves its connection in
an unknown protocol state, so the pool throws the connection away (asyncpg then logs the connection's lost futures
as errors), and a write is rolled back after it may already have been half applied on the caller's side. `finish`
lets the work run to its end in a task of its own; the caller still sees its cancellation at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("v2x.cancellation")


async def finish(work: Awaitable[T]) -> T:
    """Awaits `work`; if the caller is cancelled meanwhile, `work` goes on to its end (its failure, if any, is
    logged, since nobody is left to see it) and the caller's cancellation proceeds."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report)
        raise


def _report(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("work finished after its caller left failed", exc_info=exc)
