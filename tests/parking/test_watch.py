"""WatchAvailability: a snapshot of the area, then its changes, and expiries nobody announces."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.geo import haversine_m
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import free_of, report, ts
from tests.waiting import assert_eventually

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

Update = pb.AvailabilityUpdate
READ_TIMEOUT_S = 5.0
M_PER_DEG = 111_195.0


def _place() -> tuple[float, float]:
    """A spot of the map no other test uses."""
    return random.uniform(40, 48), random.uniform(-120, -70)


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


def _circle(lat: float, lon: float, radius_m: float) -> cpb.Area:
    return cpb.Area(circle=cpb.Circle(center=cpb.LatLon(lat=lat, lon=lon), radius_m=radius_m))


def _box(s: float, w: float, n: float, e: float) -> cpb.Area:
    return cpb.Area(box=cpb.BoundingBox(south_west=cpb.LatLon(lat=s, lon=w), north_east=cpb.LatLon(lat=n, lon=e)))


class Watch:
    """One WatchAvailability call, read by a background task so that waiting can time out without
    touching the call."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.updates: asyncio.Queue[pb.AvailabilityUpdate | BaseException | None] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for u in self.call:
                await self.updates.put(u)
            await self.updates.put(None)
        except Exception as exc:  # the test reports it
            await self.updates.put(exc)

    async def next(self, wait_s: float = READ_TIMEOUT_S) -> pb.AvailabilityUpdate:
        """The next update; a hang fails the test instead of blocking it."""
        try:
            msg = await asyncio.wait_for(self.updates.get(), wait_s)
        except TimeoutError:
            pytest.fail(f"no update within {wait_s} s")
        assert isinstance(msg, pb.AvailabilityUpdate), f"stream ended: {msg!r}"
        return msg

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


OpenWatch = Callable[..., Watch]


@pytest.fixture
async def watch(stub: Stub, keys: Keys) -> AsyncIterator[OpenWatch]:
    """Opens watches (as a driver) and cancels them after the test."""
    opened: list[Watch] = []

    def open_watch(area: cpb.Area, snapshot: bool = True) -> Watch:
        w = Watch(stub.WatchAvailability(pb.WatchAvailabilityRequest(area=area, snapshot=snapshot),
                                         metadata=keys.md(keys.driver)))
        opened.append(w)
        return w

    yield open_watch
    for w in opened:
        await w.close()


async def _snapshot(w: Watch) -> dict[str, pb.LotAvailability]:
    lots: dict[str, pb.LotAvailability] = {}
    while True:
        u = await w.next()
        if u.reason == Update.REASON_SNAPSHOT_END:
            assert not u.HasField("lot")
            return lots
        assert u.reason == Update.REASON_SNAPSHOT
        assert u.lot.lot_id not in lots
        lots[u.lot.lot_id] = u.lot


async def test_circle_watch_sends_snapshot_then_changes_inside_only(stub: Stub, keys: Keys,
                                                                    new_lot: NewLot, watch: OpenWatch) -> None:
    lat, lon = _place()
    md = keys.md(keys.op_a)
    near = await new_lot(lat=lat, lon=lon, general=50, ev=0, disabled=0)
    edge_lat, edge_lon = _offset(lat, lon, 700, 700)  # ~990 m away: inside the circle's box, outside the circle
    far_inside_lat, far_inside_lon = _offset(lat, lon, -600, 0)
    inside = await new_lot(lat=far_inside_lat, lon=far_inside_lon, general=50, ev=0, disabled=0)
    outside = await new_lot(lat=edge_lat, lon=edge_lon, general=50, ev=0, disabled=0)
    await stub.PushOccupancy(report(near, 1, general=30), metadata=md)
    call = watch(_circle(lat, lon, 800))
    snap = await _snapshot(call)
    assert set(snap) == {near, inside}
    assert free_of(snap[near].availability) == 30
    assert snap[near].availability.status == pb.SITE_STATUS_SPACES_AVAILABLE
    assert snap[inside].availability.status == pb.SITE_STATUS_UNKNOWN  # never reported
    assert snap[inside].distance_m == pytest.approx(haversine_m(lat, lon, far_inside_lat, far_inside_lon), abs=0.01)
    await stub.PushOccupancy(report(outside, 1, general=5), metadata=md)
    await stub.PushOccupancy(report(inside, 1, general=7), metadata=md)
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.lot_id == inside
    assert free_of(u.lot.availability) == 7 and u.lot.availability.sequence == 1
    assert u.lot.availability.status == pb.SITE_STATUS_SPACES_AVAILABLE
    assert u.lot.distance_m == pytest.approx(haversine_m(lat, lon, far_inside_lat, far_inside_lon), abs=0.01)
    await stub.PushOccupancy(report(outside, 2, general=4), metadata=md)
    await stub.PushOccupancy(report(near, 2, general=0), metadata=md)
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.lot_id == near
    assert u.lot.availability.status == pb.SITE_STATUS_FULL


