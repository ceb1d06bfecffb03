"""The charging demo of `v2x run`: stations seeded into the demo district, found by a driver near Baoshan
with fresh statuses, and seeded once however often the seed runs.

The test database is shared with other tests (which may have put stations near 31.40/121.49 too): the
checks look at the demo's own ids (BS-CS-…, BS-…) and hold whether or not the demo was already there.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.common.runtime import Resources
from services.runner.demo_chargers import STATION_PREFIX, seed_chargers, stations
from services.runner.demo_district import district, seed_district
from tests.charging.conftest import Harness, start_harness, stop_harness
from tests.conftest import Keys

CENTER = (31.40, 121.49)
RADIUS_M = 3000.0
SPHERE_M = 6_371_008.8  # the sphere FindChargers measures on (ST_Distance without the spheroid)
# How many stations the demo holds within a distance of the centre. A station closer to the radius than
# this margin may fall either side of it.
MARGIN_M = 30.0
# Seeding the whole demo district and its chargers takes ~13 s on the 2-core machine.
pytestmark = pytest.mark.slow


def _distance_m(lat: float, lon: float) -> float:
    p1, p2 = math.radians(CENTER[0]), math.radians(lat)
    dp, dl = p2 - p1, math.radians(lon - CENTER[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * SPHERE_M * math.asin(math.sqrt(h))


DEMO = {s.id: s for s in stations()}
DEMO_DISTANCE = {sid: _distance_m(s.lat, s.lon) for sid, s in DEMO.items()}


@pytest.fixture(scope="module")
async def seeded(resources: Resources) -> int:
    """The demo district (stations link to its lots and EV bays), then the charging demo."""
    await seed_district(resources.engine)
    return await seed_chargers(resources.engine)


@pytest.fixture(scope="module")
async def demo_charging(resources: Resources) -> AsyncIterator[Harness]:
    h = await start_harness(resources, lambda: datetime.now(UTC))
    yield h
    await stop_harness(h)


async def _find(h: Harness, keys: Keys, **kw: Any) -> list[pb.ChargerMatch]:
    reply = await h.stub.FindChargers(
        pb.FindChargersRequest(location=cpb.LatLon(lat=CENTER[0], lon=CENTER[1]), radius_m=RADIUS_M, limit=200,
                               **kw), metadata=keys.md(keys.driver))
    return list(reply.stations)


async def _snapshot(resources: Resources) -> dict[str, Any]:
    async with resources.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT (SELECT count(*) FROM charging_stations WHERE id LIKE 'BS-CS-%') AS stations, "
            "(SELECT coalesce(sum(version), 0) FROM charging_stations WHERE id LIKE 'BS-CS-%') AS versions, "
            "(SELECT count(*) FROM charging_connectors WHERE station_id LIKE 'BS-CS-%') AS connectors, "
            "(SELECT max(st.received_at) FROM charging_connector_state st JOIN charging_connectors c "
            " ON c.id = st.connector_id WHERE c.station_id LIKE 'BS-CS-%') AS last_status, "
            "(SELECT count(*) FROM outbox WHERE kind = 'charger_status' AND aggregate_id LIKE 'BS-CS-%') AS outbox"
        ))).one()
    return dict(row._mapping)


async def test_a_driver_near_baoshan_finds_available_demo_chargers_nearest_first(
        seeded: int, demo_charging: Harness, keys: Keys) -> None:
    found = await _find(demo_charging, keys, available_only=True)
    assert [s.distance_m for s in found] == sorted(s.distance_m for s in found)
    demo = [s for s in found if s.station_id.startswith(STATION_PREFIX)]
    inside = {sid for sid, d in DEMO_DISTANCE.items() if d <= RADIUS_M - MARGIN_M}
    assert len(inside) >= 10
    # Nearly every demo station in reach has a free connector (a station whose every connector is busy
    # is rightly left out).
    assert len({s.station_id for s in demo} & inside) >= 0.8 * len(inside)
    now = datetime.now(UTC)
    for s in demo:
        assert s.distance_m == pytest.approx(DEMO_DISTANCE[s.station_id], abs=2.0)
        assert s.operator_id == DEMO[s.station_id].operator_id
        assert s.parking_lot_id == DEMO[s.station_id].parking_lot_id
        assert s.available_count >= 1
        free = [c for c in s.connectors if c.state.status == pb.CONNECTOR_STATUS_AVAILABLE]
        assert len(free) == s.available_count
        for c in free:
            assert not c.state.freshness.stale
            assert c.state.freshness.expires_at.ToDatetime(tzinfo=UTC) > now
            assert c.state.source == pb.STATUS_SOURCE_OPERATOR


async def test_every_demo_station_in_reach_is_found_with_mostly_available_connectors(
        seeded: int, demo_charging: Harness, keys: Keys) -> None:
    found = await _find(demo_charging, keys)
    assert [s.distance_m for s in found] == sorted(s.distance_m for s in found)
    demo = [s for s in found if s.station_id.startswith(STATION_PREFIX)]
    ids = {s.station_id for s in demo}
    assert {sid for sid, d in DEMO_DISTANCE.items() if d <= RADIUS_M - MARGIN_M} <= ids
    assert ids <= {sid for sid, d in DEMO_DISTANCE.items() if d <= RADIUS_M + MARGIN_M}
    connectors = [c for s in demo for c in s.connectors]
    assert sum(len(DEMO[sid].connectors()) for sid in ids) == len(connectors)
    statuses = [c.state.status for c in connectors]
    assert pb.CONNECTOR_STATUS_UNKNOWN not in statuses  # every connector has a fresh first reading
    assert statuses.count(pb.CONNECTOR_STATUS_AVAILABLE) > len(statuses) / 2
    standards = {c.standard for c in connectors}
    assert {pb.CONNECTOR_STANDARD_GBT_DC, pb.CONNECTOR_STANDARD_GBT_AC} <= standards
    assert all(c.price_per_kwh_fen > 0 and c.service_fee_per_kwh_fen > 0 for c in connectors)


async def test_ev_bay_connectors_carry_the_ids_parking_knows(seeded: int, resources: Resources) -> None:
    bays = {(lot.spec.id, s.id): s.connector_id for lot in district() for s in lot.spots if s.connector_id}
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT s.parking_lot_id, c.parking_spot_id, c.id, p.connector_id, s.operator_id, l.operator_id AS owner "
            "FROM charging_connectors c JOIN charging_stations s ON s.id = c.station_id "
            "JOIN parking_lots l ON l.id = s.parking_lot_id "
            "LEFT JOIN parking_spots p ON p.lot_id = s.parking_lot_id AND p.spot_id = c.parking_spot_id "
            "WHERE s.id LIKE 'BS-CS-%' AND c.parking_spot_id <> ''"))).all()
    assert bays
    assert {(r.parking_lot_id, r.parking_spot_id): r.id for r in rows} == bays
    assert all(r.connector_id == r.id and r.operator_id == r.owner for r in rows)


async def test_seeding_again_changes_nothing(seeded: int, resources: Resources) -> None:
    before = await _snapshot(resources)
    assert seeded == len(DEMO) == before["stations"]
    assert before["connectors"] == sum(len(s.connectors()) for s in DEMO.values())
    assert before["outbox"] >= before["connectors"]  # every first status went out like a pushed one
    assert await seed_chargers(resources.engine) == seeded
    assert await _snapshot(resources) == before
