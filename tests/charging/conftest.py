from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from grpc import aio
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub

from services.charging.app import ChargingApp, assemble
from services.charging.settings import ChargingSettings
from services.common.runtime import Resources, RunningService, start_service
from tests.charging.helpers import station
from tests.conftest import Keys

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.charging.v1.charging_pb2_grpc import ChargingServiceAsyncStub

    Stub = ChargingServiceAsyncStub
else:
    Stub = ChargingServiceStub


class ShiftClock:
    """The wall clock plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Harness:
    """A charging service running in-process: its parts, its gRPC stub and its OCPP endpoint."""

    app: ChargingApp
    running: RunningService
    channel: aio.Channel
    stub: Stub
    clock: Callable[[], datetime]

    @property
    def ocpp_url(self) -> str:
        return f"ws://127.0.0.1:{self.app.gateway.port}/ocpp"


async def start_harness(resources: Resources, clock: Callable[[], datetime], **overrides: Any) -> Harness:
    settings = dataclasses.replace(resources.settings, bind_host="127.0.0.1")
    res = Resources(settings, resources.engine, resources.redis, resources.verifier, resources.reads)
    app = assemble(res, ChargingSettings(**{"ocpp_port": 0, "bay_check_interval_s": 3600.0, **overrides}), clock)
    running = await start_service(lambda _: app.parts, res, port=0, host="127.0.0.1")
    await asyncio.wait_for(app.gateway.ready.wait(), 10)
    channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    return Harness(app, running, channel, ChargingServiceStub(channel), clock)


async def stop_harness(h: Harness) -> None:
    await h.channel.close()
    await h.running.stop(0.5)


@pytest.fixture(scope="session")
async def charging(resources: Resources) -> AsyncIterator[Harness]:
    """The session's charging service (wall clock, heartbeat interval 60 s)."""
    h = await start_harness(resources, lambda: datetime.now(UTC))
    yield h
    await stop_harness(h)


@pytest.fixture
async def timed(resources: Resources) -> AsyncIterator[tuple[Harness, ShiftClock]]:
    """A charging service of its own whose clock the test moves (heartbeat interval 60 s)."""
    clock = ShiftClock()
    h = await start_harness(resources, clock)
    yield h, clock
    await stop_harness(h)


@pytest.fixture
def stub(charging: Harness) -> Stub:
    return charging.stub


NewStation = Callable[..., Awaitable[pb.Station]]


def station_maker(stub: Stub, keys: Keys, unique: str, prefix: str) -> NewStation:
    count = 0

    async def make(**kwargs: Any) -> pb.Station:
        nonlocal count
        count += 1
        sid = f"{prefix}-{unique}-{count}"
        return await stub.RegisterStation(pb.RegisterStationRequest(station=station(sid, **kwargs)),
                                          metadata=keys.md(keys.admin))

    return make


@pytest.fixture
def new_station(stub: Stub, keys: Keys, unique: str) -> NewStation:
    """Registers a station (admin) and returns it; keyword arguments go to helpers.station()."""
    return station_maker(stub, keys, unique, "CS")


@dataclass(frozen=True)
class Registered:
    station: pb.Station
    cp_id: str
    password: str
    url: str

    def connector(self, n: int = 1) -> str:
        return f"{self.station.id}-C{n}"


NewChargePoint = Callable[..., Awaitable[Registered]]


def charge_point_maker(h: Harness, keys: Keys, unique: str) -> NewChargePoint:
    count = 0

    async def make(version: str = "1.6", **kwargs: Any) -> Registered:
        nonlocal count
        count += 1
        cp_id = f"CP-{unique}-{count}"
        sid = f"OC-{unique}-{count}"
        st = await h.stub.RegisterStation(pb.RegisterStationRequest(station=station(
            sid, charge_point=cp_id, ocpp201=version != "1.6", **kwargs)), metadata=keys.md(keys.admin))
        protocol = pb.OCPP_PROTOCOL_OCPP16J if version == "1.6" else pb.OCPP_PROTOCOL_OCPP201
        reply = await h.stub.RegisterChargePoint(pb.RegisterChargePointRequest(
            charge_point_id=cp_id, station_id=sid, protocol=protocol), metadata=keys.md(keys.admin))
        assert reply.endpoint_url == f"{h.ocpp_url}/{cp_id}"
        return Registered(st, cp_id, reply.password, h.ocpp_url)

    return make


@pytest.fixture
def new_charge_point(charging: Harness, keys: Keys, unique: str) -> NewChargePoint:
    """A station driven by a registered charge point (plugs as in helpers.station); its password."""
    return charge_point_maker(charging, keys, unique)
