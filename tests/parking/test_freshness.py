"""Freshness: a reading older than the lot's TTL reads UNKNOWN everywhere."""

from __future__ import annotations

import random
from datetime import UTC, timedelta
from typing import TYPE_CHECKING

from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.geo import haversine_m
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import report

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub


def _place() -> tuple[float, float]:
    """A spot of the map no other test uses (so FindAvailable sees only this test's lots)."""
    return random.uniform(50, 60), random.uniform(-40, -10)


async def _find(stub: Stub, keys: Keys, lat: float, lon: float,
                **kw: object) -> pb.FindAvailableResponse:
    return await stub.FindAvailable(pb.FindAvailableRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=500,
                                                            **kw),  # type: ignore[arg-type]
                                    metadata=keys.md(keys.driver))


async def test_expired_reading_reads_unknown_without_counts(stub: Stub, keys: Keys,
                                                            new_lot: NewLot) -> None:
    lot_id = await new_lot(ttl_s=10)
    ack = await stub.PushOccupancy(report(lot_id, 1, general=40, ev=3, seconds_ago=11), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED
    a = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))).availability
    assert a.status == pb.SITE_STATUS_UNKNOWN
    assert a.trend == pb.OCCUPANCY_TREND_UNKNOWN
    assert not a.HasField("total_free")
    assert a.classes and not any(c.HasField("free") for c in a.classes)
    assert a.freshness.stale
    assert a.sequence == 1
    assert a.freshness.ttl_s == 10
    observed = a.freshness.observed_at.ToDatetime(tzinfo=UTC)
    assert a.freshness.expires_at.ToDatetime(tzinfo=UTC) == observed + timedelta(seconds=10)


async def test_reading_within_ttl_is_fresh(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(ttl_s=10, disabled=0)
    await stub.PushOccupancy(report(lot_id, 1, general=40, ev=3, seconds_ago=5), metadata=keys.md(keys.op_a))
    a = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))).availability
    assert a.status == pb.SITE_STATUS_SPACES_AVAILABLE and not a.freshness.stale
    assert a.total_free == 43


