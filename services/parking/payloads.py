"""Outbox payloads for parking changes: the suite's canonical record of each change.

Field names follow the platform's kinds of data (docs/DOMAIN.md "Parking", "The city platform"); the municipal
adapter maps them to each destination's profile. Coordinates are WGS-84 and say so.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from v2x.parking.v1 import parking_pb2 as pb

from services.parking.availability import CLASS_NAMES, LotState, site_status
from services.parking.model import LotSpec, LotSummary, PassageRecord, PassageSpec
from services.parking.vocab import CLASSES, PassageAmendAction


def lot_static(spec: LotSpec) -> dict[str, Any]:
    return {
        "lot_id": spec.id, "name": spec.name, "address": spec.address, "region_code": spec.region_code,
        "coordinate_system": "WGS-84", "lat": spec.lat, "lon": spec.lon,
        "line": [[lat, lon] for lat, lon in spec.line] if spec.line else None,
        "lot_kind": pb.LotKind.Name(spec.kind), "operator_id": spec.operator_id,  # type: ignore[arg-type]
        "entrances": [e.__dict__ for e in spec.entrances],
        "capacity": {CLASS_NAMES[c]: spec.capacity.get(c, 0) for c in CLASSES},
        "total_spaces": sum(spec.capacity.values()),
        "always_open": spec.always_open, "opening_periods": [p.__dict__ for p in spec.periods],
        "price": spec.price.__dict__, "detection_type": pb.DetectionType.Name(spec.detection_type),  # type: ignore[arg-type]
        "phone": spec.phone,
        "fast_charging_piles": spec.fast_charging_piles, "slow_charging_piles": spec.slow_charging_piles,
    }


_SITE_STATUS_NAMES = {v.number: v.name for v in pb.SiteStatus.DESCRIPTOR.values}


def lot_dynamic(summary: LotSummary, state: LotState, now: datetime) -> dict[str, Any]:
    # One per accepted report: plain dict lookups instead of the enum wrapper's Name().
    capacity, free = summary.capacity, state.free
    return {
        "lot_id": summary.id, "sequence": state.sequence,
        "observed_at": state.observed_at.isoformat() if state.observed_at else None,
        "received_at": now.isoformat(),
        "capacity": {name: capacity.get(c, 0) for c, name in CLASS_NAMES.items()},
        "free": {name: free.get(c) for c, name in CLASS_NAMES.items() if capacity.get(c, 0) > 0},
        "status": _SITE_STATUS_NAMES[site_status(state, capacity, summary.ttl_s, summary.open_now, now)],
        "ttl_s": summary.ttl_s,
    }


def spot_status(lot_id: str, spot_id: str, space_class: int, status: int, observed_at: datetime,
                location: tuple[float, float] | None = None) -> dict[str, Any]:
    """A spot's status; `location` (lat, lon, WGS-84) when the spot has one (on-street berths)."""
    out: dict[str, Any] = {"lot_id": lot_id, "spot_id": spot_id, "space_class": CLASS_NAMES[space_class],
           "status": pb.SpotStatus.Name(status), "observed_at": observed_at.isoformat()}  # type: ignore[arg-type]
    if location is not None:
        out["lat"], out["lon"] = location
    return out


def passage(p: PassageSpec, now: datetime, entry: tuple[str, datetime] | None = None,
            fee_fen: int | None = None) -> dict[str, Any]:
    """An entry or exit; an exit matched to its entry (same lot and plate, the latest entry before it) also names
    the entry passage, the stay's duration and its fee by the lot's published rule."""
    out: dict[str, Any] = {
        "lot_id": p.lot_id, "passage_id": p.passage_id,
        "direction": pb.PassageDirection.Name(p.direction),  # type: ignore[arg-type]
        "plate": p.plate, "plate_colour": pb.PlateColour.Name(p.plate_colour),  # type: ignore[arg-type]
        "lane": p.lane, "passed_at": p.passed_at.isoformat(), "received_at": now.isoformat(),
        "space_class": CLASS_NAMES[p.space_class], "record_type": "normal"}
    if entry is not None:
        entry_id, entered_at = entry
        out.update({"entry_passage_id": entry_id, "entry_passed_at": entered_at.isoformat(),
                    "duration_s": max(0, int((p.passed_at - entered_at).total_seconds())), "fee_fen": fee_fen or 0})
    return out


# PassageAmendAction -> record_type of the passage record that carries the amendment.
_RECORD_TYPES: dict[int, str] = {PassageAmendAction.CORRECT: "correction", PassageAmendAction.VOID: "void"}


def passage_amendment(record: PassageRecord, action: int) -> dict[str, Any]:
    """A correction or void: the passage as it now stands (a void: as it stood), marked with the record type
    and the passage it amends, so that the platform replaces or withdraws its earlier record."""
    assert record.amended_at is not None
    return {**passage(record.spec, record.received_at), "record_type": _RECORD_TYPES[action],
            "original_passage_id": record.spec.passage_id, "revision": record.revision,
            "reason": record.amend_reason, "amended_at": record.amended_at.isoformat()}
