"""How an incident sums up its reports: position, radius, confidence, observed times, kinds, plates,
type, lane impacts and derived severity. Pure functions on `model.Incident`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import datetime

from services.common.geo import haversine_m
from services.idps import lifecycle, taxonomy
from services.idps.model import Incident, ReportInput, Source

MAX_PLATES = 32
# A report's weight in the incident's position; a near-zero confidence still counts a little.
MIN_WEIGHT = 0.05


def new_id(prefix: str) -> str:
    """A time-ordered id: prefix, 11 hex digits of Unix milliseconds, 10 random hex digits."""
    return f"{prefix}{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


def _weight(confidence: float) -> float:
    return max(confidence, MIN_WEIGHT)


def open_incident(incident_id: str, r: ReportInput, now: datetime) -> Incident:
    lanes = [(r.lane_id, lifecycle.AFFECTED)] if r.lane_id else []
    key = lifecycle.source_key(r.source_kind, r.source_id)
    return Incident(
        id=incident_id, type=r.type, status=lifecycle.REPORTED, severity=lifecycle.derive_severity(lanes),
        lat=r.lat, lon=r.lon, confidence=lifecycle.combined_confidence({key: r.confidence}),
        first_observed_at=r.observed_at, last_observed_at=r.observed_at, created_at=now, updated_at=now,
        lane_impacts=lanes, radius_m=r.radius_m, heading_deg=r.heading_deg, source_conf={key: r.confidence},
        weight_sum=_weight(r.confidence), source_count=1, source_kinds=[r.source_kind],
        plates=[r.plate] if r.plate else [], description=r.description,
    )


def join(inc: Incident, r: ReportInput, now: datetime) -> tuple[list[str], bool]:
    """Adds a report to an incident (locked by the caller). Returns the details of what changed besides
    the new source, and whether a cleared incident was reactivated."""
    details: list[str] = []
    w = _weight(r.confidence)
    total = inc.weight_sum + w
    lat = (inc.lat * inc.weight_sum + r.lat * w) / total
    lon = (inc.lon * inc.weight_sum + r.lon * w) / total
    shift = haversine_m(inc.lat, inc.lon, lat, lon)
    inc.radius_m = round(max(inc.radius_m + shift, haversine_m(lat, lon, r.lat, r.lon) + r.radius_m), 2)
    inc.lat, inc.lon, inc.weight_sum = lat, lon, total
    key = lifecycle.source_key(r.source_kind, r.source_id)
    inc.source_conf[key] = max(inc.source_conf.get(key, 0.0), r.confidence)
    before_conf = inc.confidence
    inc.confidence = lifecycle.combined_confidence(inc.source_conf)
    if inc.confidence != before_conf:
        details.append(f"confidence {before_conf:.3f}->{inc.confidence:.3f}")
    inc.source_count += 1
    if r.source_kind not in inc.source_kinds:
        inc.source_kinds.append(r.source_kind)
    if r.plate and r.plate not in inc.plates and len(inc.plates) < MAX_PLATES:
        inc.plates.append(r.plate)
    inc.first_observed_at = min(inc.first_observed_at, r.observed_at)
    inc.last_observed_at = max(inc.last_observed_at, r.observed_at)
    if inc.heading_deg is None and r.heading_deg is not None:
        inc.heading_deg = r.heading_deg
    if not inc.type_fixed:
        t = taxonomy.merged_type(inc.type, r.type)
        if t != inc.type:
            details.append(f"type {lifecycle.type_name(inc.type)}->{lifecycle.type_name(t)}")
            inc.type = t
    if r.lane_id and all(lane != r.lane_id for lane, _ in inc.lane_impacts):
        inc.lane_impacts.append((r.lane_id, lifecycle.AFFECTED))
        details.append(f"lane {r.lane_id} AFFECTED")
    _rederive(inc, details)
    if not inc.description:
        inc.description = r.description
    reactivated = inc.status == lifecycle.CLEARED
    if reactivated:
        inc.status = lifecycle.REACTIVATED_STATUS
        inc.cleared_at = None
    inc.version += 1
    inc.updated_at = now
    return details, reactivated


def recompute(inc: Incident, sources: Sequence[Source], *, retype: bool = False) -> None:
    """Rebuilds what an incident sums up from its (non-empty) list of sources, after a merge or split.
    With `retype`, the type becomes the most specific of the sources' types (a new split incident)."""
    total = sum(_weight(s.confidence) for s in sources)
    inc.lat = sum(s.lat * _weight(s.confidence) for s in sources) / total
    inc.lon = sum(s.lon * _weight(s.confidence) for s in sources) / total
    inc.weight_sum = total
    inc.radius_m = round(max(haversine_m(inc.lat, inc.lon, s.lat, s.lon) + s.radius_m for s in sources), 2)
    conf: dict[str, float] = {}
    for s in sources:
        key = lifecycle.source_key(s.source_kind, s.source_id)
        conf[key] = max(conf.get(key, 0.0), s.confidence)
    inc.source_conf = conf
    inc.confidence = lifecycle.combined_confidence(conf)
    inc.source_count = len(sources)
    ordered = sorted(sources, key=lambda s: (s.observed_at, s.report_id))
    inc.source_kinds = list(dict.fromkeys(s.source_kind for s in ordered))
    inc.plates = list(dict.fromkeys(s.plate for s in ordered if s.plate))[:MAX_PLATES]
    inc.first_observed_at = ordered[0].observed_at
    inc.last_observed_at = max(s.observed_at for s in sources)
    inc.heading_deg = next((s.heading_deg for s in ordered if s.heading_deg is not None), None)
    if retype:
        t = ordered[0].type
        for s in ordered[1:]:
            if taxonomy.compatible(t, s.type):
                t = taxonomy.merged_type(t, s.type)
        inc.type = t
        inc.lane_impacts = [(lane, lifecycle.AFFECTED) for lane in dict.fromkeys(s.lane_id for s in ordered
                                                                                 if s.lane_id)]
        inc.description = next((s.description for s in ordered if s.description), "")
    _rederive(inc, [])


def _rederive(inc: Incident, details: list[str]) -> None:
    if inc.severity_derived:
        severity = lifecycle.derive_severity(inc.lane_impacts)
        if severity != inc.severity:
            details.append(f"severity {lifecycle.severity_name(inc.severity)}->{lifecycle.severity_name(severity)}")
            inc.severity = severity