async def test_expiry_hides_a_known_trend(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    md = keys.md(keys.op_a)
    fresh, expired = await new_lot(general=100, ev=0, disabled=0), await new_lot(general=100, ev=0, disabled=0,
                                                                                 ttl_s=10)
    for lot_id in (fresh, expired):
        for i, free in enumerate([80, 70, 60, 50, 40]):
            await stub.PushOccupancy(report(lot_id, i + 1, general=free, seconds_ago=251 - i * 60), metadata=md)
    same_history = (await stub.GetLot(pb.GetLotRequest(lot_id=fresh), metadata=md)).availability
    assert same_history.trend == pb.OCCUPANCY_TREND_INCREASING
    a = (await stub.GetLot(pb.GetLotRequest(lot_id=expired), metadata=md)).availability
    assert a.trend == pb.OCCUPANCY_TREND_UNKNOWN and a.status == pb.SITE_STATUS_UNKNOWN


async def test_find_available_shows_an_expired_lot_as_unknown(stub: Stub, keys: Keys,
                                                              new_lot: NewLot) -> None:
    lat, lon = _place()
    expired = await new_lot(ttl_s=10, lat=lat, lon=lon + 0.001)
    fresh = await new_lot(ttl_s=10, lat=lat, lon=lon + 0.002)
    await stub.PushOccupancy(report(expired, 1, general=40, ev=3, seconds_ago=11), metadata=keys.md(keys.op_a))
    await stub.PushOccupancy(report(fresh, 1, general=40, ev=3), metadata=keys.md(keys.op_a))
    found = await _find(stub, keys, lat, lon)
    assert [r.lot_id for r in found.lots] == [expired, fresh]
    gone = found.lots[0]
    assert gone.distance_m == round(haversine_m(lat, lon, lat, lon + 0.001), 2)
    assert gone.availability.status == pb.SITE_STATUS_UNKNOWN and gone.availability.freshness.stale
    assert gone.availability.trend == pb.OCCUPANCY_TREND_UNKNOWN
    assert not gone.availability.HasField("total_free")
    assert not any(c.HasField("free") for c in gone.availability.classes)
    assert found.lots[1].availability.status == pb.SITE_STATUS_SPACES_AVAILABLE


async def test_only_available_excludes_an_expired_lot(stub: Stub, keys: Keys,
                                                      new_lot: NewLot) -> None:
    lat, lon = _place()
    expired = await new_lot(ttl_s=10, lat=lat, lon=lon + 0.001)
    fresh = await new_lot(ttl_s=10, lat=lat, lon=lon + 0.002)
    await stub.PushOccupancy(report(expired, 1, general=40, ev=3, seconds_ago=11), metadata=keys.md(keys.op_a))
    await stub.PushOccupancy(report(fresh, 1, general=40, ev=3), metadata=keys.md(keys.op_a))
    found = await _find(stub, keys, lat, lon, only_available=True)
    assert [r.lot_id for r in found.lots] == [fresh]
    found = await _find(stub, keys, lat, lon, min_free=1, space_class=pb.SPACE_CLASS_EV)
    assert [r.lot_id for r in found.lots] == [fresh]


async def test_spot_statuses_read_unknown_after_expiry(stub: Stub, keys: Keys,
                                                       new_lot: NewLot) -> None:
    md = keys.md(keys.op_a)
    statuses: dict[str, int] = {"S1": pb.SPOT_STATUS_OCCUPIED, "S2": pb.SPOT_STATUS_FREE, "S3": pb.SPOT_STATUS_CLOSED}
    lots = {}
    for ago in (11, 0):
        lot_id = await new_lot(general=3, ev=0, disabled=0, ttl_s=10, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
        await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=lot_id, spots=[
            pb.Spot(id=s, space_class=pb.SPACE_CLASS_GENERAL) for s in statuses]), metadata=md)
        ack = await stub.PushOccupancy(report(lot_id, 1, spots=statuses, seconds_ago=ago), metadata=md)
        assert ack.result == pb.ACK_RESULT_ACCEPTED
        lots[ago] = lot_id
    expired = await stub.ListSpots(pb.ListSpotsRequest(lot_id=lots[11]), metadata=keys.md(keys.driver))
    assert {s.id: s.status for s in expired.spots} == dict.fromkeys(statuses, pb.SPOT_STATUS_UNKNOWN)
    fresh = await stub.ListSpots(pb.ListSpotsRequest(lot_id=lots[0]), metadata=keys.md(keys.driver))
    assert {s.id: s.status for s in fresh.spots} == statuses


async def test_default_ttl_is_600_seconds(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    md = keys.md(keys.op_a)
    young, old = await new_lot(ttl_s=0), await new_lot(ttl_s=0)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=young), metadata=md)
    assert view.lot.occupancy_ttl_s == 600
    await stub.PushOccupancy(report(young, 1, general=40, ev=3, seconds_ago=590), metadata=md)
    await stub.PushOccupancy(report(old, 1, general=40, ev=3, seconds_ago=610), metadata=md)
    a = (await stub.GetLot(pb.GetLotRequest(lot_id=young), metadata=md)).availability
    assert a.freshness.ttl_s == 600 and not a.freshness.stale
    assert a.status == pb.SITE_STATUS_SPACES_AVAILABLE
    assert a.freshness.expires_at.ToDatetime(tzinfo=UTC) == \
        a.freshness.observed_at.ToDatetime(tzinfo=UTC) + timedelta(seconds=600)
    a = (await stub.GetLot(pb.GetLotRequest(lot_id=old), metadata=md)).availability
    assert a.freshness.ttl_s == 600 and a.freshness.stale
    assert a.status == pb.SITE_STATUS_UNKNOWN
