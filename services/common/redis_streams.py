"""Redis: one client per process, and the Streams helpers every live feed uses.

A feed is one stream, or `shards` streams when the suite runs on a Redis Cluster: a hash-tagged key puts a whole
stream on one node, so a feed of one stream runs at one node's rate. A sharded feed keeps each aggregate (a lot, a
station, an incident, a camera) in one shard, so its entries stay in order, and a reader's position is one id per
shard (`Position`). With one shard the keys and cursors are the single stream's, as they were before sharding.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
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


def create_redis(url: str, *, cluster: bool = False) -> Redis:
    """The process' client: a plain client, or a Redis Cluster client that finds every node from the one in `url`
    (typed as the plain client: both speak the same commands, and the feeds never name keys of two slots in one
    command)."""
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return cast(Redis, RedisCluster.from_url(url, decode_responses=False, health_check_interval=30,
                                                 socket_keepalive=True))
    return Redis.from_url(url, decode_responses=False, health_check_interval=30, socket_keepalive=True)


# ----- sharded feeds ----------------------------------------------------------------------------------------

CURSOR_RE = re.compile(rf"{STREAM_ID_RE.pattern}(,{STREAM_ID_RE.pattern}){{0,255}}")


class BadCursor(ValueError):
    """A cursor that is not one of this feed's (another shard count, or not a cursor at all)."""


@dataclass(frozen=True)
class Feed:
    """The `shards` streams of one feed: `v2x:{<service>}:<name>` with one shard, `v2x:{<service>:<n>}:<name>` with
    more (each shard's own hash tag, so the shards spread over a cluster's nodes)."""

    service: str
    name: str
    shards: int = 1

    def key(self, shard: int) -> str:
        return f"v2x:{self.tag(shard)}:{self.name}"

    @property
    def keys(self) -> list[str]:
        return [self.key(s) for s in range(self.shards)]

    def shard_of(self, aggregate_id: str) -> int:
        return zlib.crc32(aggregate_id.encode()) % self.shards if self.shards > 1 else 0

    def tag(self, shard: int) -> str:
        """The hash tag of a shard, for keys that must live beside its stream (e.g. a script's other keys)."""
        return f"{{{self.service}}}" if self.shards == 1 else f"{{{self.service}:{shard}}}"


@dataclass(frozen=True)
class Position:
    """Where a reader is in a feed: the last id read in each shard. Encoded as a cursor: the id alone with one
    shard, the ids joined by commas with more."""

    ids: tuple[str, ...]

    @classmethod
    def start(cls, shards: int) -> Position:
        return cls(("0-0",) * shards)

    def encode(self) -> str:
        return ",".join(self.ids)

    @classmethod
    def decode(cls, cursor: str, shards: int) -> Position:
        if not CURSOR_RE.fullmatch(cursor):
            raise BadCursor(f"{cursor!r} is not a cursor (e.g. 1718000000000-0)")
        ids = tuple(cursor.split(","))
        if len(ids) != shards:
            raise BadCursor(f"the cursor names {len(ids)} shard(s); this feed has {shards}: it was issued before the "
                            "feed was resharded, so subscribe again without a cursor")
        return cls(ids)

    def advanced(self, shard: int, entry_id: str) -> Position:
        ids = list(self.ids)
        ids[shard] = entry_id
        return Position(tuple(ids))

    def after(self, other: Position) -> bool:
        """At or past `other` in every shard, and past it in one."""
        pairs = [(stream_id(a), stream_id(b)) for a, b in zip(self.ids, other.ids, strict=True)]
        return all(a >= b for a, b in pairs) and any(a > b for a, b in pairs)


async def publish_sharded(redis: Redis, feed: Feed, entries: Sequence[tuple[str, Fields]], maxlen: int) -> list[bytes]:
    """Appends each (aggregate id, fields) entry to its aggregate's shard, in one pipeline (per node in a cluster);
    each shard is trimmed (approximately) to `maxlen`. Returns the ids in the order of `entries`."""
    if not entries:
        return []
    if feed.shards == 1:
        return await publish(redis, feed.key(0), [f for _, f in entries], maxlen)
    async with redis.pipeline(transaction=False) as pipe:
        for aggregate, fields in entries:
            pipe.xadd(feed.key(feed.shard_of(aggregate)), cast(Any, dict(fields)), maxlen=maxlen, approximate=True)
        ids: list[bytes] = await pipe.execute()
    return ids


async def last_position(redis: Redis, feed: Feed) -> Position:
    """The newest entry of every shard ("0-0" for an empty one), to follow from without a gap."""
    ids = [await last_id(redis, key) for key in feed.keys]
    return Position(tuple(i.decode() for i in ids))


async def follow_feed(redis: Redis, feed: Feed, after: Position, *, block_ms: int = 1000,
                      count: int = 500) -> AsyncIterator[list[tuple[int, Entry]]]:
    """Yields batches of (shard, entry) after `after`, forever, each shard's entries in order; an empty batch when
    `block_ms` passes idle. One reader per shard (a cluster refuses one XREAD over keys of several slots)."""
    if feed.shards == 1:
        async for entries in follow(redis, feed.key(0), after.ids[0], block_ms=block_ms, count=count):
            yield [(0, e) for e in entries]
        return
    queue: asyncio.Queue[tuple[int, list[Entry]] | BaseException] = asyncio.Queue(maxsize=feed.shards * 2)

    async def read(shard: int) -> None:
        try:
            async for batch in follow(redis, feed.key(shard), after.ids[shard], block_ms=block_ms, count=count):
                if batch:
                    await queue.put((shard, batch))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a broken connection: the follower above decides what to do
            await queue.put(exc)

    readers = [asyncio.create_task(read(s), name=f"follow {feed.key(s)}") for s in range(feed.shards)]
    try:
        while True:
            try:
                async with asyncio.timeout(block_ms / 1000):
                    item = await queue.get()
            except TimeoutError:
                yield []
                continue
            if isinstance(item, BaseException):
                raise item
            batch = [(item[0], e) for e in item[1]]
            while not queue.empty():  # whatever the other shards have ready joins this batch
                more = queue.get_nowait()
                if isinstance(more, BaseException):
                    raise more
                batch += [(more[0], e) for e in more[1]]
            yield batch
    finally:
        for r in readers:
            r.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*readers, return_exceptions=True)


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
