"""Group commit for reports: concurrent reports share one transaction and one publication.

Each report waits in a queue; a few workers each take everything queued (up to `MAX_BATCH`), store it
in one transaction (`IdpsStore.report_many`), publish the changes of the whole batch in one call to
Redis, and only then answer the callers of that batch. A lone report is taken at once; under load, the
reports that arrive while a batch is in its transaction make the next batch, so the cost per report
falls as the rate rises.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime

from services.common.background import raise_if_stopping
from services.idps.feed import ChangeFeed
from services.idps.model import ReportInput, ReportOutcome
from services.idps.store import IdpsStore

log = logging.getLogger("v2x.idps.batching")

# Reports per transaction at most; each takes up to 9 advisory locks (PostgreSQL's shared lock table
# holds max_locks_per_transaction x max_connections of them, 6,400 by default).
MAX_BATCH = 64
# Batches in flight at once. One: reports that come while a batch is in its transaction make the next
# batch (a second worker would halve the batches, and each batch costs round trips whatever its size).
WORKERS = 1
# Under load (reports already waiting when a batch is done), how long to let the next batch grow before
# taking it: a few milliseconds of latency for batches several times larger. A report that finds the
# worker idle is taken at once.
LINGER_S = 0.004

_Pending = tuple[ReportInput, datetime, "asyncio.Future[ReportOutcome]"]


class ReportBatcher:
    def __init__(self, store: IdpsStore, feed: ChangeFeed, max_batch: int = MAX_BATCH, workers: int = WORKERS,
                 linger_s: float = LINGER_S) -> None:
        self.store = store
        self.feed = feed
        self.max_batch = max_batch
        self.workers = workers
        self.linger_s = linger_s
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def report(self, r: ReportInput, now: datetime) -> ReportOutcome:
        """Stores the report with whatever else is queued; returns once its batch committed and was published."""
        if len(self._tasks) < self.workers or self._tasks[0].done():  # first use, or a worker died: (re)start
            self._tasks = [t for t in self._tasks if not t.done()]
            self._tasks += [asyncio.create_task(self._run(), name=f"idps-reports-{i}")
                            for i in range(len(self._tasks), self.workers)]
        future: asyncio.Future[ReportOutcome] = asyncio.get_running_loop().create_future()
        self._queue.append((r, now, future))
        self._wake.set()
        return await future

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        while self._queue:
            self._queue.popleft()[2].cancel()

    async def _run(self) -> None:
        while True:
            raise_if_stopping()  # a cancel the database client turned into an error of a batch still stops it
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.max_batch))]
            # A caller that went away (cancelled) before its report was taken: nothing of it is stored.
            batch = [p for p in batch if not p[2].done()]
            if not batch:
                continue
            try:
                await self._store(batch)
            except asyncio.CancelledError:
                for _, _, future in batch:
                    future.cancel()
                raise
            if 0 < len(self._queue) < self.max_batch:
                await asyncio.sleep(self.linger_s)

    async def _store(self, batch: list[_Pending]) -> None:
        outcomes: list[ReportOutcome | Exception]
        try:
            outcomes = await self.store.report_many([(r, now) for r, now, _ in batch])
            await self.feed.publish([c for o in outcomes if isinstance(o, ReportOutcome) for c in o.changes])
        except Exception as exc:  # e.g. no database connection: every report of the batch fails with it
            log.warning("a batch of %d reports failed", len(batch), exc_info=True)
            outcomes = [exc] * len(batch)
        for (_, _, future), out in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away (cancelled); what committed stays committed
                continue
            if isinstance(out, Exception):
                future.set_exception(out)
            else:
                future.set_result(out)
