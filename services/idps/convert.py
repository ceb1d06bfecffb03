"""Between the IDPS protos and the domain: validate what comes in, build what goes out."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.parking.v1 import parking_pb2 as ppb

from services.common import paging
from services.common.errors import FieldViolation, InvalidArgument
from services.common.geo import Area, parse_area
from services.common.plate_numbers import mask_plates, may_contain_plate
from services.common.redis_streams import CURSOR_RE
from services.common.timestamps import ts
from services.common.validation import ID_PATTERN, Validator
from services.idps import lifecycle, taxonomy
from services.idps.model import (
    AuditEntry,
    Incident,
    IncidentFilter,
    Link,
    ListQuery,
    ReportInput,
    Source,
    UpdateSpec,
)

MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024
MAX_TEXT = 1000
MAX_KEY = 128
MAX_PLATE = 16
MAX_RADIUS_M = 50_000.0
MAX_AREA_RADIUS_M = 100_000.0
MAX_LANES = 16
MAX_MERGE = 50
MAX_SPLIT = 500
DEFAULT_HEARTBEAT_S = 15


_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20]")
_CONTROL = re.compile(r"[\x00-\x1f]")


# ----- in -------------------------------------------------------------------------------------


def report(req: pb.ReportEventRequest, actor: str, max_future_s: float, now: datetime) -> ReportInput:
    v = Validator()
    key = req.idempotency_key
    if not key:
        v.fail("idempotency_key", "is required")
    elif len(key) > MAX_KEY or _SPACE_OR_CONTROL.search(key):
        v.fail("idempotency_key", f"must be 1..{MAX_KEY} printable characters without spaces")
    source_id = req.source_id
    if not source_id or len(source_id) > 64 or _CONTROL.search(source_id):
        v.fail("source_id", "must be 1..64 characters without control characters")
    v.enum("source_kind", req.source_kind, pb.SourceKind.DESCRIPTOR)
    event_type: int = req.type
    external = req.external_code
    v.text("external_code", external, 64)
    if req.denm_cause_code:
        if req.type:
            v.fail("denm_cause_code", "give either type or denm_cause_code, not both")
        elif not 1 <= req.denm_cause_code <= 255:
            v.fail("denm_cause_code", f"must be between 1 and 255, not {req.denm_cause_code}")
        else:
            event_type = taxonomy.from_denm(req.denm_cause_code)
            if event_type == taxonomy.UNMAPPED and not external:
                external = f"denm:{req.denm_cause_code}"
    elif req.type == 0:
        v.fail("type", "is required (or give denm_cause_code)")
    elif req.type not in taxonomy.ALL_TYPES:
        v.fail("type", f"unknown event type {req.type}")
    elif req.type == taxonomy.UNMAPPED and not external:
        v.fail("external_code", "is required for an UNMAPPED event (the source's own code)")
    if not req.HasField("position"):
        v.fail("position", "is required")
    lat, lon = v.lat_lon("position", req.position.lat, req.position.lon)
    v.number("radius_m", req.radius_m, 0, MAX_RADIUS_M)
    v.number("confidence", req.confidence, 0, 1)
    observed = v.timestamp("observed_at", req.observed_at, max_future_s=max_future_s, now=now)
    if req.lane_id:
        v.ident("lane_id", req.lane_id)
    heading = None
    if req.HasField("heading_deg"):
        heading = v.number("heading_deg", req.heading_deg, 0, 360) % 360.0
    ev = req.evidence
    if len(ev.snapshot_jpeg) > MAX_SNAPSHOT_BYTES:
        v.fail("evidence.snapshot_jpeg", f"is {len(ev.snapshot_jpeg)} bytes; at most {MAX_SNAPSHOT_BYTES}")
    elif ev.snapshot_jpeg and not ev.snapshot_jpeg.startswith(b"\xff\xd8"):
        v.fail("evidence.snapshot_jpeg", "is not a JPEG image")
    v.text("evidence.plate", ev.plate, MAX_PLATE)
    if ev.plate and not ev.plate.strip():
        v.fail("evidence.plate", "is blank")
    v.enum("evidence.plate_colour", ev.plate_colour, ppb.PlateColour.DESCRIPTOR, required=False)
    v.text("description", req.description, MAX_TEXT)
    v.check()
    assert observed is not None
    return ReportInput(
        idempotency_key=key, source_id=source_id, source_kind=req.source_kind, type=event_type, lat=lat, lon=lon,
        confidence=round(req.confidence, 6), observed_at=observed, actor=actor, external_code=external,
        radius_m=req.radius_m, lane_id=req.lane_id, heading_deg=heading, plate=ev.plate.strip(),
        plate_colour=ev.plate_colour, snapshot_jpeg=ev.snapshot_jpeg, description=req.description,
    )


def incident_id(value: str, field: str = "incident_id") -> str:
    v = Validator()
    v.ident(field, value)
    v.check()
    return value


def note(value: str) -> str:
    v = Validator()
    v.text("note", value, MAX_TEXT)
    v.check()
    return value


def version(value: int, field: str = "expected_version") -> int:
    if value < 0:
        raise InvalidArgument(FieldViolation(field, f"must be >= 0, not {value}"))
    return value


def target_status(value: int) -> int:
    v = Validator()
    v.enum("target_status", value, pb.IncidentStatus.DESCRIPTOR)
    v.check()
    return value


def update_spec(req: pb.UpdateIncidentRequest) -> UpdateSpec:
    v = Validator()
    v.ident("incident_id", req.incident_id)
    if req.expected_version < 0:
        v.fail("expected_version", f"must be >= 0, not {req.expected_version}")
    if req.type and req.type not in taxonomy.ALL_TYPES:
        v.fail("type", f"unknown event type {req.type}")
    v.enum("severity", req.severity, pb.Severity.DESCRIPTOR, required=False)
    if req.severity and req.derive_severity:
        v.fail("derive_severity", "cannot be set together with severity")
    if len(req.lane_impacts) > MAX_LANES:
        v.fail("lane_impacts", f"at most {MAX_LANES} lanes")
    seen: set[str] = set()
    lanes: list[tuple[str, int]] = []
    for i, li in enumerate(req.lane_impacts[:MAX_LANES]):
        v.ident(f"lane_impacts[{i}].lane_id", li.lane_id)
        v.enum(f"lane_impacts[{i}].state", li.state, pb.LaneState.DESCRIPTOR)
        if li.lane_id in seen:
            v.fail(f"lane_impacts[{i}].lane_id", f"lane {li.lane_id} is listed twice")
        seen.add(li.lane_id)
        lanes.append((li.lane_id, li.state))
    v.text("note", req.note, MAX_TEXT)
    if not (req.type or req.severity or req.derive_severity or req.lane_impacts or req.note.strip()):
        v.fail("", "nothing to change: give type, severity, derive_severity, lane_impacts or a note")
    v.check()
    return UpdateSpec(req.type, req.severity, req.derive_severity, tuple(lanes), req.note)


def id_list(values: list[str], field: str, lo: int, hi: int) -> list[str]:
    v = Validator()
    if not lo <= len(values) <= hi:
        v.fail(field, f"give {lo}..{hi} ids, not {len(values)}")
    for i, value in enumerate(values[:hi]):
        v.ident(f"{field}[{i}]", value)
    if len(set(values)) != len(values):
        v.fail(field, "lists an id twice")
    v.check()
    return list(values)


def area(a: cpb.Area, field: str = "area") -> Area:
    return parse_area(a, field, max_radius_m=MAX_AREA_RADIUS_M)


def incident_filter(f: pb.IncidentFilter, *, live: bool) -> IncidentFilter:
    v = Validator()
    for i, t in enumerate(f.types):
        if t not in taxonomy.ALL_TYPES:
            v.fail(f"filter.types[{i}]", f"unknown event type {t}")
    v.enum("filter.min_severity", f.min_severity, pb.Severity.DESCRIPTOR, required=False)
    for i, s in enumerate(f.statuses):
        v.enum(f"filter.statuses[{i}]", s, pb.IncidentStatus.DESCRIPTOR)
        if live and s in lifecycle.TERMINAL:
            v.fail(f"filter.statuses[{i}]", "a live subscription follows open incidents; ended ones get an END")
    v.check()
    return IncidentFilter(area(f.area, "filter.area") if f.HasField("area") else None, frozenset(f.types),
                          f.min_severity, frozenset(f.statuses))


def list_query(req: pb.ListIncidentsRequest) -> ListQuery:
    v = Validator()
    for i, t in enumerate(req.types):
        if t not in taxonomy.ALL_TYPES:
            v.fail(f"types[{i}]", f"unknown event type {t}")
    for i, s in enumerate(req.statuses):
        v.enum(f"statuses[{i}]", s, pb.IncidentStatus.DESCRIPTOR)
    start = v.timestamp("start_time", req.start_time) if req.HasField("start_time") else None
    end = v.timestamp("end_time", req.end_time) if req.HasField("end_time") else None
    if start and end and start >= end:
        v.fail("end_time", "must be after start_time")
    page = paging.page(req.page, _INCIDENT_CURSOR, v)
    v.check()
    f = IncidentFilter(area(req.area) if req.HasField("area") else None, frozenset(req.types), 0,
                       frozenset(req.statuses))
    return ListQuery(f, start, end, page.size, _after(page.cursor))


# A page of incidents ends at (created_at in epoch microseconds, incident id).
_INCIDENT_CURSOR = re.compile(rf"[0-9]{{1,17}}:{ID_PATTERN}")


def page_token(inc: Incident) -> str:
    return paging.token(f"{int(inc.created_at.timestamp() * 1_000_000)}:{inc.id}")


def _after(cursor: str) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    micros, _, iid = cursor.partition(":")
    try:
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), iid
    except (ValueError, OverflowError):
        raise InvalidArgument(FieldViolation("page.page_token", "is not a token this service issued")) from None


def cursor(value: str) -> str:
    if value and not CURSOR_RE.fullmatch(value):
        raise InvalidArgument(FieldViolation("cursor", "is not a cursor this service issued (e.g. 1718000000000-0)"))
    return value


def heartbeat(value: int) -> int:
    v = Validator()
    v.integer("heartbeat_interval_s", value, 0, 300)
    v.check()
    return value or DEFAULT_HEARTBEAT_S


# ----- out ------------------------------------------------------------------------------------


def incident_proto(inc: Incident, redact: bool = False) -> pb.Incident:
    """`redact`: for callers that may not see plates (plate numbers typed into the description are masked)."""
    out = pb.Incident(
        id=inc.id, type=inc.type, status=inc.status, severity=inc.severity,  # type: ignore[arg-type]
        severity_derived=inc.severity_derived,
        lane_impacts=[pb.LaneImpact(lane_id=lane, state=state) for lane, state in inc.lane_impacts],  # type: ignore[arg-type]
        position=cpb.LatLon(lat=inc.lat, lon=inc.lon), radius_m=inc.radius_m, confidence=inc.confidence,
        source_count=inc.source_count, source_kinds=inc.source_kinds,  # type: ignore[arg-type]
        version=inc.version, first_observed_at=ts(inc.first_observed_at), last_observed_at=ts(inc.last_observed_at),
        created_at=ts(inc.created_at), updated_at=ts(inc.updated_at), cleared_at=ts(inc.cleared_at),
        closed_at=ts(inc.closed_at), merged_into_id=inc.merged_into_id,
        description=mask_plates(inc.description) if redact else inc.description,
        denm_cause_code=taxonomy.to_denm(inc.type),
    )
    if inc.heading_deg is not None:
        out.heading_deg = inc.heading_deg
    return out


def source_proto(s: Source, redact: bool) -> pb.IncidentSource:
    out = pb.IncidentSource(
        report_id=s.report_id, source_id=s.source_id, source_kind=s.source_kind, type=s.type,  # type: ignore[arg-type]
        external_code=s.external_code, position=cpb.LatLon(lat=s.lat, lon=s.lon), confidence=s.confidence,
        observed_at=ts(s.observed_at), received_at=ts(s.received_at), lane_id=s.lane_id,
        description=mask_plates(s.description) if redact else s.description,
    )
    if s.heading_deg is not None:
        out.heading_deg = s.heading_deg
    has_evidence = bool(s.plate or s.has_snapshot)
    if redact:
        out.evidence.redacted = has_evidence
    else:
        out.evidence.plate = s.plate
        out.evidence.plate_colour = s.plate_colour  # type: ignore[assignment]
        out.evidence.has_snapshot = s.has_snapshot
    return out


def audit_proto(e: AuditEntry, redact: bool = False) -> pb.AuditRecord:
    return pb.AuditRecord(version=e.version, at=ts(e.at), actor=e.actor, action=e.action,  # type: ignore[arg-type]
                          note=mask_plates(e.note) if redact else e.note,
                          from_status=e.from_status, to_status=e.to_status,  # type: ignore[arg-type]
                          details=e.details, report_id=e.report_id, related_incident_id=e.related_incident_id)


def link_proto(link: Link) -> pb.SourceLink:
    return pb.SourceLink(report_id=link.report_id, kind=link.kind,  # type: ignore[arg-type]
                         from_incident_id=link.from_incident_id, to_incident_id=link.to_incident_id, at=ts(link.at),
                         actor=link.actor)


def redact_subscribe_chunk(chunk: bytes) -> bytes:
    """A serialized SubscribeResponse (or several, concatenated) for a caller that may not see plates: plate
    numbers in the incidents' descriptions masked. The change feed frames each change once for every
    subscriber; only a chunk whose bytes may hold a plate is parsed and serialized again."""
    if not may_contain_plate(chunk):
        return chunk
    out = pb.SubscribeResponse.FromString(chunk)
    for m in out.messages:
        if m.incident.description:
            m.incident.description = mask_plates(m.incident.description)
    return out.SerializeToString()
