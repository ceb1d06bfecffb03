"""FindChargers from memory: the nearby index answers what PostGIS answers, follows every change (this
process' writes at once, other replicas' through the change stream, charge points heard from), and gives
the answer back to PostGIS when it may have missed a change."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime

import numpy as np
import pytest
from ocpp.v16 import call
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.charging import convert
from services.charging.feed import STREAM, ChargingFeed
from services.charging.index import ChargerIndex
from services.charging.model import FindQuery
from services.charging.store import ChargingStore
from services.common import fast_paths
from services.common.fast_paths import FastPath
from services.common.nearby import haversine_m
from services.common.runtime import Resources
from tests.charging.conftest import Harness, NewStation, ShiftClock, Stub, charge_point_maker
from tests.charging.helpers import (
    AVAILABLE,
    CCS2,
    CHADEMO,
    CHARGING,
    GBT_AC,
    GBT_DC,
    TYPE2,
    arrival_recorded,
    ocpp_client,
    ocpp_now,
    report,
)
from tests.conftest import Keys
from tests.replicas import following
from tests.waiting import assert_eventually

WAIT_S = 10.0
CAUGHT_UP = "the replica's index to catch up"
STATUSES = (AVAILABLE, CHARGING, pb.CONNECTOR_STATUS_FAULTED, pb.CONNECTOR_STATUS_PREPARING)


def _place() -> tuple[float, float]:
    """A part of the map no other test uses."""
    return random.uniform(-70, -62), random.uniform(-170, -100)


def _query(lat: float, lon: float, *, radius_m: float = 1000.0, standard: int = 0, min_power_kw: float = 0.0,
           available_only: bool = False, limit: int = 20) -> FindQuery:
    return FindQuery(lat, lon, radius_m, standard, min_power_kw, available_only, limit)


def _from_index(index: ChargerIndex | None, q: FindQuery, now: datetime) -> pb.FindChargersResponse:
    assert index is not None
    answer = index.find(q, now)
    assert answer is not None, "the index is not synced"
    return pb.FindChargersResponse.FromString(answer)


async def _from_postgis(store: ChargingStore, q: FindQuery, now: datetime) -> pb.FindChargersResponse:
    return convert.answer_proto(await store.find(q, now), now)


@pytest.fixture
async def replica(resources: Resources, charging: Harness) -> AsyncIterator[ChargingFeed]:
    """A second replica's index and stream follower, in this process; the session's charging service is the
    other replica."""
    store = ChargingStore(resources.engine)
    feed = ChargingFeed(resources.redis, store, resources.settings.redis_stream_maxlen, charging.clock,
                        ChargerIndex(store))
    async with following(feed):
        yield feed
    await store.close()


def _ids(answer: pb.FindChargersResponse) -> list[str]:
    return [s.station_id for s in answer.stations]


async def test_the_index_answers_what_postgis_answers_on_random_stations(charging: Harness, keys: Keys,
                                                                         new_station: NewStation) -> None:
    rng = random.Random()
    lat, lon = _place()
    plugs = [(GBT_DC, 60.0), (GBT_DC, 120.0), (GBT_AC, 7.0), (GBT_AC, 22.0), (CCS2, 150.0), (TYPE2, 11.0),
             (CHADEMO, 50.0)]
    md = keys.md(keys.op_a)
    for _ in range(40):
        st = await new_station(lat=lat + rng.uniform(-0.02, 0.02), lon=lon + rng.uniform(-0.02, 0.02),
                               plugs=rng.choices(plugs, k=rng.randint(1, 4)))
        for e in st.evses:
            cid = e.connectors[0].id
            roll = rng.random()
            if roll < 0.15:
                continue  # never reported
            if roll < 0.3:  # a reading that has already expired
                await charging.stub.ReportStatus(report(cid, AVAILABLE, seconds_ago=30, ttl_s=10), metadata=md)
            else:
                await charging.stub.ReportStatus(report(cid, rng.choice(STATUSES)), metadata=md)
    index, store = charging.app.feed.index, charging.app.store
    # The fast paths (FastPath.DRIVER_READS, SPLICED_ANSWERS) answer what the plain ones answer: from
    # PostGIS, from this index, and from an index loaded through SQLAlchemy.
    plain_index = ChargerIndex(store)
    with fast_paths.plain(*FastPath):
        await plain_index.load()
    non_empty = filled = available_only = 0
    for _ in range(120):
        q = _query(lat + rng.uniform(-0.02, 0.02), lon + rng.uniform(-0.02, 0.02),
                   radius_m=rng.choice([300.0, 1000.0, 2500.0, 6000.0]),
                   standard=rng.choice([0, 0, GBT_DC, GBT_AC, CCS2]), min_power_kw=rng.choice([0.0, 0.0, 50.0, 100.0]),
                   available_only=rng.random() < 0.5, limit=rng.choice([1, 5, 20]))
        now = charging.clock()
        expected = await _from_postgis(store, q, now)
        assert _from_index(index, q, now) == expected, q
        with fast_paths.plain(*FastPath):
            assert await _from_postgis(store, q, now) == expected, q
            assert _from_index(index, q, now) == expected, q
            assert _from_index(plain_index, q, now) == expected, q
        non_empty += bool(expected.stations)
        filled += len(expected.stations) == q.limit
        available_only += q.available_only and bool(expected.stations)
    # The comparison covered answers of every kind, not only empty ones.
    assert non_empty > 30 and filled > 10 and available_only > 5


async def test_a_status_change_is_in_the_next_answer_and_is_served_from_the_index(charging: Harness, keys: Keys,
                                                                                  new_station: NewStation) -> None:
    lat, lon = _place()
    st = await new_station(lat=lat, lon=lon, plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0)])
    cid = st.evses[0].connectors[0].id
    md = keys.md(keys.op_a)
    request = pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=500, available_only=True)
    index = charging.app.feed.index
    q = _query(lat, lon, radius_m=500, available_only=True)
    for status, found in ((AVAILABLE, [st.id]), (CHARGING, []), (AVAILABLE, [st.id])):
        await charging.stub.ReportStatus(report(cid, status), metadata=md)
        served = await charging.stub.FindChargers(request, metadata=keys.md(keys.driver))
        assert _ids(served) == found
        assert _from_index(index, q, charging.clock()) == served


async def test_an_unsynced_index_leaves_the_answer_to_postgis(charging: Harness, keys: Keys,
                                                              new_station: NewStation, resources: Resources) -> None:
    lat, lon = _place()
    st = await new_station(lat=lat, lon=lon)
    cid = st.evses[0].connectors[0].id
    await charging.stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_a))
    index = charging.app.feed.index
    assert index is not None
    request = pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=500, available_only=True)
    index.unsynced()
    try:
        assert index.find(_query(lat, lon), charging.clock()) is None
        # A change the index never hears of: only PostgreSQL knows it, and the service still answers it.
        async with resources.engine.begin() as conn:
            await conn.execute(text("UPDATE charging_connector_state SET status = :s WHERE connector_id = :id"),
                               {"s": CHARGING, "id": cid})
        served = await charging.stub.FindChargers(request, metadata=keys.md(keys.driver))
        assert _ids(served) == []
    finally:
        await index.load()
    assert _ids(_from_index(index, _query(lat, lon, available_only=True), charging.clock())) == []


async def test_stations_and_states_written_elsewhere_reach_a_replica(stub: Stub, keys: Keys, new_station: NewStation,
                                                                    charging: Harness,
                                                                    replica: ChargingFeed) -> None:
    lat, lon = _place()
    st = await new_station(lat=lat, lon=lon, plugs=[(GBT_DC, 120.0)])
    cid = st.evses[0].connectors[0].id
    q = _query(lat, lon, available_only=True)
    await assert_eventually(lambda: _ids(_from_index(replica.index, _query(lat, lon), charging.clock())) == [st.id],
                            CAUGHT_UP, WAIT_S)
    assert _ids(_from_index(replica.index, q, charging.clock())) == []
    await stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_a))
    await assert_eventually(lambda: _ids(_from_index(replica.index, q, charging.clock())) == [st.id], CAUGHT_UP, WAIT_S)
    # Moved 800 m north with a second, AC connector: both show, at the new distance.
    edited = pb.Station()
    edited.CopyFrom(st)
    edited.location.lat = lat + 800 / 111_195
    extra = edited.evses.add(id="E9")
    extra.connectors.add(id=f"{st.id}-C9", standard=GBT_AC, max_power_kw=7.0)
    await stub.UpdateStation(pb.UpdateStationRequest(station=edited), metadata=keys.md(keys.admin))
    distance = round(float(haversine_m(lat, lon, np.array([edited.location.lat]), np.array([lon]))[0]))

    def moved() -> bool:
        found = _from_index(replica.index, _query(lat, lon), charging.clock()).stations
        return [(round(s.distance_m), len(s.connectors)) for s in found] == [(distance, 2)]

    await assert_eventually(moved, CAUGHT_UP, WAIT_S)
    now = charging.clock()
    for query in (_query(lat, lon), q, _query(lat, lon, standard=GBT_AC)):
        assert _from_index(replica.index, query, now) == await _from_postgis(charging.app.store, query, now)


async def test_a_replica_reloads_when_the_stream_was_trimmed_past_it(keys: Keys, new_station: NewStation,
                                                                    charging: Harness, resources: Resources,
                                                                    replica: ChargingFeed) -> None:
    lat, lon = _place()
    st = await new_station(lat=lat, lon=lon)
    cid = st.evses[0].connectors[0].id
    q = _query(lat, lon, available_only=True)
    await charging.stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_a))
    await assert_eventually(lambda: _ids(_from_index(replica.index, q, charging.clock())) == [st.id], CAUGHT_UP, WAIT_S)
    # A committed change whose announcement is lost, then entries trimmed before the replica could read them.
    async with resources.engine.begin() as conn:
        await conn.execute(text("UPDATE charging_connector_state SET status = :s, received_at = now() "
                                "WHERE connector_id = :id"), {"s": CHARGING, "id": cid})
    async with resources.redis.pipeline(transaction=True) as pipe:
        pipe.xadd(STREAM, {"t": "test"})
        pipe.xadd(STREAM, {"t": "test"})
        pipe.xtrim(STREAM, maxlen=1, approximate=False)
        await pipe.execute()

    def reloaded() -> bool:
        assert replica.index is not None
        answer = replica.index.find(q, charging.clock())
        return answer is not None and _ids(pb.FindChargersResponse.FromString(answer)) == []

    await assert_eventually(reloaded, CAUGHT_UP, WAIT_S)


async def test_a_charge_point_heard_from_keeps_its_readings_fresh_in_the_index(
        timed: tuple[Harness, ShiftClock], keys: Keys, unique: str, replica: ChargingFeed) -> None:
    h, clock = timed
    cp = await charge_point_maker(h, keys, unique)(lat=_place()[0], lon=_place()[1])
    where = cp.station.location
    q = _query(where.lat, where.lon, radius_m=100, available_only=True)
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        boot = await client.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        await client.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                                  timestamp=ocpp_now()))
        assert _ids(_from_index(h.app.feed.index, q, clock())) == [cp.station.id]
        clock.advance(3 * boot.interval - 5)
        heard_at = clock()
        await client.call(call.Heartbeat())
        await arrival_recorded(h.app.gateway, cp.cp_id, heard_at)  # flushed to the charge point's row and the index
        clock.advance(10)  # 3 intervals after the reading, but not after the heartbeat
        now = clock()
        assert _ids(_from_index(h.app.feed.index, q, now)) == [cp.station.id]
        assert _from_index(h.app.feed.index, q, now) == await _from_postgis(h.app.store, q, now)
        # Another replica hears of the heartbeat through the stream.
        await assert_eventually(lambda: _from_index(replica.index, q, now) == _from_index(h.app.feed.index, q, now),
                                CAUGHT_UP, WAIT_S)
        clock.advance(3 * boot.interval)  # silent since
        now = clock()
        assert _ids(_from_index(h.app.feed.index, q, now)) == []
        assert _from_index(h.app.feed.index, _query(where.lat, where.lon, radius_m=100), now) == \
            await _from_postgis(h.app.store, _query(where.lat, where.lon, radius_m=100), now)
