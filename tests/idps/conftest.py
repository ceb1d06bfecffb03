"""IDPS fixtures: the service in-process on port 0 with short windows, typed stubs, helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from grpc import aio
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

from services.common.runtime import Resources, RunningService, start_service

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.idps.v1.idps_pb2_grpc import IdpsServiceAsyncStub as Stub
else:
    Stub = IdpsServiceStub

__all__ = ["REOPEN_WINDOW_S", "SUBSCRIBER_BUFFER", "Stub"]

# Short enough to test expiry; the correlation windows keep their defaults (100 m, 120 s).
REOPEN_WINDOW_S = 2.0
SUBSCRIBER_BUFFER = 64


@pytest.fixture(scope="session")
def idps_resources(resources: Resources) -> Resources:
    settings = dataclasses.replace(resources.settings, env={
        **resources.settings.env, "V2X_IDPS_REOPEN_WINDOW_S": f"{REOPEN_WINDOW_S:g}",
        "V2X_IDPS_SUBSCRIBER_BUFFER": f"{SUBSCRIBER_BUFFER}"})
    return Resources(settings, resources.engine, resources.redis, resources.verifier, resources.reads)


@pytest.fixture(scope="session")
async def idps_service(idps_resources: Resources) -> AsyncIterator[RunningService]:
    from services.idps.app import build

    running = await start_service(build, idps_resources, port=0, host="127.0.0.1")
    yield running
    await running.stop(0.5)


@pytest.fixture(scope="session")
async def idps_channel(idps_service: RunningService) -> AsyncIterator[aio.Channel]:
    channel = aio.insecure_channel(f"127.0.0.1:{idps_service.server.port}")
    yield channel
    await channel.close()


@pytest.fixture
def stub(idps_channel: aio.Channel) -> Stub:
    return IdpsServiceStub(idps_channel)


@pytest.fixture
def site(unique: str) -> tuple[float, float]:
    """A place of this test's own, far (> 1 km) from every other test's (uniform over ~200 km x 200 km)."""
    n = int(unique, 16)
    return 30.5 + (n % 1_000_003) / 1_000_003 * 1.8, 120.5 + (n // 1_000_003 % 1_000_033) / 1_000_033 * 1.8
