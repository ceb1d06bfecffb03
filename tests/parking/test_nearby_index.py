"""The nearby index of a replica follows the changes other replicas make, and reloads when it cannot."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.geo import haversine_m
from services.common.runtime import Resources
from services.parking.feed import STREAM, AvailabilityFeed
from services.parking.index import LotIndex
from services.parking.model import FindQuery
from services.parking.store import ParkingStore
from services.parking.vocab import SpaceClass
from tests.conftest import Keys
from tests.parking.conftest import NewLot, Stub
from tests.parking.helpers import free_of, lot, report
from tests.replicas import following
from tests.waiting import assert_eventually

WAIT_S = 10.0
CAUGHT_UP = "the replica's index to catch up"


async def _replica(resources: Resources, redis: Redis) -> AsyncIterator[AvailabilityFeed]:
    store = ParkingStore(resources.engine)
    feed = AvailabilityFeed(redis, store, resources.settings.redis_stream_maxlen, LotIndex(store))
    async with following(feed):
        yield feed


@pytest.fixture
async def replica(resources: Resources) -> AsyncIterator[AvailabilityFeed]:
    """A second replica's index and stream follower, in this process; the parking server under test is
    the other replica."""
    async for feed in _replica(resources, resources.redis):
        yield feed


@pytest.fixture
async def named_replica(resources: Resources) -> AsyncIterator[AvailabilityFeed]:
    """A replica with a Redis client of its own, named, so that a test can drop exactly its connections."""
    redis = Redis.from_url(resources.settings.require_redis_url(), client_name=f"nearby-{uuid.uuid4().hex[:8]}")
    async for feed in _replica(resources, redis):
        yield feed
    await redis.aclose()


def _place() -> tuple[float, float]:
    """A spot of the map no other test uses."""
    return random.uniform(-60, -50), random.uniform(100, 170)


def _find(feed: AvailabilityFeed, lat: float, lon: float, **kw: object) -> pb.FindAvailableResponse | None:
    assert feed.index is not None
    q = dict(lat=lat, lon=lon, radius_m=1000.0, limit=20, space_class=pb.SPACE_CLASS_GENERAL, min_free=0, kinds=[],
             open_now=False, max_price_per_hour_fen=0)
    q.update(kw)
    answer = feed.index.find(FindQuery(**q), datetime.now(UTC))  # type: ignore[arg-type]
    return None if answer is None else pb.FindAvailableResponse.FromString(answer)


def _lots(feed: AvailabilityFeed, lat: float, lon: float, **kw: object) -> list[pb.LotAvailability]:
    answer = _find(feed, lat, lon, **kw)
    return list(answer.lots) if answer is not None else []


async def test_a_lot_registered_and_counted_elsewhere_reaches_the_index(stub: Stub, keys: Keys, new_lot: NewLot,
                                                                       replica: AvailabilityFeed) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon)
    await assert_eventually(lambda: [x.lot_id for x in _lots(replica, lat, lon)] == [lot_id], CAUGHT_UP, WAIT_S)
    assert _lots(replica, lat, lon)[0].availability.status == pb.SITE_STATUS_UNKNOWN
    ack = await stub.PushOccupancy(report(lot_id, 1, general=40, ev=3), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED
    await assert_eventually(lambda: free_of(_lots(replica, lat, lon)[0].availability) == 40, CAUGHT_UP, WAIT_S)
    served = (await stub.FindAvailable(pb.FindAvailableRequest(
        location=cpb.LatLon(lat=lat, lon=lon), radius_m=1000), metadata=keys.md(keys.driver))).lots
    assert _lots(replica, lat, lon) == list(served)


async def test_static_edits_elsewhere_reach_the_index(stub: Stub, keys: Keys, new_lot: NewLot,
                                                     replica: AvailabilityFeed) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon, per_hour_fen=500)
    await stub.PushOccupancy(report(lot_id, 1, general=40), metadata=keys.md(keys.op_a))
    await assert_eventually(lambda: [free_of(x.availability) for x in _lots(replica, lat, lon)] == [40],
                            CAUGHT_UP, WAIT_S)
    # Moved 600 m north, dearer, and open only from an hour from now: every one of them shows.
    local = datetime.now(UTC) + timedelta(hours=8, minutes=60)
    start = local.hour * 60 + local.minute
    moved = lot(lot_id, lat=lat + 600 / 111_195, lon=lon, per_hour_fen=1500,
                always_open=False, periods=[(local.isoweekday(), start, (start + 60) % 1440 or 1440)])
    await stub.UpdateLot(pb.UpdateLotRequest(lot=moved), metadata=keys.md(keys.admin))
    expected = haversine_m(lat, lon, moved.location.lat, moved.location.lon)
    await assert_eventually(lambda: [round(x.distance_m) for x in _lots(replica, lat, lon)] == [round(expected)],
                            CAUGHT_UP, WAIT_S)
    assert _lots(replica, lat, lon, max_price_per_hour_fen=1000) == []
    assert [x.lot_id for x in _lots(replica, lat, lon, max_price_per_hour_fen=1500)] == [lot_id]
    assert _lots(replica, lat, lon, open_now=True) == []
    assert _lots(replica, lat, lon)[0].availability.status == pb.SITE_STATUS_CLOSED


async def _change_unannounced(resources: Resources, lot_id: str, free: int) -> None:
    """A committed change no replica hears of (its publication lost)."""
    async with resources.engine.begin() as conn:
        await conn.execute(text("UPDATE parking_lot_state SET seq = seq + 1, free_general = :free, "
                                "observed_at = now(), received_at = now() WHERE lot_id = :id"),
                           {"free": free, "id": lot_id})


async def test_the_index_reloads_when_the_stream_was_trimmed_past_it(stub: Stub, keys: Keys, new_lot: NewLot,
                                                                     resources: Resources,
                                                                     replica: AvailabilityFeed) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon)
    await stub.PushOccupancy(report(lot_id, 1, general=40), metadata=keys.md(keys.op_a))
    await assert_eventually(lambda: [free_of(x.availability) for x in _lots(replica, lat, lon)] == [40],
                            CAUGHT_UP, WAIT_S)
    await _change_unannounced(resources, lot_id, 7)
    # Entries the replica has not read are trimmed away before it could (one transaction: it cannot).
    async with resources.redis.pipeline(transaction=True) as pipe:
        pipe.xadd(STREAM, {"t": "test"})
        pipe.xadd(STREAM, {"t": "test"})
        pipe.xtrim(STREAM, maxlen=1, approximate=False)
        await pipe.execute()
    await assert_eventually(lambda: [free_of(x.availability) for x in _lots(replica, lat, lon)] == [7],
                            CAUGHT_UP, WAIT_S)


async def test_the_index_reloads_after_losing_redis(stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources,
                                                    named_replica: AvailabilityFeed) -> None:
    replica = named_replica
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon)
    await stub.PushOccupancy(report(lot_id, 1, general=40), metadata=keys.md(keys.op_a))
    await assert_eventually(lambda: [free_of(x.availability) for x in _lots(replica, lat, lon)] == [40],
                            CAUGHT_UP, WAIT_S)
    await _change_unannounced(resources, lot_id, 9)
    # The replica's connections to Redis drop (as in a Redis restart); nobody else's (Redis is shared).
    name = await replica.redis.client_getname()
    for client in await resources.redis.client_list():
        if client["name"] == (name.decode() if isinstance(name, bytes) else name):
            await resources.redis.client_kill_filter(_id=client["id"])
    await assert_eventually(lambda: [free_of(x.availability) for x in _lots(replica, lat, lon)] == [9],
                            CAUGHT_UP, WAIT_S)


async def test_an_unsynced_index_leaves_the_answer_to_postgis(resources: Resources) -> None:
    index = LotIndex(ParkingStore(resources.engine))
    query = FindQuery(0.0, 0.0, 1000.0, 20, SpaceClass.GENERAL, 0, [], False, 0)
    assert index.find(query, datetime.now(UTC)) is None
    await index.load()
    assert index.find(query, datetime.now(UTC)) is not None
    index.unsynced()
    assert index.find(query, datetime.now(UTC)) is None
