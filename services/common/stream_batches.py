"""The request side of a client-streaming write rpc (StreamOccupancy, StreamStatus): read ahead, commit in batches.

A reader task takes messages off the stream while the caller commits the previous batch, so each batch holds what
arrived meanwhile: one transaction per batch instead of one per message. The reader is stopped and awaited before
the batches end, however they end, so nothing reads from an rpc after it has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Final, TypeVar

T = TypeVar("T")


class _End:
    """Marks the end of the request stream in the queue."""


_END: Final = _End()


async def batches(messages: AsyncIterator[T], *, limit: int, buffered: int,
                  weight: Callable[[T], int] = lambda _: 1) -> AsyncGenerator[list[T], None]:
    """Yields the messages of `messages` in arrival order, in batches: the first message waiting, then every further
    one already waiting until the batch weighs `limit` (so a batch may exceed it by its last message). At most
    `buffered` messages wait; gRPC flow control holds the client back beyond that. A broken request stream raises
    here after the batches before it."""
    queue: asyncio.Queue[T | _End] = asyncio.Queue(maxsize=buffered)

    async def read() -> None:
        try:
            async for message in messages:
                await queue.put(message)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await queue.put(_END)
            raise
        await queue.put(_END)

    reader = asyncio.create_task(read())
    try:
        ended = False
        while not ended:
            first = await queue.get()
            if isinstance(first, _End):
                break
            batch = [first]
            size = weight(first)
            while size < limit and not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, _End):
                    ended = True
                    break
                batch.append(item)
                size += weight(item)
            yield batch
        await reader  # surfaces a broken request stream
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
