"""Freshness: a connector whose charger went silent, or whose pushed reading outlived its TTL, reads
UNKNOWN everywhere, never its last status. These tests move the service's clock instead of waiting."""

from __future__ import annotations

import asyncio
import json

from ocpp.v16 import call
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.common.runtime import Resources
from tests.charging.conftest import Harness, ShiftClock, charge_point_maker, station_maker
from tests.charging.helpers import (
    AVAILABLE,
    UNKNOWN,
    arrival_recorded,
    connector_state,
    ocpp_client,
    ocpp_now,
    report,
)
from tests.conftest import Keys


async def _state(h: Harness, keys: Keys, station_id: str, connector_id: str) -> pb.ConnectorState:
    st = await h.stub.GetStation(pb.GetStationRequest(station_id=station_id), metadata=keys.md(keys.driver))
    return connector_state(st, connector_id)


async def _available_nearby(h: Harness, keys: Keys, lat: float, lon: float) -> list[str]:
    found = await h.stub.FindChargers(pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=200,
                                                             available_only=True), metadata=keys.md(keys.driver))
    return [s.station_id for s in found.stations]


async def test_a_pushed_reading_reads_unknown_after_its_ttl(timed: tuple[Harness, ShiftClock], keys: Keys,
                                                            unique: str) -> None:
    h, clock = timed
    st = await station_maker(h.stub, keys, unique, "FR")(lat=12.5, lon=-40.25)
    cid = st.evses[0].connectors[0].id
    await h.stub.ReportStatus(report(cid, AVAILABLE, ttl_s=30), metadata=keys.md(keys.op_a))
    assert (await _state(h, keys, st.id, cid)).status == AVAILABLE
    assert await _available_nearby(h, keys, 12.5, -40.25) == [st.id]
    clock.advance(31)
    state = await _state(h, keys, st.id, cid)
    assert state.status == UNKNOWN and state.freshness.stale and state.freshness.ttl_s == 30
    assert state.error_code == pb.CONNECTOR_ERROR_CODE_UNSPECIFIED and not state.HasField("status_since")
    assert await _available_nearby(h, keys, 12.5, -40.25) == []


async def test_without_a_ttl_the_station_default_applies(timed: tuple[Harness, ShiftClock], keys: Keys,
                                                         unique: str) -> None:
    h, clock = timed
    st = await station_maker(h.stub, keys, unique, "FR")(ttl_s=120)
    cid = st.evses[0].connectors[0].id
    await h.stub.ReportStatus(report(cid, AVAILABLE), metadata=keys.md(keys.op_a))
    clock.advance(119)
    assert (await _state(h, keys, st.id, cid)).status == AVAILABLE
    clock.advance(2)
    assert (await _state(h, keys, st.id, cid)).status == UNKNOWN


async def test_a_silent_charge_point_reads_unknown_and_a_heartbeat_revives_it(
        timed: tuple[Harness, ShiftClock], keys: Keys, unique: str) -> None:
    h, clock = timed
    cp = await charge_point_maker(h, keys, unique)()
    cid = cp.connector()
    async with ocpp_client(cp.url, cp.cp_id, cp.password) as client:
        boot = await client.call(call.BootNotification(charge_point_model="m", charge_point_vendor="v"))
        await client.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available",
                                                  timestamp=ocpp_now()))
        clock.advance(3 * boot.interval - 5)
        assert (await _state(h, keys, cp.station.id, cid)).status == AVAILABLE
        clock.advance(10)  # 3 heartbeat intervals of silence
        silent = await _state(h, keys, cp.station.id, cid)
        assert silent.status == UNKNOWN and silent.freshness.stale
        heard_at = clock()
        await client.call(call.Heartbeat())
        await arrival_recorded(h.app.gateway, cp.cp_id, heard_at)  # flushed to the charge point's row
        revived = await _state(h, keys, cp.station.id, cid)
        assert revived.status == AVAILABLE and not revived.freshness.stale


async def test_a_watcher_is_told_when_a_reading_expires(timed: tuple[Harness, ShiftClock], keys: Keys,
                                                        unique: str) -> None:
    h, clock = timed
    st = await station_maker(h.stub, keys, unique, "FR")()
    cid = st.evses[0].connectors[0].id
    await h.stub.ReportStatus(report(cid, AVAILABLE, ttl_s=60), metadata=keys.md(keys.op_a))
    watch = h.stub.WatchStation(pb.WatchStationRequest(station_id=st.id), metadata=keys.md(keys.driver))
    try:
        snapshot = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(snapshot, pb.StationUpdate) and connector_state(snapshot.station, cid).status == AVAILABLE
        clock.advance(61)
        expired = await asyncio.wait_for(watch.read(), 5)
        assert isinstance(expired, pb.StationUpdate)
        assert expired.reason == pb.StationUpdate.REASON_CONNECTOR_EXPIRED
        assert expired.connector.id == cid and expired.connector.state.status == UNKNOWN
    finally:
        watch.cancel()


async def test_an_expiry_is_announced_to_the_city_once(timed: tuple[Harness, ShiftClock], keys: Keys, unique: str,
                                                       resources: Resources) -> None:
    h, clock = timed
    st = await station_maker(h.stub, keys, unique, "FR")()
    cid = st.evses[0].connectors[0].id
    await h.stub.ReportStatus(report(cid, AVAILABLE, ttl_s=10), metadata=keys.md(keys.op_a))
    clock.advance(11)
    await h.app.sweeper.sweep()
    await h.app.sweeper.sweep()
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT payload FROM outbox WHERE kind = 'charger_status' AND payload->>'connector_id' = :c ORDER BY id"),
            {"c": cid})).scalars().all()
    payloads = [json.loads(r) if isinstance(r, str) else r for r in rows]
    assert [(p["status"], p["expired"]) for p in payloads] == [("CONNECTOR_STATUS_AVAILABLE", False),
                                                               ("CONNECTOR_STATUS_UNKNOWN", True)]
    assert payloads[1]["ocpi_status"] == "UNKNOWN" and payloads[1]["error_code"] is None
