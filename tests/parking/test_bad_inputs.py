"""Bad inputs: each is refused with the right status and a message naming what is wrong, and
nothing is written (the parking tables and the outbox read exactly as before the call)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from sqlalchemy import text
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import batch, lot, report, ts

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
NAN, INF = float("nan"), float("inf")
MB = 1_000_000

# ----- what "nothing written" means ----------------------------------------------------------

_TABLES = ("parking_lots", "parking_lot_state", "parking_spots", "parking_passages", "outbox")


async def fingerprint(resources: Resources) -> dict[str, str]:
    """A digest of every row of the parking tables and the outbox."""
    out = {}
    async with resources.engine.connect() as conn:
        for table in _TABLES:
            # Only parking's outbox rows: other suites' services (charging's expiry sweep) write theirs.
            parking_kinds = "('lot_static', 'lot_dynamic', 'spot_status', 'passage')"
            where = f" WHERE t.kind IN {parking_kinds}" if table == "outbox" else ""
            out[table] = (await conn.execute(text(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                f"FROM {table} t{where}"))).scalar_one()
    return out


@asynccontextmanager
async def nothing_written(resources: Resources) -> AsyncIterator[None]:
    before = await fingerprint(resources)
    yield
    after = await fingerprint(resources)
    assert after == before, f"tables changed: {[t for t in _TABLES if after[t] != before[t]]}"


# ----- the lots the bad requests aim at --------------------------------------------------------


@dataclass(frozen=True)
class Lots:
    counted: str  # OPA, entry/exit counting; capacity general 100, ev 10, disabled 2, reserved 0
    spotted: str  # OPA, single-space detection; capacity general 3, ev 1; spots S1, S2 (general), E1 (ev)
    fresh: str    # an id no lot has


@pytest.fixture
async def lots(stub: Stub, keys: Keys, new_lot: NewLot, unique: str) -> Lots:
    counted = await new_lot()
    spotted = await new_lot(general=3, ev=1, disabled=0, detection=pb.DETECTION_TYPE_SINGLE_SPACE)
    await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=spotted, spots=[
        pb.Spot(id="S1", space_class=pb.SPACE_CLASS_GENERAL), pb.Spot(id="S2", space_class=pb.SPACE_CLASS_GENERAL),
        pb.Spot(id="E1", space_class=pb.SPACE_CLASS_EV)]), metadata=keys.md(keys.op_a))
    return Lots(counted, spotted, f"N-{unique}")


Build = Callable[[Lots], Message]


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    names: tuple[str, ...]  # each must appear in the status message
    code: grpc.StatusCode = INVALID


def cases(*items: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", items, ids=[c.id for c in items])


async def invoke(stub: Stub, rpc: str, request: Message, md: tuple[tuple[str, str]]) -> None:
    if rpc == "WatchAvailability":
        call = stub.WatchAvailability(request, metadata=md)  # type: ignore[arg-type]
        try:
            await call.read()
        finally:
            call.cancel()
    else:
        await getattr(stub, rpc)(request, metadata=md)


async def expect_refused(stub: Stub, resources: Resources, rpc: str, case: Case, lots: Lots,
                         key: str) -> None:
    request = case.build(lots)
    async with nothing_written(resources):
        with pytest.raises(aio.AioRpcError) as err:
            await invoke(stub, rpc, request, Keys.md(key))
    details = err.value.details() or ""
    assert err.value.code() == case.code, details[:500]
    for name in case.names:
        assert name in details, f"{name!r} not in {details[:500]!r}"


def enum(n: int) -> int:
    """An enum number the proto does not define (proto3 keeps it on the message)."""
    return n


# ----- RegisterLot / UpdateLot ------------------------------------------------------------------


def register(**kw: object) -> Build:
    return lambda lots: pb.RegisterLotRequest(lot=lot(lots.fresh, **kw))  # type: ignore[arg-type]


def register_with(change: Callable[[pb.Lot], None]) -> Build:
    def build(lots: Lots) -> Message:
        out = lot(lots.fresh)
        change(out)
        return pb.RegisterLotRequest(lot=out)
    return build


def _no_location(x: pb.Lot) -> None:
    x.ClearField("location")


def _id(value: str) -> Callable[[pb.Lot], None]:
    def change(x: pb.Lot) -> None:
        x.id = value
    return change


def _set(**fields: object) -> Callable[[pb.Lot], None]:
    def change(x: pb.Lot) -> None:
        for name, value in fields.items():
            setattr(x, name, value)
    return change


def _line(*points: tuple[float, float]) -> Callable[[pb.Lot], None]:
    def change(x: pb.Lot) -> None:
        x.ClearField("line")
        x.line.points.extend(cpb.LatLon(lat=a, lon=b) for a, b in points)
    return change


def _segment_without_line(x: pb.Lot) -> None:
    x.kind = pb.LOT_KIND_ON_STREET_SEGMENT
    x.ClearField("line")


def _period(weekday: int, open_minute: int, close_minute: int) -> Callable[[pb.Lot], None]:
    def change(x: pb.Lot) -> None:
        x.opening_hours.always_open = False
        x.opening_hours.periods.add(weekday=weekday, open_minute=open_minute, close_minute=close_minute)
    return change


@cases(
    Case("lat-91", register(lat=91.0), ("lot.location.lat", "91")),
    Case("lat--90.5", register(lat=-90.5), ("lot.location.lat", "-90.5")),
    Case("lon--181", register(lon=-181.0), ("lot.location.lon", "-181")),
    Case("lon-180.01", register(lon=180.01), ("lot.location.lon",)),
    Case("lat-nan", register(lat=NAN), ("lot.location.lat", "finite")),
    Case("lon-inf", register(lon=INF), ("lot.location.lon", "finite")),
    Case("lat--inf", register(lat=-INF), ("lot.location.lat", "finite")),
    Case("no-location", register_with(_no_location), ("lot.location", "required")),
    Case("negative-general-capacity", register(general=-1), ("lot.capacity.general", "-1")),
    Case("negative-ev-capacity", register(ev=-5), ("lot.capacity.ev", "-5")),
    Case("huge-disabled-capacity", register(disabled=100_001), ("lot.capacity.disabled", "100001")),
    Case("no-spaces-at-all", register(general=0, ev=0, disabled=0), ("lot.capacity", "at least one")),
    Case("empty-id", register_with(_id("")), ("lot.id", "required")),
    Case("id-with-space", register_with(_id("lot 1")), ("lot.id", "1..64")),
    Case("id-65-chars", register_with(_id("L" * 65)), ("lot.id", "1..64")),
    Case("id-with-slash", register_with(_id("a/b")), ("lot.id",)),
    Case("empty-operator", register(operator=""), ("lot.operator_id", "required")),
    Case("operator-with-space", register(operator="OP A"), ("lot.operator_id",)),
    Case("kind-99", register(kind=enum(99)), ("lot.kind", "99")),
    Case("kind-unset", register(kind=0), ("lot.kind", "required")),
    Case("detection-42", register(detection=enum(42)), ("lot.detection_type", "42")),
    Case("name-1MB", register_with(_set(name="x" * MB)), ("lot.name", "1000000")),
    Case("address-1MB", register_with(_set(address="路" * MB)), ("lot.address", "1000000")),
    Case("empty-name", register_with(_set(name="  ")), ("lot.name", "required")),
    Case("name-with-control-char", register_with(_set(name="Lot\x00A")), ("lot.name", "control")),
    Case("region-5-digits", register_with(_set(region_code="31011")), ("lot.region_code",)),
    Case("ttl-5s", register(ttl_s=5), ("lot.occupancy_ttl_s", "5")),
    Case("ttl-negative", register(ttl_s=-1), ("lot.occupancy_ttl_s", "-1")),
    Case("segment-without-line", register_with(_segment_without_line), ("lot.line", "on-street")),
    Case("line-of-one-point", register_with(_line((31.4, 121.49))), ("lot.line.points", "2..")),
    Case("line-point-lat-91", register_with(_line((31.4, 121.49), (91.0, 121.49))),
         ("lot.line.points[1].lat",)),
    Case("weekday-8", register_with(_period(8, 480, 1200)), ("lot.opening_hours.periods[0].weekday", "8")),
    Case("close-minute-1441", register_with(_period(1, 480, 1441)),
         ("lot.opening_hours.periods[0].close_minute", "1441")),
    Case("negative-price", register(per_hour_fen=-100), ("lot.price.per_hour_fen", "-100")),
)
async def test_register_lot_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                    resources: Resources) -> None:
    await expect_refused(stub, resources, "RegisterLot", case, lots, keys.admin)


@cases(
    Case("unknown-lot", lambda lots: pb.UpdateLotRequest(lot=lot(lots.fresh)), ("does not exist",), NOT_FOUND),
    Case("lat-91", lambda lots: pb.UpdateLotRequest(lot=lot(lots.counted, lat=91.0)), ("lot.location.lat",)),
    Case("lon-nan", lambda lots: pb.UpdateLotRequest(lot=lot(lots.counted, lon=NAN)), ("lot.location.lon",)),
    Case("negative-capacity", lambda lots: pb.UpdateLotRequest(lot=lot(lots.counted, ev=-1)),
         ("lot.capacity.ev",)),
    Case("empty-id", lambda lots: pb.UpdateLotRequest(lot=lot("")), ("lot.id", "required")),
)
async def test_update_lot_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                  resources: Resources) -> None:
    await expect_refused(stub, resources, "UpdateLot", case, lots, keys.admin)


# ----- reads by id ------------------------------------------------------------------------------


@cases(
    Case("empty-id", lambda lots: pb.GetLotRequest(lot_id=""), ("lot_id", "required")),
    Case("id-with-space", lambda lots: pb.GetLotRequest(lot_id="lot 1"), ("lot_id", "1..64")),
    Case("id-65-chars", lambda lots: pb.GetLotRequest(lot_id="L" * 65), ("lot_id", "1..64")),
    Case("id-with-newline", lambda lots: pb.GetLotRequest(lot_id="L1\n"), ("lot_id",)),
    Case("unknown-lot", lambda lots: pb.GetLotRequest(lot_id=lots.fresh), ("does not exist",), NOT_FOUND),
)
async def test_get_lot_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                               resources: Resources) -> None:
    await expect_refused(stub, resources, "GetLot", case, lots, keys.driver)


@cases(
    Case("empty-id", lambda lots: pb.ListSpotsRequest(lot_id=""), ("lot_id", "required")),
    Case("unknown-lot", lambda lots: pb.ListSpotsRequest(lot_id=lots.fresh), ("does not exist",), NOT_FOUND),
)
async def test_list_spots_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                  resources: Resources) -> None:
    await expect_refused(stub, resources, "ListSpots", case, lots, keys.driver)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def list_lots(page_token: str = "", page_size: int = 0, operator_id: str = "") -> Build:
    return lambda lots: pb.ListLotsRequest(operator_id=operator_id,
                                           page=cpb.PageRequest(page_size=page_size, page_token=page_token))


@cases(
    Case("token-not-base64", list_lots("not a token"), ("page.page_token",)),
    Case("token-bad-padding", list_lots("garbage"), ("page.page_token",)),
    Case("token-of-no-alphabet-chars", list_lots("%%%%"), ("page.page_token",)),
    Case("token-not-utf8", list_lots(_b64(b"\xff\xfe\xfd")), ("page.page_token",)),
    Case("token-of-a-nul", list_lots(_b64(b"L\x00")), ("page.page_token",)),
    Case("token-201-chars", list_lots("A" * 201), ("page.page_token", "201")),
    Case("page-size-negative", list_lots(page_size=-1), ("page.page_size", "-1")),
    Case("page-size-1001", list_lots(page_size=1001), ("page.page_size", "1001")),
    Case("operator-with-space", list_lots(operator_id="OP A"), ("operator_id",)),
)
async def test_list_lots_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                 resources: Resources) -> None:
    await expect_refused(stub, resources, "ListLots", case, lots, keys.admin)


def list_passages(page_token: str = "", *, lot_id: str | None = None, since_s: int | None = None) -> Build:
    def build(lots: Lots) -> Message:
        req = pb.ListPassagesRequest(lot_id=lots.counted if lot_id is None else lot_id,
                                     page=cpb.PageRequest(page_token=page_token))
        if since_s is not None:
            req.since.seconds = since_s
        return req
    return build


@cases(
    Case("token-of-no-alphabet-chars", list_passages("%%%%"), ("page.page_token",)),
    Case("token-bad-padding", list_passages("garbage"), ("page.page_token",)),
    Case("token-not-a-number", list_passages(_b64(b"abc")), ("page.page_token",)),
    Case("token-superscript-digit", list_passages(_b64("²".encode())), ("page.page_token",)),
    Case("token-number-over-int64", list_passages(_b64(b"9" * 30)), ("page.page_token",)),
    Case("since-year-10000", list_passages(since_s=253_402_300_800), ("since",)),
    Case("empty-lot-id", list_passages(lot_id=""), ("lot_id", "required")),
    Case("unknown-lot", lambda lots: pb.ListPassagesRequest(lot_id=lots.fresh), ("does not exist",), NOT_FOUND),
)
async def test_list_passages_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                     resources: Resources) -> None:
    await expect_refused(stub, resources, "ListPassages", case, lots, keys.police)


# ----- UpsertSpots ------------------------------------------------------------------------------


def spots(*items: pb.Spot, lot_id: str | None = None) -> Build:
    return lambda lots: pb.UpsertSpotsRequest(lot_id=lots.spotted if lot_id is None else lot_id, spots=items)


def general(spot_id: str) -> pb.Spot:
    return pb.Spot(id=spot_id, space_class=pb.SPACE_CLASS_GENERAL)


def _located(lat: float, lon: float) -> pb.Spot:
    return pb.Spot(id="G9", space_class=pb.SPACE_CLASS_GENERAL, location=cpb.LatLon(lat=lat, lon=lon))


@cases(
    Case("2001-spots", spots(*(general(f"G{i}") for i in range(2001))), ("spots", "2001", "2000")),
    Case("no-spots", spots(), ("spots", "at least one")),
    Case("space-class-42", spots(pb.Spot(id="G9", space_class=enum(42))),  # type: ignore[arg-type]
         ("spots[0].space_class", "42")),
    Case("space-class-unset", spots(pb.Spot(id="G9")), ("spots[0].space_class", "required")),
    Case("duplicate-id", spots(general("G9"), general("G9")), ("spots[1].id", "twice")),
    Case("empty-id", spots(general("")), ("spots[0].id", "required")),
    Case("id-with-space", spots(general("G 9")), ("spots[0].id", "1..64")),
    Case("duplicate-1MB-id", spots(general("x" * MB), general("x" * MB)), ("spots[0].id", "1..64")),
    Case("connector-with-space", spots(pb.Spot(id="E9", space_class=pb.SPACE_CLASS_EV, connector_id="CP 1")),
         ("spots[0].connector_id",)),
    Case("location-lat-91", spots(_located(91.0, 121.49)), ("spots[0].location.lat",)),
    Case("location-lon-nan", spots(_located(31.4, NAN)), ("spots[0].location.lon", "finite")),
    Case("more-general-spots-than-capacity", spots(general("G3"), general("G4")), ("general", "capacity of 3")),
    Case("lot-without-single-space-detection", lambda lots: pb.UpsertSpotsRequest(
        lot_id=lots.counted, spots=[general("G1")]), ("lot_id", "single spaces")),
    Case("empty-lot-id", spots(general("G9"), lot_id=""), ("lot_id", "required")),
    Case("unknown-lot", lambda lots: pb.UpsertSpotsRequest(lot_id=lots.fresh, spots=[general("G1")]),
         ("does not exist",), NOT_FOUND),
)
async def test_upsert_spots_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                    resources: Resources) -> None:
    await expect_refused(stub, resources, "UpsertSpots", case, lots, keys.op_a)


async def test_violations_of_a_whole_batch_fit_in_the_status(stub: Stub, keys: Keys, lots: Lots,
                                                             resources: Resources) -> None:
    """2000 bad spots are 2000 violations; the answer must still arrive as INVALID_ARGUMENT."""
    bad = [pb.Spot(id=f"G{i}", space_class=enum(42)) for i in range(2000)]  # type: ignore[arg-type]
    async with nothing_written(resources):
        with pytest.raises(aio.AioRpcError) as err:
            await stub.UpsertSpots(pb.UpsertSpotsRequest(lot_id=lots.spotted, spots=bad), metadata=keys.md(keys.op_a))
    assert err.value.code() == INVALID, err.value.details()
    assert "spots[0].space_class" in (err.value.details() or "")


# ----- PushOccupancy ----------------------------------------------------------------------------


def push(seq: int = 1, *, lot_id: str | None = None, spotted: bool = False, **kw: object) -> Build:
    def build(lots: Lots) -> Message:
        target = lot_id if lot_id is not None else lots.spotted if spotted else lots.counted
        return report(target, seq, **kw)  # type: ignore[arg-type]
    return build


def push_with(change: Callable[[pb.OccupancyReport], None], *, spotted: bool = False) -> Build:
    def build(lots: Lots) -> Message:
        r = report(lots.spotted if spotted else lots.counted, 1, general=10)
        change(r)
        return r
    return build


def _count(space_class: int, free: int) -> Callable[[pb.OccupancyReport], None]:
    def change(r: pb.OccupancyReport) -> None:
        r.ClearField("counts")
        r.counts.add(space_class=space_class, free=free)
    return change


def _add_count(space_class: int, free: int) -> Callable[[pb.OccupancyReport], None]:
    def change(r: pb.OccupancyReport) -> None:
        r.counts.add(space_class=space_class, free=free)
    return change


def _no_observed_at(r: pb.OccupancyReport) -> None:
    r.ClearField("observed_at")


def _observed(seconds: int) -> Callable[[pb.OccupancyReport], None]:
    def change(r: pb.OccupancyReport) -> None:
        r.observed_at.seconds = seconds
    return change


def _report_id(value: str) -> Callable[[pb.OccupancyReport], None]:
    def change(r: pb.OccupancyReport) -> None:
        r.report_id = value
    return change


def _spot_states(states: Mapping[str, int], *, keep_counts: bool = False) -> Callable[[pb.OccupancyReport], None]:
    def change(r: pb.OccupancyReport) -> None:
        if not keep_counts:
            r.ClearField("counts")
        for spot_id, status in states.items():
            r.spots.add(spot_id=spot_id, status=status)
    return change


def _empty(r: pb.OccupancyReport) -> None:
    r.ClearField("counts")


_EVERY_SPOT_FREE = {f"S{i}": pb.SPOT_STATUS_FREE for i in range(2001)}


@cases(
    Case("sequence-0", push(0, general=10), ("sequence", ">= 1", "0")),
    Case("sequence-negative", push(-7, general=10), ("sequence", "-7")),
    Case("observed-at-missing", push_with(_no_observed_at), ("observed_at", "required")),
    Case("observed-at-90s-ahead", push(general=10, seconds_ago=-90), ("observed_at", "future")),
    Case("observed-at-1-hour-ahead", push(general=10, seconds_ago=-3600), ("observed_at", "future")),
    Case("observed-at-1990", push_with(_observed(631_152_000)), ("observed_at", "2000")),
    Case("observed-at-year-10000", push_with(_observed(253_402_300_800)), ("observed_at", "valid")),
    Case("negative-general", push(general=-1), ("counts[0].free", "general", "-1")),
    Case("negative-ev", push_with(_count(pb.SPACE_CLASS_EV, -2)), ("counts[0].free", "ev", "-2")),
    Case("negative-disabled", push_with(_count(pb.SPACE_CLASS_DISABLED, -3)), ("counts[0].free", "disabled")),
    Case("negative-reserved", push_with(_count(pb.SPACE_CLASS_RESERVED, -1)), ("counts[0].free", "reserved")),
    Case("general-over-capacity", push(general=101), ("counts", "general", "101", "100")),
    Case("ev-over-capacity", push(general=10, ev=11), ("counts", "ev", "11", "10")),
    Case("disabled-over-capacity", push_with(_add_count(pb.SPACE_CLASS_DISABLED, 3)), ("counts", "disabled", "3")),
    Case("free-reserved-on-a-lot-without-reserved-spaces", push_with(_add_count(pb.SPACE_CLASS_RESERVED, 1)),
         ("counts", "reserved")),
    Case("zero-reserved-on-a-lot-without-reserved-spaces", push_with(_add_count(pb.SPACE_CLASS_RESERVED, 0)),
         ("counts", "reserved")),
    Case("class-twice", push_with(_add_count(pb.SPACE_CLASS_GENERAL, 9)), ("counts[1].space_class", "general",
                                                                         "twice")),
    Case("class-42", push_with(_count(enum(42), 1)), ("counts[0].space_class", "42")),
    Case("class-unset", push_with(_count(0, 1)), ("counts[0].space_class", "required")),
    Case("counts-and-spots", push_with(_spot_states({"S1": pb.SPOT_STATUS_FREE}, keep_counts=True), spotted=True),
         ("counts", "not both")),
    Case("nothing-reported", push_with(_empty), ("counts", "a report needs")),
    Case("spot-status-17", push_with(_spot_states({"S1": enum(17)}), spotted=True), ("spots[0].status", "17")),
    Case("spot-status-unset", push_with(_spot_states({"S1": 0}), spotted=True), ("spots[0].status", "required")),
    Case("spot-id-with-space", push_with(_spot_states({"S 1": pb.SPOT_STATUS_FREE}), spotted=True),
         ("spots[0].spot_id",)),
    Case("2001-spot-states", push_with(_spot_states(_EVERY_SPOT_FREE), spotted=True), ("spots", "2001", "2000")),
    Case("unknown-spot", push_with(_spot_states({"S9": pb.SPOT_STATUS_FREE}), spotted=True), ("spots", "S9")),
    Case("spot-states-on-a-counted-lot", push_with(_spot_states({"S1": pb.SPOT_STATUS_FREE})),
         ("spots", "single spaces")),
    Case("report-id-65-chars", push_with(_report_id("r" * 65)), ("report_id", "65")),
    Case("report-id-1MB", push_with(_report_id("r" * MB)), ("report_id", "1000000")),
    Case("empty-lot-id", push(lot_id="", general=10), ("lot_id", "required")),
    Case("lot-id-65-chars", push(lot_id="L" * 65, general=10), ("lot_id", "1..64")),
    Case("unknown-lot", lambda lots: report(lots.fresh, 1, general=10), ("does not exist",), NOT_FOUND),
)
async def test_push_occupancy_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                      resources: Resources) -> None:
    await expect_refused(stub, resources, "PushOccupancy", case, lots, keys.op_a)


# ----- RecordPassage ----------------------------------------------------------------------------


def passage(lot_id: str | None = None, **kw: object) -> Build:
    def build(lots: Lots) -> Message:
        fields: dict[str, object] = {"passage_id": "P1", "direction": pb.PASSAGE_DIRECTION_ENTRY,
                                     "plate": "沪A12345", "plate_colour": pb.PLATE_COLOUR_BLUE, "passed_at": ts()}
        # Values may be callables, so that times are taken when the case runs, not when it is collected.
        fields.update({k: v() if callable(v) else v for k, v in kw.items()})
        return pb.RecordPassageRequest(lot_id=lots.counted if lot_id is None else lot_id,
                                       **fields)  # type: ignore[arg-type]
    return build


@cases(
    Case("empty-plate", passage(plate=""), ("plate", "required")),
    Case("blank-plate", passage(plate="   "), ("plate", "required")),
    Case("plate-with-space", passage(plate="沪A 12345"), ("plate", "letters, digits")),
    Case("plate-with-markup", passage(plate="沪A<b>1</b>"), ("plate", "letters, digits")),
    Case("plate-17-chars", passage(plate="A" * 17), ("plate", "17")),
    Case("direction-9", passage(direction=enum(9)), ("direction", "9")),
    Case("direction-unset", passage(direction=0), ("direction", "required")),
    Case("plate-colour-9", passage(plate_colour=enum(9)), ("plate_colour", "9")),
    Case("class-without-capacity", passage(space_class=pb.SPACE_CLASS_RESERVED), ("space_class", "reserved")),
    Case("class-42", passage(space_class=enum(42)), ("space_class", "42")),
    Case("passed-at-missing", passage(passed_at=None), ("passed_at", "required")),
    Case("passed-at-90s-ahead", passage(passed_at=lambda: ts(seconds_ago=-90)), ("passed_at", "future")),
    Case("empty-passage-id", passage(passage_id=""), ("passage_id", "required")),
    Case("passage-id-65-chars", passage(passage_id="P" * 65), ("passage_id", "1..64")),
    Case("lane-65-chars", passage(lane="L" * 65), ("lane", "65")),
    Case("empty-lot-id", passage(lot_id=""), ("lot_id", "required")),
    Case("unknown-lot", lambda lots: passage(lot_id=lots.fresh)(lots), ("does not exist",), NOT_FOUND),
)
async def test_record_passage_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                      resources: Resources) -> None:
    await expect_refused(stub, resources, "RecordPassage", case, lots, keys.op_a)


# ----- FindAvailable / WatchAvailability ---------------------------------------------------------


def find(lat: float = 31.40, lon: float = 121.49, radius_m: float = 1000, **kw: object) -> Build:
    return lambda lots: pb.FindAvailableRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=radius_m,
                                                **kw)  # type: ignore[arg-type]


@cases(
    Case("lat-91", find(lat=91.0), ("location.lat", "91")),
    Case("lon--181", find(lon=-181.0), ("location.lon", "-181")),
    Case("lat-nan", find(lat=NAN), ("location.lat", "finite")),
    Case("lon-inf", find(lon=INF), ("location.lon", "finite")),
    Case("no-location", lambda lots: pb.FindAvailableRequest(radius_m=1000), ("location", "required")),
    Case("radius-0", find(radius_m=0), ("radius_m", "0")),
    Case("radius-negative", find(radius_m=-5), ("radius_m", "-5")),
    Case("radius-over-50km", find(radius_m=50_001), ("radius_m", "50001")),
    Case("radius-nan", find(radius_m=NAN), ("radius_m", "finite")),
    Case("limit-201", find(limit=201), ("limit", "201")),
    Case("limit-negative", find(limit=-1), ("limit", "-1")),
    Case("class-42", find(space_class=enum(42)), ("space_class", "42")),
    Case("kind-99", find(kinds=[pb.LOT_KIND_GARAGE, enum(99)]), ("kinds[1]", "99")),
    Case("min-free-negative", find(min_free=-1), ("min_free", "-1")),
    Case("max-price-negative", find(max_price_per_hour_fen=-1), ("max_price_per_hour_fen", "-1")),
)
async def test_find_available_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                      resources: Resources) -> None:
    await expect_refused(stub, resources, "FindAvailable", case, lots, keys.driver)


def box(s: float, w: float, n: float, e: float) -> Build:
    return lambda lots: pb.WatchAvailabilityRequest(snapshot=True, area=cpb.Area(box=cpb.BoundingBox(
        south_west=cpb.LatLon(lat=s, lon=w), north_east=cpb.LatLon(lat=n, lon=e))))


def circle(lat: float, lon: float, radius_m: float) -> Build:
    return lambda lots: pb.WatchAvailabilityRequest(snapshot=True, area=cpb.Area(circle=cpb.Circle(
        center=cpb.LatLon(lat=lat, lon=lon), radius_m=radius_m)))


@cases(
    Case("no-area", lambda lots: pb.WatchAvailabilityRequest(snapshot=True), ("area", "box or a circle")),
    Case("inverted-box", box(31.5, 121.5, 31.3, 121.4), ("area.box", "south_west")),
    Case("box-inverted-east-west", box(31.3, 121.5, 31.5, 121.4), ("area.box", "south_west")),
    Case("box-over-1-degree", box(31.0, 121.0, 32.5, 121.5), ("area.box", "1 degree")),
    Case("box-corner-lat-91", box(31.0, 121.0, 91.0, 121.5), ("area.box.north_east.lat",)),
    Case("box-corner-nan", box(NAN, 121.0, 31.5, 121.5), ("area.box.south_west.lat", "finite")),
    Case("circle-radius-0", circle(31.4, 121.49, 0), ("area.circle.radius_m", "0")),
    Case("circle-radius-over-50km", circle(31.4, 121.49, 60_000), ("area.circle.radius_m", "60000")),
    Case("circle-center-lon--181", circle(31.4, -181.0, 100), ("area.circle.center.lon",)),
)
async def test_watch_availability_refuses(case: Case, stub: Stub, keys: Keys, lots: Lots,
                                          resources: Resources) -> None:
    await expect_refused(stub, resources, "WatchAvailability", case, lots, keys.driver)


# ----- the error's details ----------------------------------------------------------------------


async def test_invalid_argument_carries_bad_request_field_violations(stub: Stub, keys: Keys,
                                                                     unique: str) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"N-{unique}", lat=91.0, ev=-1)),
                               metadata=keys.md(keys.admin))
    status = rpc_status.from_call(err.value)  # also checks code and message agree with the trailer
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    violations: dict[str, str] = {}
    reasons = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.update((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    assert set(violations) == {"lot.location.lat", "lot.capacity.ev"}
    assert "91" in violations["lot.location.lat"] and "-1" in violations["lot.capacity.ev"]
    assert reasons == ["INVALID_ARGUMENT"]


async def test_refused_report_in_a_stream_names_the_field_in_its_ack(stub: Stub, keys: Keys,
                                                                     lots: Lots, resources: Resources) -> None:
    bad = [report(lots.counted, 0, general=10), report(lots.counted, 1, general=-1),
           report(lots.counted, 1, general=10, seconds_ago=-120)]
    bad[2].report_id = "x" * 100

    async def feed() -> AsyncIterator[pb.OccupancyReportBatch]:
        for r in bad:
            yield batch(r)

    async with nothing_written(resources):
        acks = [a async for m in stub.StreamOccupancy(feed(), metadata=keys.md(keys.op_a)) for a in m.acks]
    assert [a.result for a in acks] == [pb.ACK_RESULT_REJECTED] * 3
    assert [a.error.code for a in acks] == [code_pb2.INVALID_ARGUMENT] * 3
    assert "sequence" in acks[0].error.message
    assert "counts[0].free" in acks[1].error.message and "general" in acks[1].error.message
    assert "observed_at" in acks[2].error.message and "report_id" in acks[2].error.message
    assert acks[2].report_id == "x" * 64


# ----- messages over the size limit --------------------------------------------------------------


async def test_message_over_4mb_is_resource_exhausted_and_the_channel_keeps_working(
        stub: Stub, keys: Keys, unique: str, resources: Resources) -> None:
    huge = lot(f"N-{unique}")
    huge.name = "x" * 10_000_000
    async with nothing_written(resources):
        with pytest.raises(aio.AioRpcError) as err:
            await stub.RegisterLot(pb.RegisterLotRequest(lot=huge), metadata=keys.md(keys.admin))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    created = await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(f"N-{unique}")), metadata=keys.md(keys.admin))
    assert created.id == f"N-{unique}"


async def test_stream_message_over_4mb_ends_that_stream_only(stub: Stub, keys: Keys,
                                                             new_lot: NewLot) -> None:
    lot_id = await new_lot()
    huge = report(lot_id, 2, general=10)
    huge.report_id = "r" * 10_000_000
    md = keys.md(keys.op_a)

    first_acked = asyncio.Event()

    async def feed() -> AsyncIterator[pb.OccupancyReportBatch]:
        yield batch(report(lot_id, 1, general=20))
        await asyncio.wait_for(first_acked.wait(), 20)
        yield batch(huge)

    acks: list[pb.OccupancyAck] = []
    with pytest.raises(aio.AioRpcError) as err:
        async for message in stub.StreamOccupancy(feed(), metadata=md):
            acks.extend(message.acks)
            first_acked.set()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [a.result for a in acks] == [pb.ACK_RESULT_ACCEPTED]

    async def good() -> AsyncIterator[pb.OccupancyReportBatch]:
        yield batch(report(lot_id, 2, general=19))

    assert [a.result async for m in stub.StreamOccupancy(good(), metadata=md) for a in m.acks] == [
        pb.ACK_RESULT_ACCEPTED]
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=md)
    assert view.availability.sequence == 2

