"""A Redis client that loses a cancellation, as redis-py 8.1 with hiredis was seen to when the cancel of a blocking
XREAD lands as the read returns: for tests that a background loop still stops."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from tests.waiting import assert_eventually


class LosesCancellation:
    """The real client, except that the first cancelled XREAD returns nothing instead of raising (a second cancel
    goes through, so that a fan-out without the check fails the test instead of hanging it)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.reads = 0
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        try:
            return await self.redis.xread(*args, **kwargs)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost = True
            return []


async def blocked_in_xread(observer: Redis, client_name: str) -> None:
    """Returns once the connection named `client_name` is blocked in an XREAD on the server (CLIENT LIST): the read
    is on the wire, not still being sent."""

    async def blocked() -> bool:
        return any(c.get("name") == client_name and c.get("cmd") == "xread" and "b" in c.get("flags", "")
                   for c in await observer.client_list())

    await assert_eventually(blocked, f"{client_name} blocked in XREAD")
