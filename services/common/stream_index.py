"""Keeping an in-memory index current by following a Redis change stream.

A service that answers queries from memory (parking's lots, charging's connectors) loads its index from
PostgreSQL, then applies every later change from the service's change stream, its own replicas' included.
The index may answer only while it is sure it saw every change since its snapshot: this module decides
that. It remembers where the stream stood before the snapshot was read (so nothing committed after it is
missed), and takes the index out of service (`unsynced`), then reloads it, whenever entries may have been
lost: Redis gone, the stream trimmed past the last entry read, or the follower too far behind. What an
entry means is the service's business (`apply`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from services.common.background import raise_if_stopping
from services.common.nearby import PointIndex
from services.common.redis_streams import Entry, Feed, Position, follow_feed, last_position, stream_id

# A follower whose newest entry is older than this reloads from PostgreSQL rather than catch up.
MAX_LAG_S = 10.0
RETRY_S = 1.0


class FollowedIndex(Protocol):
    def __len__(self) -> int: ...

    def unsynced(self) -> None:
        """Changes may have been missed: answer from PostgreSQL until the next `load`."""

    async def load(self) -> None:
        """Reads everything from PostgreSQL; the index answers again afterwards."""


class SnapshotIndex(ABC):
    """A nearby index (`_points`) loaded whole from PostgreSQL and then kept current, keyed by the ids of what
    it holds (lots, stations). While a load runs, the items this process changes meanwhile may be missing
    from the snapshot (it was read before their commit): they are noted and read again before the index
    answers. Subclasses say how rows are read (`_rows`) and laid out (`_build`, `_upsert`)."""

    def __init__(self) -> None:
        self._points: PointIndex | None = None  # None until the first load
        self._synced = False
        self._loading = False
        self._touched: set[str] = set()

    @property
    def synced(self) -> bool:
        """Whether answers may come from here: loaded, and no change missed since."""
        return self._synced and self._loaded()

    def unsynced(self) -> None:
        """Changes may have been missed (the stream is lost or trimmed): answers go to PostgreSQL until `load`."""
        self._synced = False

    async def load(self) -> None:
        """Reads everything from PostgreSQL, then again what this process changed while it read."""
        self._loading = True
        self._touched = set()
        try:
            self._build(await self._rows(None))
            while self._touched:
                ids, self._touched = sorted(self._touched), set()
                self._upsert(ids, await self._rows(ids))
        finally:
            self._loading = False
        self._synced = True

    async def refresh(self, ids: Sequence[str]) -> None:
        """Reads items whose static data changed (or that are new, or gone) again."""
        if not ids:
            return
        self._touch(ids)
        rows = await self._rows(ids)
        if self._loaded():
            self._upsert(ids, rows)

    def _touch(self, ids: Sequence[str] | set[str]) -> None:
        """Notes items changed by this process: a load in progress reads them again."""
        if self._loading:
            self._touched.update(ids)

    def _loaded(self) -> bool:
        return self._points is not None

    @abstractmethod
    async def _rows(self, ids: Sequence[str] | None) -> Sequence[Any]:
        """The rows of these items from PostgreSQL (None: of all)."""

    @abstractmethod
    def _build(self, rows: Sequence[Any]) -> None:
        """Replaces the index by one of these rows."""

    @abstractmethod
    def _upsert(self, ids: Sequence[str], rows: Sequence[Any]) -> None:
        """Puts these items' rows in place of what the index holds of them (an id without a row is gone)."""


