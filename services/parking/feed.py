"""The live availability feed: changes go to a Redis Stream; watchers follow it for their area.

The stream carries each changed lot's availability as serialized at commit time, so a watcher
needs no database read per change. Watchers also turn a lot UNKNOWN when its reading expires,
which no write announces.

The same stream keeps every replica's nearby index (`index.py`) current: a change entry also carries
the lot's live state, and a lot's static change (registered, edited) is an entry of its own, after
which replicas read that lot again. A replica that cannot be sure it saw every entry (Redis lost, the
stream trimmed past what it read, or too far behind) answers from PostgreSQL until it has reloaded.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError
from v2x.parking.v1 import parking_pb2 as pb

from services.common.cancellation import finish
from services.common.geo import Area, haversine_m
from services.common.redis_streams import Entry, Feed, Fields, follow_feed, last_position, publish_sharded
from services.common.stream_index import IndexFollower
from services.parking import convert
from services.parking.availability import expires_at
from services.parking.index import LotIndex, decode_state, encode_state
from services.parking.model import LotView
from services.parking.store import ParkingStore

log = logging.getLogger("v2x.parking.feed")
STREAM = "v2x:{parking}:changes"  # the feed's stream with one shard (tests write to it directly)
Update = pb.AvailabilityUpdate


class AvailabilityFeed:
    def __init__(self, redis: Redis, store: ParkingStore, maxlen: int, index: LotIndex | None = None,
                 shards: int = 1) -> None:
        self.redis = redis
        self.feed = Feed("parking", "changes", shards)  # a lot's entries stay in the shard of its id
        self.store = store
        self.maxlen = maxlen
        self.index = index
        # Entries this process wrote are in its index already: its follower skips them.
        self.source = uuid.uuid4().hex.encode()
        self._follower = IndexFollower(redis, self.feed, index, self._apply, log) if index is not None else None

    async def publish(self, views: Sequence[LotView], now: datetime) -> None:
        """Puts committed changes into this process' index (before the write is acknowledged), then into
        the stream. Publishing is best effort: the change is already committed (and in the outbox); a
        Redis outage only delays live watchers, who get a fresh snapshot when they reconnect, and other
        replicas, which reload when they see Redis again."""
        if not views:
            return
        if self.index is not None:
            await self.index.apply((v.summary.id, v.state) for v in views)
        entries: list[tuple[str, Fields]] = []
        for v in views:
            exp = expires_at(v.state, v.summary.ttl_s)
            entries.append((v.summary.id, {"lot": v.summary.id, "lat": repr(v.summary.lat), "lon": repr(v.summary.lon),
                            "exp": repr(exp.timestamp()) if exp else "0",
                            "data": convert.lot_availability_proto(v, now).SerializeToString(),
                            "st": encode_state(v.state), "src": self.source}))
        await self._publish(entries)

    async def lot_changed(self, lot_id: str) -> None:
        """A lot's static data changed (or it is new): this process reads it again, other replicas too."""
        if self.index is not None:
            await self.index.refresh([lot_id])
        await self._publish([(lot_id, {"t": "lot", "lot": lot_id, "src": self.source})])

    async def _publish(self, entries: list[tuple[str, Fields]]) -> None:
        try:
            await publish_sharded(self.redis, self.feed, entries, self.maxlen)
        except RedisError:
            log.warning("could not publish availability changes", exc_info=True)

    # ----- the nearby index -------------------------------------------------------------------

    async def load_index(self) -> None:
        """Loads the index (and encodes every lot) before the server reports SERVING (see stream_index)."""
        index = self.index
        if self._follower is not None and index is not None:
            await self._follower.start(lambda: index.warm(datetime.now(UTC)))

    async def follow_index(self) -> None:
        """Applies other replicas' changes to the index, for as long as the process runs."""
        if self._follower is not None:
            await self._follower.run()

    async def _apply(self, batch: list[tuple[int, Entry]]) -> None:
        index = self.index
        assert index is not None
        states = []
        static: list[str] = []
        for _shard, (_id, fields) in batch:
            if fields.get(b"src") == self.source:
                continue
            if fields.get(b"t") == b"lot":
                static.append(fields[b"lot"].decode())
            elif b"st" in fields:
                states.append((fields[b"lot"].decode(), decode_state(fields[b"st"])))
        if static:
            await index.refresh(sorted(set(static)))
        if states:
            await index.apply(states)

    async def watch(self, area: Area, snapshot: bool) -> AsyncGenerator[pb.AvailabilityUpdate, None]:
        clat, clon = area.center
        position = await last_position(self.redis, self.feed)
        sent: dict[str, tuple[float, pb.LotAvailability]] = {}
        if snapshot:
            now = datetime.now(UTC)
            for v in await finish(self.store.lots_in_area(area, now)):
                lot = convert.lot_availability_proto(v, now)
                lot.distance_m = round(haversine_m(clat, clon, v.summary.lat, v.summary.lon), 2)
                exp = expires_at(v.state, v.summary.ttl_s)
                sent[v.summary.id] = (exp.timestamp() if exp else 0.0, lot)
                yield Update(reason=Update.REASON_SNAPSHOT, lot=lot)
            yield Update(reason=Update.REASON_SNAPSHOT_END)
        async for batch in follow_feed(self.redis, self.feed, position, block_ms=500):
            for _shard, (_id, fields) in batch:
                if b"data" not in fields:
                    continue  # a static change: the lot's availability entry follows if it changed
                lat, lon = float(fields[b"lat"]), float(fields[b"lon"])
                if not area.contains(lat, lon):
                    continue
                lot = pb.LotAvailability.FromString(fields[b"data"])
                lot.distance_m = round(haversine_m(clat, clon, lat, lon), 2)
                sent[lot.lot_id] = (float(fields[b"exp"]), lot)
                yield Update(reason=Update.REASON_CHANGED, lot=lot)
            now_s = datetime.now(UTC).timestamp()
            for lot_id, (exp_s, lot) in list(sent.items()):
                if exp_s and exp_s <= now_s and lot.availability.status != pb.SITE_STATUS_UNKNOWN:
                    expired = _expired(lot)
                    sent[lot_id] = (0.0, expired)
                    yield Update(reason=Update.REASON_EXPIRED, lot=expired)


def _expired(lot: pb.LotAvailability) -> pb.LotAvailability:
    out = pb.LotAvailability()
    out.CopyFrom(lot)
    a = out.availability
    a.status = pb.SITE_STATUS_UNKNOWN
    a.trend = pb.OCCUPANCY_TREND_UNKNOWN
    a.ClearField("total_free")
    for c in a.classes:
        c.ClearField("free")
    a.freshness.stale = True
    return out
