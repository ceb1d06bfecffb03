"""The change stream's fan-out stops when the service stops, also when the Redis client loses the cancellation
of a blocking XREAD (seen with redis-py 8.1 and hiredis when the cancel lands as the read returns)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.common.redis_streams import Feed
from services.common.runtime import Resources
from services.idps.feed import Fanout
from tests.redis_faults import LosesCancellation, blocked_in_xread


async def test_the_fan_out_stops_even_when_the_client_swallows_the_cancel(resources: Resources, unique: str) -> None:
    name = f"fanout-{unique}"
    own = Redis.from_url(resources.settings.require_redis_url(), client_name=name)
    redis = LosesCancellation(own)
    fanout = Fanout(redis, Feed("test", f"fanout-{unique}"))  # type: ignore[arg-type]
    await fanout.ensure_started()
    await blocked_in_xread(resources.redis, name)  # its first XREAD (2 s)
    # Without the stop check the fan-out reads on after the lost cancel, and stop() waits until this times out
    # (the timeout's own cancel then goes through).
    await asyncio.wait_for(fanout.stop(), 5.0)
    assert redis.lost and redis.reads == 1
    await own.aclose()
