"""Running a service process: shared resources, the server, and a clean stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import fast_paths
from services.common.apikeys import KeyVerifier
from services.common.config import Settings
from services.common.db import create_engine, require_current_schema
from services.common.processes import READY_FD_ENV
from services.common.read_replica import Reads
from services.common.redis_streams import create_redis
from services.common.server import RunningServer, ServiceDefinition, create_server, wait_for_stop_signal

log = logging.getLogger("v2x.runtime")


@dataclass
class Resources:
    """One engine, one Redis client and one key verifier per process, and where stale-tolerant reads go."""

    settings: Settings
    engine: AsyncEngine
    redis: Redis
    verifier: KeyVerifier
    reads: Reads

    @classmethod
    def open(cls, settings: Settings, name: str) -> Resources:
        engine = create_engine(settings.require_database_url(), pool_size=settings.db_pool_size,
                               application_name=f"v2x-{name}")
        replica = None
        if settings.database_read_url:
            replica = create_engine(settings.database_read_url, pool_size=settings.db_pool_size,
                                    application_name=f"v2x-{name}-reads")
        return cls(settings, engine, create_redis(settings.require_redis_url(), cluster=settings.redis_cluster),
                   KeyVerifier(engine, settings.api_key_cache_s),
                   Reads(engine, replica, max_lag_s=settings.read_max_lag_s))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.reads.close()
        await self.engine.dispose()


@dataclass
class ServiceParts:
    """What a service builder returns: gRPC services, what must be done before they report SERVING (e.g.
    loading an in-memory index) and background tasks (e.g. a drainer). `on_drain` hooks start when the service
    is told to stop, beside the gRPC grace period, and get its length (e.g. to hand long-lived connections of
    another protocol to other replicas while gRPC calls finish)."""

    definitions: list[ServiceDefinition]
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_drain: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)


Builder = Callable[[Resources], ServiceParts]


@dataclass
class RunningService:
    server: RunningServer
    parts: ServiceParts
    tasks: list[asyncio.Task[None]]

    async def stop(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        drains = [asyncio.ensure_future(hook(grace_s)) for hook in self.parts.on_drain]
        await self.server.stop(grace_s)
        if drains:  # they share the grace period with the gRPC calls; what is left of it is what they get
            done, late = await asyncio.wait(drains, timeout=max(deadline - loop.time(), 0.1))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for task in done:
                if not task.cancelled() and (exc := task.exception()) is not None:
                    log.error("a drain hook failed", exc_info=exc)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for hook in self.parts.on_stop:
            await hook()


async def start_service(builder: Builder, resources: Resources, *, port: int, host: str | None = None,
                        metrics_port: int | None = None) -> RunningService:
    parts = builder(resources)
    for hook in parts.on_start:
        await hook()
    server = await create_server(parts.definitions, resources.settings, resources.verifier, port=port, host=host,
                                 metrics_port=metrics_port)
    tasks = [asyncio.create_task(job()) for job in [*parts.background, resources.reads.monitor]]
    return RunningService(server, parts, tasks)


async def serve(name: str, builder: Builder, settings: Settings) -> None:
    """`v2x serve NAME`: run one service until SIGTERM / SIGINT."""
    fast_paths.use_plain(settings.plain_paths)
    resources = Resources.open(settings, name)
    try:
        await require_current_schema(resources.engine)
        running = await start_service(builder, resources, port=settings.ports[name],
                                      metrics_port=settings.metrics_ports[name])
        # Everything loaded at start-up (modules, protos, model sessions) lives for the whole process:
        # keep it out of the collector's generations, so full collections stay short under load.
        gc.freeze()
        log.info("serving", extra={"service": name, "port": running.server.port,
                                   "metrics_port": running.server.metrics_port})
        if (ready_fd := os.environ.get(READY_FD_ENV)) is not None:  # started by `serve --processes N`
            os.write(int(ready_fd), b"1")
            os.close(int(ready_fd))
        await wait_for_stop_signal()
        log.info("stopping", extra={"service": name, "grace_s": settings.grace_s})
        await running.stop(settings.grace_s)
    finally:
        await resources.close()
