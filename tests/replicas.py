"""A second replica's nearby index in the test process: loaded, then following the change stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol


class FollowingFeed(Protocol):
    async def load_index(self) -> None: ...

    async def follow_index(self) -> None: ...


@contextlib.asynccontextmanager
async def following(feed: FollowingFeed) -> AsyncIterator[None]:
    """Loads the feed's index and follows the stream until the block ends; the follower must stop when told."""
    await feed.load_index()
    follower = asyncio.create_task(feed.follow_index())
    try:
        yield
    finally:
        follower.cancel()
        done, _ = await asyncio.wait([follower], timeout=10)
        assert follower in done, "the index follower did not stop within 10 s of being cancelled"
