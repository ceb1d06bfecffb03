"""Builders for parking requests in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb


def ts(at: datetime | None = None, *, seconds_ago: float = 0) -> Timestamp:
    t = Timestamp()
    t.FromDatetime((at or datetime.now(UTC)) - timedelta(seconds=seconds_ago))
    return t


def lot(lot_id: str, operator: str = "OPA", *, lat: float = 31.40, lon: float = 121.49, general: int = 100,
        ev: int = 10, disabled: int = 2, reserved: int = 0, kind: int = pb.LOT_KIND_GARAGE,
        detection: int = pb.DETECTION_TYPE_BALANCING, ttl_s: int = 0, per_hour_fen: int = 800,
        always_open: bool = True, periods: list[tuple[int, int, int]] | None = None) -> pb.Lot:
    out = pb.Lot(
        id=lot_id, operator_id=operator, name=f"Lot {lot_id}", address="宝山区友谊路1号", region_code="310113",
        kind=kind, location=cpb.LatLon(lat=lat, lon=lon),  # type: ignore[arg-type]
        capacity=pb.Capacity(general=general, ev=ev, disabled=disabled, reserved=reserved),
        price=pb.PriceRule(free_minutes=15, first_hour_fen=per_hour_fen, per_hour_fen=per_hour_fen),
        opening_hours=pb.OpeningHours(always_open=always_open, periods=[
            pb.OpeningPeriod(weekday=d, open_minute=o, close_minute=c) for d, o, c in (periods or [])]),
        detection_type=detection, occupancy_ttl_s=ttl_s,  # type: ignore[arg-type]
    )
    if kind == pb.LOT_KIND_ON_STREET_SEGMENT:
        out.line.points.extend([cpb.LatLon(lat=lat, lon=lon - 0.0003), cpb.LatLon(lat=lat, lon=lon + 0.0003)])
    return out


def report(lot_id: str, seq: int, *, general: int | None = None, ev: int | None = None,
           seconds_ago: float = 0, at: datetime | None = None, spots: dict[str, int] | None = None,
           closed: bool = False) -> pb.OccupancyReport:
    r = pb.OccupancyReport(lot_id=lot_id, sequence=seq, observed_at=ts(at, seconds_ago=seconds_ago), closed=closed,
                           report_id=f"r{seq}")
    if general is not None:
        r.counts.add(space_class=pb.SPACE_CLASS_GENERAL, free=general)
    if ev is not None:
        r.counts.add(space_class=pb.SPACE_CLASS_EV, free=ev)
    for spot_id, status in (spots or {}).items():
        r.spots.add(spot_id=spot_id, status=status)
    return r


def batch(*reports: pb.OccupancyReport) -> pb.OccupancyReportBatch:
    """One StreamOccupancy message."""
    return pb.OccupancyReportBatch(reports=reports)


def free_of(availability: pb.Availability, space_class: int = pb.SPACE_CLASS_GENERAL) -> int | None:
    for c in availability.classes:
        if c.space_class == space_class:
            return c.free if c.HasField("free") else None
    raise AssertionError(f"class {space_class} not in availability")


async def outbox_payloads(engine: AsyncEngine, lot_id: str, kind: str) -> list[dict[str, Any]]:
    """The payloads the parking service wrote to the outbox for a lot, of one kind, oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT payload FROM outbox WHERE aggregate_id = :id AND kind = :kind ORDER BY id"),
            {"id": lot_id, "kind": kind})).all()
    return [r.payload for r in rows]
