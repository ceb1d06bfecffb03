"""Group commit of status reports: every path (unary and streamed gRPC reports, the OCPP gateway)
hands its reports to one writer, whose workers apply whatever queued up while the last transaction
committed, up to MAX_BATCH reports per transaction. A caller is answered after its reports commit.

Thousands of charge points each waiting on one StatusNotification thus cost a few transactions a
second, not thousands.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Histogram
from v2x.charging.v1 import charging_pb2 as pb

from services.charging.feed import ChargingFeed
from services.charging.model import Outcome, Report
from services.charging.store import ChargingStore
from services.common.errors import Unavailable

log = logging.getLogger("v2x.charging.writer")
MAX_BATCH = 500
REPORTS = Counter("v2x_charging_reports_total", "Connector status reports by source and result",
                  ["source", "result"])
BATCH = Histogram("v2x_charging_batch_reports", "Status reports per transaction",
                  buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))


@dataclass
class _Job:
    reports: Sequence[Report]
    future: asyncio.Future[list[Outcome]]


class StatusWriter:
    def __init__(self, store: ChargingStore, feed: ChargingFeed, clock: Callable[[], datetime], *,
                 workers: int = 2, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.feed = feed
        self.clock = clock
        self.workers = workers
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._stopped = False

    async def submit(self, reports: Sequence[Report]) -> list[Outcome]:
        """One outcome per report, in order, once they are committed (`run` must be running: it is a
        background task of the service, and may start after the first reports queue up)."""
        if not reports:
            return []
        if self._stopped:
            raise Unavailable("the service is stopping")
        job = _Job(reports, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def run(self) -> None:
        """The workers, until cancelled (a background task of the service)."""
        self._stopped = False
        try:
            await asyncio.gather(*(self._work() for _ in range(self.workers)))
        finally:
            self._stopped = True
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(Unavailable("the service is stopping"))

    async def _work(self) -> None:
        jobs: list[_Job] = []
        try:
            while True:
                jobs = [await self._queue.get()]
                n = len(jobs[0].reports)
                while n < self.max_batch and not self._queue.empty():
                    job = self._queue.get_nowait()
                    jobs.append(job)
                    n += len(job.reports)
                await self._apply(jobs)
                jobs = []
        finally:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(Unavailable("the service is stopping"))

    async def _apply(self, jobs: list[_Job]) -> None:
        reports = [r for j in jobs for r in j.reports]
        now = self.clock()
        try:
            outcomes, changed = await self.store.apply_reports(reports, now)
        except Exception as exc:
            log.exception("status batch failed", extra={"reports": len(reports)})
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        BATCH.observe(len(reports))
        await self.feed.publish_connectors(changed, now)
        i = 0
        for j in jobs:
            mine = outcomes[i:i + len(j.reports)]
            i += len(j.reports)
            if not j.future.done():
                j.future.set_result(mine)
        for (source, result), n in collections.Counter((r.source, o.result) for r, o in
                                                       zip(reports, outcomes, strict=True)).items():
            REPORTS.labels(pb.StatusSource.Name(source), pb.AckResult.Name(result)).inc(n)  # type: ignore[arg-type]
