"""FindChargers: stations near a driver with matching connectors, nearest first."""

from __future__ import annotations

import math
import random

from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from tests.charging.conftest import NewStation, Stub
from tests.charging.helpers import AVAILABLE, CCS2, CHARGING, GBT_AC, GBT_DC, report
from tests.conftest import Keys


def _place() -> tuple[float, float]:
    """A spot of the map no other test uses (so FindChargers sees only this test's stations)."""
    return random.uniform(-60, -50), random.uniform(10, 40)


def _north(lat: float, lon: float, metres: float) -> tuple[float, float]:
    return lat + metres / 111_195, lon


async def _find(stub: Stub, keys: Keys, lat: float, lon: float, **kw: object) -> list[pb.ChargerMatch]:
    reply = await stub.FindChargers(pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon),
                                                           **kw),  # type: ignore[arg-type]
                                    metadata=keys.md(keys.driver))
    return list(reply.stations)


async def test_stations_come_nearest_first_within_the_radius(stub: Stub, keys: Keys,
                                                             new_station: NewStation) -> None:
    lat, lon = _place()
    far = await new_station(lat=_north(lat, lon, 900)[0], lon=lon)
    near = await new_station(lat=_north(lat, lon, 100)[0], lon=lon)
    mid = await new_station(lat=_north(lat, lon, 400)[0], lon=lon)
    await new_station(lat=_north(lat, lon, 1500)[0], lon=lon)  # outside
    found = await _find(stub, keys, lat, lon, radius_m=1000)
    assert [s.station_id for s in found] == [near.id, mid.id, far.id]
    assert [round(s.distance_m) for s in found] == [100, 400, 900]
    assert math.isclose(found[0].location.lat, near.location.lat)


async def test_standard_and_power_filter_connectors_and_stations(stub: Stub, keys: Keys,
                                                                 new_station: NewStation) -> None:
    lat, lon = _place()
    mixed = await new_station(lat=lat, lon=lon, plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0), (CCS2, 50.0)])
    slow = await new_station(lat=_north(lat, lon, 50)[0], lon=lon, plugs=[(GBT_AC, 7.0)])
    dc = await _find(stub, keys, lat, lon, radius_m=500, standard=GBT_DC)
    assert [s.station_id for s in dc] == [mixed.id]
    assert [c.standard for c in dc[0].connectors] == [GBT_DC]
    fast = await _find(stub, keys, lat, lon, radius_m=500, min_power_kw=50)
    assert [s.station_id for s in fast] == [mixed.id]
    assert sorted(c.max_power_kw for c in fast[0].connectors) == [50.0, 120.0]
    anything = await _find(stub, keys, lat, lon, radius_m=500)
    assert [s.station_id for s in anything] == [mixed.id, slow.id]


async def test_available_only_keeps_stations_with_a_fresh_available_match(stub: Stub, keys: Keys,
                                                                          new_station: NewStation) -> None:
    lat, lon = _place()
    free = await new_station(lat=lat, lon=lon, plugs=[(GBT_DC, 120.0), (GBT_DC, 120.0)])
    busy = await new_station(lat=_north(lat, lon, 30)[0], lon=lon)
    stale = await new_station(lat=_north(lat, lon, 60)[0], lon=lon)
    md = keys.md(keys.op_a)
    await stub.ReportStatus(report(free.evses[0].connectors[0].id, CHARGING), metadata=md)
    await stub.ReportStatus(report(free.evses[1].connectors[0].id, AVAILABLE), metadata=md)
    await stub.ReportStatus(report(busy.evses[0].connectors[0].id, CHARGING), metadata=md)
    await stub.ReportStatus(report(stale.evses[0].connectors[0].id, AVAILABLE, seconds_ago=20, ttl_s=10), metadata=md)
    found = await _find(stub, keys, lat, lon, radius_m=500, available_only=True)
    assert [s.station_id for s in found] == [free.id]
    assert found[0].available_count == 1 and len(found[0].connectors) == 2
    everything = await _find(stub, keys, lat, lon, radius_m=500)
    assert [s.available_count for s in everything] == [1, 0, 0]
    assert everything[2].connectors[0].state.status == pb.CONNECTOR_STATUS_UNKNOWN


async def test_limit_caps_the_number_of_stations(stub: Stub, keys: Keys, new_station: NewStation) -> None:
    lat, lon = _place()
    ids = [(await new_station(lat=_north(lat, lon, 10 * i)[0], lon=lon)).id for i in range(4)]
    found = await _find(stub, keys, lat, lon, radius_m=500, limit=2)
    assert [s.station_id for s in found] == ids[:2]
