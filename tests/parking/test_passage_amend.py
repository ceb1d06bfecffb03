"""AmendPassage: an operator corrects or voids a recorded passage; the city platform gets a correction or
void record naming the original, written in the transaction of the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import free_of, outbox_payloads, report, ts
from tests.parking.test_bad_inputs import nothing_written

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

IN = pb.PASSAGE_DIRECTION_ENTRY
CORRECT, VOID = pb.PASSAGE_AMEND_ACTION_CORRECT, pb.PASSAGE_AMEND_ACTION_VOID


async def _lot_with_passage(stub: Stub, keys: Keys, new_lot: NewLot, passage_id: str = "p1",
                            passed_at: datetime | None = None) -> str:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    await stub.RecordPassage(pb.RecordPassageRequest(
        lot_id=lot_id, passage_id=passage_id, direction=IN, plate="沪A12345", plate_colour=pb.PLATE_COLOUR_BLUE,
        lane="L1", passed_at=ts(passed_at, seconds_ago=60)), metadata=keys.md(keys.op_a))
    return lot_id


def amend(lot_id: str, action: int, passage_id: str = "p1", reason: str = "plate misread", **fields: Any,
          ) -> pb.AmendPassageRequest:
    return pb.AmendPassageRequest(lot_id=lot_id, passage_id=passage_id, action=action,  # type: ignore[arg-type]
                                  reason=reason, **fields)




async def test_correction_replaces_the_fields_given_and_keeps_the_rest(stub: Stub, keys: Keys,
                                                                      new_lot: NewLot) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    md = keys.md(keys.op_a)
    out = await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346", plate_colour=pb.PLATE_COLOUR_GREEN),
                                  metadata=md)
    assert (out.plate, out.plate_colour, out.lane, out.direction) == ("沪A12346", pb.PLATE_COLOUR_GREEN, "L1", IN)
    assert out.state == pb.PASSAGE_STATE_CORRECTED and out.revision == 1 and out.amend_reason == "plate misread"
    assert out.HasField("amended_at")
    listed = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=md)
    assert listed.passages[0] == out


async def test_correcting_the_time_and_lane(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    out = await stub.AmendPassage(amend(lot_id, CORRECT, passed_at=ts(at), lane="L2", reason="camera clock"),
                                  metadata=keys.md(keys.op_a))
    assert out.passed_at.ToDatetime(tzinfo=UTC) == at and out.lane == "L2" and out.plate == "沪A12345"


async def test_correction_goes_out_as_a_passage_record_naming_the_original(
        stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346"), metadata=keys.md(keys.op_a))
    original, correction = await outbox_payloads(resources.engine, lot_id, "passage")
    assert original["record_type"] == "normal" and "original_passage_id" not in original
    assert correction["record_type"] == "correction" and correction["original_passage_id"] == "p1"
    assert correction["passage_id"] == "p1" and correction["plate"] == "沪A12346" and correction["revision"] == 1
    assert correction["reason"] == "plate misread" and correction["amended_at"]
    assert correction["passed_at"] == original["passed_at"] and correction["received_at"] == original["received_at"]


async def test_void_marks_the_passage_voided_and_sends_a_void_record(
        stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    out = await stub.AmendPassage(amend(lot_id, VOID, reason="double read"), metadata=keys.md(keys.op_a))
    assert out.state == pb.PASSAGE_STATE_VOIDED and out.revision == 1 and out.plate == "沪A12345"
    void = (await outbox_payloads(resources.engine, lot_id, "passage"))[-1]
    assert void["record_type"] == "void" and void["original_passage_id"] == "p1" and void["reason"] == "double read"


async def test_each_amendment_is_kept_with_who_made_it_and_the_values_before_and_after(
        stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    md = keys.md(keys.op_a)
    await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346"), metadata=md)
    await stub.AmendPassage(amend(lot_id, VOID, reason="not a vehicle"), metadata=md)
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT a.revision, a.action, a.reason, a.amended_by, a.before, a.after FROM parking_passage_amendments a "
            "JOIN parking_passages p ON p.id = a.passage_row WHERE p.lot_id = :id ORDER BY a.revision"),
            {"id": lot_id})).all()
    assert [(r.revision, r.action, r.reason) for r in rows] == [(1, CORRECT, "plate misread"),
                                                                (2, VOID, "not a vehicle")]
    assert rows[0].before["plate"] == "沪A12345" and rows[0].after["plate"] == "沪A12346"
    assert rows[0].amended_by.startswith("operator:OPA/")


async def test_amending_a_voided_passage_is_a_failed_precondition(stub: Stub, keys: Keys, new_lot: NewLot,
                                                                 resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    md = keys.md(keys.op_a)
    await stub.AmendPassage(amend(lot_id, VOID), metadata=md)
    for request in (amend(lot_id, VOID), amend(lot_id, CORRECT, plate="沪A99999")):
        async with nothing_written(resources):
            with pytest.raises(aio.AioRpcError) as err:
                await stub.AmendPassage(request, metadata=md)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "voided" in (err.value.details() or "")


async def test_an_unknown_passage_or_lot_is_not_found(stub: Stub, keys: Keys, new_lot: NewLot,
                                                     resources: Resources, unique: str) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    for request, says in ((amend(lot_id, VOID, passage_id="nope"), "no passage nope"),
                          (amend(f"N-{unique}", VOID), "does not exist")):
        async with nothing_written(resources):
            with pytest.raises(aio.AioRpcError) as err:
                await stub.AmendPassage(request, metadata=keys.md(keys.op_a))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and says in (err.value.details() or "")


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"action": CORRECT}, "plate", "at least one of"),
    ({"action": VOID, "plate": "沪A12346"}, "plate", "a void corrects nothing"),
    ({"action": VOID, "lane": ""}, "lane", "a void corrects nothing"),
    ({"action": 0}, "action", "is required"),
    ({"action": CORRECT, "plate": "沪A 1234"}, "plate", "letters, digits"),
    ({"action": CORRECT, "plate": ""}, "plate", "is required"),
    ({"action": CORRECT, "plate_colour": 0}, "plate_colour", "is required"),
    ({"action": CORRECT, "plate_colour": 42}, "plate_colour", "unknown value 42"),
    ({"action": CORRECT, "lane": "L" * 65}, "lane", "at most 64"),
    ({"action": CORRECT, "plate": "沪A12346", "reason": ""}, "reason", "is required"),
    ({"action": CORRECT, "plate": "沪A12346", "reason": "x" * 501}, "reason", "at most 500"),
], ids=["correct-nothing", "void-with-plate", "void-with-lane", "no-action", "bad-plate", "empty-plate",
        "unspecified-colour", "unknown-colour", "long-lane", "no-reason", "long-reason"])
async def test_bad_amendments_are_invalid_and_name_the_field(fields: dict[str, Any], field: str, says: str,
                                                             stub: Stub, keys: Keys, new_lot: NewLot,
                                                             resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    fields = {"reason": "plate misread", **fields}
    request = pb.AmendPassageRequest(lot_id=lot_id, passage_id="p1", **fields)
    async with nothing_written(resources):
        with pytest.raises(aio.AioRpcError) as err:
            await stub.AmendPassage(request, metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field}: " in (err.value.details() or "") and says in (err.value.details() or "")


async def test_a_correction_in_the_future_is_invalid(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.AmendPassage(amend(lot_id, CORRECT, passed_at=ts(seconds_ago=-3600)), metadata=keys.md(keys.op_a))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "passed_at" in (err.value.details() or "")


async def test_a_correction_that_changes_nothing_writes_and_sends_nothing(
        stub: Stub, keys: Keys, new_lot: NewLot, resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    md = keys.md(keys.op_a)
    first = await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346"), metadata=md)
    async with nothing_written(resources):
        again = await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346"), metadata=md)
    assert again == first and again.revision == 1


async def test_amendments_leave_availability_alone(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)
    md = keys.md(keys.op_a)
    await stub.PushOccupancy(report(lot_id, 1, general=6), metadata=md)
    await stub.RecordPassage(pb.RecordPassageRequest(lot_id=lot_id, passage_id="p1", direction=IN, plate="沪A12345",
                                                     plate_colour=pb.PLATE_COLOUR_BLUE, passed_at=ts()), metadata=md)
    before = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    await stub.AmendPassage(amend(lot_id, VOID), metadata=md)
    after = (await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)).availability
    assert after == before and free_of(after) == 5


async def test_only_the_lots_own_operator_may_amend(stub: Stub, keys: Keys, new_lot: NewLot,
                                                   resources: Resources) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    for who, says in ((keys.op_b, "belongs to another operator"), (keys.admin, "may not call AmendPassage"),
                      (keys.police, "may not call AmendPassage")):
        async with nothing_written(resources):
            with pytest.raises(aio.AioRpcError) as err:
                await stub.AmendPassage(amend(lot_id, VOID), metadata=keys.md(who))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and says in (err.value.details() or "")


async def test_the_reason_is_hidden_from_callers_who_may_not_see_plates(stub: Stub, keys: Keys,
                                                                       new_lot: NewLot) -> None:
    lot_id = await _lot_with_passage(stub, keys, new_lot)
    await stub.AmendPassage(amend(lot_id, CORRECT, plate="沪A12346", reason="was 沪A12345"),
                            metadata=keys.md(keys.op_a))
    admin = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=keys.md(keys.admin))
    police = await stub.ListPassages(pb.ListPassagesRequest(lot_id=lot_id), metadata=keys.md(keys.police))
    assert admin.plates_redacted and admin.passages[0].plate == "***" and admin.passages[0].amend_reason == ""
    assert admin.passages[0].state == pb.PASSAGE_STATE_CORRECTED
    assert police.passages[0].amend_reason == "was 沪A12345"
