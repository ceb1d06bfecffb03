"""Bad inputs: each is refused with the right status, and nothing is written (the IDPS tables and the
change stream read exactly as before the call)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc import aio
from sqlalchemy import text
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb

from services.common.runtime import Resources
from services.idps.feed import STREAM
from services.idps.settings import IdpsSettings
from services.idps.store import IdpsStore
from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import JPEG, camera, circle, report, ts

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NAN, INF = math.nan, math.inf
SITE = (31.95, 121.95)
_TABLES = ("idps_incidents", "idps_reports", "idps_evidence", "idps_links", "idps_audit")


async def fingerprint(resources: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with resources.engine.connect() as conn:
        for table in _TABLES:
            out[table] = (await conn.execute(text(
                f"SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                f"FROM {table} t"))).scalar_one()
    info = await resources.redis.xinfo_stream(STREAM)
    out["stream"] = info["last-generated-id"]
    return out


@asynccontextmanager
async def nothing_written(resources: Resources) -> AsyncIterator[None]:
    # Let the auto-closer finish with what other tests left cleared, so that it cannot write meanwhile.
    await IdpsStore(resources.engine, IdpsSettings()).close_expired(datetime.now(UTC) + timedelta(days=1))
    before = await fingerprint(resources)
    yield
    after = await fingerprint(resources)
    assert after == before, f"changed: {[k for k in before if after[k] != before[k]]}"


@dataclass(frozen=True)
class World:
    open_id: str
    open_report: str
    other_id: str
    closed_id: str


@pytest.fixture(scope="module")
async def world(idps_channel: aio.Channel, keys: Keys) -> World:
    from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

    stub: Any = IdpsServiceStub(idps_channel)
    md = keys.md(keys.police)
    a = await stub.ReportEvent(report(SITE), metadata=md)
    await stub.ReportEvent(report(SITE, source="officer-2"), metadata=md)  # version 2
    b = await stub.ReportEvent(report((SITE[0] + 0.01, SITE[1])), metadata=md)
    c = await stub.ReportEvent(report((SITE[0] - 0.01, SITE[1])), metadata=md)
    for target in (pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_CLEARED, pb.INCIDENT_STATUS_CLOSED):
        await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=c.incident_id, target_status=target),
                                      metadata=md)
    return World(a.incident_id, a.report_id, b.incident_id, c.incident_id)


def _report(**changes: Any) -> Callable[[World], Message]:
    def build(w: World) -> Message:
        r = report(SITE)
        for name, value in changes.items():
            if name == "lat":
                r.position.lat = value
            elif name == "lon":
                r.position.lon = value
            elif name == "no_position":
                r.ClearField("position")
            elif name == "no_time":
                r.ClearField("observed_at")
            elif name == "observed_at":
                r.observed_at.CopyFrom(value)
            elif name == "snapshot":
                r.evidence.snapshot_jpeg = value
            elif name == "plate":
                r.evidence.plate = value
            else:
                setattr(r, name, value)
        return r
    return build


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    build: Callable[[World], Message]
    code: grpc.StatusCode
    key: str | None = "police"  # a Keys attribute; None = no credentials; "bogus" = a made-up key


def _tr(target: int, version: int = 0, which: str = "open") -> Callable[[World], Message]:
    return lambda w: pb.TransitionIncidentRequest(incident_id=getattr(w, f"{which}_id"),
                                                  target_status=target, expected_version=version)  # type: ignore[arg-type]


CASES = [
    Case("unknown event type", "ReportEvent", _report(type=555), INVALID),
    Case("no type at all", "ReportEvent", _report(type=0), INVALID),
    Case("NaN latitude", "ReportEvent", _report(lat=NAN), INVALID),
    Case("infinite longitude", "ReportEvent", _report(lon=INF), INVALID),
    Case("latitude beyond the pole", "ReportEvent", _report(lat=91.0), INVALID),
    Case("no position", "ReportEvent", _report(no_position=True), INVALID),
    Case("confidence above 1", "ReportEvent", _report(confidence=1.5), INVALID),
    Case("NaN confidence", "ReportEvent", _report(confidence=NAN), INVALID),
    Case("no observation time", "ReportEvent", _report(no_time=True), INVALID),
    Case("observed ten minutes in the future", "ReportEvent", _report(observed_at=ts(-600)), INVALID),
    Case("no idempotency key", "ReportEvent", _report(idempotency_key=""), INVALID),
    Case("idempotency key with spaces", "ReportEvent", _report(idempotency_key="a b"), INVALID),
    Case("no source kind", "ReportEvent", _report(source_kind=0), INVALID),
    Case("no source id", "ReportEvent", _report(source_id=""), INVALID),
    Case("UNMAPPED without the original code", "ReportEvent", _report(type=pb.EVENT_TYPE_UNMAPPED), INVALID),
    Case("type and DENM cause together", "ReportEvent", _report(denm_cause_code=2), INVALID),
    Case("DENM cause out of range", "ReportEvent", _report(type=0, denm_cause_code=300), INVALID),
    Case("negative radius", "ReportEvent", _report(radius_m=-1.0), INVALID),
    Case("heading of 400 degrees", "ReportEvent", _report(heading_deg=400.0), INVALID),
    Case("snapshot that is not a JPEG", "ReportEvent", _report(snapshot=b"GIF89a...."), INVALID),
    Case("snapshot over 2 MiB", "ReportEvent", _report(snapshot=JPEG + b"\0" * (2 * 1024 * 1024)), INVALID),
    Case("plate of 40 characters", "ReportEvent", _report(plate="沪" * 40), INVALID),
    Case("lane id with spaces", "ReportEvent", _report(lane_id="lane 2"), INVALID),
    Case("description of 1001 characters", "ReportEvent", _report(description="x" * 1001), INVALID),
    Case("no credentials", "ReportEvent", _report(), UNAUTH, None),
    Case("a made-up key", "ReportEvent", _report(), UNAUTH, "bogus"),
    Case("a driver reporting", "ReportEvent", _report(), DENIED, "driver"),
    Case("a camera reporting as another camera", "ReportEvent",
         lambda w: camera(SITE, "cam-2"), DENIED, "camera"),
    Case("a camera reporting as a police officer", "ReportEvent", _report(), DENIED, "camera"),
    Case("a driver reading plates and images", "GetEvidence",
         lambda w: pb.GetEvidenceRequest(report_id=w.open_report), DENIED, "driver"),
    Case("an admin reading plates and images", "GetEvidence",
         lambda w: pb.GetEvidenceRequest(report_id=w.open_report), DENIED, "admin"),
    Case("a transition out of closed", "TransitionIncident", _tr(pb.INCIDENT_STATUS_CONFIRMED, which="closed"),
         PRECONDITION),
    Case("skipping from reported to on scene", "TransitionIncident", _tr(pb.INCIDENT_STATUS_ON_SCENE),
         PRECONDITION),
    Case("a stale version", "TransitionIncident", _tr(pb.INCIDENT_STATUS_CONFIRMED, version=1),
         grpc.StatusCode.ABORTED),
    Case("a negative version", "TransitionIncident", _tr(pb.INCIDENT_STATUS_CONFIRMED, version=-1), INVALID),
    Case("no target status", "TransitionIncident", _tr(0), INVALID),
    Case("an unknown incident", "TransitionIncident",
         lambda w: pb.TransitionIncidentRequest(incident_id="Inone", target_status=pb.INCIDENT_STATUS_CONFIRMED),
         grpc.StatusCode.NOT_FOUND),
    Case("an incident id with a newline", "GetIncident", lambda w: pb.GetIncidentRequest(incident_id="I1\n"),
         INVALID),
    Case("a driver driving the lifecycle", "TransitionIncident", _tr(pb.INCIDENT_STATUS_CONFIRMED), DENIED,
         "driver"),
    Case("an update with nothing to change", "UpdateIncident",
         lambda w: pb.UpdateIncidentRequest(incident_id=w.open_id), INVALID),
    Case("severity and derive_severity together", "UpdateIncident",
         lambda w: pb.UpdateIncidentRequest(incident_id=w.open_id, severity=pb.SEVERITY_MAJOR, derive_severity=True),
         INVALID),
    Case("a lane without a state", "UpdateIncident",
         lambda w: pb.UpdateIncidentRequest(incident_id=w.open_id, lane_impacts=[pb.LaneImpact(lane_id="L1")]),
         INVALID),
    Case("an update of a closed incident", "UpdateIncident",
         lambda w: pb.UpdateIncidentRequest(incident_id=w.closed_id, note="late note"), PRECONDITION),
    Case("merging an incident into itself", "MergeIncidents",
         lambda w: pb.MergeIncidentsRequest(target_incident_id=w.open_id, incident_ids=[w.open_id]), INVALID),
    Case("merging an unknown incident", "MergeIncidents",
         lambda w: pb.MergeIncidentsRequest(target_incident_id=w.open_id, incident_ids=["Inone"]),
         grpc.StatusCode.NOT_FOUND),
    Case("merging a closed incident", "MergeIncidents",
         lambda w: pb.MergeIncidentsRequest(target_incident_id=w.open_id, incident_ids=[w.closed_id]), PRECONDITION),
    Case("splitting a report of another incident", "SplitSource",
         lambda w: pb.SplitSourceRequest(incident_id=w.other_id, report_ids=[w.open_report]), INVALID),
    Case("a forged page token", "ListIncidents",
         lambda w: pb.ListIncidentsRequest(page=cpb.PageRequest(page_token="bm90LWEtdG9rZW4=")), INVALID),
    Case("a time range that ends before it starts", "ListIncidents",
         lambda w: pb.ListIncidentsRequest(start_time=ts(0), end_time=ts(60)), INVALID),
    Case("an inverted box", "ListIncidents",
         lambda w: pb.ListIncidentsRequest(area=cpb.Area(box=cpb.BoundingBox(
             south_west=cpb.LatLon(lat=32, lon=122), north_east=cpb.LatLon(lat=31, lon=121)))), INVALID),
    Case("a cursor this service never issued", "Subscribe",
         lambda w: pb.SubscribeRequest(cursor="yesterday"), INVALID),
    Case("a live subscription to closed incidents", "Subscribe",
         lambda w: pb.SubscribeRequest(filter=pb.IncidentFilter(statuses=[pb.INCIDENT_STATUS_CLOSED])), INVALID),
    Case("a heartbeat of 1000 s", "Subscribe", lambda w: pb.SubscribeRequest(heartbeat_interval_s=1000), INVALID),
    Case("a circle of zero radius", "Subscribe",
         lambda w: pb.SubscribeRequest(filter=pb.IncidentFilter(area=circle(SITE, 0))), INVALID),
    Case("a camera subscribing", "Subscribe", lambda w: pb.SubscribeRequest(), DENIED, "camera"),
]


def test_there_are_at_least_25_bad_inputs() -> None:
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_refused_and_nothing_is_written(case: Case, stub: Stub, keys: Keys, world: World,
                                                           idps_resources: Resources) -> None:
    request = case.build(world)
    if case.key is None:
        metadata: tuple[tuple[str, str], ...] = ()
    elif case.key == "bogus":
        metadata = keys.md("v2x_0123456789ab_notasecret")
    else:
        metadata = keys.md(getattr(keys, case.key))
    method = getattr(stub, case.method)
    async with nothing_written(idps_resources):
        with pytest.raises(aio.AioRpcError) as err:
            if case.method == "Subscribe":
                call = method(request, metadata=metadata)
                await call.read()
            else:
                await method(request, metadata=metadata)
    assert err.value.code() == case.code, err.value.details()
    assert err.value.details()