async def test_box_watch_sends_snapshot_then_changes_inside_only(stub: Stub, keys: Keys,
                                                                 new_lot: NewLot, watch: OpenWatch) -> None:
    lat, lon = _place()
    md = keys.md(keys.op_a)
    s, w = _offset(lat, lon, -500, -500)
    n, e = _offset(lat, lon, 500, 500)
    corner = await new_lot(lat=s + 0.0005, lon=e - 0.0005)  # near the corner, beyond a 500 m circle
    centre = await new_lot(lat=lat, lon=lon)
    outside = await new_lot(lat=lat, lon=e + 0.0005)
    await stub.PushOccupancy(report(centre, 1, general=40), metadata=md)
    call = watch(_box(s, w, n, e))
    snap = await _snapshot(call)
    assert set(snap) == {corner, centre}
    assert free_of(snap[centre].availability) == 40
    assert snap[corner].distance_m == pytest.approx(haversine_m(lat, lon, s + 0.0005, e - 0.0005), abs=0.01)
    await stub.PushOccupancy(report(outside, 1, general=5), metadata=md)
    await stub.PushOccupancy(report(corner, 1, general=9), metadata=md)
    # A watch gets an unsharded feed (these tests') in order: a change outside sent to it would come first.
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.lot_id == corner
    assert free_of(u.lot.availability) == 9


async def test_passage_changes_reach_watchers(stub: Stub, keys: Keys, new_lot: NewLot,
                                              watch: OpenWatch) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon, general=10, ev=0, disabled=0)
    call = watch(_circle(lat, lon, 100))
    assert set(await _snapshot(call)) == {lot_id}
    await stub.RecordPassage(pb.RecordPassageRequest(
        lot_id=lot_id, passage_id="p1", direction=pb.PASSAGE_DIRECTION_ENTRY, plate="沪A12345",
        passed_at=ts()), metadata=keys.md(keys.op_a))
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.lot_id == lot_id and free_of(u.lot.availability) == 9


async def test_watch_without_snapshot_starts_with_changes(stub: Stub, keys: Keys,
                                                          new_lot: NewLot, watch: OpenWatch) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon)
    call = watch(_circle(lat, lon, 100), snapshot=False)
    # Nothing says when the server starts following the feed: report until a change comes through.
    sequences = itertools.count(1)

    async def came_through() -> bool:
        if not call.updates.empty():
            return True
        await stub.PushOccupancy(report(lot_id, next(sequences), general=3), metadata=keys.md(keys.op_a))
        return False

    await assert_eventually(came_through, "a change through a watch without snapshot", every_s=0.2)
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.lot_id == lot_id


def _assert_expired(u: pb.AvailabilityUpdate, lot_id: str) -> None:
    assert u.reason == Update.REASON_EXPIRED and u.lot.lot_id == lot_id
    a = u.lot.availability
    assert a.status == pb.SITE_STATUS_UNKNOWN and a.trend == pb.OCCUPANCY_TREND_UNKNOWN
    assert a.freshness.stale and not a.HasField("total_free")
    assert not any(c.HasField("free") for c in a.classes)


async def test_reading_expiring_after_snapshot_is_sent_as_expired(stub: Stub, keys: Keys,
                                                                  new_lot: NewLot, watch: OpenWatch) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon, ttl_s=10)
    await stub.PushOccupancy(report(lot_id, 1, general=30, ev=2, seconds_ago=8), metadata=keys.md(keys.op_a))
    call = watch(_circle(lat, lon, 100))
    snap = await _snapshot(call)
    assert snap[lot_id].availability.status == pb.SITE_STATUS_SPACES_AVAILABLE
    _assert_expired(await call.next(wait_s=6), lot_id)
    assert datetime.now(UTC) >= snap[lot_id].availability.freshness.expires_at.ToDatetime(tzinfo=UTC)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert view.availability.status == pb.SITE_STATUS_UNKNOWN


async def test_reading_expiring_after_a_change_is_sent_as_expired(stub: Stub, keys: Keys,
                                                                  new_lot: NewLot, watch: OpenWatch) -> None:
    lat, lon = _place()
    lot_id = await new_lot(lat=lat, lon=lon, ttl_s=10)
    call = watch(_circle(lat, lon, 100))
    assert (await _snapshot(call))[lot_id].availability.status == pb.SITE_STATUS_UNKNOWN
    await stub.PushOccupancy(report(lot_id, 1, general=30, ev=2, seconds_ago=8), metadata=keys.md(keys.op_a))
    u = await call.next()
    assert u.reason == Update.REASON_CHANGED and u.lot.availability.status == pb.SITE_STATUS_SPACES_AVAILABLE
    _assert_expired(await call.next(wait_s=6), lot_id)
    assert datetime.now(UTC) >= u.lot.availability.freshness.expires_at.ToDatetime(tzinfo=UTC)

