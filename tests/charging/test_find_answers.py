"""FindChargers answers (from PostGIS, and from the nearby index with its encodings of connectors) read as the
station and connectors built afresh."""

from __future__ import annotations

import random
from datetime import timedelta

from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.charging import convert
from services.charging.model import FindQuery
from services.charging.status import visible_status
from tests.charging.conftest import Harness, NewStation, ShiftClock, Stub, station_maker
from tests.charging.helpers import AVAILABLE, CHARGING, GBT_AC, GBT_DC, report
from tests.conftest import Keys


def _place() -> tuple[float, float]:
    return random.uniform(-60, -50), random.uniform(45, 80)


async def _find(stub: Stub, keys: Keys, lat: float, lon: float) -> list[pb.ChargerMatch]:
    reply = await stub.FindChargers(pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=500),
                                    metadata=keys.md(keys.driver))
    return list(reply.stations)


async def test_an_answer_equals_one_built_afresh(timed: tuple[Harness, ShiftClock], keys: Keys,
                                                 unique: str) -> None:
    h, clock = timed
    lat, lon = _place()
    make = station_maker(h.stub, keys, unique, "FA")
    a = await make(lat=lat, lon=lon, plugs=[(GBT_DC, 120.0), (GBT_AC, 7.0)])
    b = await make(lat=lat + 0.001, lon=lon, plugs=[(GBT_DC, 60.0)])
    md = keys.md(keys.op_a)
    await h.stub.ReportStatus(report(a.evses[0].connectors[0].id, AVAILABLE, ttl_s=30), metadata=md)
    await h.stub.ReportStatus(report(b.evses[0].connectors[0].id, CHARGING), metadata=md)
    for _ in range(2):  # the index encodes a connector, then answers from its encoding
        for advance in (0, 31):  # fresh, then the 30 s reading expired
            clock.advance(advance)
            now = clock()
            matches = await h.app.store.find(FindQuery(lat, lon, 500, 0, 0, False, 20), now)
            expected = pb.FindChargersResponse()
            for m in matches:
                expected.stations.add(
                    station_id=m.station_id, name=m.name, operator_id=m.operator_id,
                    location=cpb.LatLon(lat=m.lat, lon=m.lon), address=m.address, parking_lot_id=m.parking_lot_id,
                    distance_m=round(m.distance_m, 2),
                    connectors=[convert.connector_proto(v.spec, v.state, now) for v in m.connectors],
                    available_count=sum(visible_status(v.state, now) == pb.CONNECTOR_STATUS_AVAILABLE
                                        for v in m.connectors))
            assert convert.answer_proto(matches, now) == expected
            served = await h.stub.FindChargers(pb.FindChargersRequest(location=cpb.LatLon(lat=lat, lon=lon),
                                                                      radius_m=500), metadata=keys.md(keys.driver))
            assert served == expected
        clock.offset = timedelta()


async def test_a_changed_connector_reads_changed_in_the_next_answer(stub: Stub, keys: Keys,
                                                                    new_station: NewStation) -> None:
    lat, lon = _place()
    st = await new_station(lat=lat, lon=lon)
    cid = st.evses[0].connectors[0].id
    md = keys.md(keys.op_a)
    await stub.ReportStatus(report(cid, AVAILABLE), metadata=md)
    first = await _find(stub, keys, lat, lon)
    assert first[0].connectors[0].state.status == AVAILABLE and first[0].available_count == 1
    assert (await _find(stub, keys, lat, lon)) == first
    await stub.ReportStatus(report(cid, CHARGING), metadata=md)
    second = await _find(stub, keys, lat, lon)
    assert second[0].connectors[0].state.status == CHARGING and second[0].available_count == 0


async def test_an_expired_reading_reads_unknown_in_an_answer_that_had_it_fresh(timed: tuple[Harness, ShiftClock],
                                                                               keys: Keys, unique: str) -> None:
    h, clock = timed
    lat, lon = _place()
    st = await station_maker(h.stub, keys, unique, "FE")(lat=lat, lon=lon)
    cid = st.evses[0].connectors[0].id
    await h.stub.ReportStatus(report(cid, AVAILABLE, ttl_s=30), metadata=keys.md(keys.op_a))
    fresh = await _find(h.stub, keys, lat, lon)
    assert fresh[0].connectors[0].state.status == AVAILABLE and fresh[0].available_count == 1
    clock.advance(31)
    expired = await _find(h.stub, keys, lat, lon)
    assert expired[0].connectors[0].state.status == pb.CONNECTOR_STATUS_UNKNOWN
    assert expired[0].connectors[0].state.freshness.stale and expired[0].available_count == 0
