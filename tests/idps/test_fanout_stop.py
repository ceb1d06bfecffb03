"""The change stream's fan-out stops when the service stops, also when the Redis client loses the cancellation
of a blocking XREAD (seen with redis-py 8.1 and hiredis when the cancel lands as the read returns)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from services.common.runtime import Resources
from services.idps.feed import Fanout


class LosesCancellation:
    """The real client, except that the first cancelled XREAD returns nothing instead of raising (a second cancel
    goes through, so that a fan-out without the check fails the test instead of hanging it)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.reads = 0
        self.lost = False
        self.reading = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        self.reading.set()
        try:
            return await self.redis.xread(*args, **kwargs)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost = True
            return []


async def test_the_fan_out_stops_even_when_the_client_swallows_the_cancel(resources: Resources, unique: str) -> None:
    redis = LosesCancellation(resources.redis)
    fanout = Fanout(redis, stream=f"v2x:test:fanout-{unique}")  # type: ignore[arg-type]
    await fanout.ensure_started()
    await redis.reading.wait()  # blocked in its first XREAD (2 s)
    await asyncio.sleep(0.1)
    # Without the stop check the fan-out reads on after the lost cancel, and stop() waits until this times out
    # (the timeout's own cancel then goes through).
    await asyncio.wait_for(fanout.stop(), 5.0)
    assert redis.lost and redis.reads == 1
