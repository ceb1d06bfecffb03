"""The live incident feed: committed changes go to a Redis Stream; subscribers follow it.

Publishing: after a change commits, each changed incident is appended to `v2x:{idps}:incidents` by a
Lua script that keeps, per incident, the last version published and its filter attributes. A version
older than the one already published is dropped (two transactions on one incident may finish their
publication out of order; the newer entry already carries the full state), and every entry carries the
attributes of the previous entry of its incident. So the stream alone tells each subscriber whether an
entry is NEW, an UPDATE or an END for its filter: a replay from a cursor yields exactly the messages a
live subscriber got (no gap, no duplicate), without per-console state on the server.

Following: one reader task per process (`Fanout`) reads the stream and offers each entry to every
subscriber's bounded buffer. A subscriber that cannot keep up overflows only its own buffer and is then
sent a RESYNC and a fresh snapshot; the reader never waits for anyone.

Shards (V2X_FEED_SHARDS, for a Redis Cluster): an incident's entries all go to the shard of its id, so they stay in
order and each entry's "before" attributes remain its incident's previous entry. A cursor is then one id per shard
(`redis_streams.Position`): a replay delivers every entry after the cursor's id in each shard, so a resume is
exact across shards. A cursor of a feed with another number of shards is refused (FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from v2x.idps.v1 import idps_pb2 as pb

from services.common.background import raise_if_stopping
from services.common.cancellation import finish
from services.common.errors import FailedPrecondition
from services.common.redis_streams import BadCursor, Feed, Position, follow_feed, last_position, stream_id
from services.common.redis_streams import Entry as RawEntry
from services.idps import convert
from services.idps.model import Attrs, Change, IncidentFilter
from services.idps.store import IdpsStore

log = logging.getLogger("v2x.idps.feed")

STREAM = "v2x:{idps}:incidents"  # the feed's stream with one shard (tests read it directly)
FEED = Feed("idps", "incidents")
VERSION_TTL_S = 7 * 86400
MAX_BATCH = 500
REPLAY_PAGE = 500
# Pause of the fan-out reader after each batch, seconds. Each console costs one gRPC message (and a
# system call at both ends) per read, whatever the number of changes in it: 25 ms bounds that at 40 a
# second per console, for at most 25 ms more latency under load (an idle stream's change goes at once).
# Longer pauses add their length to the report -> console latency, shorter ones keep the event loop that
# also accepts every ReportEvent busier (load/README.md, "IDPS benchmark", has the measurements).
LINGER_S = 0.025

Kind = pb.IncidentMessage.Kind
NEW, UPDATE, END = pb.IncidentMessage.KIND_NEW, pb.IncidentMessage.KIND_UPDATE, pb.IncidentMessage.KIND_END
RESYNC, HEARTBEAT = pb.IncidentMessage.KIND_RESYNC, pb.IncidentMessage.KIND_HEARTBEAT
SNAPSHOT_END = pb.IncidentMessage.KIND_SNAPSHOT_END

PUBLISHED = Counter("v2x_idps_changes_published_total", "Incident changes appended to the change stream")
PUBLISH_FAILED = Counter("v2x_idps_publish_failures_total", "Change publications that failed (Redis errors)")
RESYNCS = Counter("v2x_idps_subscriber_resyncs_total", "RESYNC messages sent", ["reason"])
SUBSCRIBERS = Gauge("v2x_idps_subscribers", "Live Subscribe streams in this process")

# KEYS: stream, then one version key per change. ARGV: maxlen, ttl, then per change: incident id,
# version, attributes, the attributes before (used when nothing was published for it yet), data.
# An entry has two fields: h = "<incident id>|<version>|<attributes>|<attributes before>", d = the
# Incident message (few fields: every reader parses every entry, and the parsing is per field).
_PUBLISH = """
local out = {}
local n = (#ARGV - 2) / 5
for j = 0, n - 1 do
  local b = 2 + j * 5
  local key = KEYS[j + 2]
  local cur = redis.call('HMGET', key, 'v', 'a')
  if cur[1] and tonumber(cur[1]) >= tonumber(ARGV[b + 2]) then
    out[j + 1] = ''
  else
    local prev = cur[2] or ARGV[b + 4]
    local head = ARGV[b + 1] .. '|' .. ARGV[b + 2] .. '|' .. ARGV[b + 3] .. '|' .. prev
    out[j + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'h', head, 'd', ARGV[b + 5])
    redis.call('HSET', key, 'v', ARGV[b + 2], 'a', ARGV[b + 3])
    redis.call('EXPIRE', key, ARGV[2])
  end
end
return out
"""


def classify(f: IncidentFilter, before: Attrs | None, after: Attrs) -> int | None:
    """The message a subscriber with filter `f` gets for a change, or None when it gets none."""
    was = before is not None and f.matches_live(before)
    now = f.matches_live(after)
    if now:
        return UPDATE if was else NEW
    return END if was else None


def _ts() -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(time.time_ns())
    return t


def frame(kind: int, cursor: str = "", incident: bytes | pb.Incident | None = None) -> bytes:
    """One message as a serialized SubscribeResponse; concatenated frames are a valid response too."""
    out = pb.SubscribeResponse()
    m = out.messages.add(kind=kind, cursor=cursor)
    m.sent_at.CopyFrom(_ts())
    if isinstance(incident, bytes):
        m.incident.MergeFromString(incident)
    elif incident is not None:
        m.incident.CopyFrom(incident)
    return out.SerializeToString()


@dataclass(slots=True)
class StreamEntry:
    id: str
    sid: tuple[int, int]
    incident_id: str
    version: int
    attrs: Attrs
    before: Attrs | None
    data: bytes
    shard: int = 0
    # Where a reader that has read this entry is in the whole feed: its cursor (set by whoever reads in order).
    position: Position = field(default_factory=lambda: Position(("0-0",)))
    _frames: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: RawEntry, shard: int = 0, before: Position | None = None) -> StreamEntry:
        """An entry of `shard`; read after `before`, its position is `before` advanced by it."""
        entry_id, f = raw
        head = f.get(b"h")
        if head is not None:
            incident_id, version, a, p = head.decode().split("|")
        else:  # an entry of an earlier release: one field each
            incident_id, version, a, p = (f[k].decode() for k in (b"i", b"v", b"a", b"p"))
        attrs = Attrs.decode(a)
        assert attrs is not None
        eid = entry_id.decode()
        position = (before or Position(("0-0",))).advanced(shard, eid)
        return cls(eid, stream_id(entry_id), incident_id, int(version), attrs, Attrs.decode(p), f[b"d"], shard,
                   position)

    @property
    def cursor(self) -> str:
        return self.position.encode()

    def framed(self, kind: int) -> bytes:
        """Serialized once per kind, whatever the number of subscribers."""
        out = self._frames.get(kind)
        if out is None:
            out = self._frames[kind] = frame(kind, self.cursor, self.data)
        return out


class ChangeFeed:
    """Appends committed changes to the stream (best effort: the change is committed already)."""

    def __init__(self, redis: Redis, maxlen: int, shards: int = 1) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.feed = Feed(FEED.service, FEED.name, shards)
        self._script = redis.register_script(_PUBLISH)

    async def publish(self, changes: Sequence[Change]) -> list[str]:
        """Returns the stream ids ("" for a version already superseded), in the order of `changes`. One script call
        per shard: a script's keys must all be in one slot of a cluster (the shard's stream and version keys are)."""
        if not changes:
            return []
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(changes):
            by_shard.setdefault(self.feed.shard_of(c.incident.id), []).append(i)
        out = [""] * len(changes)
        for shard, indexes in by_shard.items():
            version_key = f"v2x:{self.feed.tag(shard)}:published:"
            keys = [self.feed.key(shard), *(version_key + changes[i].incident.id for i in indexes)]
            args: list[Any] = [self.maxlen, VERSION_TTL_S]
            for i in indexes:
                c = changes[i]
                fallback = c.before.encode() if c.before is not None else ""
                args += [c.incident.id, c.incident.version, c.incident.attrs().encode(), fallback,
                         convert.incident_proto(c.incident).SerializeToString()]
            try:
                ids = cast(list[bytes], await self._script(keys=keys, args=args))
            except RedisError:
                PUBLISH_FAILED.inc(len(indexes))
                log.warning("could not publish incident changes", exc_info=True)
                continue
            PUBLISHED.inc(sum(1 for i in ids if i))
            for i, entry_id in zip(indexes, ids, strict=True):
                out[i] = entry_id.decode() if isinstance(entry_id, bytes) else ""
        return out


class Subscriber:
    """One live Subscribe stream: its filter, its bounded buffer and where it is in the feed."""

    def __init__(self, f: IncidentFilter, limit: int) -> None:
        self.filter = f
        self.limit = limit
        self.queue: deque[tuple[StreamEntry, bytes]] = deque()  # entries and their messages, framed
        self.wake = asyncio.Event()
        self.overflowed = False
        self.position = Position(("0-0",))
        self.snapshot_versions: dict[str, int] = {}

    def offer(self, entries: Sequence[StreamEntry], messages: Sequence[tuple[StreamEntry, bytes]]) -> None:
        """Called by the reader with every batch of entries it read, in order; never blocks. `messages`
        are those of the entries this subscriber's filter gets, classified and framed once for all the
        subscribers of that filter."""
        if self.overflowed or not entries:
            return
        if messages:
            if len(self.queue) + len(messages) > self.limit:
                self.overflowed = True
                self.queue.clear()
                self.wake.set()
                return
            self.queue.extend(messages)
            self.wake.set()
        self.position = entries[-1].position


class Fanout:
    """One reader of the change feed per process, feeding every subscriber's buffer."""

    def __init__(self, redis: Redis, feed: Feed = FEED, linger_s: float = LINGER_S) -> None:
        self.redis = redis
        self.feed = feed
        self.linger_s = linger_s
        self.subscribers: set[Subscriber] = set()
        # Subscribers by filter: an entry is classified once per distinct filter, not once per console.
        self.by_filter: dict[IncidentFilter, set[Subscriber]] = {}
        self.position = Position.start(feed.shards)
        self.moved = asyncio.Condition()  # notified whenever the position moves (replays wait on it)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        async with self._lock:
            if self._task is None or self._task.done():
                self.position = await last_position(self.redis, self.feed)
                self._task = asyncio.create_task(self._run(), name="idps-fanout")

    def register(self, sub: Subscriber) -> Position:
        """Adds a subscriber; it is offered every entry after the returned position."""
        self.subscribers.add(sub)
        self.by_filter.setdefault(sub.filter, set()).add(sub)
        SUBSCRIBERS.set(len(self.subscribers))
        return self.position

    def unregister(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        group = self.by_filter.get(sub.filter)
        if group is not None:
            group.discard(sub)
            if not group:
                del self.by_filter[sub.filter]
        SUBSCRIBERS.set(len(self.subscribers))

    async def reached(self, position: Position, timeout_s: float) -> bool:
        """Waits until the reader is at or past `position` in every shard; False when it is not within the time."""
        def there() -> bool:
            return all(stream_id(a) >= stream_id(b) for a, b in zip(self.position.ids, position.ids, strict=True))

        try:
            async with asyncio.timeout(timeout_s), self.moved:
                await self.moved.wait_for(there)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                # `follow_feed` checks for a stop request on every turn (a client may lose the cancel of a blocking
                # read).
                async for raw in follow_feed(self.redis, self.feed, self.position, block_ms=2000, count=1000):
                    if raw:
                        entries = []
                        position = self.position
                        for shard, item in raw:
                            entries.append(entry := StreamEntry.parse(item, shard, position))
                            position = entry.position
                        self._offer(entries)
                        async with self.moved:
                            self.moved.notify_all()
                        # Let changes gather before the next read: under load each console then gets one response
                        # per linger period instead of one per change (a lone change was just sent without delay).
                        await asyncio.sleep(self.linger_s)
            except RedisError:
                raise_if_stopping()
                log.warning("change stream read failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    def _offer(self, entries: list[StreamEntry]) -> None:
        for f, group in list(self.by_filter.items()):
            messages = [(e, e.framed(k)) for e in entries if (k := classify(f, e.before, e.attrs)) is not None]
            for sub in list(group):
                sub.offer(entries, messages)
        self.position = entries[-1].position


class Subscriptions:
    """Serves Subscribe: replay from a cursor or a snapshot, then the live entries of the fan-out."""

    # How long a replay that got ahead of the fan-out waits for it before it resyncs instead.
    CATCH_UP_S = 10.0

    def __init__(self, redis: Redis, store: IdpsStore, fanout: Fanout, buffer: int) -> None:
        self.redis = redis
        self.store = store
        self.fanout = fanout
        self.buffer = buffer

    @property
    def feed(self) -> Feed:
        return self.fanout.feed

    def position(self, cursor: str) -> Position | None:
        """The position a client's cursor names (None for none); FAILED_PRECONDITION for a cursor of another shard
        count (issued before the feed was resharded)."""
        if not cursor:
            return None
        try:
            return Position.decode(cursor, self.feed.shards)
        except BadCursor as exc:
            raise FailedPrecondition(str(exc), reason="CURSOR_OF_ANOTHER_FEED") from None

    async def stream(self, f: IncidentFilter, cursor: str, heartbeat_s: float) -> AsyncGenerator[bytes, None]:
        start = self.position(cursor)
        await self.fanout.ensure_started()
        sub = Subscriber(f, self.buffer)
        try:
            if start is not None and await self.resumable(start):
                async for chunk in self._replay(sub, start):
                    yield chunk
            else:
                if start is not None:
                    RESYNCS.labels("cursor").inc()
                async for chunk in self._resync(sub):
                    yield chunk
            while True:
                if sub.overflowed:
                    RESYNCS.labels("overflow").inc()
                    self.fanout.unregister(sub)
                    sub = Subscriber(f, self.buffer)
                    async for chunk in self._resync(sub):
                        yield chunk
                    continue
                if sub.queue:
                    chunk = self._take(sub)
                    if chunk:
                        yield chunk
                    continue
                sub.wake.clear()
                try:
                    async with asyncio.timeout(heartbeat_s):  # no task per wait, unlike wait_for
                        await sub.wake.wait()
                except TimeoutError:
                    yield frame(HEARTBEAT, sub.position.encode())
        finally:
            self.fanout.unregister(sub)

    def _take(self, sub: Subscriber) -> bytes:
        queue, seen = sub.queue, sub.snapshot_versions
        taken = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
        if seen:  # drop what the snapshot already had (this version or a newer one)
            return b"".join(m for entry, m in taken if entry.version > seen.get(entry.incident_id, 0))
        return b"".join(m for _, m in taken)

    async def resumable(self, position: Position) -> bool:
        """True when every entry after `position` is still in every shard (see `_resumable_in`)."""
        for shard, at in enumerate(position.ids):
            if not await self._resumable_in(self.feed.key(shard), at):
                return False
        return True

    async def _resumable_in(self, stream: str, cursor: str) -> bool:
        """True when every entry after `cursor` is still in the stream. Trimming removes entries from the
        head only, so that holds when the cursor is at or after the first entry, or nothing was ever
        removed. (A cursor just before the first entry may still be exact, but that cannot be told: resync.)"""
        try:
            info = cast(dict[Any, Any], await self.redis.xinfo_stream(stream))
        except ResponseError:  # no stream: exact only from its beginning
            return stream_id(cursor) == (0, 0)
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}
        at = stream_id(cursor)
        if at > stream_id(info["last-generated-id"]):
            return False  # not a cursor of this stream (or the stream was recreated)
        deleted = info.get("max-deleted-entry-id")  # Redis >= 7 (XDEL only, in 7.0)
        if deleted is not None and at < stream_id(deleted):
            return False
        if info.get("entries-added") is not None and info["entries-added"] == info["length"]:
            return True
        first = info.get("first-entry")
        return first is not None and at >= stream_id(first[0])

    async def _replay(self, sub: Subscriber, start: Position) -> AsyncIterator[bytes]:
        """Every entry after `start`, then the fan-out's live entries. The replay reads each shard to its end;
        the fan-out may not have got that far yet, so the subscriber joins it once it has (every message then
        carries a cursor at or past what the subscriber was sent), after reading what lies between."""
        last = start
        for shard in range(self.feed.shards):
            async for chunk, upto in self._range(sub.filter, shard, last, "+"):
                last = upto
                if chunk:
                    yield chunk
        if not await self.fanout.reached(last, self.CATCH_UP_S):
            RESYNCS.labels("cursor").inc()
            async for chunk in self._resync(sub):
                yield chunk
            return
        position = self.fanout.register(sub)
        for shard in range(self.feed.shards):
            if stream_id(position.ids[shard]) > stream_id(last.ids[shard]):
                async for chunk, upto in self._range(sub.filter, shard, last, position.ids[shard]):
                    last = upto
                    if chunk:
                        yield chunk
        sub.position = position
        yield frame(HEARTBEAT, position.encode())  # caught up

    async def _range(self, f: IncidentFilter, shard: int, after: Position,
                     until: str) -> AsyncIterator[tuple[bytes, Position]]:
        stream = self.feed.key(shard)
        while True:
            raw = cast(list[RawEntry], await self.redis.xrange(stream, min="(" + after.ids[shard], max=until,
                                                                count=REPLAY_PAGE))
            if not raw:
                return
            parts: list[bytes] = []
            for item in raw:
                entry = StreamEntry.parse(item, shard, after)
                kind = classify(f, entry.before, entry.attrs)
                if kind is not None:
                    parts.append(entry.framed(kind))
                after = entry.position
            yield b"".join(parts), after

    async def _resync(self, sub: Subscriber) -> AsyncIterator[bytes]:
        position = self.fanout.register(sub)
        sub.position = position
        yield frame(RESYNC)
        incidents = await finish(self.store.snapshot(sub.filter))
        sub.snapshot_versions = {i.id: i.version for i in incidents}
        for start in range(0, len(incidents), MAX_BATCH):
            yield b"".join(frame(NEW, "", convert.incident_proto(i)) for i in incidents[start:start + MAX_BATCH])
        yield frame(SNAPSHOT_END, position.encode())
