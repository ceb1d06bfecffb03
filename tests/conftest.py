"""Fixtures: a fresh PostGIS database and a Redis database for the session, real servers on port 0.

The database comes from V2X_TEST_PG (an admin URL, default: the local cluster on 5432 as postgres);
Redis from V2X_TEST_REDIS (flushed at the start); by default a Redis server of the session's own: the
machine's `redis-server` on a free port, so that test runs (a CI run, a developer's run, a benchmark)
never share streams and one's FLUSHDB or XTRIM cannot reach into another's.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import grpc
import pytest
from grpc import aio
from redis.asyncio import Redis

from services.common.apikeys import create_key
from services.common.config import Settings
from services.common.db import migrate
from services.common.runtime import Resources, RunningService, start_service
from services.runner.embedded import EmbeddedRedis

PG_ADMIN = os.environ.get("V2X_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("V2X_TEST_REDIS")


def _with_db(url: str, db: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def db_name() -> str:
    return f"v2x_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"


async def fresh_database(name: str) -> AsyncIterator[str]:
    """A new, migrated database for as long as the caller iterates; dropped afterwards. Suites that count
    every row of a shared table (the outbox) use their own, since other suites' services write there."""
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(PG_ADMIN, name)
    try:
        await migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def make_settings(database_url: str, redis_url: str) -> Settings:
    return Settings.from_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "V2X_API_KEY_CACHE_S": "1"})


@pytest.fixture(scope="session")
async def database_url(db_name: str) -> AsyncIterator[str]:
    async for url in fresh_database(db_name):
        yield url


@pytest.fixture(scope="session")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if REDIS_URL:
        r = Redis.from_url(REDIS_URL)
        await r.flushdb()
        await r.aclose()
        yield REDIS_URL
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit("redis-server is not installed: run infra/ensure-test-services.sh or set V2X_TEST_REDIS", 2)
    with EmbeddedRedis(server_binary=binary, base_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture(scope="session")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    res = Resources.open(settings, "test")
    yield res
    await res.close()


@dataclass(frozen=True)
class Keys:
    admin: str
    police: str
    driver: str
    platform: str
    op_a: str
    op_b: str
    camera: str

    @staticmethod
    def md(key: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {key}"),)


async def make_keys(resources: Resources) -> Keys:
    async def k(role: str) -> str:
        return (await create_key(resources.engine, role, "test")).key

    return Keys(await k("admin"), await k("police"), await k("driver"), await k("platform"),
                await k("operator:OPA"), await k("operator:OPB"), await k("camera:cam-1"))


@pytest.fixture(scope="session")
async def keys(resources: Resources) -> Keys:
    return await make_keys(resources)


async def serve_parking(resources: Resources) -> AsyncIterator[RunningService]:
    from services.parking.app import build

    running = await start_service(build, resources, port=0, host="127.0.0.1")
    yield running
    await running.stop(0.5)


async def open_channel(service: RunningService) -> AsyncIterator[aio.Channel]:
    channel = aio.insecure_channel(f"127.0.0.1:{service.server.port}")
    yield channel
    await channel.close()


@pytest.fixture(scope="session")
async def parking_service(resources: Resources) -> AsyncIterator[RunningService]:
    async for running in serve_parking(resources):
        yield running


@pytest.fixture(scope="session")
async def parking_channel(parking_service: RunningService) -> AsyncIterator[aio.Channel]:
    async for channel in open_channel(parking_service):
        yield channel


def own_database(suffix: str, scope: Literal["package", "module"] = "package") -> tuple[Any, ...]:
    """The fixtures of a package (or a module) whose tests run on a database of their own (`<db_name>_<suffix>`):
    database_url, settings, resources, keys, parking_service, parking_channel, overriding the session's. A package's
    conftest (or the module) assigns them to those names."""

    @pytest.fixture(scope=scope, name="database_url")
    async def own_database_url(db_name: str) -> AsyncIterator[str]:
        async for url in fresh_database(f"{db_name}_{suffix}"):
            yield url

    @pytest.fixture(scope=scope, name="settings")
    def own_settings(database_url: str, redis_url: str) -> Settings:
        return make_settings(database_url, redis_url)

    @pytest.fixture(scope=scope, name="resources")
    async def own_resources(settings: Settings) -> AsyncIterator[Resources]:
        res = Resources.open(settings, f"test-{suffix}")
        yield res
        await res.close()

    @pytest.fixture(scope=scope, name="keys")
    async def own_keys(resources: Resources) -> Keys:
        return await make_keys(resources)

    @pytest.fixture(scope=scope, name="parking_service")
    async def own_parking_service(resources: Resources) -> AsyncIterator[RunningService]:
        async for running in serve_parking(resources):
            yield running

    @pytest.fixture(scope=scope, name="parking_channel")
    async def own_parking_channel(parking_service: RunningService) -> AsyncIterator[aio.Channel]:
        async for channel in open_channel(parking_service):
            yield channel

    return (own_database_url, own_settings, own_resources, own_keys, own_parking_service, own_parking_channel)


@pytest.fixture
def unique() -> Iterator[str]:
    yield uuid.uuid4().hex[:10]


def status_code(exc: BaseException) -> grpc.StatusCode:
    assert isinstance(exc, aio.AioRpcError), exc
    return exc.code()
