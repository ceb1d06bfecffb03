"""The server factory: health, reflection, metrics, request ids, error mapping, method policy."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1 import parking_pb2_grpc

from services.common.runtime import Resources, RunningService, ServiceParts, start_service
from services.common.server import ServiceDefinition
from services.parking.app import POLICY
from tests.conftest import Keys
from tests.waiting import assert_eventually


class _Broken(parking_pb2_grpc.ParkingServiceServicer):
    async def GetLot(self, request: pb.GetLotRequest, context: Any) -> pb.LotView:
        raise RuntimeError("boom: this must not reach the client")


def _broken_parts(resources: Resources) -> ServiceParts:
    return ServiceParts([ServiceDefinition(
        descriptor=pb.DESCRIPTOR.services_by_name["ParkingService"],
        register=lambda s: parking_pb2_grpc.add_ParkingServiceServicer_to_server(
            _Broken(), s),  # type: ignore[abstract]  # the .pyi marks every rpc abstract; gRPC needs only GetLot here
        policy=POLICY)])


@pytest.fixture(scope="module")
async def broken(resources: Resources) -> AsyncIterator[RunningService]:
    running = await start_service(_broken_parts, resources, port=0, host="127.0.0.1", metrics_port=0)
    yield running
    await running.stop(0)


async def test_health_reports_serving_per_service(parking_service: RunningService) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{parking_service.server.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", "v2x.parking.v1.ParkingService"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_service(parking_service: RunningService) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{parking_service.server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)

        async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = [s.name async for r in stub.ServerReflectionInfo(one()) for s in r.list_services_response.service]
    assert "v2x.parking.v1.ParkingService" in names and "grpc.health.v1.Health" in names


async def test_unhandled_error_is_internal_with_request_id_and_no_leak(broken: RunningService, keys: Keys) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{broken.server.port}") as ch:
        stub = parking_pb2_grpc.ParkingServiceStub(ch)
        with pytest.raises(aio.AioRpcError) as err:
            await stub.GetLot(pb.GetLotRequest(lot_id="x"),
                              metadata=(*keys.md(keys.driver), ("x-request-id", "req-123")))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "req-123" in (err.value.details() or "") and "boom" not in (err.value.details() or "")


async def test_domain_error_carries_google_rpc_details_and_request_id(parking_channel: aio.Channel,
                                                                      keys: Keys) -> None:
    stub = parking_pb2_grpc.ParkingServiceStub(parking_channel)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.GetLot(pb.GetLotRequest(lot_id="bad id!"), metadata=(*keys.md(keys.driver), ("x-request-id", "r-9")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers["x-request-id"] == "r-9"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    infos, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(infos) and infos.reason == "INVALID_ARGUMENT" and infos.domain == "v2x.city"
    assert status.details[1].Unpack(bad) and bad.field_violations[0].field == "lot_id"


async def test_metrics_count_rpcs_by_method_and_code(broken: RunningService, keys: Keys) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{broken.server.port}") as ch:
        stub = parking_pb2_grpc.ParkingServiceStub(ch)
        with pytest.raises(aio.AioRpcError):
            await stub.GetLot(pb.GetLotRequest(lot_id="x"), metadata=keys.md(keys.driver))
    assert broken.server.metrics_port
    url = f"http://127.0.0.1:{broken.server.metrics_port}/metrics"
    body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    assert 'v2x_rpc_handled_total{code="INTERNAL",method="GetLot",service="v2x.parking.v1.ParkingService"}' in body
    assert "v2x_rpc_handling_seconds_bucket" in body


def test_a_method_without_policy_fails_at_start() -> None:
    incomplete = {k: v for k, v in POLICY.items() if k != "GetLot"}
    definition = ServiceDefinition(pb.DESCRIPTOR.services_by_name["ParkingService"], lambda s: None, incomplete)
    with pytest.raises(ValueError, match="GetLot"):
        definition.full_policy()


def _client_ports(server_port: int) -> set[int]:
    """Local ports of established TCP connections to `server_port` (from /proc/net/tcp and tcp6: gRPC's sockets
    may be IPv6 ones with v4-mapped addresses)."""
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def test_old_connections_are_asked_to_reconnect_and_streams_on_them_go_on(resources: Resources) -> None:
    """V2X_MAX_CONNECTION_AGE_S: after it a client's next call goes over a new connection (so a client balancing
    over DNS finds replicas added since), while a stream begun on the old one is not cut."""
    aged = Resources(dataclasses.replace(resources.settings, max_connection_age_s=1.0), resources.engine,
                     resources.redis, resources.verifier, resources.reads)
    running = await start_service(_broken_parts, aged, port=0, host="127.0.0.1")
    port = running.server.port
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            await stub.Check(health_pb2.HealthCheckRequest())
            first = _client_ports(port)
            assert len(first) == 1
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="v2x.parking.v1.ParkingService"))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

            async def moved() -> bool:
                await stub.Check(health_pb2.HealthCheckRequest())
                return bool(_client_ports(port) - first)

            await assert_eventually(moved, "a call over a new connection once the first grew old", within_s=10)
            # The stream still lives on the first connection: a status change reaches it.
            await running.server.health.set("v2x.parking.v1.ParkingService",
                                            health_pb2.HealthCheckResponse.NOT_SERVING)
            changed = await asyncio.wait_for(watch.read(), 5)
            assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        await running.stop(0)
