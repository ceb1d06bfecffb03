"""Passages: entry/exit counting on balancing lots, idempotency, and the passage log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import text
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import free_of, report, ts

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

IN, OUT = pb.PASSAGE_DIRECTION_ENTRY, pb.PASSAGE_DIRECTION_EXIT


def passage(lot_id: str, passage_id: str, direction: int, *, seconds_ago: float = 0, at: datetime | None = None,
            plate: str = "沪A12345", space_class: int = 0) -> pb.RecordPassageRequest:
    return pb.RecordPassageRequest(lot_id=lot_id, passage_id=passage_id, direction=direction,  # type: ignore[arg-type]
                                   plate=plate, plate_colour=pb.PLATE_COLOUR_BLUE, lane="L1",
                                   passed_at=ts(at, seconds_ago=seconds_ago),
                                   space_class=space_class)  # type: ignore[arg-type]


async def _outbox(resources: Resources, lot_id: str, kind: str) -> int:
    async with resources.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM outbox WHERE aggregate_id = :id AND kind = :kind"),
                                       {"id": lot_id, "kind": kind})).scalar_one())


async def test_entries_take_and_exits_return_spaces(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6), metadata=md)
    frees = []
    for i, d in enumerate([IN, IN, OUT, IN]):
        resp = await stub.RecordPassage(passage(lot_id, f"p{i}", d), metadata=md)
        assert resp.created
        frees.append(free_of(resp.availability))
    assert frees == [5, 4, 5, 4]
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert free_of(view.availability) == 4 and view.availability.total_free == 4
    assert view.availability.sequence == 1  # passages are not reports


async def test_passages_count_the_class_they_name(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=4, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6, ev=2), metadata=md)
    resp = await stub.RecordPassage(passage(lot_id, "e1", IN, space_class=pb.SPACE_CLASS_EV), metadata=md)
    assert free_of(resp.availability, pb.SPACE_CLASS_EV) == 1 and free_of(resp.availability) == 6


async def test_counts_are_clamped_to_zero_and_capacity(stub: Stub, keys: Keys,
                                                       new_lot: NewLot) -> None:
    lot_id = await new_lot(general=2, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    frees = []
    for i, d in enumerate([OUT, IN, IN, IN, IN, OUT, OUT, OUT, OUT]):
        resp = await stub.RecordPassage(passage(lot_id, f"p{i}", d), metadata=md)
        frees.append(free_of(resp.availability))
    # Before any count the lot is taken as empty: an exit cannot free more than the capacity.
    assert frees == [2, 1, 0, 0, 0, 1, 2, 2, 2]
    full = await stub.RecordPassage(passage(lot_id, "q", IN), metadata=md)
    await stub.RecordPassage(passage(lot_id, "r", IN), metadata=md)
    assert free_of(full.availability) == 1
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)
    assert free_of(view.availability) == 0 and view.availability.status == pb.SITE_STATUS_FULL


async def test_repeated_passage_id_is_idempotent(stub: Stub, keys: Keys, new_lot: NewLot,
                                                 resources: Resources) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6), metadata=md)
    first = await stub.RecordPassage(passage(lot_id, "same", IN), metadata=md)
    dynamic = await _outbox(resources, lot_id, "lot_dynamic")
    again = await stub.RecordPassage(passage(lot_id, "same", IN), metadata=md)
    other_way = await stub.RecordPassage(passage(lot_id, "same", OUT, seconds_ago=3), metadata=md)
    assert first.created and not again.created and not other_way.created
    assert free_of(first.availability) == free_of(again.availability) == free_of(other_way.availability) == 5
    assert free_of((await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability) == 5
    assert await _outbox(resources, lot_id, "passage") == 1
    assert await _outbox(resources, lot_id, "lot_dynamic") == dynamic
    listed = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=md)
    assert [(p.passage_id, p.direction) for p in listed.passages] == [("same", IN)]


async def test_late_passage_counts_but_keeps_observed_at(stub: Stub, keys: Keys,
                                                         new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6), metadata=md)
    before = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    late = await stub.RecordPassage(passage(lot_id, "late", IN, seconds_ago=120), metadata=md)
    assert late.created and free_of(late.availability) == 5
    assert late.availability.freshness.observed_at == before.freshness.observed_at
    after = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    assert free_of(after) == 5 and after.freshness.observed_at == before.freshness.observed_at
    assert not after.freshness.stale


async def test_newer_passage_moves_observed_at_forward(stub: Stub, keys: Keys,
                                                       new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6, seconds_ago=60), metadata=md)
    at = datetime.now(UTC) - timedelta(seconds=1)
    resp = await stub.RecordPassage(passage(lot_id, "now", OUT, at=at), metadata=md)
    assert resp.availability.freshness.observed_at.ToDatetime(tzinfo=UTC) == at
    assert free_of(resp.availability) == 7


async def test_passage_on_a_non_balancing_lot_is_recorded_without_changing_occupancy(
        stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0, detection=pb.DETECTION_TYPE_MANUAL)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6), metadata=md)
    before = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    dynamic = await _outbox(resources, lot_id, "lot_dynamic")
    resp = await stub.RecordPassage(passage(lot_id, "p1", IN), metadata=md)
    assert resp.created and free_of(resp.availability) == 6
    after = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    assert after == before
    assert await _outbox(resources, lot_id, "passage") == 1
    assert await _outbox(resources, lot_id, "lot_dynamic") == dynamic
    listed = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=md)
    assert [p.passage_id for p in listed.passages] == ["p1"]


async def test_passage_on_a_lot_never_counted_stays_unknown_when_not_balancing(
        stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    md = keys.md(keys.op_a)
    resp = await stub.RecordPassage(passage(lot_id, "p1", IN), metadata=md)
    assert resp.created and resp.availability.status == pb.SITE_STATUS_UNKNOWN
    assert free_of(resp.availability) is None


async def _record_out_of_order(stub: Stub, keys: Keys, lot_id: str,
                               base: datetime) -> dict[str, datetime]:
    """Five passages a minute apart, received in an order that is not their order of passing."""
    md = keys.md(keys.op_a)
    passed = {f"p{i}": base + timedelta(minutes=i) for i in range(5)}
    for pid in ("p1", "p3", "p0", "p4", "p2"):
        await stub.RecordPassage(passage(lot_id, pid, IN if pid in ("p0", "p2", "p4") else OUT, at=passed[pid]),
                                 metadata=md)
    return passed


async def test_list_passages_is_newest_first_with_paging(stub: Stub, keys: Keys,
                                                         new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    passed = await _record_out_of_order(stub, keys, lot_id, datetime.now(UTC) - timedelta(minutes=10))
    pages: list[list[str]] = []
    token = ""
    while True:
        resp = await stub.ListPassages(pb.ListPassagesRequest(
            lot_id=lot_id, page=cpb.PageRequest(page_size=2, page_token=token)), metadata=md)
        pages.append([p.passage_id for p in resp.passages])
        token = resp.page.next_page_token
        if not token:
            break
    assert pages == [["p4", "p3"], ["p2", "p1"], ["p0"]]
    whole = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=md)
    assert [p.passage_id for p in whole.passages] == ["p4", "p3", "p2", "p1", "p0"]
    assert [p.passed_at.ToDatetime(tzinfo=UTC) for p in whole.passages] == sorted(passed.values(), reverse=True)
    first = whole.passages[0]
    assert (first.plate, first.plate_colour, first.lane, first.direction) == ("沪A12345", pb.PLATE_COLOUR_BLUE,
                                                                              "L1", IN)
    assert first.space_class == pb.SPACE_CLASS_GENERAL and first.HasField("received_at")
    assert not whole.plates_redacted and not whole.page.next_page_token


async def test_list_passages_since_is_inclusive(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    passed = await _record_out_of_order(stub, keys, lot_id, datetime.now(UTC) - timedelta(minutes=10))
    since = ts(passed["p2"])
    resp = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id, since=since), metadata=md)
    assert [p.passage_id for p in resp.passages] == ["p4", "p3", "p2"]
    paged = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id, since=since,
                                                           page=cpb.PageRequest(page_size=2)), metadata=md)
    assert [p.passage_id for p in paged.passages] == ["p4", "p3"]
    rest = await stub.ListPassages(pb.ListPassagesRequest(
        lot_id=lot_id, since=since, page=cpb.PageRequest(page_size=2, page_token=paged.page.next_page_token)),
        metadata=md)
    assert [p.passage_id for p in rest.passages] == ["p2"] and not rest.page.next_page_token
