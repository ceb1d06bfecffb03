"""Server-Sent Events: the response, the event encoding, and ending every open stream when the console stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from services.console.web import security_headers

STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams", set)
# A reconnecting browser waits this long (the SSE `retry` field), then sends Last-Event-ID.
RETRY_MS = 1000
# An idle stream gets a comment this often: a browser that left is noticed on the write.
KEEPALIVE_S = 15.0


def encode(event: str, data: Any, event_id: str | None = None) -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + orjson.dumps(data).decode())
    return ("\n".join(lines) + "\n\n").encode()


@contextlib.asynccontextmanager
async def sse_response(request: web.Request) -> AsyncIterator[web.StreamResponse]:
    """An open event stream; ends quietly when the browser goes away, and when the console stops."""
    response = web.StreamResponse(headers={**security_headers(), "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    await response.write(f"retry: {RETRY_MS}\n\n".encode())
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield response
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser left, or the console stops: nothing more to say
    finally:
        streams.discard(task)


async def close_streams(app: web.Application) -> None:
    streams: set[asyncio.Task[Any]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


async def pump(response: web.StreamResponse, queue: asyncio.Queue[bytes | None]) -> None:
    """Writes what `queue` holds as it comes, with a keep-alive comment when it is idle, until a None (the source
    failed: the browser reconnects after `retry` and everything starts again), the browser leaves, or the console
    stops."""
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            event = b": keepalive\n\n"
        if event is None:
            return
        await response.write(event)
