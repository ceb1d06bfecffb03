"""Bad inputs: each is refused with the right status and a message naming what is wrong, and nothing
is written (the charging tables and the outbox read exactly as before the call)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import Message
from grpc import aio
from sqlalchemy import text
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.common.runtime import Resources
from tests.charging.conftest import NewStation, Stub
from tests.charging.helpers import AVAILABLE, report, station, ts
from tests.conftest import Keys

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
NAN, INF = float("nan"), float("inf")
_TABLES = ("charging_stations", "charging_connectors", "charging_connector_state", "charging_charge_points",
           "charging_sessions", "charging_bay_flags", "outbox")


async def fingerprint(resources: Resources) -> dict[str, str]:
    out = {}
    async with resources.engine.connect() as conn:
        for table in _TABLES:
            out[table] = (await conn.execute(text(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                f"FROM {table} t"))).scalar_one()
    return out


@asynccontextmanager
async def nothing_written(resources: Resources) -> AsyncIterator[None]:
    before = await fingerprint(resources)
    yield
    after = await fingerprint(resources)
    assert after == before, f"tables changed: {[t for t in _TABLES if after[t] != before[t]]}"


@dataclass(frozen=True)
class Target:
    station: pb.Station  # OPA, one GB/T DC connector <id>-C1, charge point <id>-CP (not registered)
    fresh: str  # an id nothing has

    @property
    def connector(self) -> str:
        return self.station.evses[0].connectors[0].id


@pytest.fixture
async def target(new_station: NewStation, unique: str) -> Target:
    st = await new_station(charge_point=f"BAD-{unique}-CP")
    return Target(st, f"N-{unique}")


Build = Callable[[Target], Message]


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    names: tuple[str, ...]  # each must appear in the status message
    code: grpc.StatusCode = INVALID


def cases(*items: Case) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", items, ids=[c.id for c in items])


async def expect_refused(stub: Stub, resources: Resources, rpc: str, case: Case, t: Target, key: str) -> None:
    request = case.build(t)
    async with nothing_written(resources):
        with pytest.raises(aio.AioRpcError) as err:
            if rpc == "WatchStation":
                call = stub.WatchStation(request, metadata=Keys.md(key))  # type: ignore[arg-type]
                try:
                    await call.read()
                finally:
                    call.cancel()
            else:
                await getattr(stub, rpc)(request, metadata=Keys.md(key))
    details = err.value.details() or ""
    assert err.value.code() == case.code, details[:500]
    for name in case.names:
        assert name in details, f"{name!r} not in {details[:500]!r}"


# ----- RegisterStation --------------------------------------------------------------------------


def register(change: Callable[[pb.Station], None] | None = None, **kw: object) -> Build:
    def build(t: Target) -> Message:
        st = station(t.fresh, **kw)  # type: ignore[arg-type]
        if change:
            change(st)
        return pb.RegisterStationRequest(station=st)
    return build


def _connector(**fields: object) -> Callable[[pb.Station], None]:
    def change(st: pb.Station) -> None:
        for name, value in fields.items():
            setattr(st.evses[0].connectors[0], name, value)
    return change


def _evse(**fields: object) -> Callable[[pb.Station], None]:
    def change(st: pb.Station) -> None:
        for name, value in fields.items():
            setattr(st.evses[0], name, value)
    return change


def _no_evses(st: pb.Station) -> None:
    del st.evses[:]


def _no_location(st: pb.Station) -> None:
    st.ClearField("location")


def _nine_connectors(st: pb.Station) -> None:
    for i in range(8):
        st.evses[0].connectors.add(id=f"{st.id}-X{i}", standard=pb.CONNECTOR_STANDARD_GBT_AC, max_power_kw=7)


def _same_connector_twice(st: pb.Station) -> None:
    st.evses[1].connectors[0].id = st.evses[0].connectors[0].id


def _existing_connector(t: Target) -> Message:
    st = station(t.fresh)
    st.evses[0].connectors[0].id = t.connector
    return pb.RegisterStationRequest(station=st)


@cases(
    Case("lat-91", register(lat=91.0), ("station.location.lat", "91")),
    Case("lon-nan", register(lon=NAN), ("station.location.lon", "finite")),
    Case("no-location", register(_no_location), ("station.location", "required")),
    Case("no-evses", register(_no_evses), ("station.evses", "at least one")),
    Case("id-with-space", register(lambda st: setattr(st, "id", "CS 1")), ("station.id", "1..64")),
    Case("empty-operator", register(operator=""), ("station.operator_id", "required")),
    Case("empty-name", register(lambda st: setattr(st, "name", " ")), ("station.name", "required")),
    Case("ttl-5s", register(ttl_s=5), ("station.status_ttl_s", "5")),
    Case("standard-unset", register(_connector(standard=0)), ("station.evses[0].connectors[0].standard",
                                                               "required")),
    Case("standard-42", register(_connector(standard=42)), ("station.evses[0].connectors[0].standard", "42")),
    Case("power-zero", register(_connector(max_power_kw=0.0)), ("connectors[0].max_power_kw", "> 0")),
    Case("power-nan", register(_connector(max_power_kw=NAN)), ("connectors[0].max_power_kw",)),
    Case("power-inf", register(_connector(max_power_kw=INF)), ("connectors[0].max_power_kw",)),
    Case("negative-price", register(_connector(price_per_kwh_fen=-1)), ("connectors[0].price_per_kwh_fen", "-1")),
    Case("nine-connectors", register(_nine_connectors), ("station.evses[0].connectors", "1..8")),
    Case("connector-twice", register(_same_connector_twice, plugs=[(1, 7.0), (1, 7.0)]),
         ("station.evses[1].connectors[0].id", "twice")),
    Case("spot-without-lot", register(_connector(parking_spot_id="EV1")), ("parking_spot_id", "parking_lot_id")),
    Case("unknown-lot", register(lot="NO-SUCH-LOT"), ("station.parking_lot_id", "does not exist")),
    Case("charge-point-id-with-colon", register(_evse(charge_point_id="CP:1")), ("charge_point_id", "1..48")),
    Case("ocpp-connector-missing", register(_connector(ocpp_connector_id=0), charge_point="CP-X"),
         ("ocpp_connector_id", ">= 1")),
    Case("ocpp-connector-without-charge-point", register(_connector(ocpp_connector_id=2)),
         ("ocpp_connector_id", "charge_point_id")),
    Case("connector-of-another-station", _existing_connector, ("belongs to station",),
         grpc.StatusCode.ALREADY_EXISTS),
)
async def test_register_station_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                        resources: Resources) -> None:
    await expect_refused(stub, resources, "RegisterStation", case, target, keys.admin)


# ----- ReportStatus -----------------------------------------------------------------------------


def push(change: Callable[[pb.StatusReport], None] | None = None, *, connector: str | None = None,
         status: int = AVAILABLE) -> Build:
    def build(t: Target) -> Message:
        r = report(t.connector if connector is None else connector, status)
        if change:
            change(r)
        return r
    return build


def _observed(seconds: int) -> Callable[[pb.StatusReport], None]:
    def change(r: pb.StatusReport) -> None:
        r.observed_at.seconds = seconds
        r.observed_at.nanos = 0
    return change


def _set(**fields: object) -> Callable[[pb.StatusReport], None]:
    def change(r: pb.StatusReport) -> None:
        for name, value in fields.items():
            setattr(r, name, value)
    return change


def _future(r: pb.StatusReport) -> None:
    r.observed_at.CopyFrom(ts(seconds_ago=-3600))


@cases(
    Case("status-unknown", push(status=pb.CONNECTOR_STATUS_UNKNOWN), ("status", "UNKNOWN")),
    Case("status-unset", push(status=0), ("status", "required")),
    Case("status-99", push(status=99), ("status", "99")),
    Case("error-code-77", push(_set(error_code=77)), ("error_code", "77")),
    Case("no-observed-at", push(lambda r: r.ClearField("observed_at")), ("observed_at", "required")),
    Case("observed-an-hour-ahead", push(_future), ("observed_at", "future")),
    Case("observed-in-1999", push(_observed(915_148_800)), ("observed_at", "before 2000")),
    Case("ttl-5s", push(_set(ttl_s=5)), ("ttl_s", "5")),
    Case("ttl-two-days", push(_set(ttl_s=172_800)), ("ttl_s", "172800")),
    Case("info-501-chars", push(_set(info="x" * 501)), ("info", "501")),
    Case("info-with-control-char", push(_set(info="bad\x07bell")), ("info", "control")),
    Case("report-id-65-chars", push(_set(report_id="r" * 65)), ("report_id", "65")),
    Case("empty-connector", push(connector=""), ("connector_id", "required")),
    Case("unknown-connector", lambda t: report(t.fresh, AVAILABLE), ("does not exist",), NOT_FOUND),
)
async def test_report_status_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                     resources: Resources) -> None:
    await expect_refused(stub, resources, "ReportStatus", case, target, keys.op_a)


async def test_another_operators_report_is_refused(stub: Stub, keys: Keys, target: Target,
                                                   resources: Resources) -> None:
    await expect_refused(stub, resources, "ReportStatus", Case("other-operator", push(), ("another operator",),
                                                               DENIED), target, keys.op_b)


# ----- queries ----------------------------------------------------------------------------------


def find(**kw: object) -> Build:
    location = kw.pop("location", cpb.LatLon(lat=31.4, lon=121.49))
    return lambda t: pb.FindChargersRequest(location=location, **kw)  # type: ignore[arg-type]


@cases(
    Case("radius-0", find(radius_m=0), ("radius_m", "0")),
    Case("radius-50001", find(radius_m=50_001), ("radius_m", "50001")),
    Case("radius-nan", find(radius_m=NAN), ("radius_m", "finite")),
    Case("lat-nan", find(radius_m=100, location=cpb.LatLon(lat=NAN, lon=0)), ("location.lat", "finite")),
    Case("no-location", lambda t: pb.FindChargersRequest(radius_m=100), ("location", "required")),
    Case("limit-201", find(radius_m=100, limit=201), ("limit", "201")),
    Case("min-power-negative", find(radius_m=100, min_power_kw=-1), ("min_power_kw", "-1")),
    Case("standard-42", find(radius_m=100, standard=42), ("standard", "42")),
)
async def test_find_chargers_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                     resources: Resources) -> None:
    await expect_refused(stub, resources, "FindChargers", case, target, keys.driver)


@cases(
    Case("get-empty-id", lambda t: pb.GetStationRequest(station_id=""), ("station_id", "required")),
    Case("get-unknown", lambda t: pb.GetStationRequest(station_id=t.fresh), ("does not exist",), NOT_FOUND),
    Case("get-id-with-newline", lambda t: pb.GetStationRequest(station_id="CS1\n"), ("station_id",)),
)
async def test_get_station_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                   resources: Resources) -> None:
    await expect_refused(stub, resources, "GetStation", case, target, keys.driver)


async def test_watching_an_unknown_station_is_not_found(stub: Stub, keys: Keys, target: Target,
                                                        resources: Resources) -> None:
    await expect_refused(stub, resources, "WatchStation", Case(
        "unknown", lambda t: pb.WatchStationRequest(station_id=t.fresh), ("does not exist",), NOT_FOUND),
        target, keys.driver)


@cases(
    Case("kind-9", lambda t: pb.ListBayFlagsRequest(kinds=[9]), ("kinds[0]", "9")),  # type: ignore[list-item]
    Case("token-garbage", lambda t: pb.ListBayFlagsRequest(page=cpb.PageRequest(page_token="%%%")),
         ("page.page_token",)),
    Case("page-size-1001", lambda t: pb.ListBayFlagsRequest(page=cpb.PageRequest(page_size=1001)),
         ("page.page_size", "1001")),
)
async def test_list_bay_flags_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                      resources: Resources) -> None:
    await expect_refused(stub, resources, "ListBayFlags", case, target, keys.admin)


# ----- UpdateStation / RegisterChargePoint ------------------------------------------------------


@cases(
    Case("unknown-station", lambda t: pb.UpdateStationRequest(station=station(t.fresh)), ("does not exist",),
         NOT_FOUND),
    Case("negative-version", lambda t: pb.UpdateStationRequest(station=t.station, expected_version=-1),
         ("expected_version",)),
    Case("lat-91", lambda t: pb.UpdateStationRequest(station=station(t.station.id, lat=91.0)),
         ("station.location.lat",)),
)
async def test_update_station_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                      resources: Resources) -> None:
    await expect_refused(stub, resources, "UpdateStation", case, target, keys.admin)


def charge_point(cp: str | None = None, station_id: str | None = None,
                 protocol: int = pb.OCPP_PROTOCOL_OCPP16J) -> Build:
    return lambda t: pb.RegisterChargePointRequest(
        charge_point_id=t.station.evses[0].charge_point_id if cp is None else cp,
        station_id=t.station.id if station_id is None else station_id, protocol=protocol)  # type: ignore[arg-type]


@cases(
    Case("id-with-slash", charge_point("CP/1"), ("charge_point_id", "1..48")),
    Case("id-49-chars", charge_point("C" * 49), ("charge_point_id", "1..48")),
    Case("protocol-unset", charge_point(protocol=0), ("protocol", "required")),
    Case("unknown-station", lambda t: pb.RegisterChargePointRequest(
        charge_point_id="CP-1", station_id=t.fresh, protocol=pb.OCPP_PROTOCOL_OCPP16J), ("does not exist",),
        NOT_FOUND),
    Case("no-evse-for-it", charge_point("CP-NOT-IN-STATION"), ("no EVSE driven by",),
         grpc.StatusCode.FAILED_PRECONDITION),
    Case("2.0.1-without-evse-ids", charge_point(protocol=pb.OCPP_PROTOCOL_OCPP201), ("ocpp_evse_id",),
         grpc.StatusCode.FAILED_PRECONDITION),
)
async def test_register_charge_point_refuses(case: Case, stub: Stub, keys: Keys, target: Target,
                                             resources: Resources) -> None:
    await expect_refused(stub, resources, "RegisterChargePoint", case, target, keys.admin)
