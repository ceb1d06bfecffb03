"""Keeps the demo district alive: operators' systems pushing fresh readings through the real API.

Each round, every operator streams new readings for a random quarter of its lots over
StreamOccupancy, so drivers' queries in the demo see live (not expired) data that changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.parking.model import Report
from services.runner.demo_district import DemoLot, district, occupancy_report

log = logging.getLogger("v2x.sim")


def report_proto(r: Report) -> pb.OccupancyReport:
    observed = Timestamp()
    observed.FromDatetime(r.observed_at)
    out = pb.OccupancyReport(lot_id=r.lot_id, sequence=r.sequence, observed_at=observed, closed=r.closed,
                             full_at_entrance=r.full_at_entrance, report_id=r.report_id)
    out.counts.extend(pb.ClassCount(space_class=c, free=f) for c, f in r.counts.items())  # type: ignore[arg-type]
    out.spots.extend(pb.SpotState(spot_id=s, status=st) for s, st in r.spots.items())  # type: ignore[arg-type]
    return out


async def simulate(target: str, operator_keys: Mapping[str, str], period_s: float = 15.0,
                   share: float = 0.25, spots: dict[str, dict[str, int]] | None = None) -> None:
    """Runs until cancelled. Single-space lots' spot states go into `spots` (lot id -> spot id ->
    SpotStatus) as they are pushed, when given: the charging simulator's EV bays follow them."""
    lots = district()
    rng = random.Random()
    level = {lot.spec.id: rng.uniform(0.3, 0.95) for lot in lots}
    by_operator: dict[str, list[DemoLot]] = {}
    for lot in lots:
        by_operator.setdefault(lot.spec.operator_id, []).append(lot)
    async with aio.insecure_channel(target) as channel:
        stub = ParkingServiceStub(channel)
        while True:
            # Milliseconds since the epoch keep sequence numbers increasing across restarts.
            seq = int(time.time() * 1000)
            now = datetime.now(UTC)
            for operator, mine in by_operator.items():
                key = operator_keys.get(operator)
                if key is None:
                    continue
                chosen = rng.sample(mine, max(1, int(len(mine) * share)))
                reports = []
                for lot in chosen:
                    level[lot.spec.id] = min(1.0, max(0.05, level[lot.spec.id] + rng.uniform(-0.08, 0.08)))
                    report = occupancy_report(lot, rng, seq, now, level[lot.spec.id])
                    reports.append(report_proto(report))
                    if spots is not None and report.spots:
                        spots[lot.spec.id] = dict(report.spots)

                async def feed(items: list[pb.OccupancyReport]) -> AsyncIterator[pb.OccupancyReportBatch]:
                    yield pb.OccupancyReportBatch(reports=items)  # the round's readings as one burst

                try:
                    call = stub.StreamOccupancy(feed(reports), metadata=(("authorization", f"Bearer {key}"),))
                    async for _acks in call:
                        pass
                except aio.AioRpcError as exc:
                    log.warning("simulated push failed", extra={"operator": operator, "code": exc.code().name,
                                                                "details": exc.details()})
            await asyncio.sleep(period_s)
