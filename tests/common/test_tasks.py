"""A retrying background loop stops when asked, even when a library turned the cancellation into an error."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from services.common.background import raise_if_stopping
from services.common.redis_streams import follow
from services.common.runtime import Resources
from tests.redis_faults import LosesCancellation, blocked_in_xread


async def _swallowing_call(calling: asyncio.Event) -> None:
    """Like a client that converts a cancellation into its own connection error."""
    calling.set()
    try:
        await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        raise ConnectionError("connection reset") from None


async def _retrying_loop(attempts: list[int], calling: asyncio.Event) -> None:
    # Bounded so that an unguarded loop ends by itself (the test then fails instead of hanging).
    for _ in range(100):
        try:
            await _swallowing_call(calling)
        except Exception:
            attempts.append(1)
            raise_if_stopping()
            await asyncio.sleep(0.01)


async def test_a_guarded_loop_stops_when_cancelled() -> None:
    attempts: list[int] = []
    calling = asyncio.Event()
    task = asyncio.create_task(_retrying_loop(attempts, calling))
    await calling.wait()  # in its first call
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.5)
    still_running = task not in done
    if still_running:
        await task  # an unguarded loop: let it run out before failing
    assert not still_running, "the loop went on retrying after it was cancelled"
    assert task.cancelled()
    assert attempts == [1]


async def test_an_error_without_a_stop_request_is_left_to_the_loop() -> None:
    async def failing_once() -> str:
        try:
            raise ConnectionError("reset")
        except ConnectionError:
            raise_if_stopping()
            return "retry"

    assert await failing_once() == "retry"


async def test_a_stream_follower_stops_even_when_the_client_loses_the_cancel(resources: Resources,
                                                                              unique: str) -> None:
    name = f"follow-{unique}"
    own = Redis.from_url(resources.settings.require_redis_url(), client_name=name)
    redis = LosesCancellation(own)

    async def follower() -> None:
        async for _ in follow(redis, f"v2x:test:follow-{unique}", b"0-0", block_ms=2000):  # type: ignore[arg-type]
            pass

    task = asyncio.create_task(follower())
    await blocked_in_xread(resources.redis, name)  # its first XREAD
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5.0)
    if task not in done:  # without the check it reads on; a second cancel goes through
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task in done, "the follower went on reading after it was cancelled"
    await own.aclose()
    assert redis.lost and task.cancelled()