class IndexFollower:
    def __init__(self, redis: Redis, feed: Feed, index: FollowedIndex,
                 apply: Callable[[list[tuple[int, Entry]]], Awaitable[None]], log: logging.Logger, *,
                 max_lag_s: float = MAX_LAG_S, retry_s: float = RETRY_S) -> None:
        self.redis = redis
        self.feed = feed
        self.index = index
        self.apply = apply
        self.log = log
        self.max_lag_s = max_lag_s
        self.retry_s = retry_s
        self._cursor: Position | None = None

    async def start(self, warm: Callable[[], None] | None = None) -> None:
        """Loads the index (then `warm`s it) before the server reports SERVING. Without Redis the index
        stays unused (answers come from PostgreSQL) until `run` gets through."""
        try:
            cursor = await last_position(self.redis, self.feed)
        except RedisError:
            self.log.warning("no change stream: the nearby index waits for Redis", exc_info=True)
            return
        await self.index.load()
        if warm is not None:
            warm()
        self._cursor = cursor

    async def run(self) -> None:
        """Applies the stream's entries to the index, for as long as the process runs."""
        index = self.index
        slow_since: float | None = None
        while True:
            try:
                if self._cursor is None:
                    index.unsynced()
                    cursor = await last_position(self.redis, self.feed)
                    await index.load()
                    self._cursor = cursor
                    self.log.info("nearby index reloaded", extra={"entries": len(index)})
                async for batch in follow_feed(self.redis, self.feed, self._cursor, block_ms=1000):
                    if not batch:
                        continue
                    if await self._missed(self._cursor, batch):
                        self._cursor = None
                        break
                    await self.apply(batch)
                    for shard, (entry_id, _) in batch:
                        self._cursor = self._cursor.advanced(shard, entry_id.decode())
                    slow_since = None
            except asyncio.CancelledError:
                raise
            except RedisTimeout:
                raise_if_stopping()
                # A reply that came late (Redis or this process busy) loses nothing: read on from the same cursor,
                # unless it has gone on for so long that the index must be taken as stale.
                now = time.monotonic()
                slow_since = slow_since if slow_since is not None else now
                if now - slow_since <= self.max_lag_s:
                    self.log.info("change stream read timed out; reading on from the same position")
                    continue
                self.log.warning("change stream reads keep timing out; reloading the nearby index")
                index.unsynced()
                self._cursor = None
                slow_since = None
            except Exception:
                raise_if_stopping()
                # Redis lost (or PostgreSQL during a reload): stop answering from the index until reloaded.
                self.log.warning("nearby index lost its change stream; reloading", exc_info=True)
                index.unsynced()
                self._cursor = None
                await asyncio.sleep(self.retry_s)

    async def _missed(self, cursor: Position, batch: list[tuple[int, Entry]]) -> bool:
        """Whether entries after `cursor` may be gone unread (trimmed) in a shard the batch comes from, or the
        follower is too far behind."""
        last = {shard: entry_id for shard, (entry_id, _) in batch}
        for shard, newest in last.items():
            if await self._missed_in(self.feed.key(shard), cursor.ids[shard].encode(), newest):
                return True
        return False

    async def _missed_in(self, stream: str, cursor: bytes, newest: bytes) -> bool:
        info = await self.redis.xinfo_stream(stream)
        at = stream_id(cursor)
        if at == (0, 0):
            # The stream was empty at the snapshot: anything ever trimmed or deleted may have been unread.
            lost = info.get("entries-added", 0) > info["length"]  # (Redis 7 counts them; before, assume none)
        else:
            # Trimming takes the oldest entries: if the oldest left is past the last one read, what lay
            # between may be gone. (The entry read last being trimmed alone also counts: the follower is
            # then a whole stream's length behind, and a reload is as quick as catching up.)
            first = info.get("first-entry")
            lost = (first is not None and stream_id(first[0]) > at) or stream_id(
                info.get("max-deleted-entry-id", b"0-0")) > at
        if lost:
            self.log.warning("change stream trimmed past the nearby index's position; reloading")
            return True
        # Both ids are stamped by the Redis clock: no skew between hosts comes into the lag.
        lag_ms = stream_id(info.get("last-generated-id", b"0-0"))[0] - stream_id(newest)[0]
        if lag_ms > self.max_lag_s * 1000:
            self.log.warning("nearby index is behind its change stream; reloading", extra={"lag_ms": lag_ms})
            return True
        return False
