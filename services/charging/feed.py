"""The live charging feed: connector changes go to a Redis Stream; WatchStation follows it.

Each entry carries the changed connector as serialized at commit time (so a watcher needs no database
read per change), its station and EVSE, and when its reading expires. A station's static change is an
entry of its own (watchers re-read the station). Expiry is announced by no write: watchers time it
themselves and, when a reading they sent is due, re-read the station's states (an OCPP charge point's
heartbeats extend its readings without a change), then send CONNECTOR_EXPIRED for what did expire.

The same stream keeps every replica's nearby index (`index.py`) current: a connector's entry also
carries its committed state, a station's static change makes replicas read that station again, and the
gateway's records of charge points heard from are entries of their own. A replica that cannot be sure it
saw every entry answers FindChargers from PostgreSQL until it has reloaded (`services/common/stream_index.py`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from datetime import datetime

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from v2x.charging.v1 import charging_pb2 as pb

from services.charging import convert
from services.charging.index import Change, ChargerIndex, decode_state, encode_state
from services.charging.model import ConnectorView
from services.charging.store import ChargingStore
from services.common.cancellation import finish
from services.common.epoch_us import at_us, us
from services.common.redis_streams import Entry, Feed, Fields, follow, last_id, publish_sharded
from services.common.stream_index import IndexFollower

log = logging.getLogger("v2x.charging.feed")
STREAM = "v2x:{charging}:changes"  # the feed's stream with one shard (tests write to it directly)
Update = pb.StationUpdate
Clock = Callable[[], datetime]


class ChargingFeed:
    def __init__(self, redis: Redis, store: ChargingStore, maxlen: int, clock: Clock,
                 index: ChargerIndex | None = None, shards: int = 1) -> None:
        self.redis = redis
        self.feed = Feed("charging", "changes", shards)  # a station's entries stay in the shard of its id
        self.store = store
        self.maxlen = maxlen
        self.clock = clock
        self.index = index
        # Entries this process wrote are in its index already: its follower skips them.
        self.source = uuid.uuid4().hex.encode()
        self._follower = IndexFollower(redis, self.feed, index, self._apply, log) if index is not None else None

    async def publish_connectors(self, views: Sequence[ConnectorView], now: datetime) -> None:
        """Puts committed changes into this process' index (before the write is acknowledged), then into
        the stream. Best effort: the change is committed (and in the outbox); a Redis outage only delays
        live watchers, who get a fresh snapshot when they reconnect, and other replicas, which reload when
        they see Redis again."""
        if not views:
            return
        if self.index is not None:
            await self.index.apply((v.station_id, v.spec.id, v.state) for v in views)
        entries: list[tuple[str, Fields]] = []
        for v in views:
            exp = v.state.expires_at
            entries.append((v.station_id, {"t": "c", "station": v.station_id, "evse": v.evse_id,
                            "exp": repr(exp.timestamp()) if exp else "0",
                            "data": convert.view_connector_proto(v, now).SerializeToString(),
                            "st": encode_state(v.spec.id, v.state), "src": self.source}))
        await self._publish(entries)

    async def publish_station(self, station_id: str) -> None:
        """A station's static data changed (or it is new): this process reads it again, other replicas too."""
        if self.index is not None:
            await self.index.refresh([station_id])
        await self._publish([(station_id, {"t": "s", "station": station_id, "src": self.source})])

    async def charge_points_seen(self, seen: Mapping[str, datetime]) -> None:
        """Charge points heard from, as just recorded in their rows: their readings live longer, here and
        in other replicas' indexes."""
        if not seen:
            return
        if self.index is not None:
            self.index.charge_points_seen(seen)
        # Not a station's: any shard does (only the indexes read them); the first charge point's keeps them spread.
        await self._publish([(next(iter(seen)), {"t": "cp", "seen": orjson.dumps(
            [[cp, us(at)] for cp, at in seen.items()]), "src": self.source})])

    async def _publish(self, entries: list[tuple[str, Fields]]) -> None:
        try:
            await publish_sharded(self.redis, self.feed, entries, self.maxlen)
        except RedisError:
            log.warning("could not publish charging changes", exc_info=True)

    # ----- the nearby index -------------------------------------------------------------------

    async def load_index(self) -> None:
        """Loads the index (and encodes every connector) before the server reports SERVING."""
        index = self.index
        if self._follower is not None and index is not None:
            await self._follower.start(lambda: index.warm(self.clock()))

    async def follow_index(self) -> None:
        """Applies other replicas' changes to the index, for as long as the process runs."""
        if self._follower is not None:
            await self._follower.run()

    async def _apply(self, batch: list[tuple[int, Entry]]) -> None:
        index = self.index
        assert index is not None
        changes: list[Change] = []
        stations: set[str] = set()
        seen: dict[str, datetime] = {}
        for _shard, (_id, fields) in batch:
            if fields.get(b"src") == self.source:
                continue
            kind = fields.get(b"t")
            if kind == b"c" and b"st" in fields:
                changes.append((fields[b"station"].decode(), *decode_state(fields[b"st"])))
            elif kind == b"s":
                stations.add(fields[b"station"].decode())
            elif kind == b"cp":
                for cp_id, at in orjson.loads(fields[b"seen"]):
                    moment = at_us(int(at))
                    seen[cp_id] = max(moment, seen.get(cp_id, moment))
        # Stations first: a re-read brings their committed states too, and a state of a connector the index
        # does not know (yet) makes it read that connector's station.
        if stations:
            await index.refresh(sorted(stations))
        if changes:
            await index.apply(changes)
        if seen:
            index.charge_points_seen(seen)

    async def watch(self, station_id: str) -> AsyncGenerator[pb.StationUpdate, None]:
        stream = self.feed.key(self.feed.shard_of(station_id))  # the station's changes are all in its shard
        cursor = await last_id(self.redis, stream)
        record = await finish(self.store.get_station(station_id))  # NOT_FOUND before anything is sent
        now = self.clock()
        yield Update(reason=Update.REASON_SNAPSHOT, station=convert.station_proto(record, now))
        # What the watcher was last sent, per connector: (expiry in epoch s or 0, visible status).
        sent: dict[str, tuple[float, int]] = {
            cid: (s.expires_at.timestamp() if s.expires_at else 0.0, convert.state_proto(s, now).status)
            for cid, s in record.states.items()}
        key = station_id.encode()
        async for batch in follow(self.redis, stream, cursor, block_ms=500):
            for _id, fields in batch:
                if fields.get(b"station") != key:
                    continue
                if fields.get(b"t") == b"s":
                    record = await finish(self.store.get_station(station_id))
                    now = self.clock()
                    sent = {cid: (s.expires_at.timestamp() if s.expires_at else 0.0,
                                  convert.state_proto(s, now).status) for cid, s in record.states.items()}
                    yield Update(reason=Update.REASON_STATION_CHANGED, station=convert.station_proto(record, now))
                    continue
                connector = pb.Connector.FromString(fields[b"data"])
                sent[connector.id] = (float(fields[b"exp"]), connector.state.status)
                yield Update(reason=Update.REASON_CONNECTOR_CHANGED, evse_id=fields[b"evse"].decode(),
                             connector=connector)
            now = self.clock()
            now_s = now.timestamp()
            due = {cid for cid, (exp, status) in sent.items()
                   if exp and exp <= now_s and status != pb.CONNECTOR_STATUS_UNKNOWN}
            if not due:
                continue
            views = await self.store.station_states(station_id)
            for cid in due - {v.spec.id for v in views}:
                sent.pop(cid)  # removed from the station meanwhile
            for v in views:
                if v.spec.id not in due:
                    continue
                exp_s = v.state.expires_at.timestamp() if v.state.expires_at else 0.0
                if v.state.is_fresh(now):
                    sent[v.spec.id] = (exp_s, v.state.status)  # heard from since: the reading lives on
                    continue
                sent[v.spec.id] = (0.0, pb.CONNECTOR_STATUS_UNKNOWN)
                yield Update(reason=Update.REASON_CONNECTOR_EXPIRED, evse_id=v.evse_id,
                             connector=convert.view_connector_proto(v, now))
