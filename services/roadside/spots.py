"""On-street spot states from camera zones to the parking service.

How (the contract with parking): the roadside service holds one API key of the on-street operator
(``V2X_ROADSIDE_PARKING_KEY``, role ``operator:<id>``; parking checks the lot belongs to it) and the
parking address (``V2X_ROADSIDE_PARKING_TARGET``). For each lot (``detection_type`` SINGLE_SPACE) it
sends ``PushOccupancy`` with the states of the lot's spots that cameras see, ``observed_at`` = the
capture time of the newest frame behind them and ``sequence`` = that time in milliseconds (raised by
one when two reports fall in the same millisecond), so a restarted roadside process continues the
sequence without keeping state. A report goes out when a spot changes, and every
``V2X_ROADSIDE_SPOT_REFRESH_S`` while the cameras keep sending frames, so the lot does not expire at
parking; when a camera stops, its spots are no longer refreshed and parking turns them UNKNOWN after
the lot's TTL, which is the truth.

Delivery is at-least-once with retries; parking acknowledges repeats as DUPLICATE and older reports as
STALE. A refusal (e.g. the lot is not SINGLE_SPACE, or not the operator's) is logged and counted, not
retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
from grpc import aio
from prometheus_client import Counter
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub
else:
    Stub = ParkingServiceStub

from services.common.timestamps import ts
from services.roadside.model import SpotChange, SpotState

log = logging.getLogger("v2x.roadside.spots")
PUSHES = Counter("v2x_roadside_spot_reports_total", "Spot-state reports sent to parking by result", ["result"])
RETRY_S = 2.0


@dataclass
class _Lot:
    spots: dict[str, SpotState] = field(default_factory=dict)
    observed_at: datetime | None = None
    sent_observed_at: datetime | None = None
    last_sequence: int = 0
    dirty: bool = False
    last_sent: float = 0.0


class SpotPublisher:
    """Collects spot states from the cameras' analytics and reports them to parking."""

    def __init__(self, target: str, api_key: str, refresh_s: float = 60.0, timeout_s: float = 5.0) -> None:
        self.target = target
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self._lots: dict[str, _Lot] = {}
        self._wake = asyncio.Event()
        self.acks: list[ppb.OccupancyAck] = []  # the last few acks, for tests and debugging

    def observe(self, captured_at: datetime, states: Sequence[tuple[str, str, SpotState]],
                changes: Sequence[SpotChange]) -> None:
        """After each frame of a camera with spot zones: its known spot states, and what changed."""
        for lot_id, spot_id, state in states:
            lot = self._lots.setdefault(lot_id, _Lot())
            lot.spots[spot_id] = state
            if lot.observed_at is None or captured_at > lot.observed_at:
                lot.observed_at = captured_at
        for c in changes:
            lot = self._lots.setdefault(c.lot_id, _Lot())
            lot.spots[c.spot_id] = c.state
            lot.dirty = True
        if changes:
            self._wake.set()

    def _due(self, now: float) -> list[str]:
        due = []
        for lot_id, lot in self._lots.items():
            if not lot.spots or lot.observed_at is None:
                continue
            fresh = lot.sent_observed_at is None or lot.observed_at > lot.sent_observed_at
            if lot.dirty or (fresh and now - lot.last_sent >= self.refresh_s):
                due.append(lot_id)
        return due

    def _report(self, lot_id: str, lot: _Lot) -> ppb.OccupancyReport:
        assert lot.observed_at is not None
        ms = int(lot.observed_at.timestamp() * 1000)
        sequence = max(ms, lot.last_sequence + 1)
        report = ppb.OccupancyReport(lot_id=lot_id, sequence=sequence, observed_at=ts(lot.observed_at),
                                     report_id=f"roadside-{sequence}")
        for spot_id, state in sorted(lot.spots.items()):
            report.spots.add(spot_id=spot_id, status=int(state))
        return report

    async def run(self) -> None:
        # round_robin: a target that resolves to several parking replicas (a headless Service) gets calls
        # spread over all of them, not pinned to the first address.
        async with aio.insecure_channel(self.target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
            stub: Stub = ParkingServiceStub(channel)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(self.refresh_s, 5.0))
                self._wake.clear()
                now = time.monotonic()
                for lot_id in self._due(now):
                    await self._push(stub, lot_id, now)

    async def _push(self, stub: Stub, lot_id: str, now: float) -> None:
        lot = self._lots[lot_id]
        report = self._report(lot_id, lot)
        observed = lot.observed_at
        lot.dirty = False
        try:
            ack: ppb.OccupancyAck = await stub.PushOccupancy(report, metadata=self._metadata,
                                                             timeout=self.timeout_s)
        except aio.AioRpcError as exc:
            PUSHES.labels(exc.code().name).inc()
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
                lot.dirty = True  # retried on the next round
                log.warning("parking unavailable for lot %s (%s); retrying", lot_id, exc.code().name)
                await asyncio.sleep(RETRY_S)
                self._wake.set()
            else:
                log.error("parking refused spot states of lot %s: %s %s", lot_id, exc.code().name, exc.details())
                lot.last_sent = now
                lot.sent_observed_at = observed
            return
        lot.last_sequence = report.sequence
        lot.last_sent = now
        lot.sent_observed_at = observed
        PUSHES.labels(ppb.AckResult.Name(ack.result)).inc()
        self.acks = [*self.acks[-99:], ack]
