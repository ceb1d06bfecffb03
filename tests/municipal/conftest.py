from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from grpc import aio
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub

from services.common.runtime import Resources, RunningService, start_service
from services.municipal.emulator import Faults, Platform, RunningEmulator, start_emulator
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from tests.conftest import Keys, own_database
from tests.municipal.helpers import SECRET

if TYPE_CHECKING:
    from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceAsyncStub as Stub
else:
    Stub = MunicipalAdminServiceStub

PATHS = {"municipal_json": "/municipal/v1/records", "datex2_xml": "/datex2/v3/parking",
         "ngsi_ld": "/ngsi-ld/v1/entityOperations/upsert"}


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(Platform([SECRET], 300.0, Faults(), seed=7))
    yield running
    await running.stop()


async def admin_get(emu: RunningEmulator, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(emu.url + path) as r:
        return await r.json()


async def set_faults(emu: RunningEmulator, **change: Any) -> None:
    async with aiohttp.ClientSession() as s, s.put(emu.url + "/_admin/faults", data=json.dumps(change)) as r:
        assert r.status == 200, await r.text()


def destination(emu: RunningEmulator, profile: str = "municipal_json", **kw: Any) -> MunicipalDestination:
    fields: dict[str, Any] = {"name": f"d{uuid.uuid4().hex[:8]}", "url": emu.url + PATHS[profile],
                              "profile": profile, "secret": SECRET, "start": "now", "batch_size": 100,
                              "timeout_s": 2.0}
    fields.update(kw)
    return MunicipalDestination(**fields)


@dataclass
class Adapter:
    service: RunningService
    channel: aio.Channel
    stub: Stub
    md: tuple[tuple[str, str]]
    destinations: list[MunicipalDestination]

    @property
    def name(self) -> str:
        return self.destinations[0].name


StartAdapter = Callable[..., Awaitable[Adapter]]


@pytest.fixture
async def start_adapter(resources: Resources, keys: Keys) -> AsyncIterator[StartAdapter]:
    """Starts the adapter in-process for the given destinations (fast polling and backoff)."""
    from services.municipal.app import assemble

    started: list[Adapter] = []

    async def start(*destinations: MunicipalDestination, **settings: Any) -> Adapter:
        municipal = MunicipalSettings(**{"destinations": tuple(destinations), "poll_s": 0.02, "backoff_base_s": 0.02,
                                         "backoff_max_s": 0.3, "reconcile_hour": -1, **settings})
        running = await start_service(lambda r: assemble(r, municipal), resources, port=0, host="127.0.0.1")
        channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
        a = Adapter(running, channel, MunicipalAdminServiceStub(channel), keys.md(keys.admin), list(destinations))
        started.append(a)
        # The first status call creates the destinations' rows: with start "now", later rows are theirs.
        from v2x.municipal.v1 import municipal_pb2 as pb

        await a.stub.GetStatus(pb.GetStatusRequest(), metadata=a.md)
        return a

    yield start
    for a in started:
        await a.channel.close()
        await a.service.stop(0.2)


# The adapter drains the whole outbox and these tests count what it delivers, so the municipal suite
# gets a database of its own (other suites' services write outbox rows in the shared one).
database_url, settings, resources, keys, parking_service, parking_channel = own_database("municipal")
