"""Reports from 110 / 122 emergency calls, and correlation windows other than the defaults.

The window tests run a second IDPS service, configured from the environment with a 30 m / 20 s window,
on the same database and Redis as the default one (100 m / 120 s); each compares the two on places of
its own, so neither service sees the other's incidents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc import aio
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

from services.common.config import Settings
from services.common.runtime import Resources, ServiceParts, start_service
from tests.conftest import Keys
from tests.idps.conftest import REOPEN_WINDOW_S, SUBSCRIBER_BUFFER, Stub
from tests.idps.helpers import camera, offset, report

Point = tuple[float, float]

NARROW_DISTANCE_M = 30.0
NARROW_WINDOW_S = 20.0


async def get(stub: Stub, keys: Keys, incident_id: str) -> pb.Incident:
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=incident_id), metadata=keys.md(keys.police))
    return got.incident


def emergency_call(point: Point, seconds_ago: float = 0.0) -> pb.ReportEventRequest:
    """A 110 / 122 call as the police dispatch centre enters it: a rough position, a low confidence."""
    return report(point, kind=pb.SOURCE_KIND_EMERGENCY_CALL, source="call-110-0001", type=pb.EVENT_TYPE_ACCIDENT,
                  confidence=0.4, seconds_ago=seconds_ago, description="caller: two cars collided, one lane blocked")


# ----- emergency calls ----------------------------------------------------------------------------


async def test_an_emergency_call_opens_an_incident_of_that_source_kind(stub: Stub, keys: Keys, site: Point) -> None:
    answer = await stub.ReportEvent(emergency_call(site), metadata=keys.md(keys.police))
    got = await get(stub, keys, answer.incident_id)
    assert answer.opened and got.status == pb.INCIDENT_STATUS_REPORTED and got.type == pb.EVENT_TYPE_ACCIDENT
    assert list(got.source_kinds) == [pb.SOURCE_KIND_EMERGENCY_CALL]
    assert [(s.source_kind, s.source_id) for s in got.sources] == [(pb.SOURCE_KIND_EMERGENCY_CALL, "call-110-0001")]
    assert got.confidence == pytest.approx(0.4, abs=1e-4)


@pytest.mark.parametrize("call_first", [True, False], ids=["call-then-camera", "camera-then-call"])
async def test_an_emergency_call_and_a_camera_report_of_one_crash_make_one_incident(
        stub: Stub, keys: Keys, site: Point, call_first: bool) -> None:
    # The caller's position is rough: 60 m off the camera's, and the call comes 40 s apart from the detection.
    call = emergency_call(offset(site, 50, -33), seconds_ago=0 if call_first else 60)
    detection = camera(site, "cam-1", confidence=0.7, seconds_ago=40 if call_first else 100)
    first, second = (call, detection) if call_first else (detection, call)
    a = await stub.ReportEvent(first, metadata=keys.md(keys.police if call_first else keys.camera))
    b = await stub.ReportEvent(second, metadata=keys.md(keys.camera if call_first else keys.police))
    assert a.opened and not b.opened and a.incident_id == b.incident_id
    got = await get(stub, keys, a.incident_id)
    assert got.source_count == 2
    assert set(got.source_kinds) == {pb.SOURCE_KIND_EMERGENCY_CALL, pb.SOURCE_KIND_ROADSIDE_DETECTION}
    assert {(s.source_kind, s.source_id) for s in got.sources} == {
        (pb.SOURCE_KIND_EMERGENCY_CALL, "call-110-0001"), (pb.SOURCE_KIND_ROADSIDE_DETECTION, "cam-1")}
    assert got.type == pb.EVENT_TYPE_ACCIDENT  # the call's type is the more specific one
    assert got.confidence == pytest.approx(1 - 0.6 * 0.3, abs=1e-4)  # two independent sources


# ----- non-default correlation windows ------------------------------------------------------------


def _reports_only(resources: Resources) -> ServiceParts:
    """The IDPS service without its background jobs: the default service's roadside consumer and
    auto-closer already run on this database and Redis."""
    from services.idps.app import build

    parts = build(resources)
    return ServiceParts(parts.definitions, on_stop=parts.on_stop, on_start=parts.on_start)


@pytest.fixture(scope="module")
async def narrow_stub(idps_resources: Resources) -> AsyncIterator[Stub]:
    base = idps_resources.settings
    assert base.database_url and base.redis_url
    settings = Settings.from_env({
        "DATABASE_URL": base.database_url, "REDIS_URL": base.redis_url, "V2X_API_KEY_CACHE_S": "1",
        "V2X_IDPS_REOPEN_WINDOW_S": f"{REOPEN_WINDOW_S:g}", "V2X_IDPS_SUBSCRIBER_BUFFER": f"{SUBSCRIBER_BUFFER}",
        "V2X_IDPS_CORRELATION_DISTANCE_M": f"{NARROW_DISTANCE_M:g}",
        "V2X_IDPS_CORRELATION_WINDOW_S": f"{NARROW_WINDOW_S:g}"})
    narrow = Resources(settings, idps_resources.engine, idps_resources.redis, idps_resources.verifier,
                       idps_resources.reads)
    running = await start_service(_reports_only, narrow, port=0, host="127.0.0.1")
    channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    yield IdpsServiceStub(channel)
    await channel.close()
    await running.stop(0.5)


def elsewhere(site: Point) -> Point:
    """A second place for the default service's half of a comparison, 1.5 km from the first."""
    return offset(site, 0, 1500)


async def pair(stub: Stub, keys: Keys, point: Point, *, north_m: float = 0.0,
               seconds_apart: float = 0.0) -> tuple[pb.ReportEventResponse, pb.ReportEventResponse]:
    """Two officers' reports of an accident, the second `north_m` from and `seconds_apart` after the first."""
    a = await stub.ReportEvent(report(point, source="officer-1", seconds_ago=seconds_apart),
                               metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(offset(point, north_m, 0), source="officer-2"), metadata=keys.md(keys.police))
    return a, b


@pytest.mark.parametrize(("north_m", "seconds_apart"), [(50, 0), (0, 30)], ids=["50 m away", "30 s later"])
async def test_a_report_beyond_the_30_m_or_20_s_window_opens_another_incident(
        narrow_stub: Stub, stub: Stub, keys: Keys, site: Point, north_m: float, seconds_apart: float) -> None:
    a, b = await pair(narrow_stub, keys, site, north_m=north_m, seconds_apart=seconds_apart)
    assert a.opened and b.opened and a.incident_id != b.incident_id
    # The default windows (100 m, 120 s) join the same pair.
    c, d = await pair(stub, keys, elsewhere(site), north_m=north_m, seconds_apart=seconds_apart)
    assert c.opened and not d.opened and c.incident_id == d.incident_id


async def test_within_the_30_m_and_20_s_window_a_report_joins(narrow_stub: Stub, keys: Keys, site: Point) -> None:
    a, b = await pair(narrow_stub, keys, site, north_m=20, seconds_apart=10)
    assert a.opened and not b.opened and a.incident_id == b.incident_id
    got = await get(narrow_stub, keys, a.incident_id)
    assert got.source_count == 2 and {s.source_id for s in got.sources} == {"officer-1", "officer-2"}
