"""Consumes the roadside service's analytics events, so that camera detections reach the consoles.

Contract: roadside appends to `v2x:{roadside}:events` entries with a field `event` holding a serialized
`v2x.roadside.v1.AnalyticsEvent`. IDPS reads them in the consumer group `idps` (XREADGROUP) and
acknowledges each entry after its incident change committed; a crash before the XACK re-delivers the
entry, and the event id (the report's idempotency key, per camera) makes the second delivery a
no-op. Entries that can never become a report (not parseable, invalid) are acknowledged and counted,
and copied to `v2x:{idps}:roadside-rejected` for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from google.protobuf.message import DecodeError
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from v2x.idps.v1 import idps_pb2 as pb
from v2x.roadside.v1 import roadside_pb2 as rpb

from services.common.background import raise_if_stopping
from services.common.errors import DomainError, InvalidArgument
from services.common.redis_streams import Entry
from services.idps import convert
from services.idps.servicer import IncidentService

log = logging.getLogger("v2x.idps.roadside")

EVENTS_STREAM = "v2x:{roadside}:events"
REJECTED_STREAM = "v2x:{idps}:roadside-rejected"
GROUP = "idps"
CLAIM_IDLE_MS = 30_000
CONSUMED = Counter("v2x_idps_roadside_events_total", "Roadside analytics events consumed", ["result"])


def to_request(event: rpb.AnalyticsEvent) -> pb.ReportEventRequest:
    """An analytics event as the ReportEvent it stands for (same validation, same path)."""
    req = pb.ReportEventRequest(
        idempotency_key=event.event_id, source_id=event.camera_id,
        source_kind=pb.SOURCE_KIND_ROADSIDE_DETECTION,
        type=pb.EventType.ValueType(event.type),  # the roadside types are RSI / suite codes, the same numbers
        position=event.position, confidence=event.confidence, observed_at=event.observed_at,
        lane_id=event.lane_id,
    )
    if event.HasField("heading_deg"):
        req.heading_deg = event.heading_deg
    if event.snapshot_jpeg:
        req.evidence.snapshot_jpeg = event.snapshot_jpeg
    if event.plate.text:
        req.evidence.plate = event.plate.text
        req.evidence.plate_colour = event.plate.colour
    parts = []
    if event.zone_id:
        parts.append(f"zone {event.zone_id}")
    if event.stationary_s:
        parts.append(f"standing {event.stationary_s} s")
    if event.HasField("speed_mps"):
        parts.append(f"speed {event.speed_mps * 3.6:.0f} km/h")
    if event.track_id:
        parts.append(f"track {event.track_id}")
    req.description = ", ".join(parts)
    return req


class RoadsideConsumer:
    def __init__(self, redis: Redis, incidents: IncidentService, max_future_s: float, *, consumer: str | None = None,
                 batch: int = 200, block_ms: int = 1000) -> None:
        self.redis = redis
        self.incidents = incidents
        self.max_future_s = max_future_s
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(EVENTS_STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Forever: first this consumer's own unacknowledged entries, then others' stale ones, then new ones."""
        while True:
            try:
                await self.ensure_group()
                await self.drain_pending()
                while True:
                    raise_if_stopping()  # the client may lose a cancel that lands as a blocking read returns
                    await self.claim_stale()
                    await self.poll(">")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                raise_if_stopping()
                log.warning("roadside event consumer: Redis failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
            except Exception:
                raise_if_stopping()
                log.exception("roadside event consumer failed; retrying")
                await asyncio.sleep(1.0)

    async def drain_pending(self) -> None:
        while await self.poll("0") > 0:
            pass

    async def claim_stale(self) -> None:
        """Takes over entries a crashed consumer read but never acknowledged."""
        reply = await self.redis.xautoclaim(EVENTS_STREAM, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0",
                                            count=self.batch)
        entries = cast(list[Entry], reply[1]) if reply else []
        entries = [e for e in entries if e and e[1] is not None]
        if entries:
            await self.handle(entries)

    async def poll(self, start: str) -> int:
        reply = cast(list[tuple[bytes, list[Entry]]], await self.redis.xreadgroup(
            GROUP, self.consumer, {EVENTS_STREAM: start}, count=self.batch,
            block=self.block_ms if start == ">" else None))
        entries = reply[0][1] if reply else []
        entries = [e for e in entries if e[1]]
        if entries:
            await self.handle(entries)
        return len(entries)

    async def handle(self, entries: Sequence[Entry]) -> None:
        """Reports every entry (concurrently), then acknowledges those that committed or can never succeed."""
        results = await asyncio.gather(*(self._one(e) for e in entries))
        done = [entry_id for (entry_id, _), ok in zip(entries, results, strict=True) if ok]
        if done:
            await self.redis.xack(EVENTS_STREAM, GROUP, *done)

    async def _one(self, entry: Entry) -> bool:
        entry_id, fields = entry
        now = datetime.now(UTC)
        try:
            event = rpb.AnalyticsEvent.FromString(fields.get(b"event", b""))
            if not event.event_id:
                raise InvalidArgument("event has no event_id (or no `event` field)")
            request = to_request(event)
            report = convert.report(request, f"camera:{event.camera_id}", self.max_future_s, now)
        except (DecodeError, DomainError) as exc:
            CONSUMED.labels("rejected").inc()
            log.warning("roadside event rejected", extra={"entry": entry_id.decode(), "error": str(exc)})
            with contextlib.suppress(RedisError):
                await self.redis.xadd(REJECTED_STREAM, {"entry": entry_id, "error": str(exc)[:1000],
                                                        "event": fields.get(b"event", b"")},
                                      maxlen=10_000, approximate=True)
            return True
        try:
            outcome = await self.incidents.report(report, now)
        except DomainError as exc:
            CONSUMED.labels("rejected").inc()
            log.warning("roadside event refused", extra={"entry": entry_id.decode(), "error": str(exc)})
            return True
        except Exception:
            # Database trouble: leave it pending; it is delivered again.
            CONSUMED.labels("retry").inc()
            log.warning("roadside event not stored; it will be retried", exc_info=True)
            return False
        CONSUMED.labels("duplicate" if outcome.duplicate else "reported").inc()
        return True
