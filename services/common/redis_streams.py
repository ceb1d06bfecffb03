"""Redis: one client per process, and the Streams helpers every live feed uses."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from services.common.background import raise_if_stopping

Fields = Mapping[str | bytes, bytes | str | int | float]
Entry = tuple[bytes, dict[bytes, bytes]]


# A stream entry id, `<milliseconds>-<sequence>`: the cursors clients resume from.
STREAM_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable (milliseconds, sequence)."""
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def create_redis(url: str) -> Redis:
    return Redis.from_url(url, decode_responses=False, health_check_interval=30, socket_keepalive=True)


async def publish(redis: Redis, stream: str, entries: Sequence[Fields], maxlen: int) -> list[bytes]:
    """Appends entries in one round trip; the stream is trimmed (approximately) to `maxlen`."""
    if not entries:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for fields in entries:
            pipe.xadd(stream, cast(Any, dict(fields)), maxlen=maxlen, approximate=True)
        ids: list[bytes] = await pipe.execute()
    return ids


async def last_id(redis: Redis, stream: str) -> bytes:
    """The id of the newest entry ("0-0" for an empty stream), to follow from without a gap."""
    newest = cast(list[Entry], await redis.xrevrange(stream, count=1))
    return newest[0][0] if newest else b"0-0"


async def follow(
    redis: Redis, stream: str, after: bytes | str, *, block_ms: int = 1000, count: int = 500
) -> AsyncIterator[list[Entry]]:
    """Yields batches of entries after `after`, forever; an empty batch when `block_ms` passes idle,
    so callers get a chance to do timed work."""
    cursor = after
    while True:
        # A cancel that lands as a blocking XREAD returns can be lost in the client: check on every turn.
        raise_if_stopping()
        reply = cast(list[tuple[bytes, list[Entry]]], await redis.xread({stream: cursor}, count=count, block=block_ms))
        if not reply:
            yield []
            continue
        entries = reply[0][1]
        cursor = entries[-1][0]
        yield entries
