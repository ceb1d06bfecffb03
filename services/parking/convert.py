"""Between the parking protos and the domain: validate what comes in, build what goes out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb

from services.common.config import Settings
from services.common.error_mapping import to_status_proto
from services.common.geo import Area, parse_area
from services.common.timestamps import ts
from services.common.validation import Validator
from services.parking.availability import (
    CLASS_NAMES,
    Period,
    expires_at,
    is_fresh,
    site_status,
)
from services.parking.model import (
    EntranceSpec,
    FindQuery,
    LotRecord,
    LotSpec,
    LotSummary,
    LotView,
    Outcome,
    PassageAmendment,
    PassageRecord,
    PassageSpec,
    PriceSpec,
    Report,
    SpotRecord,
    SpotSpec,
)
from services.parking.vocab import CLASSES, PassageAmendAction, SpaceClass

MAX_SPOTS = 2000
MAX_REPORT_SPOTS = 2000
MAX_ENTRANCES = 32
MAX_PERIODS = 28
MAX_LINE_POINTS = 500
MAX_RADIUS_M = 50_000.0
MAX_LIMIT = 200
DEFAULT_LIMIT = 20

_CAPACITY_FIELDS: dict[int, str] = {pb.SPACE_CLASS_GENERAL: "general", pb.SPACE_CLASS_EV: "ev",
                    pb.SPACE_CLASS_DISABLED: "disabled", pb.SPACE_CLASS_RESERVED: "reserved"}


# ----- in -------------------------------------------------------------------------------------


def lot_spec(lot: pb.Lot, default_ttl_s: int) -> LotSpec:
    v = Validator()
    v.ident("lot.id", lot.id)
    v.ident("lot.operator_id", lot.operator_id)
    v.text("lot.name", lot.name, 200, required=True)
    v.text("lot.address", lot.address, 500)
    if lot.region_code and not (len(lot.region_code) in (6, 9, 12) and lot.region_code.isdigit()):
        v.fail("lot.region_code", "must be a 6, 9 or 12 digit administrative code (e.g. 310113)")
    v.enum("lot.kind", lot.kind, pb.LotKind.DESCRIPTOR)
    if not lot.HasField("location"):
        v.fail("lot.location", "is required")
    v.lat_lon("lot.location", lot.location.lat, lot.location.lon)
    line: list[tuple[float, float]] | None = None
    if lot.line.points:
        if not 2 <= len(lot.line.points) <= MAX_LINE_POINTS:
            v.fail("lot.line.points", f"needs 2..{MAX_LINE_POINTS} points")
        line = [v.lat_lon(f"lot.line.points[{i}]", p.lat, p.lon) for i, p in enumerate(lot.line.points)]
    elif lot.kind == pb.LOT_KIND_ON_STREET_SEGMENT:
        v.fail("lot.line", "is required for an on-street segment (its kerb line)")
    capacity: dict[int, int] = {c: getattr(lot.capacity, name) for c, name in _CAPACITY_FIELDS.items()}
    for c, value in capacity.items():
        v.integer(f"lot.capacity.{_CAPACITY_FIELDS[c]}", value, 0, 100_000)
    if sum(capacity.values()) <= 0:
        v.fail("lot.capacity", "the lot needs at least one space")
    p = lot.price
    for name in ("free_minutes", "first_hour_fen", "per_hour_fen", "daily_cap_fen"):
        v.integer(f"lot.price.{name}", getattr(p, name), 0, 10_000_000)
    v.text("lot.price.description", p.description, 500)
    if len(lot.opening_hours.periods) > MAX_PERIODS:
        v.fail("lot.opening_hours.periods", f"at most {MAX_PERIODS}")
    periods: list[Period] = []
    for i, op in enumerate(lot.opening_hours.periods[:MAX_PERIODS]):
        f = f"lot.opening_hours.periods[{i}]"
        v.integer(f"{f}.weekday", op.weekday, 1, 7)
        v.integer(f"{f}.open_minute", op.open_minute, 0, 1439)
        v.integer(f"{f}.close_minute", op.close_minute, 1, 1440)
        periods.append(Period(op.weekday, op.open_minute, op.close_minute))
    if not lot.opening_hours.always_open and not periods:
        v.fail("lot.opening_hours", "set always_open or give opening periods")
    if len(lot.entrances) > MAX_ENTRANCES:
        v.fail("lot.entrances", f"at most {MAX_ENTRANCES}")
    entrances = []
    for i, e in enumerate(lot.entrances[:MAX_ENTRANCES]):
        v.ident(f"lot.entrances[{i}].id", e.id)
        v.lat_lon(f"lot.entrances[{i}].location", e.location.lat, e.location.lon)
        entrances.append(EntranceSpec(e.id, e.location.lat, e.location.lon, e.entry, e.exit))
    v.enum("lot.detection_type", lot.detection_type, pb.DetectionType.DESCRIPTOR)
    ttl = lot.occupancy_ttl_s or default_ttl_s
    v.integer("lot.occupancy_ttl_s", ttl, 10, 86_400)
    v.text("lot.phone", lot.phone, 40)
    fast, slow = lot.fast_charging_piles, lot.slow_charging_piles
    v.integer("lot.fast_charging_piles", fast, 0, 100_000)
    v.integer("lot.slow_charging_piles", slow, 0, 100_000)
    ev = capacity[pb.SPACE_CLASS_EV]
    if min(fast, slow, ev) >= 0 and fast + slow > ev:  # a negative count has its own violation
        # A pile sits at an EV space (a two-gun pile at two): more piles than EV spaces is a data error.
        v.fail("lot.fast_charging_piles" if fast > ev else "lot.slow_charging_piles",
               f"{fast} fast + {slow} slow charging piles exceed the {ev} EV spaces (lot.capacity.ev); "
               "each pile serves at least one EV space")
    v.check()
    return LotSpec(
        id=lot.id, operator_id=lot.operator_id, name=lot.name, kind=lot.kind,
        lat=lot.location.lat, lon=lot.location.lon, capacity=capacity, detection_type=lot.detection_type,
        ttl_s=ttl, address=lot.address, region_code=lot.region_code, line=line,
        price=PriceSpec(p.free_minutes, p.first_hour_fen, p.per_hour_fen, p.daily_cap_fen, p.description),
        always_open=lot.opening_hours.always_open, periods=periods, entrances=entrances, phone=lot.phone,
        fast_charging_piles=fast, slow_charging_piles=slow,
    )


def lot_id(value: str, field: str = "lot_id") -> str:
    v = Validator()
    v.ident(field, value)
    v.check()
    return value


def spot_specs(req: pb.UpsertSpotsRequest) -> list[SpotSpec]:
    v = Validator()
    v.ident("lot_id", req.lot_id)
    if not req.spots:
        v.fail("spots", "at least one spot")
    if len(req.spots) > MAX_SPOTS:
        v.fail("spots", f"{len(req.spots)} spots; at most {MAX_SPOTS} per request")
        v.check()
    seen: set[str] = set()
    out = []
    for i, s in enumerate(req.spots):
        v.ident(f"spots[{i}].id", s.id)
        if s.id in seen:
            v.fail(f"spots[{i}].id", f"{s.id!r} appears twice")
        seen.add(s.id)
        v.enum(f"spots[{i}].space_class", s.space_class, pb.SpaceClass.DESCRIPTOR)
        v.ident(f"spots[{i}].connector_id", s.connector_id, required=False)
        lat = lon = None
        if s.HasField("location"):
            lat, lon = v.lat_lon(f"spots[{i}].location", s.location.lat, s.location.lon)
        out.append(SpotSpec(s.id, s.space_class, s.connector_id, lat, lon))
    v.check()
    return out


def report(r: pb.OccupancyReport, settings: Settings, now: datetime) -> Report:
    """Checks everything that does not need the stored lot; capacity is checked by the store."""
    v = Validator()
    v.ident("lot_id", r.lot_id)
    if r.sequence < 1:
        v.fail("sequence", f"must be >= 1, not {r.sequence}")
    observed = v.timestamp("observed_at", r.observed_at, max_future_s=settings.max_future_skew_s, now=now)
    v.text("report_id", r.report_id, 64)
    if r.counts and r.spots:
        v.fail("counts", "give class counts or spot states, not both")
    if not r.counts and not r.spots and not r.closed and not r.full_at_entrance:
        v.fail("counts", "a report needs class counts, spot states, or a closed / full flag")
    counts: dict[int, int] = {}
    for i, c in enumerate(r.counts):
        v.enum(f"counts[{i}].space_class", c.space_class, pb.SpaceClass.DESCRIPTOR)
        if c.space_class in counts:
            v.fail(f"counts[{i}].space_class", f"{CLASS_NAMES.get(c.space_class, c.space_class)} appears twice")
        name = CLASS_NAMES.get(c.space_class, str(c.space_class))
        if c.free < 0:
            v.fail(f"counts[{i}].free", f"free {name} spaces must be >= 0, not {c.free}")
        counts[c.space_class] = c.free
    if len(r.spots) > MAX_REPORT_SPOTS:
        v.fail("spots", f"{len(r.spots)} spot states; at most {MAX_REPORT_SPOTS} per report")
        v.check()
    spots: dict[str, int] = {}
    for i, s in enumerate(r.spots):
        v.ident(f"spots[{i}].spot_id", s.spot_id)
        v.enum(f"spots[{i}].status", s.status, pb.SpotStatus.DESCRIPTOR)
        if s.spot_id in spots:
            v.fail(f"spots[{i}].spot_id", f"{s.spot_id!r} appears twice")
        spots[s.spot_id] = s.status
    v.check()
    assert observed is not None
    return Report(r.lot_id, r.sequence, observed, counts, spots, r.closed, r.full_at_entrance, r.report_id)


def passage(req: pb.RecordPassageRequest, settings: Settings, now: datetime) -> PassageSpec:
    v = Validator()
    v.ident("lot_id", req.lot_id)
    v.ident("passage_id", req.passage_id)
    v.enum("direction", req.direction, pb.PassageDirection.DESCRIPTOR)
    _plate(v, "plate", req.plate)
    v.enum("plate_colour", req.plate_colour, pb.PlateColour.DESCRIPTOR, required=False)
    v.text("lane", req.lane, 64)
    passed = v.timestamp("passed_at", req.passed_at, max_future_s=settings.max_future_skew_s, now=now)
    v.enum("space_class", req.space_class, pb.SpaceClass.DESCRIPTOR, required=False)
    v.check()
    assert passed is not None
    return PassageSpec(req.lot_id, req.passage_id, req.direction, req.plate, req.plate_colour, req.lane, passed,
                       req.space_class or pb.SPACE_CLASS_GENERAL)


def _plate(v: Validator, field: str, plate: str) -> None:
    v.text(field, plate, 16, required=True)
    if plate and not all(ch.isalnum() or ch in "·-" for ch in plate):
        v.fail(field, "letters, digits, '·' and '-' only")


def amendment(req: pb.AmendPassageRequest, settings: Settings, now: datetime) -> PassageAmendment:
    v = Validator()
    v.ident("lot_id", req.lot_id)
    v.ident("passage_id", req.passage_id)
    v.enum("action", req.action, pb.PassageAmendAction.DESCRIPTOR)
    v.text("reason", req.reason, 500, required=True)
    given = [f for f in ("plate", "plate_colour", "passed_at", "lane") if req.HasField(f)]
    passed = None
    if req.action == pb.PASSAGE_AMEND_ACTION_VOID:
        for f in given:
            v.fail(f, "a void corrects nothing: leave the passage's fields out")
    elif req.action == pb.PASSAGE_AMEND_ACTION_CORRECT:
        if not given:
            v.fail("plate", "a correction needs at least one of plate, plate_colour, passed_at, lane")
        if req.HasField("plate"):
            _plate(v, "plate", req.plate)
        if req.HasField("plate_colour"):
            v.enum("plate_colour", req.plate_colour, pb.PlateColour.DESCRIPTOR)
        if req.HasField("lane"):
            v.text("lane", req.lane, 64)
        if req.HasField("passed_at"):
            passed = v.timestamp("passed_at", req.passed_at, max_future_s=settings.max_future_skew_s, now=now)
    v.check()
    return PassageAmendment(
        req.lot_id, req.passage_id, PassageAmendAction(req.action), req.reason,
        plate=req.plate if req.HasField("plate") else None,
        plate_colour=req.plate_colour if req.HasField("plate_colour") else None,
        passed_at=passed, lane=req.lane if req.HasField("lane") else None)


def find_query(req: pb.FindAvailableRequest) -> FindQuery:
    v = Validator()
    if not req.HasField("location"):
        v.fail("location", "is required")
    v.lat_lon("location", req.location.lat, req.location.lon)
    v.number("radius_m", req.radius_m, 1, MAX_RADIUS_M)
    v.integer("limit", req.limit, 0, MAX_LIMIT)
    v.enum("space_class", req.space_class, pb.SpaceClass.DESCRIPTOR, required=False)
    v.integer("min_free", req.min_free, 0, 100_000)
    for i, k in enumerate(req.kinds):
        v.enum(f"kinds[{i}]", k, pb.LotKind.DESCRIPTOR)
    v.integer("max_price_per_hour_fen", req.max_price_per_hour_fen, 0, 10_000_000)
    v.check()
    min_free = max(req.min_free, 1) if req.only_available else req.min_free
    return FindQuery(req.location.lat, req.location.lon, req.radius_m, req.limit or DEFAULT_LIMIT,
                     SpaceClass(req.space_class or SpaceClass.GENERAL), min_free, sorted(set(req.kinds)), req.open_now,
                     req.max_price_per_hour_fen)


def area(a: cpb.Area, field: str = "area") -> Area:
    return parse_area(a, field, max_radius_m=MAX_RADIUS_M, max_box_side_deg=1.0)


# ----- out ------------------------------------------------------------------------------------


def lot_proto(record: LotRecord) -> pb.Lot:
    s = record.spec
    lot = pb.Lot(
        id=s.id, operator_id=s.operator_id, name=s.name, address=s.address, region_code=s.region_code,
        kind=s.kind,  # type: ignore[arg-type]
        location=cpb.LatLon(lat=s.lat, lon=s.lon),
        capacity=pb.Capacity(**{name: s.capacity.get(c, 0) for c, name in _CAPACITY_FIELDS.items()}),
        price=pb.PriceRule(free_minutes=s.price.free_minutes, first_hour_fen=s.price.first_hour_fen,
                           per_hour_fen=s.price.per_hour_fen, daily_cap_fen=s.price.daily_cap_fen,
                           description=s.price.description),
        opening_hours=pb.OpeningHours(
            always_open=s.always_open,
            periods=[pb.OpeningPeriod(weekday=p.weekday, open_minute=p.open_minute, close_minute=p.close_minute)
                     for p in s.periods]),
        entrances=[pb.Entrance(id=e.id, location=cpb.LatLon(lat=e.lat, lon=e.lon), entry=e.entry, exit=e.exit)
                   for e in s.entrances],
        detection_type=s.detection_type,  # type: ignore[arg-type]
        occupancy_ttl_s=s.ttl_s, phone=s.phone, version=record.version,
        fast_charging_piles=s.fast_charging_piles, slow_charging_piles=s.slow_charging_piles,
        created_at=ts(record.created_at), updated_at=ts(record.updated_at),
    )
    if s.line:
        lot.line.points.extend(cpb.LatLon(lat=a, lon=b) for a, b in s.line)
    return lot


def availability_proto(view: LotView, now: datetime) -> pb.Availability:
    out = pb.Availability()
    _fill_availability(out, view, now)
    return out


def _fill_availability(out: pb.Availability, view: LotView, now: datetime) -> None:
    summary, state = view.summary, view.state
    fresh = is_fresh(state, summary.ttl_s, now)
    out.status = site_status(state, summary.capacity, summary.ttl_s, summary.open_now, now)  # type: ignore[assignment]
    out.trend = state.trend if fresh else pb.OCCUPANCY_TREND_UNKNOWN  # type: ignore[assignment]
    out.sequence = state.sequence
    total: int | None = 0
    for c in CLASSES:
        cap = summary.capacity.get(c, 0)
        if cap <= 0:
            continue
        entry = out.classes.add(space_class=c, capacity=cap)
        free = state.free.get(c) if fresh else None
        if free is None:
            total = None
        else:
            entry.free = free
            if total is not None:
                total += free
    if total is not None and fresh:
        out.total_free = total
    f = out.freshness
    f.ttl_s = summary.ttl_s
    f.stale = not fresh
    if state.observed_at:
        f.observed_at.FromDatetime(state.observed_at)
        exp = expires_at(state, summary.ttl_s)
        assert exp is not None
        f.expires_at.FromDatetime(exp)
    if state.received_at:
        f.received_at.FromDatetime(state.received_at)


def lot_availability_proto(view: LotView, now: datetime) -> pb.LotAvailability:
    s = view.summary
    p = s.price
    out = pb.LotAvailability(
        lot_id=s.id, name=s.name, kind=s.kind,  # type: ignore[arg-type]
        distance_m=round(view.distance_m, 2) if math.isfinite(view.distance_m) else 0.0,
        operator_id=s.operator_id,
    )
    # Sub-messages are filled in place: passing built ones to the constructor copies them (4x the CPU).
    loc = out.location
    loc.SetInParent()
    loc.lat, loc.lon = s.lat, s.lon
    out.availability.SetInParent()
    _fill_availability(out.availability, view, now)
    price = out.price
    price.SetInParent()
    price.free_minutes, price.first_hour_fen, price.per_hour_fen = p.free_minutes, p.first_hour_fen, p.per_hour_fen
    price.daily_cap_fen, price.description = p.daily_cap_fen, p.description
    return out


def summary_from(record: LotRecord, open_now: bool) -> LotSummary:
    s = record.spec
    return LotSummary(s.id, s.operator_id, s.name, s.kind, s.lat, s.lon, s.capacity, s.price, s.ttl_s,
                      s.detection_type, open_now)


def spot_proto(spot: SpotRecord, fresh: bool) -> pb.Spot:
    s = spot.spec
    out = pb.Spot(id=s.id, space_class=s.space_class,  # type: ignore[arg-type]
                  status=spot.status if fresh else pb.SPOT_STATUS_UNKNOWN,  # type: ignore[arg-type]
                  connector_id=s.connector_id, observed_at=ts(spot.observed_at))
    if s.lat is not None and s.lon is not None:
        out.location.CopyFrom(cpb.LatLon(lat=s.lat, lon=s.lon))
    return out


def passage_proto(p: PassageRecord, redact: bool) -> pb.Passage:
    s = p.spec
    return pb.Passage(
        lot_id=s.lot_id, passage_id=s.passage_id, direction=s.direction,  # type: ignore[arg-type]
        plate="***" if redact else s.plate, plate_colour=s.plate_colour,  # type: ignore[arg-type]
        lane=s.lane, passed_at=ts(s.passed_at), received_at=ts(p.received_at),
        space_class=s.space_class,  # type: ignore[arg-type]
        state=p.state, revision=p.revision, amended_at=ts(p.amended_at),  # type: ignore[arg-type]
        amend_reason="" if redact else p.amend_reason,
    )


def ack_proto(r: pb.OccupancyReport, outcome: Outcome) -> pb.OccupancyAck:
    ack = pb.OccupancyAck()
    _fill_ack(ack, r, outcome)
    return ack


def ack_batch_proto(reports: Sequence[pb.OccupancyReport], outcomes: Sequence[Outcome]) -> pb.OccupancyAckBatch:
    out = pb.OccupancyAckBatch()
    add = out.acks.add
    for r, outcome in zip(reports, outcomes, strict=True):
        _fill_ack(add(), r, outcome)
    return out


def _fill_ack(ack: pb.OccupancyAck, r: pb.OccupancyReport, outcome: Outcome) -> None:
    # Filled in place: a built ack passed to the batch would be copied.
    ack.lot_id = r.lot_id
    ack.sequence = r.sequence
    if r.report_id:
        ack.report_id = r.report_id[:64]
    ack.result = outcome.result  # type: ignore[assignment]
    ack.stored_sequence = outcome.stored_sequence
    if outcome.error is not None:
        ack.error.CopyFrom(to_status_proto(outcome.error))
