"""Announces expired readings: a connector whose charger went silent (or whose pushed reading's TTL
passed) reads UNKNOWN to every reader at once; this periodic task also tells the city, by writing one
`charger_status` outbox row (status UNKNOWN, expired: true) per expiry. A later report announces the
connector again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from prometheus_client import Counter

from services.charging.store import ChargingStore
from services.common.background import every

log = logging.getLogger("v2x.charging.expiry")
EXPIRED = Counter("v2x_charging_readings_expired_total", "Connector readings that expired (announced as UNKNOWN)")


class ExpirySweeper:
    def __init__(self, store: ChargingStore, clock: Callable[[], datetime], interval_s: float = 5.0) -> None:
        self.store = store
        self.clock = clock
        self.interval_s = interval_s

    async def sweep(self, now: datetime | None = None) -> int:
        total = 0
        while True:
            views = await self.store.sweep_expired(now or self.clock())
            total += len(views)
            EXPIRED.inc(len(views))
            if len(views) < 5000:
                return total

    async def run(self) -> None:
        await every(self.interval_s, self.sweep, "expiry sweep", log)
