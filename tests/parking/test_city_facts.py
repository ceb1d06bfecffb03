"""What the parking service writes for the city platform beyond the bare change: an exit names the entry of its stay,
the stay's duration and its fee by the lot's published rule; a located (on-street) berth's status carries its
coordinates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from services.parking.model import PriceSpec
from services.parking.rules import parking_fee_fen
from tests.conftest import Keys
from tests.parking.conftest import NewLot, Stub
from tests.parking.helpers import outbox_payloads, report, ts

IN, OUT = pb.PASSAGE_DIRECTION_ENTRY, pb.PASSAGE_DIRECTION_EXIT


def test_the_fee_of_a_stay_follows_the_published_rule() -> None:
    price = PriceSpec(free_minutes=15, first_hour_fen=1000, per_hour_fen=500, daily_cap_fen=6000)
    assert parking_fee_fen(price, 15 * 60) == 0  # within the free minutes
    assert parking_fee_fen(price, 16 * 60) == 1000  # the first hour begun
    assert parking_fee_fen(price, 60 * 60) == 1000
    assert parking_fee_fen(price, 61 * 60) == 1500  # and each further hour begun
    assert parking_fee_fen(price, 20 * 3600) == 6000  # capped per day
    assert parking_fee_fen(price, 25 * 3600) == 6000 + 1000  # a second day begun
    assert parking_fee_fen(PriceSpec(), 5 * 3600) == 0


async def test_an_exit_names_its_entry_the_stay_and_its_fee(stub: Stub, keys: Keys, new_lot: NewLot,
                                                            resources: Resources) -> None:
    lot_id = await new_lot(general=10, ev=0, disabled=0)  # 15 free minutes, 800 fen per hour (the first too)
    md = keys.md(keys.op_a)
    entered = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2, minutes=10)

    async def passage(passage_id: str, direction: int, at: datetime, plate: str = "沪A12345") -> None:
        await stub.RecordPassage(pb.RecordPassageRequest(
            lot_id=lot_id, passage_id=passage_id, direction=direction, plate=plate,  # type: ignore[arg-type]
            plate_colour=pb.PLATE_COLOUR_BLUE, lane="L1", passed_at=ts(at)), metadata=md)

    await passage("in-old", IN, entered - timedelta(days=1))
    await passage("in", IN, entered)
    await passage("in-other", IN, entered + timedelta(minutes=5), plate="沪B99999")
    await passage("out", OUT, entered + timedelta(hours=2, minutes=10))
    await passage("out-unmatched", OUT, entered, plate="沪C11111")
    by_id = {p["passage_id"]: p for p in await outbox_payloads(resources.engine, lot_id, "passage")}
    out = by_id["out"]
    assert out["entry_passage_id"] == "in" and out["duration_s"] == 7800
    assert datetime.fromisoformat(out["entry_passed_at"]) == entered
    assert out["fee_fen"] == 2400  # the first hour, then two more begun
    assert "entry_passage_id" not in by_id["in"] and "entry_passage_id" not in by_id["out-unmatched"]


async def test_a_located_berths_status_carries_its_coordinates(stub: Stub, keys: Keys, new_lot: NewLot,
                                                               resources: Resources) -> None:
    lot_id = await new_lot(general=2, ev=0, disabled=0, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    md = keys.md(keys.op_a)
    await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=lot_id, spots=[
        pb.Spot(id="B1", space_class=pb.SPACE_CLASS_GENERAL, location=cpb.LatLon(lat=31.2301, lon=121.4702)),
        pb.Spot(id="B2", space_class=pb.SPACE_CLASS_GENERAL)]), metadata=md)
    await stub.PushOccupancy(report(lot_id, 1, spots={"B1": pb.SPOT_STATUS_OCCUPIED, "B2": pb.SPOT_STATUS_FREE}),
                             metadata=md)
    by_id = {p["spot_id"]: p for p in await outbox_payloads(resources.engine, lot_id, "spot_status")}
    assert (by_id["B1"]["lat"], by_id["B1"]["lon"]) == (31.2301, 121.4702)
    assert "lat" not in by_id["B2"]
