"""Between the charging protos and the domain: validate what comes in, build what goes out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime

from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.charging.model import (
    BayFlag,
    BayFlagCount,
    ChargePointRecord,
    ConnectorState,
    ConnectorView,
    EvseSpec,
    FindQuery,
    Outcome,
    Report,
    StationMatch,
    StationRecord,
    StationSpec,
)
from services.charging.model import ConnectorSpec as ConnectorSpecModel
from services.charging.status import DEFAULT_TTL_S, visible_status
from services.common.config import Settings
from services.common.error_mapping import to_status_proto
from services.common.timestamps import ts
from services.common.validation import Validator

MAX_EVSES = 200
MAX_CONNECTORS_PER_EVSE = 8
MAX_RADIUS_M = 50_000.0
MAX_POWER_KW = 2_000.0
MAX_LIMIT = 200
DEFAULT_LIMIT = 20
MAX_PRICE_FEN = 100_000  # CNY 1,000 per kWh: anything above is a unit mistake
MAX_OCPP_ID = 1_000
# OCPP identities: the last path segment of the WebSocket URL and the Basic-auth user name.
CHARGE_POINT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,48}")


# ----- in -------------------------------------------------------------------------------------


def _charge_point_id(v: Validator, field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            v.fail(field, "is required")
    elif not CHARGE_POINT_ID_RE.fullmatch(value):
        v.fail(field, "must be 1..48 characters of A-Z a-z 0-9 . _ -")


def station_spec(st: pb.Station) -> StationSpec:
    v = Validator()
    v.ident("station.id", st.id)
    v.ident("station.operator_id", st.operator_id)
    v.text("station.name", st.name, 200, required=True)
    v.text("station.address", st.address, 500)
    if not st.HasField("location"):
        v.fail("station.location", "is required")
    v.lat_lon("station.location", st.location.lat, st.location.lon)
    v.ident("station.parking_lot_id", st.parking_lot_id, required=False)
    ttl = st.status_ttl_s or DEFAULT_TTL_S
    v.integer("station.status_ttl_s", ttl, 10, 86_400)
    if not st.evses:
        v.fail("station.evses", "a station needs at least one EVSE")
    if len(st.evses) > MAX_EVSES:
        v.fail("station.evses", f"{len(st.evses)} EVSEs; at most {MAX_EVSES}")
        v.check()
    evse_ids: set[str] = set()
    connector_ids: set[str] = set()
    ocpp_addresses: set[tuple[str, int, int]] = set()
    evses: list[EvseSpec] = []
    for i, e in enumerate(st.evses):
        f = f"station.evses[{i}]"
        v.ident(f"{f}.id", e.id)
        if e.id in evse_ids:
            v.fail(f"{f}.id", f"{e.id!r} appears twice")
        evse_ids.add(e.id)
        _charge_point_id(v, f"{f}.charge_point_id", e.charge_point_id, required=False)
        v.integer(f"{f}.ocpp_evse_id", e.ocpp_evse_id, 0, MAX_OCPP_ID)
        if e.ocpp_evse_id and not e.charge_point_id:
            v.fail(f"{f}.ocpp_evse_id", "needs a charge_point_id")
        if not 1 <= len(e.connectors) <= MAX_CONNECTORS_PER_EVSE:
            v.fail(f"{f}.connectors", f"{len(e.connectors)} connectors; an EVSE has 1..{MAX_CONNECTORS_PER_EVSE}")
        connectors: list[ConnectorSpecModel] = []
        for j, c in enumerate(e.connectors[:MAX_CONNECTORS_PER_EVSE]):
            g = f"{f}.connectors[{j}]"
            v.ident(f"{g}.id", c.id)
            if c.id in connector_ids:
                v.fail(f"{g}.id", f"{c.id!r} appears twice")
            connector_ids.add(c.id)
            v.enum(f"{g}.standard", c.standard, pb.ConnectorStandard.DESCRIPTOR)
            if not math.isfinite(c.max_power_kw) or not 0 < c.max_power_kw <= MAX_POWER_KW:
                v.fail(f"{g}.max_power_kw", f"must be > 0 and <= {MAX_POWER_KW:g} kW, not {c.max_power_kw:g}")
            v.integer(f"{g}.price_per_kwh_fen", c.price_per_kwh_fen, 0, MAX_PRICE_FEN)
            v.integer(f"{g}.service_fee_per_kwh_fen", c.service_fee_per_kwh_fen, 0, MAX_PRICE_FEN)
            v.ident(f"{g}.parking_spot_id", c.parking_spot_id, required=False)
            if c.parking_spot_id and not st.parking_lot_id:
                v.fail(f"{g}.parking_spot_id", "needs the station's parking_lot_id (the lot the spot is in)")
            v.integer(f"{g}.ocpp_connector_id", c.ocpp_connector_id, 0, MAX_OCPP_ID)
            if e.charge_point_id:
                if c.ocpp_connector_id < 1:
                    v.fail(f"{g}.ocpp_connector_id", "must be >= 1 on an EVSE driven by a charge point")
                address = (e.charge_point_id, e.ocpp_evse_id, c.ocpp_connector_id)
                if address in ocpp_addresses:
                    v.fail(f"{g}.ocpp_connector_id", f"charge point {e.charge_point_id} evse {e.ocpp_evse_id} "
                                                     f"connector {c.ocpp_connector_id} appears twice")
                ocpp_addresses.add(address)
            elif c.ocpp_connector_id:
                v.fail(f"{g}.ocpp_connector_id", "needs the EVSE's charge_point_id")
            connectors.append(ConnectorSpecModel(c.id, c.standard, c.max_power_kw, c.price_per_kwh_fen,
                                                 c.service_fee_per_kwh_fen, c.parking_spot_id, c.ocpp_connector_id))
        evses.append(EvseSpec(e.id, tuple(connectors), e.charge_point_id, e.ocpp_evse_id))
    v.check()
    return StationSpec(id=st.id, operator_id=st.operator_id, name=st.name, lat=st.location.lat, lon=st.location.lon,
                       status_ttl_s=ttl, evses=tuple(evses), address=st.address, parking_lot_id=st.parking_lot_id)


def ident(value: str, field: str) -> str:
    v = Validator()
    v.ident(field, value)
    v.check()
    return value


def report(r: pb.StatusReport, operator_id: str, settings: Settings, now: datetime) -> Report:
    """Checks everything that does not need the stored connector; ownership is checked by the store."""
    v = Validator()
    v.ident("connector_id", r.connector_id)
    if r.status == pb.CONNECTOR_STATUS_UNKNOWN:
        v.fail("status", "UNKNOWN is what readers see without a fresh reading; report what was observed")
    else:
        v.enum("status", r.status, pb.ConnectorStatus.DESCRIPTOR)
    v.enum("error_code", r.error_code, pb.ConnectorErrorCode.DESCRIPTOR, required=False)
    v.text("info", r.info, 500)
    observed = v.timestamp("observed_at", r.observed_at, max_future_s=settings.max_future_skew_s, now=now)
    if r.ttl_s:
        v.integer("ttl_s", r.ttl_s, 10, 86_400)
    v.text("report_id", r.report_id, 64)
    v.check()
    assert observed is not None
    return Report(r.connector_id, r.status, r.error_code or pb.CONNECTOR_ERROR_CODE_NO_ERROR, r.info, observed,
                  pb.STATUS_SOURCE_OPERATOR, operator_id, r.ttl_s, r.report_id)


def find_query(req: pb.FindChargersRequest) -> FindQuery:
    v = Validator()
    if not req.HasField("location"):
        v.fail("location", "is required")
    v.lat_lon("location", req.location.lat, req.location.lon)
    v.number("radius_m", req.radius_m, 1, MAX_RADIUS_M)
    v.enum("standard", req.standard, pb.ConnectorStandard.DESCRIPTOR, required=False)
    v.number("min_power_kw", req.min_power_kw, 0, MAX_POWER_KW)
    v.integer("limit", req.limit, 0, MAX_LIMIT)
    v.check()
    return FindQuery(req.location.lat, req.location.lon, req.radius_m, req.standard, req.min_power_kw,
                     req.available_only, req.limit or DEFAULT_LIMIT)


def charge_point_request(req: pb.RegisterChargePointRequest) -> tuple[str, str, int]:
    v = Validator()
    _charge_point_id(v, "charge_point_id", req.charge_point_id)
    v.ident("station_id", req.station_id)
    v.enum("protocol", req.protocol, pb.OcppProtocol.DESCRIPTOR)
    v.check()
    return req.charge_point_id, req.station_id, req.protocol


def bay_flag_kinds(kinds: list[int]) -> tuple[int, ...]:
    v = Validator()
    for i, k in enumerate(kinds):
        v.enum(f"kinds[{i}]", k, pb.BayFlagKind.DESCRIPTOR)
    v.check()
    return tuple(sorted(set(kinds)))


# ----- out ------------------------------------------------------------------------------------


def state_proto(s: ConnectorState, now: datetime, out: pb.ConnectorState | None = None) -> pb.ConnectorState:
    """The state as readers see it (UNKNOWN once expired); filled into `out` when given."""
    fresh = s.is_fresh(now)
    if out is None:
        out = pb.ConnectorState()
    out.status = visible_status(s, now)  # type: ignore[assignment]
    out.source = s.source  # type: ignore[assignment]
    if fresh:
        out.error_code = s.error_code  # type: ignore[assignment]
        out.info = s.info
    f = out.freshness
    f.ttl_s = s.ttl_s
    f.stale = not fresh
    if s.observed_at is not None:
        f.observed_at.FromDatetime(s.observed_at)
    if s.received_at is not None:
        f.received_at.FromDatetime(s.received_at)
    if s.expires_at is not None:
        f.expires_at.FromDatetime(s.expires_at)
    if fresh and s.status_since is not None:
        out.status_since.FromDatetime(s.status_since)
    return out


def connector_proto(c: ConnectorSpecModel, state: ConnectorState | None, now: datetime) -> pb.Connector:
    out = pb.Connector(id=c.id, standard=c.standard, max_power_kw=c.max_power_kw,  # type: ignore[arg-type]
                       price_per_kwh_fen=c.price_per_kwh_fen, service_fee_per_kwh_fen=c.service_fee_per_kwh_fen,
                       parking_spot_id=c.parking_spot_id, ocpp_connector_id=c.ocpp_connector_id)
    if state is not None:
        state_proto(state, now, out.state)
    return out


def view_connector_proto(v: ConnectorView, now: datetime) -> pb.Connector:
    return connector_proto(v.spec, v.state, now)


def station_proto(record: StationRecord, now: datetime) -> pb.Station:
    s = record.spec
    return pb.Station(
        id=s.id, operator_id=s.operator_id, name=s.name, location=cpb.LatLon(lat=s.lat, lon=s.lon), address=s.address,
        parking_lot_id=s.parking_lot_id, status_ttl_s=s.status_ttl_s, version=record.version,
        created_at=ts(record.created_at), updated_at=ts(record.updated_at),
        evses=[pb.Evse(id=e.id, charge_point_id=e.charge_point_id, ocpp_evse_id=e.ocpp_evse_id,
                       connectors=[connector_proto(c, record.states.get(c.id), now) for c in e.connectors])
               for e in s.evses],
    )


def match_proto(m: StationMatch, now: datetime, out: pb.ChargerMatch) -> pb.ChargerMatch:
    """Built in place: the station and its connectors as they read at `now`."""
    out.station_id, out.name, out.operator_id = m.station_id, m.name, m.operator_id
    out.location.lat, out.location.lon = m.lat, m.lon
    out.address, out.parking_lot_id = m.address, m.parking_lot_id
    out.distance_m = round(m.distance_m, 2) if math.isfinite(m.distance_m) else 0.0
    out.connectors.extend(connector_proto(v.spec, v.state, now) for v in m.connectors)
    out.available_count = sum(1 for v in m.connectors
                              if visible_status(v.state, now) == pb.CONNECTOR_STATUS_AVAILABLE)
    return out


def answer_proto(matches: Sequence[StationMatch], now: datetime) -> pb.FindChargersResponse:
    out = pb.FindChargersResponse()
    for m in matches:
        match_proto(m, now, out.stations.add())
    return out


def ack_proto(r: pb.StatusReport, outcome: Outcome, now: datetime) -> pb.StatusAck:
    ack = pb.StatusAck(connector_id=r.connector_id[:64], report_id=r.report_id[:64],
                       result=outcome.result)  # type: ignore[arg-type]
    if outcome.error is not None:
        ack.error.CopyFrom(to_status_proto(outcome.error))
    if outcome.state is not None:
        state_proto(outcome.state, now, ack.state)
    return ack


def charge_point_proto(cp: ChargePointRecord) -> pb.ChargePoint:
    return pb.ChargePoint(id=cp.id, station_id=cp.station_id, protocol=cp.protocol,  # type: ignore[arg-type]
                          connected=cp.connected, last_seen_at=ts(cp.last_seen_at), created_at=ts(cp.created_at),
                          heartbeat_interval_s=cp.heartbeat_s)


def bay_flag_proto(f: BayFlag) -> pb.BayFlag:
    return pb.BayFlag(id=str(f.id), kind=f.kind, station_id=f.station_id,  # type: ignore[arg-type]
                      connector_id=f.connector_id, parking_lot_id=f.parking_lot_id, parking_spot_id=f.parking_spot_id,
                      connector_status=f.connector_status,  # type: ignore[arg-type]
                      since=ts(f.since), last_seen_at=ts(f.last_seen_at), cleared_at=ts(f.cleared_at),
                      operator_id=f.operator_id)


def bay_count_proto(c: BayFlagCount) -> pb.BayFlagCount:
    return pb.BayFlagCount(kind=c.kind, open=c.open, total=c.total)  # type: ignore[arg-type]
