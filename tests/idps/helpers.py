"""Builders and readers for IDPS tests."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.parking.v1 import parking_pb2 as ppb

from tests.conftest import Keys

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"


def ts(seconds_ago: float = 0.0, at: datetime | None = None) -> Timestamp:
    t = Timestamp()
    t.FromDatetime((at or datetime.now(UTC)) - timedelta(seconds=seconds_ago))
    return t


def offset(point: tuple[float, float], north_m: float = 0.0, east_m: float = 0.0) -> tuple[float, float]:
    lat, lon = point
    return lat + north_m / 111_320, lon + east_m / (111_320 * math.cos(math.radians(lat)))


def report(point: tuple[float, float], *, type: int = pb.EVENT_TYPE_ACCIDENT,
           kind: int = pb.SOURCE_KIND_POLICE_OFFICER, source: str = "officer-7", key: str | None = None,
           confidence: float = 0.6, seconds_ago: float = 0.0, heading: float | None = None, lane: str = "",
           plate: str = "", snapshot: bytes = b"", description: str = "", **fields: Any) -> pb.ReportEventRequest:
    r = pb.ReportEventRequest(
        idempotency_key=key or uuid.uuid4().hex, source_id=source, source_kind=kind,  # type: ignore[arg-type]
        type=type, position=cpb.LatLon(lat=point[0], lon=point[1]), confidence=confidence,  # type: ignore[arg-type]
        observed_at=ts(seconds_ago), lane_id=lane, description=description, **fields)
    if heading is not None:
        r.heading_deg = heading
    if plate:
        r.evidence.plate = plate
        r.evidence.plate_colour = ppb.PLATE_COLOUR_BLUE
    if snapshot:
        r.evidence.snapshot_jpeg = snapshot
    return r


def camera(point: tuple[float, float], camera_id: str = "cam-1", **kw: Any) -> pb.ReportEventRequest:
    kw.setdefault("type", pb.EVENT_TYPE_STOPPED_VEHICLE)
    kw.setdefault("confidence", 0.7)
    return report(point, kind=pb.SOURCE_KIND_ROADSIDE_DETECTION, source=camera_id, **kw)


def circle(point: tuple[float, float], radius_m: float = 500.0) -> cpb.Area:
    return cpb.Area(circle=cpb.Circle(center=cpb.LatLon(lat=point[0], lon=point[1]), radius_m=radius_m))


class Reader:
    """Reads a Subscribe stream message by message (flattening the responses). A task pumps the call
    into a queue: a timed-out wait must not cancel the call itself."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.queue: asyncio.Queue[pb.IncidentMessage | BaseException] = asyncio.Queue()
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        try:
            async for response in self.call:
                for m in response.messages:
                    self.queue.put_nowait(m)
        except BaseException as exc:
            self.queue.put_nowait(exc)

    async def next(self, wait_s: float = 5.0, *, heartbeats: bool = False) -> pb.IncidentMessage:
        while True:
            m = await asyncio.wait_for(self.queue.get(), wait_s)
            if isinstance(m, BaseException):
                raise m
            if heartbeats or m.kind != pb.IncidentMessage.KIND_HEARTBEAT:
                return m

    async def until_live(self, wait_s: float = 5.0) -> list[pb.IncidentMessage]:
        """Reads RESYNC .. SNAPSHOT_END; returns the snapshot's NEW messages."""
        first = await self.next(wait_s)
        assert first.kind == pb.IncidentMessage.KIND_RESYNC, first
        out: list[pb.IncidentMessage] = []
        while True:
            m = await self.next(wait_s)
            if m.kind == pb.IncidentMessage.KIND_SNAPSHOT_END:
                return out
            assert m.kind == pb.IncidentMessage.KIND_NEW, m
            out.append(m)

    def cancel(self) -> None:
        self.call.cancel()
        self.pump.cancel()


def subscribe(stub: Any, keys: Keys, key: str, *, area: cpb.Area | None = None, cursor: str = "",
              heartbeat_s: int = 0, **filter_fields: Any) -> Reader:
    f = pb.IncidentFilter(**filter_fields)
    if area is not None:
        f.area.CopyFrom(area)
    return Reader(stub.Subscribe(pb.SubscribeRequest(filter=f, cursor=cursor, heartbeat_interval_s=heartbeat_s),
                                 metadata=keys.md(key)))


async def drain(items: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in items]
