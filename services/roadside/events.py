"""Analytics events on their way to IDPS: one Redis Stream entry per event.

Contract with IDPS: stream ``v2x:{roadside}:events`` (hash tag for Redis Cluster), field ``event`` =
a serialized ``v2x.roadside.v1.AnalyticsEvent`` with the snapshot filled in; ``event_id`` is unique and
stable, IDPS's idempotency key. Extra fields ``type`` and ``camera`` let a reader filter without
parsing. IDPS consumes the stream with a consumer group, so events raised while IDPS is down wait there.

Publishing never blocks inference: events go into a bounded in-memory queue; a background task sends
them in pipelined batches and, while Redis is unreachable, keeps the batch and retries with backoff.
When the queue is full (Redis down for long), the oldest events are dropped and counted.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError
from v2x.roadside.v1 import roadside_pb2 as pb

from services.common.redis_streams import Fields, publish

log = logging.getLogger("v2x.roadside.events")

STREAM = "v2x:{roadside}:events"
EVENTS = Counter("v2x_roadside_events_total", "Analytics events by type and outcome", ["type", "outcome"])
MAX_QUEUED = 10_000
BATCH = 200


class EventPublisher:
    def __init__(self, redis: Redis, maxlen: int, max_queued: int = MAX_QUEUED) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self._queue: collections.deque[pb.AnalyticsEvent] = collections.deque()
        self._max = max_queued
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    def offer(self, events: list[pb.AnalyticsEvent]) -> None:
        for e in events:
            if len(self._queue) >= self._max:
                old = self._queue.popleft()
                self.dropped += 1
                EVENTS.labels(str(old.type), "dropped").inc()
            self._queue.append(e)
        if events:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        delay = 0.2
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
            entries: list[Fields] = [{"event": e.SerializeToString(), "type": str(e.type), "camera": e.camera_id}
                                     for e in batch]
            try:
                await publish(self.redis, STREAM, entries, self.maxlen)
            except (RedisError, OSError):
                log.warning("could not publish %d events; retrying in %.1f s", len(batch), delay, exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.2
            for e in batch:
                EVENTS.labels(str(e.type), "published").inc()
            # Events offered meanwhile were appended; drop exactly the ones sent (unless dropped by overflow).
            sent = {id(e) for e in batch}
            while self._queue and id(self._queue[0]) in sent:
                self._queue.popleft()
            self.published += len(batch)

    async def drain(self) -> None:
        """On stop: one last attempt to publish what is queued (the run task is cancelled by then)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                await publish(self.redis, STREAM, [{"event": e.SerializeToString(), "type": str(e.type),
                                                    "camera": e.camera_id} for e in batch], self.maxlen)
            except (RedisError, OSError):
                log.error("lost %d events at stop: Redis unreachable", len(batch) + len(self._queue))
                return
            self.published += len(batch)
