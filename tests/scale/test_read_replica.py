"""Reads from a PostgreSQL streaming replica (DATABASE_READ_URL): a hot standby started from the Debian
binaries streams from a primary of this module's own; the IDPS service lists incidents from it while it is
within V2X_READ_MAX_LAG_S, and from the primary once it falls behind or goes away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest
from grpc import aio
from prometheus_client import REGISTRY
from v2x.charging.v1 import charging_pb2 as chpb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as compb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.charging.app import assemble as assemble_charging
from services.charging.model import FindQuery as ChargerFind
from services.charging.settings import ChargingSettings
from services.charging.store import ChargingStore
from services.common.config import Settings
from services.common.db import migrate
from services.common.read_replica import Freshness
from services.common.runtime import Resources, RunningService, start_service
from services.idps.app import build
from services.parking.app import build as build_parking
from services.parking.model import FindQuery as ParkingFind
from services.parking.store import ParkingStore
from services.parking.vocab import SpaceClass
from services.runner.embedded import EmbeddedPostgres
from tests.charging.conftest import Stub as ChargingStub
from tests.charging.helpers import station
from tests.conftest import Keys, make_keys
from tests.idps.conftest import Stub
from tests.idps.helpers import report
from tests.parking.conftest import Stub as ParkingStub
from tests.parking.helpers import lot
from tests.waiting import assert_eventually

# A streaming standby of its own (an embedded PostgreSQL): ~10 s to set up on the 2-core machine.
pytestmark = pytest.mark.slow

MAX_LAG_S = 0.6
SITE = (31.40, 121.49)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_staleness_is_the_age_of_the_newest_primary_position_the_replica_has_replayed() -> None:
    clock = _Clock()
    f = Freshness(clock)
    assert f.staleness() == float("inf")  # nothing known yet: never fresh
    f.primary_at(100.0, 50)
    f.replica_at(40)  # behind the sample: still unknown
    assert f.staleness() == float("inf")
    f.primary_at(101.0, 60)
    clock.now = 101.5
    f.replica_at(55)  # has what was committed before t=100, not yet before t=101
    assert f.staleness() == pytest.approx(1.5)
    f.replica_at(60)
    assert f.staleness() == pytest.approx(0.5)
    clock.now = 110.0  # no sample since: the bound keeps growing
    assert f.staleness() == pytest.approx(9.0)
    f.lost()
    assert f.staleness() == float("inf")
    f.primary_at(110.0, 70)
    f.replica_at(None)  # a server that is not a standby is as fresh as the primary
    assert f.staleness() == pytest.approx(0.0)


@pytest.fixture(scope="module")
def primary() -> Iterator[EmbeddedPostgres]:
    # In the system's temp dir: the postgres OS user (when tests run as root) cannot enter pytest's.
    with EmbeddedPostgres(max_connections=100) as pg:
        yield pg


@pytest.fixture(scope="module")
def standby(primary: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    asyncio.run(migrate(primary.url))  # before the copy: the standby starts with the schema
    with EmbeddedPostgres(standby_of=primary, max_connections=100) as pg:
        yield pg


@pytest.fixture(scope="module")
async def on_replica(primary: EmbeddedPostgres, standby: EmbeddedPostgres,
                     redis_url: str) -> AsyncIterator[tuple[Resources, RunningService, Stub, Keys]]:
    settings = Settings.from_env({"DATABASE_URL": primary.url, "DATABASE_READ_URL": standby.url,
                                  "REDIS_URL": redis_url, "V2X_READ_MAX_LAG_S": f"{MAX_LAG_S:g}",
                                  "V2X_API_KEY_CACHE_S": "1"})
    resources = Resources.open(settings, "replica-test")
    keys = await make_keys(resources)
    running = await start_service(build, resources, port=0, host="127.0.0.1")
    channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    yield resources, running, IdpsServiceStub(channel), keys
    await channel.close()
    await running.stop(0.5)
    await resources.close()


def _reads(target: str) -> float:
    return REGISTRY.get_sample_value("v2x_db_reads_total", {"target": target}) or 0.0


async def _listed(stub: Stub, keys: Keys) -> set[str]:
    answer = await stub.ListIncidents(pb.ListIncidentsRequest(), metadata=Keys.md(keys.police))
    return {i.id for i in answer.incidents}


async def _on_standby(standby: EmbeddedPostgres, sql: str) -> object:
    conn = await asyncpg.connect(standby.dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_listings_come_from_the_replica_while_it_keeps_up(
        on_replica: tuple[Resources, RunningService, Stub, Keys]) -> None:
    resources, _, stub, keys = on_replica
    await assert_eventually(resources.reads.replica_fresh, "the monitor to find the standby within the bound")
    made = await stub.ReportEvent(report(SITE), metadata=Keys.md(keys.police))
    before = _reads("replica")

    async def listed() -> bool:
        return made.incident_id in await _listed(stub, keys)

    await assert_eventually(listed, "the incident to reach the listing")
    assert _reads("replica") > before
    detail = await stub.GetIncident(pb.GetIncidentRequest(incident_id=made.incident_id), metadata=Keys.md(keys.police))
    assert detail.incident.id == made.incident_id and len(detail.audit) >= 1


async def test_a_replica_that_falls_behind_the_bound_is_not_read(
        on_replica: tuple[Resources, RunningService, Stub, Keys], standby: EmbeddedPostgres) -> None:
    resources, _, stub, keys = on_replica
    await assert_eventually(resources.reads.replica_fresh, "the standby to be within the bound")
    await _on_standby(standby, "SELECT pg_wal_replay_pause()")
    try:
        made = await stub.ReportEvent(report((SITE[0] + 0.05, SITE[1])), metadata=Keys.md(keys.police))
        before = _reads("primary")
        # Within MAX_LAG_S plus a tick the monitor finds the standby behind the bound; from then every listing shows
        # the new incident: the standby never will.
        await assert_eventually(lambda: not resources.reads.replica_fresh(), "the standby found behind the bound")
        for _ in range(5):
            assert made.incident_id in await _listed(stub, keys)
        assert _reads("primary") >= before + 5
        on_standby = await _on_standby(
            standby, f"SELECT count(*) FROM idps_incidents WHERE id = '{made.incident_id}'")
        assert on_standby == 0, "the standby replayed while paused: the test proves nothing"
    finally:
        await _on_standby(standby, "SELECT pg_wal_replay_resume()")
    await assert_eventually(resources.reads.replica_fresh, "reads to go back to the standby once it caught up")
    replica_before = _reads("replica")
    assert made.incident_id in await _listed(stub, keys)
    assert _reads("replica") == replica_before + 1


# ----- drivers' queries of parking and charging ---------------------------------------------------------------


@dataclass
class Drivers:
    """Parking and charging in-process on the primary/standby pair, their stubs, and stores reading like them."""

    parking: ParkingStub
    charging: ChargingStub
    parking_store: ParkingStore
    charging_store: ChargingStore


@pytest.fixture(scope="module")
async def drivers(on_replica: tuple[Resources, RunningService, Stub, Keys]) -> AsyncIterator[Drivers]:
    resources = on_replica[0]
    parking = await start_service(build_parking, resources, port=0, host="127.0.0.1")
    charging_app = assemble_charging(resources, ChargingSettings(ocpp_port=0, bay_check_interval_s=3600.0))
    charging = await start_service(lambda _: charging_app.parts, resources, port=0, host="127.0.0.1")
    p_channel = aio.insecure_channel(f"127.0.0.1:{parking.server.port}")
    c_channel = aio.insecure_channel(f"127.0.0.1:{charging.server.port}")
    charging_store = ChargingStore(resources.engine, reads=resources.reads)
    yield Drivers(ParkingServiceStub(p_channel), ChargingServiceStub(c_channel),
                  ParkingStore(resources.engine, resources.reads), charging_store)
    await charging_store.close()
    for channel in (p_channel, c_channel):
        await channel.close()
    await charging.stop(0.5)
    await parking.stop(0.5)




def _lot_find(lat: float, lon: float) -> ParkingFind:
    return ParkingFind(lat, lon, 500.0, 10, SpaceClass.GENERAL, 0, [], False, 0)


def _charger_find(lat: float, lon: float) -> ChargerFind:
    return ChargerFind(lat, lon, 500.0, 0, 0.0, False, 10)


async def _register(d: Drivers, keys: Keys, lot_id: str, station_id: str, lat: float, lon: float) -> None:
    await d.parking.RegisterLot(ppb.RegisterLotRequest(lot=lot(lot_id, lat=lat, lon=lon)), metadata=keys.md(keys.admin))
    await d.charging.RegisterStation(chpb.RegisterStationRequest(station=station(station_id, lat=lat, lon=lon)),
                                     metadata=keys.md(keys.admin))


async def _seen(d: Drivers, keys: Keys, lot_id: str, station_id: str, lat: float, lon: float) -> bool:
    """Whether every driver's read path (rpcs, and the PostGIS searches the rpcs fall back to) shows both."""
    md = keys.md(keys.admin)
    try:
        got_lot = await d.parking.GetLot(ppb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
        got_station = await d.charging.GetStation(chpb.GetStationRequest(station_id=station_id),
                                                  metadata=keys.md(keys.driver))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return False
        raise
    page = compb.PageRequest(page_size=100)
    lots = await d.parking.ListLots(ppb.ListLotsRequest(operator_id="OPA", page=page), metadata=md)
    stations = await d.charging.ListStations(chpb.ListStationsRequest(operator_id="OPA", page=page), metadata=md)
    now = datetime.now(UTC)
    found_lots = await d.parking_store.find_available(_lot_find(lat, lon), now)
    found_chargers = await d.charging_store.find(_charger_find(lat, lon), now)
    return (got_lot.lot.id == lot_id and got_station.id == station_id
            and lot_id in {v.lot.id for v in lots.lots} and station_id in {s.id for s in stations.stations}
            and lot_id in {v.summary.id for v in found_lots} and station_id in {m.station_id for m in found_chargers})


async def test_drivers_queries_of_parking_and_charging_come_from_the_replica(
        on_replica: tuple[Resources, RunningService, Stub, Keys], drivers: Drivers) -> None:
    resources, _, _, keys = on_replica
    lat, lon = SITE[0] + 0.1, SITE[1] + 0.1
    lot_id, station_id = f"RL{uuid.uuid4().hex[:8]}", f"RS{uuid.uuid4().hex[:8]}"
    await assert_eventually(resources.reads.replica_fresh, "the monitor to find the standby within the bound")
    await _register(drivers, keys, lot_id, station_id, lat, lon)
    await assert_eventually(lambda: _seen(drivers, keys, lot_id, station_id, lat, lon),
                            "the lot and the station in every driver's query")
    before = _reads("replica"), _reads("primary")
    assert await _seen(drivers, keys, lot_id, station_id, lat, lon)
    # GetLot, ListLots, find_available, GetStation, ListStations and find: six reads, all on the standby.
    assert (_reads("replica") - before[0], _reads("primary") - before[1]) == (6, 0)


async def test_drivers_queries_of_parking_and_charging_leave_a_replica_behind_its_bound(
        on_replica: tuple[Resources, RunningService, Stub, Keys], drivers: Drivers,
        standby: EmbeddedPostgres) -> None:
    resources, _, _, keys = on_replica
    await assert_eventually(resources.reads.replica_fresh, "the standby to be within the bound")
    lat, lon = SITE[0] - 0.1, SITE[1] - 0.1
    lot_id, station_id = f"RL{uuid.uuid4().hex[:8]}", f"RS{uuid.uuid4().hex[:8]}"
    await _on_standby(standby, "SELECT pg_wal_replay_pause()")
    try:
        await _register(drivers, keys, lot_id, station_id, lat, lon)
        # Once the bound has run out (the monitor finds the standby behind it), every query shows what the primary has
        # (the standby never will).
        await assert_eventually(lambda: not resources.reads.replica_fresh(), "the standby found behind the bound")
        assert await _seen(drivers, keys, lot_id, station_id, lat, lon)
        on_standby = await _on_standby(standby, f"SELECT count(*) FROM parking_lots WHERE id = '{lot_id}'")
        assert on_standby == 0, "the standby replayed while paused: the test proves nothing"
    finally:
        await _on_standby(standby, "SELECT pg_wal_replay_resume()")
    await assert_eventually(resources.reads.replica_fresh, "reads to go back to the standby once it caught up")


# Last: it stops the module's standby.
async def test_a_replica_that_goes_away_leaves_reads_to_the_primary(
        on_replica: tuple[Resources, RunningService, Stub, Keys], standby: EmbeddedPostgres) -> None:
    resources, _, stub, keys = on_replica
    made = await stub.ReportEvent(report((SITE[0] - 0.05, SITE[1])), metadata=Keys.md(keys.police))
    await asyncio.to_thread(standby.stop)
    for _ in range(3):  # the first may find the pooled connection cut; none may fail
        assert made.incident_id in await _listed(stub, keys)
    await assert_eventually(lambda: not resources.reads.replica_fresh(), "the stopped standby to be out of reads")
