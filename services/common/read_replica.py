"""Reads that may go to a PostgreSQL streaming replica (DATABASE_READ_URL), within a staleness bound.

A read that tolerates being a little behind (a driver's nearby query answered by PostGIS, an incident
listing) runs through `Reads.read()`. It runs on the replica while the replica is known to
be at most `max_lag_s` behind the primary, and the primary's otherwise (or when no replica is set, or
the replica refuses a connection).

How "at most max_lag_s behind" is known: every tick the monitor reads the primary's WAL position L at
time t, then the replica's replay position R. Every commit acknowledged before t ended at or before L,
so once R >= L the replica shows everything committed before t: it is at most (now - t) behind. The
bound therefore holds however the replica is reached and whatever its clock says; a monitor that
cannot reach either server stops refreshing t, the bound runs out, and reads fall back to the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("v2x.reads")

T = TypeVar("T")

_PRIMARY_LSN = text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
# NULL on a server that is not in recovery (DATABASE_READ_URL names a primary): it is never behind.
_REPLAY_LSN = text("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint")

READS = Counter("v2x_db_reads_total", "Reads that could go to the read replica, by where they went",
                ["target"])
STALENESS = Gauge("v2x_read_replica_staleness_seconds",
                  "Upper bound of how far the read replica is behind the primary (seconds)")


@dataclass
class Freshness:
    """Samples (t, primary LSN) and the time the replica last caught up with one of them."""

    clock: Callable[[], float]
    fresh_as_of: float = float("-inf")

    def __post_init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def primary_at(self, t: float, lsn: int) -> None:
        self.samples.append((t, lsn))

    def replica_at(self, replayed: int | None) -> None:
        if replayed is None:  # not a standby: as fresh as the primary
            if self.samples:
                self.fresh_as_of = self.samples[-1][0]
            self.samples.clear()
            return
        while self.samples and self.samples[0][1] <= replayed:
            self.fresh_as_of = self.samples.popleft()[0]

    def lost(self) -> None:
        self.fresh_as_of = float("-inf")
        self.samples.clear()

    def staleness(self) -> float:
        return self.clock() - self.fresh_as_of


class Reads:
    """Where a stale-tolerant read goes. Without a replica every read goes to the primary."""

    def __init__(self, primary: AsyncEngine, replica: AsyncEngine | None = None, *, max_lag_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        self.freshness = Freshness(clock)
        self._warned = False

    @property
    def tick_s(self) -> float:
        # A few samples per bound, so a replica just inside it is seen as such; at most one a second.
        return min(1.0, max(0.05, self.max_lag_s / 4))

    def replica_fresh(self, since: float | None = None) -> bool:
        """Whether the replica is within the bound (and, given `since`, a monotonic time, shows every
        commit acknowledged before it)."""
        if self.replica is None or self.freshness.staleness() > self.max_lag_s:
            return False
        return since is None or self.freshness.fresh_as_of >= since

    async def read(self, query: Callable[[AsyncConnection], Awaitable[T]], since: float | None = None) -> T:
        """Runs one read (it may run twice: reads are repeatable) on the replica when it is fresh enough,
        else on the primary. `since`: the read must see what was committed before that monotonic time
        (e.g. a snapshot that a feed position taken then continues). A replica that fails the read (it
        went away, a pooled connection was cut) is taken out until the monitor sees it again, and the
        read goes to the primary."""
        if self.replica_fresh(since):
            assert self.replica is not None
            try:
                async with self.replica.connect() as conn:
                    answer = await query(conn)
            except (OSError, InterfaceError, OperationalError) as exc:
                self._lose(exc)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                self._lose(exc)
            else:
                READS.labels("replica").inc()
                return answer
        READS.labels("primary").inc()
        async with self.primary.connect() as conn:
            return await query(conn)

    def _lose(self, exc: BaseException) -> None:
        self.freshness.lost()
        log.warning("a read on the replica failed; reading from the primary until the replica is back: %s", exc)

    async def sample(self) -> None:
        """One tick of the monitor: the primary's position, then the replica's."""
        assert self.replica is not None
        async with self.primary.connect() as conn:
            t = self.freshness.clock()
            lsn = (await conn.execute(_PRIMARY_LSN)).scalar_one()
        self.freshness.primary_at(t, int(lsn))
        async with self.replica.connect() as conn:
            replayed = (await conn.execute(_REPLAY_LSN)).scalar_one()
        if replayed is None and not self._warned:
            self._warned = True
            log.warning("DATABASE_READ_URL names a server that is not a standby; it is read as the primary")
        self.freshness.replica_at(None if replayed is None else int(replayed))

    async def monitor(self) -> None:
        """Runs for the life of the process (a background task)."""
        if self.replica is None:
            return
        down = False
        while True:
            try:
                await self.sample()
                if down:
                    log.info("read replica reachable again")
                down = False
            except (TimeoutError, OSError, InterfaceError, OperationalError, DBAPIError) as exc:
                if not down:
                    log.warning("read replica or primary unreachable; reads go to the primary: %s", exc)
                down = True
            STALENESS.set(min(self.freshness.staleness(), 1e9))
            await asyncio.sleep(self.tick_s)

    async def close(self) -> None:
        if self.replica is not None:
            await self.replica.dispose()
