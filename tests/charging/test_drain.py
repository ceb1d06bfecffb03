"""A charging process that is told to stop (SIGTERM, as Kubernetes does) hands its charge points to other replicas:
it stops taking new ones at once and closes every OCPP connection with 1001 (going away) within its grace period,
without waiting for its gRPC streams to end, so chargers reconnect through the balancer to a replica that stays."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ocpp.v16 import call
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.charging.store import ChargingStore
from services.common.config import Settings
from services.common.runtime import Resources
from tests.charging.conftest import charge_point_maker, start_harness
from tests.charging.helpers import Client16, open_ws, station
from tests.conftest import Keys
from tests.ports import free_port
from tests.waiting import assert_eventually

GRACE_S = 8.0  # long enough that a close only after the gRPC grace period could not pass for a prompt one



async def _serving(channel: aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, ocpp_port: int) -> None:
        self.proc, self.port, self.ocpp_url = proc, port, f"ws://127.0.0.1:{ocpp_port}/ocpp"


@pytest.fixture
async def charging_process(settings: Settings) -> AsyncIterator[Process]:
    """`v2x serve charging` as its own process, on free ports, with a long grace period."""
    port, metrics, ocpp = free_port(), free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "V2X_CHARGING_PORT": str(port), "V2X_CHARGING_METRICS_PORT": str(metrics), "V2X_OCPP_PORT": str(ocpp),
           "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING", "V2X_GRACE_S": str(GRACE_S)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", "serve", "charging", env=env,
                                                stderr=subprocess.PIPE)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await assert_eventually(lambda: _serving(channel), "charging to serve", within_s=60)
        yield Process(proc, port, ocpp)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow  # a real `v2x serve charging` process: ~9 s with its start
async def test_sigterm_closes_ocpp_sockets_with_going_away_within_the_grace_period(
        charging_process: Process, resources: Resources, keys: Keys, unique: str) -> None:
    cp_id, sid = f"CP-drain-{unique}", f"DR-{unique}"
    store = ChargingStore(resources.engine)
    try:
        await _drain_one(charging_process, store, keys, cp_id, sid)
    finally:
        await store.close()  # its leased read connection goes back to the pool


async def _drain_one(charging_process: Process, store: ChargingStore, keys: Keys, cp_id: str, sid: str) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{charging_process.port}") as channel:
        stub = ChargingServiceStub(channel)
        await stub.RegisterStation(pb.RegisterStationRequest(station=station(sid, charge_point=cp_id)),
                                   metadata=keys.md(keys.admin))
        reply = await stub.RegisterChargePoint(pb.RegisterChargePointRequest(
            charge_point_id=cp_id, station_id=sid, protocol=pb.OCPP_PROTOCOL_OCPP16J), metadata=keys.md(keys.admin))

        ws = await open_ws(charging_process.ocpp_url, cp_id, reply.password, "ocpp1.6")
        client = Client16(cp_id, ws, response_timeout=10)
        receiving = asyncio.create_task(client.start())
        boot = await client.call(call.BootNotification(charge_point_model="DC60", charge_point_vendor="Acme"))
        assert boot.status == "Accepted"
        assert (await store.get_charge_point(cp_id)).connected

        # A driver's app watching the station: a gRPC stream that keeps the server busy for the whole grace period.
        watch = stub.WatchStation(pb.WatchStationRequest(station_id=sid), metadata=keys.md(keys.driver))
        await watch.read()

        charging_process.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        await asyncio.wait_for(ws.wait_closed(), GRACE_S / 2)
        closed_after = time.monotonic() - sent
        assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
        assert closed_after < GRACE_S / 2

        # The draining process takes no new charge point (its balancer sends them elsewhere), while it still runs.
        assert charging_process.proc.returncode is None
        with pytest.raises((OSError, InvalidStatus)):
            await open_ws(charging_process.ocpp_url, cp_id, reply.password, "ocpp1.6")
        # The disconnection is recorded before the process goes.
        await assert_eventually(lambda: _disconnected(store, cp_id), "the charge point recorded as disconnected",
                                within_s=5)
        receiving.cancel()
        await asyncio.gather(receiving, return_exceptions=True)
        watch.cancel()
    assert await asyncio.wait_for(charging_process.proc.wait(), GRACE_S + 10) == 0


async def _disconnected(store: ChargingStore, cp_id: str) -> bool:
    return not (await store.get_charge_point(cp_id)).connected


async def test_a_draining_gateway_spreads_its_closes_over_half_the_grace_period(resources: Resources, keys: Keys,
                                                                               unique: str) -> None:
    """Chargers handed over all at once would all reconnect (and be password-checked) elsewhere in one instant."""
    h = await start_harness(resources, lambda: datetime.now(UTC))
    new_charge_point = charge_point_maker(h, keys, unique)
    sockets = []
    for _ in range(4):
        cp = await new_charge_point()
        sockets.append(await open_ws(cp.url, cp.cp_id, cp.password, "ocpp1.6"))
    await assert_eventually(lambda: all(h.app.gateway.connected(f"CP-{unique}-{n}") for n in range(1, 5)),
                            "four charge points connected")
    closed_at: list[float] = []

    async def watch(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
        closed_at.append(time.monotonic())

    watchers = [asyncio.create_task(watch(ws)) for ws in sockets]
    await h.channel.close()
    await h.running.stop(2.0)  # 4 connections over 1 s: one every 0.25 s
    await asyncio.wait_for(asyncio.gather(*watchers), 5)
    assert [ws.close_code for ws in sockets] == [1001] * 4
    assert max(closed_at) - min(closed_at) >= 0.7
