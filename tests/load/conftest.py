"""The smoke test's suite runs on a database of its own: its municipal adapter drains the whole outbox, which must
not be the one other packages' tests write and read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.config import Settings
from services.common.runtime import Resources, RunningService
from tests.conftest import Keys, fresh_database, make_keys, make_settings, serve_parking


@pytest.fixture(scope="package")
async def database_url(db_name: str) -> AsyncIterator[str]:
    async for url in fresh_database(f"{db_name}_load"):
        yield url


@pytest.fixture(scope="package")
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


@pytest.fixture(scope="package")
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    res = Resources.open(settings, "test-load")
    yield res
    await res.close()


@pytest.fixture(scope="package")
async def keys(resources: Resources) -> Keys:
    return await make_keys(resources)


@pytest.fixture(scope="package")
async def parking_service(resources: Resources) -> AsyncIterator[RunningService]:
    async for running in serve_parking(resources):
        yield running
