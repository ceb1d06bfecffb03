"""The HAProxy gRPC front (infra/haproxy/grpc.cfg, Debian's haproxy) before two `v2x serve parking` processes: calls
of ONE client channel reach both replicas (each replica's own metrics count its share), and a server stream
(WatchAvailability) passes through, its snapshot and a later change alike."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.config import Settings
from tests.conftest import Keys
from tests.parking.helpers import free_of, lot, report
from tests.ports import free_port
from tests.waiting import assert_eventually

if TYPE_CHECKING:
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

CONFIG = str(Path(__file__).resolve().parents[2] / "infra" / "haproxy" / "grpc.cfg")
CALLS = 40



async def _serving(target: str) -> bool:
    async with aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _handled(metrics_port: int, method: str) -> float:
    """How many calls of `method` this replica completed, from its own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) if family.name == "v2x_rpc_handled"
               for sample in family.samples
               if sample.name == "v2x_rpc_handled_total" and sample.labels.get("method") == method)


def _haproxy() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    assert found, "haproxy is not installed: infra/ensure-haproxy.sh installs Debian's package (make test runs it)"
    return found


@dataclass
class Front:
    target: str  # what clients dial: HAProxy
    ports: list[int]  # the replicas' own gRPC ports
    metrics_ports: list[int]  # one per replica


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.fixture(scope="module")
async def front(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Front]:
    """Two replicas and the front, shared by this module's tests (each counts only its own calls)."""
    haproxy = _haproxy()
    procs: list[asyncio.subprocess.Process] = []
    ports, metrics = [free_port(), free_port()], [free_port(), free_port()]
    try:
        for port, mport in zip(ports, metrics, strict=True):
            env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
                   "V2X_PARKING_PORT": str(port), "V2X_PARKING_METRICS_PORT": str(mport),
                   "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING", "V2X_GRACE_S": "1"}
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "serve", "parking", env=env, stderr=subprocess.DEVNULL))
        for port in ports:
            await assert_eventually(lambda p=port: _serving(f"127.0.0.1:{p}"), f"parking on {port} to serve",  # type: ignore[misc]
                                    within_s=60)
        bind = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "V2X_HAPROXY_BIND": bind, "V2X_BACKEND_1": f"127.0.0.1:{ports[0]}",
               "V2X_BACKEND_2": f"127.0.0.1:{ports[1]}"}
        log = tmp_path_factory.mktemp("haproxy") / "haproxy.log"
        with log.open("wb") as out:
            procs.append(await asyncio.create_subprocess_exec(haproxy, "-db", "-f", CONFIG, env=env, stdout=out,
                                                              stderr=subprocess.STDOUT))
        try:
            await assert_eventually(lambda: _serving(bind), "parking to serve through HAProxy", within_s=20)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; HAProxy said:\n{log.read_text()}") from None
        yield Front(bind, ports, metrics)
    finally:
        for proc in procs:
            await _kill(proc)


async def _find_many(front: Front, keys: Keys, target: str, options: list[tuple[str, str]]) -> list[float]:
    """CALLS FindAvailable calls over one channel to `target`; how many each replica counted."""
    before = [_handled(port, "FindAvailable") for port in front.metrics_ports]
    async with aio.insecure_channel(target, options=options) as channel:
        stub: Stub = ParkingServiceStub(channel)
        request = pb.FindAvailableRequest(location=cpb.LatLon(lat=31.40, lon=121.49), radius_m=1000, limit=5)
        for _ in range(CALLS):
            await stub.FindAvailable(request, metadata=keys.md(keys.driver))
    return [_handled(port, "FindAvailable") - b for port, b in zip(front.metrics_ports, before, strict=True)]


async def test_calls_of_one_channel_reach_both_replicas(front: Front, keys: Keys) -> None:
    counted = await _find_many(front, keys, front.target, [])
    assert sum(counted) == CALLS, counted
    # Round robin per call: each replica took about half (not all on the one connection's replica).
    assert all(n >= CALLS / 4 for n in counted), counted


async def test_client_side_round_robin_over_the_replicas_addresses_reaches_both(front: Front, keys: Keys) -> None:
    """The balancer-less way (README, "Several replicas"): a channel over every replica's address with the
    round_robin policy; `dns:///parking.example:50053` does the same with the addresses DNS returns."""
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in front.ports)
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
    counted = await _find_many(front, keys, target, [("grpc.service_config", config)])
    assert sum(counted) == CALLS and all(n >= CALLS / 4 for n in counted), counted


async def test_a_server_stream_passes_through(front: Front, keys: Keys, unique: str) -> None:
    lat, lon = random.uniform(40, 48), random.uniform(-120, -70)  # a spot of the map no other test uses
    lot_id = f"HA-{unique}"
    async with aio.insecure_channel(front.target) as channel:
        stub: Stub = ParkingServiceStub(channel)
        await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(lot_id, lat=lat, lon=lon, general=50)),
                               metadata=keys.md(keys.admin))
        area = cpb.Area(circle=cpb.Circle(center=cpb.LatLon(lat=lat, lon=lon), radius_m=500))
        call = stub.WatchAvailability(pb.WatchAvailabilityRequest(area=area, snapshot=True),
                                      metadata=keys.md(keys.driver))
        try:
            first = await asyncio.wait_for(call.read(), 10)
            assert isinstance(first, pb.AvailabilityUpdate)
            assert first.reason == pb.AvailabilityUpdate.REASON_SNAPSHOT and first.lot.lot_id == lot_id
            end = await asyncio.wait_for(call.read(), 10)
            assert isinstance(end, pb.AvailabilityUpdate)
            assert end.reason == pb.AvailabilityUpdate.REASON_SNAPSHOT_END
            # The change goes through the front to either replica; the watch's replica hears of it from the stream.
            await stub.PushOccupancy(report(lot_id, 1, general=17), metadata=keys.md(keys.op_a))
            changed = await asyncio.wait_for(call.read(), 10)
            assert isinstance(changed, pb.AvailabilityUpdate)
            assert changed.reason == pb.AvailabilityUpdate.REASON_CHANGED and changed.lot.lot_id == lot_id
            assert free_of(changed.lot.availability) == 17
        finally:
            call.cancel()
