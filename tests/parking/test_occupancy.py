"""Occupancy reports: the rules of PushOccupancy and StreamOccupancy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot, Stub
from tests.parking.helpers import batch, free_of, report


async def _outbox_count(resources: Resources, lot_id: str) -> int:
    async with resources.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM outbox WHERE aggregate_id = :id"),
                                       {"id": lot_id})).scalar_one())


async def test_push_is_visible_to_drivers(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot()
    ack = await stub.PushOccupancy(report(lot_id, 1, general=40, ev=3), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED and ack.stored_sequence == 1 and ack.report_id == "r1"
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert free_of(view.availability) == 40
    assert free_of(view.availability, pb.SPACE_CLASS_EV) == 3
    assert view.availability.status == pb.SITE_STATUS_SPACES_AVAILABLE
    assert not view.availability.freshness.stale


async def test_each_accepted_change_writes_an_outbox_row(stub: Stub, keys: Keys, new_lot: NewLot,
                                                         resources: Resources) -> None:
    lot_id = await new_lot()
    assert await _outbox_count(resources, lot_id) == 1  # lot_static
    await stub.PushOccupancy(report(lot_id, 1, general=40), metadata=keys.md(keys.op_a))
    await stub.PushOccupancy(report(lot_id, 1, general=40), metadata=keys.md(keys.op_a))  # duplicate
    await stub.PushOccupancy(report(lot_id, 2, general=39), metadata=keys.md(keys.op_a))
    assert await _outbox_count(resources, lot_id) == 3


async def test_free_over_capacity_is_invalid_and_names_the_class(stub: Stub, keys: Keys,
                                                                 new_lot: NewLot, resources: Resources) -> None:
    lot_id = await new_lot(ev=10)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(lot_id, 1, general=5, ev=11), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ev" in (err.value.details() or "")
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert view.availability.sequence == 0 and free_of(view.availability) is None
    assert await _outbox_count(resources, lot_id) == 1


async def test_older_report_is_acknowledged_stale_and_ignored(stub: Stub, keys: Keys,
                                                              new_lot: NewLot) -> None:
    lot_id = await new_lot()
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 5, general=10), metadata=md)
    late = await stub.PushOccupancy(report(lot_id, 4, general=99, seconds_ago=5), metadata=md)
    assert late.result == pb.ACK_RESULT_STALE and late.stored_sequence == 5
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)
    assert free_of(view.availability) == 10


async def test_newer_sequence_with_older_observation_is_stale(stub: Stub, keys: Keys,
                                                              new_lot: NewLot) -> None:
    lot_id = await new_lot()
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=10), metadata=md)
    ack = await stub.PushOccupancy(report(lot_id, 2, general=20, seconds_ago=120), metadata=md)
    assert ack.result == pb.ACK_RESULT_STALE


async def test_repeated_sequence_is_idempotent(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot()
    md = keys.md(keys.op_a)
    first = await stub.PushOccupancy(report(lot_id, 3, general=10), metadata=md)
    again = await stub.PushOccupancy(report(lot_id, 3, general=10), metadata=md)
    assert first.result == pb.ACK_RESULT_ACCEPTED and again.result == pb.ACK_RESULT_DUPLICATE
    assert again.stored_sequence == 3


async def test_observation_more_than_60s_ahead_is_rejected(stub: Stub, keys: Keys,
                                                           new_lot: NewLot) -> None:
    lot_id = await new_lot()
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(lot_id, 1, general=10, seconds_ago=-90), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "future" in (err.value.details() or "")
    ok = await stub.PushOccupancy(report(lot_id, 1, general=10, seconds_ago=-30), metadata=keys.md(keys.op_a))
    assert ok.result == pb.ACK_RESULT_ACCEPTED


async def test_operator_cannot_report_for_another_operators_lot(stub: Stub, keys: Keys,
                                                                new_lot: NewLot) -> None:
    lot_id = await new_lot(operator="OPA")
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(lot_id, 1, general=10), metadata=keys.md(keys.op_b))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert view.availability.sequence == 0


async def _stream(reports: list[pb.OccupancyReport]) -> AsyncIterator[pb.OccupancyReportBatch]:
    for r in reports:
        yield batch(r)
        await asyncio.sleep(0)


async def test_stream_acks_each_report_in_order_and_survives_bad_ones(stub: Stub, keys: Keys,
                                                                      new_lot: NewLot) -> None:
    mine, theirs = await new_lot(), await new_lot(operator="OPB")
    reports = [
        report(mine, 1, general=50),
        report(mine, 2, general=500),          # over capacity
        report(theirs, 1, general=5),          # not mine
        report("no-such-lot", 1, general=5),   # unknown
        report(mine, 2, general=49),
        report(mine, 2, general=49),           # duplicate
        report(mine, 1, general=1),            # stale
        report(mine, 3, general=48),
    ]
    acks = [a async for m in stub.StreamOccupancy(_stream(reports), metadata=keys.md(keys.op_a)) for a in m.acks]
    assert [a.result for a in acks] == [
        pb.ACK_RESULT_ACCEPTED, pb.ACK_RESULT_REJECTED, pb.ACK_RESULT_REJECTED, pb.ACK_RESULT_REJECTED,
        pb.ACK_RESULT_ACCEPTED, pb.ACK_RESULT_DUPLICATE, pb.ACK_RESULT_STALE, pb.ACK_RESULT_ACCEPTED]
    assert [a.error.code for a in acks[1:4]] == [3, 7, 5]  # INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND
    assert [a.sequence for a in acks] == [r.sequence for r in reports]
    view = await stub.GetLot(pb.GetLotRequest(lot_id=mine), metadata=keys.md(keys.driver))
    assert free_of(view.availability) == 48 and view.availability.sequence == 3


async def test_spot_states_drive_counts(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=3, ev=1, disabled=0, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=lot_id, spots=[
        pb.Spot(id="S1", space_class=pb.SPACE_CLASS_GENERAL), pb.Spot(id="S2", space_class=pb.SPACE_CLASS_GENERAL),
        pb.Spot(id="S3", space_class=pb.SPACE_CLASS_GENERAL),
        pb.Spot(id="E1", space_class=pb.SPACE_CLASS_EV, connector_id="CP1-1")]), metadata=keys.md(keys.op_a))
    ack = await stub.PushOccupancy(report(lot_id, 1, spots={"S1": pb.SPOT_STATUS_OCCUPIED, "S2": pb.SPOT_STATUS_FREE,
                                                            "S3": pb.SPOT_STATUS_FREE, "E1": pb.SPOT_STATUS_FREE}),
                                   metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED
    await stub.PushOccupancy(report(lot_id, 2, spots={"S2": pb.SPOT_STATUS_OCCUPIED}), metadata=keys.md(keys.op_a))
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert free_of(view.availability) == 1 and free_of(view.availability, pb.SPACE_CLASS_EV) == 1
    spots = await stub.ListSpots(pb.ListSpotsRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert {s.id: s.status for s in spots.spots} == {"E1": pb.SPOT_STATUS_FREE, "S1": pb.SPOT_STATUS_OCCUPIED,
                                                     "S2": pb.SPOT_STATUS_OCCUPIED, "S3": pb.SPOT_STATUS_FREE}
    assert [s.connector_id for s in spots.spots if s.id == "E1"] == ["CP1-1"]


async def test_unknown_spot_is_rejected_and_nothing_changes(stub: Stub, keys: Keys,
                                                            new_lot: NewLot) -> None:
    lot_id = await new_lot(general=2, ev=0, disabled=0, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=lot_id, spots=[
        pb.Spot(id="S1", space_class=pb.SPACE_CLASS_GENERAL)]), metadata=keys.md(keys.op_a))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.PushOccupancy(report(lot_id, 1, spots={"S1": pb.SPOT_STATUS_FREE, "S9": pb.SPOT_STATUS_FREE}),
                                 metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "S9" in (err.value.details() or "")
    spots = await stub.ListSpots(pb.ListSpotsRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert [s.status for s in spots.spots] == [pb.SPOT_STATUS_UNKNOWN]


async def test_status_full_almost_full_and_closed(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=100, ev=0, disabled=0)
    md = keys.md(keys.op_a)

    async def status_after(seq: int, **kw: object) -> int:
        await stub.PushOccupancy(report(lot_id, seq, **kw), metadata=md)  # type: ignore[arg-type]
        return (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability.status

    assert await status_after(1, general=0) == pb.SITE_STATUS_FULL
    assert await status_after(2, general=10) == pb.SITE_STATUS_ALMOST_FULL
    assert await status_after(3, general=11) == pb.SITE_STATUS_SPACES_AVAILABLE
    assert await status_after(4, general=11, closed=True) == pb.SITE_STATUS_CLOSED


async def test_trend_follows_recent_history(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=100, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    for i, free in enumerate([80, 70, 60, 50, 40]):
        await stub.PushOccupancy(report(lot_id, i + 1, general=free, seconds_ago=240 - i * 60), metadata=md)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)
    assert view.availability.trend == pb.OCCUPANCY_TREND_INCREASING
    other = await new_lot(general=100, ev=0, disabled=0)
    for i, free in enumerate([20, 40, 60, 80]):
        await stub.PushOccupancy(report(other, i + 1, general=free, seconds_ago=200 - i * 60), metadata=md)
    assert (await stub.GetLot(pb.GetLotRequest(lot_id=other), metadata=md)).availability.trend == \
        pb.OCCUPANCY_TREND_DECREASING
    steady = await new_lot(general=100, ev=0, disabled=0)
    for i, free in enumerate([50, 51, 50, 49]):
        await stub.PushOccupancy(report(steady, i + 1, general=free, seconds_ago=200 - i * 60), metadata=md)
    assert (await stub.GetLot(pb.GetLotRequest(lot_id=steady), metadata=md)).availability.trend == \
        pb.OCCUPANCY_TREND_STABLE
