"""Severity and lane impacts; merging incidents and splitting sources out, with every link kept."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from v2x.idps.v1 import idps_pb2 as pb

from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import camera, offset, report

Point = tuple[float, float]
L = pb.LaneState


def lanes(**states: int) -> list[pb.LaneImpact]:
    return [pb.LaneImpact(lane_id=k, state=v) for k, v in states.items()]  # type: ignore[arg-type]


async def update(stub: Stub, keys: Keys, iid: str, **fields: object) -> pb.Incident:
    return await stub.UpdateIncident(pb.UpdateIncidentRequest(incident_id=iid, **fields),  # type: ignore[arg-type]
                                     metadata=keys.md(keys.police))


async def test_a_reported_lane_is_affected_and_the_incident_minor(stub: Stub, keys: Keys, site: Point) -> None:
    r = await stub.ReportEvent(camera(site, lane="L2"), metadata=keys.md(keys.camera))
    got = (await stub.GetIncident(pb.GetIncidentRequest(incident_id=r.incident_id),
                                  metadata=keys.md(keys.police))).incident
    assert [(li.lane_id, li.state) for li in got.lane_impacts] == [("L2", pb.LANE_STATE_AFFECTED)]
    assert got.severity == pb.SEVERITY_MINOR and got.severity_derived


async def test_severity_follows_lane_impacts_until_set_by_hand(stub: Stub, keys: Keys, site: Point) -> None:
    iid = (await stub.ReportEvent(report(site), metadata=keys.md(keys.police))).incident_id
    got = await update(stub, keys, iid, lane_impacts=lanes(L1=pb.LANE_STATE_BLOCKED, L2=pb.LANE_STATE_FREE))
    assert got.severity == pb.SEVERITY_NORMAL and got.severity_derived
    got = await update(stub, keys, iid, lane_impacts=lanes(L2=pb.LANE_STATE_BLOCKED))
    assert got.severity == pb.SEVERITY_MAJOR
    got = await update(stub, keys, iid, severity=pb.SEVERITY_MINOR, note="both lanes passable with care")
    assert got.severity == pb.SEVERITY_MINOR and not got.severity_derived
    got = await update(stub, keys, iid, lane_impacts=lanes(L1=pb.LANE_STATE_FREE))
    assert got.severity == pb.SEVERITY_MINOR  # set by hand: lanes no longer move it
    got = await update(stub, keys, iid, derive_severity=True)
    assert got.severity == pb.SEVERITY_NORMAL and got.severity_derived
    detail = await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(keys.police))
    updates = [a for a in detail.audit if a.action == pb.AUDIT_ACTION_UPDATED]
    assert len(updates) == 5 and "lane L1 -->BLOCKED" in updates[0].details
    assert updates[2].note == "both lanes passable with care"


async def test_a_type_set_by_the_police_is_kept_when_reports_join(stub: Stub, keys: Keys, site: Point) -> None:
    iid = (await stub.ReportEvent(camera(site), metadata=keys.md(keys.camera))).incident_id
    await update(stub, keys, iid, type=pb.EVENT_TYPE_ILLEGAL_PARKING)
    await stub.ReportEvent(camera(site, type=pb.EVENT_TYPE_STOPPED_VEHICLE), metadata=keys.md(keys.camera))
    got = (await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(keys.police))).incident
    assert got.type == pb.EVENT_TYPE_ILLEGAL_PARKING and got.source_count == 2


async def test_merging_moves_the_sources_and_closes_the_merged_incident(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site, source="officer-1"), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(offset(site, 400, 0), source="officer-2"), metadata=keys.md(keys.police))
    assert a.incident_id != b.incident_id
    merged = await stub.MergeIncidents(pb.MergeIncidentsRequest(
        target_incident_id=a.incident_id, incident_ids=[b.incident_id], expected_version=1, note="same pile-up"),
        metadata=keys.md(keys.police))
    assert merged.source_count == 2 and merged.version == 2
    gone = await stub.GetIncident(pb.GetIncidentRequest(incident_id=b.incident_id), metadata=keys.md(keys.police))
    assert gone.incident.status == pb.INCIDENT_STATUS_CLOSED and gone.incident.merged_into_id == a.incident_id
    assert not gone.incident.sources
    assert [(x.kind, x.from_incident_id, x.to_incident_id) for x in gone.links] == [
        (pb.LINK_KIND_OPENED, "", b.incident_id), (pb.LINK_KIND_MERGED, b.incident_id, a.incident_id)]
    target = await stub.GetIncident(pb.GetIncidentRequest(incident_id=a.incident_id), metadata=keys.md(keys.police))
    assert {s.report_id for s in target.incident.sources} == {a.report_id, b.report_id}
    assert target.audit[-1].action == pb.AUDIT_ACTION_MERGED and target.audit[-1].related_incident_id == b.incident_id


async def test_splitting_moves_a_source_into_a_new_incident(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site, source="officer-1"), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(camera(offset(site, 50, 0), lane="L1"), metadata=keys.md(keys.camera))
    assert a.incident_id == b.incident_id
    out = await stub.SplitSource(pb.SplitSourceRequest(incident_id=a.incident_id, report_ids=[b.report_id],
                                                       expected_version=2, note="two separate breakdowns"),
                                 metadata=keys.md(keys.police))
    assert out.incident.source_count == 1 and out.incident.version == 3
    assert out.new_incident.status == pb.INCIDENT_STATUS_REPORTED and out.new_incident.source_count == 1
    assert out.new_incident.type == pb.EVENT_TYPE_STOPPED_VEHICLE
    assert out.incident.type == pb.EVENT_TYPE_ACCIDENT
    new = await stub.GetIncident(pb.GetIncidentRequest(incident_id=out.new_incident.id),
                                 metadata=keys.md(keys.police))
    assert [s.report_id for s in new.incident.sources] == [b.report_id]
    assert [(x.report_id, x.kind, x.from_incident_id) for x in new.links] == [
        (b.report_id, pb.LINK_KIND_SPLIT, a.incident_id)]
    old = await stub.GetIncident(pb.GetIncidentRequest(incident_id=a.incident_id), metadata=keys.md(keys.police))
    assert [x.kind for x in old.links] == [pb.LINK_KIND_OPENED, pb.LINK_KIND_JOINED, pb.LINK_KIND_SPLIT]
    assert old.audit[-1].action == pb.AUDIT_ACTION_SPLIT and old.audit[-1].related_incident_id == new.incident.id


async def test_splitting_every_source_out_is_refused(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.SplitSource(pb.SplitSourceRequest(incident_id=a.incident_id, report_ids=[a.report_id]),
                               metadata=keys.md(keys.police))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_ended_incident_cannot_be_merged(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(offset(site, 400, 0)), metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=b.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_FALSE_ALARM),
                                  metadata=keys.md(keys.police))
    with pytest.raises(aio.AioRpcError) as err:
        await stub.MergeIncidents(pb.MergeIncidentsRequest(target_incident_id=a.incident_id,
                                                           incident_ids=[b.incident_id]), metadata=keys.md(keys.police))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
