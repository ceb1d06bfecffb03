"""`v2x run --replicas 2 --redis-cluster 3`: every service as two processes on its port, against an embedded 3-node
Valkey cluster; a driver's, a police officer's and an administrator's calls answered over several connections; a
change written through one connection is found through the others; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.municipal.v1 import municipal_pb2 as mpb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.config import SERVICE_PORTS
from tests.runner.conftest import start_suite, stop_suite
from tests.waiting import assert_eventually

SITE = cpb.LatLon(lat=31.40, lon=121.49)


def _connection(target: str) -> aio.Channel:
    # A connection of its own: the kernel hands each to one of the processes sharing the port.
    return aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])


@pytest.mark.slow  # ten service processes and a three-node cluster: minutes on a loaded 2-core machine
@pytest.mark.timeout(600)
async def test_run_with_two_replicas_on_a_three_node_cluster_serves_every_service(tmp_path: Path) -> None:
    suite = await start_suite(tmp_path, args=["--replicas", "2", "--redis-cluster", "3"], ready_s=420)
    try:
        # The suite is up once each service answers; the second process of a service may still be loading (the
        # roadside detector's models): each service's parent says when both of its processes serve.
        def both_serve(name: str) -> Callable[[], bool]:
            return lambda: re.search(rf"v2x serve {name}: 2 processes serving on port \d+", suite.output()) is not None

        for name in SERVICE_PORTS:
            try:
                await assert_eventually(both_serve(name), f"{name}'s two processes to serve", 120.0, every_s=0.5)
            except AssertionError as exc:
                # What the suite printed says why (a process that exited, a port it could not bind, ...).
                raise AssertionError(f"{exc}:\n{suite.output()[-6000:]}") from None
        keys, targets = suite.keys, suite.targets
        for name in SERVICE_PORTS:
            for _ in range(4):
                async with _connection(targets[name]) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                                            timeout=10)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

        # A report through one connection; the incident is listed through others (whichever process they reach).
        police = (("authorization", f"Bearer {keys['police']}"),)
        request = ipb.ReportEventRequest(idempotency_key=uuid.uuid4().hex, source_id="runner-test",
                                         source_kind=ipb.SOURCE_KIND_POLICE_OFFICER, type=ipb.EVENT_TYPE_ACCIDENT,
                                         position=SITE, confidence=0.8)
        request.observed_at.GetCurrentTime()
        async with _connection(targets["idps"]) as channel:
            made = await IdpsServiceStub(channel).ReportEvent(request, metadata=police)

        async def listed_everywhere() -> bool:
            for _ in range(4):
                async with _connection(targets["idps"]) as channel:
                    answer = await IdpsServiceStub(channel).ListIncidents(ipb.ListIncidentsRequest(), metadata=police)
                    if made.incident_id not in {i.id for i in answer.incidents}:
                        return False
            return True

        await assert_eventually(listed_everywhere, "the incident listed through every connection", 30)

        driver = (("authorization", f"Bearer {keys['driver']}"),)
        for _ in range(4):
            async with _connection(targets["parking"]) as channel:
                found = await ParkingServiceStub(channel).FindAvailable(
                    ppb.FindAvailableRequest(location=SITE, radius_m=3000, limit=5), metadata=driver)
                assert found.lots, "the demo district's lots"
        admin = (("authorization", f"Bearer {keys['admin']}"),)
        async with _connection(targets["municipal"]) as channel:
            status = await MunicipalAdminServiceStub(channel).GetStatus(mpb.GetStatusRequest(), metadata=admin)
            assert status.destinations
    finally:
        code = await stop_suite(suite)
    assert code == 0, suite.output()[-3000:]
    assert suite.output().rstrip().endswith("stopped; nothing left running"), suite.output()[-3000:]
    assert not suite.run_file.exists()
