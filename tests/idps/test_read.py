"""ListIncidents and GetIncident; plates and images for the police only."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb

from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import JPEG, camera, circle, offset, report, ts

Point = tuple[float, float]


async def test_list_by_area_type_and_status_newest_first_with_paging(stub: Stub, keys: Keys, site: Point) -> None:
    made = [await stub.ReportEvent(report(offset(site, 300 * i, 0), type=pb.EVENT_TYPE_ROADWORKS),
                                   metadata=keys.md(keys.police)) for i in range(5)]
    await stub.ReportEvent(report(offset(site, 0, 600), type=pb.EVENT_TYPE_FOG), metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=made[0].incident_id,
                                                               target_status=pb.INCIDENT_STATUS_CONFIRMED),
                                  metadata=keys.md(keys.police))
    area = circle(site, 3000)
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListIncidents(pb.ListIncidentsRequest(
            area=area, types=[pb.EVENT_TYPE_ROADWORKS], page=cpb.PageRequest(page_size=2, page_token=token)),
            metadata=keys.md(keys.driver))
        seen += [i.id for i in page.incidents]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == [m.incident_id for m in reversed(made)]
    confirmed = await stub.ListIncidents(pb.ListIncidentsRequest(area=area, statuses=[pb.INCIDENT_STATUS_CONFIRMED]),
                                         metadata=keys.md(keys.police))
    assert [i.id for i in confirmed.incidents] == [made[0].incident_id]
    box = cpb.Area(box=cpb.BoundingBox(south_west=cpb.LatLon(lat=site[0] - 0.001, lon=site[1] - 0.001),
                                       north_east=cpb.LatLon(lat=site[0] + 0.001, lon=site[1] + 0.001)))
    boxed = await stub.ListIncidents(pb.ListIncidentsRequest(area=box), metadata=keys.md(keys.police))
    assert [i.id for i in boxed.incidents] == [made[0].incident_id]


async def test_list_by_time_range(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=a.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_FALSE_ALARM),
                                  metadata=keys.md(keys.police))
    later = await stub.ListIncidents(pb.ListIncidentsRequest(area=circle(site), start_time=ts(-5)),
                                     metadata=keys.md(keys.police))
    assert later.incidents == []  # it ended before start_time
    window = await stub.ListIncidents(pb.ListIncidentsRequest(area=circle(site), start_time=ts(60),
                                                              end_time=ts(-5)), metadata=keys.md(keys.police))
    assert [i.id for i in window.incidents] == [a.incident_id]
    before = await stub.ListIncidents(pb.ListIncidentsRequest(area=circle(site), end_time=ts(60)),
                                      metadata=keys.md(keys.police))
    assert before.incidents == []


async def test_get_incident_has_sources_audit_and_links(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(camera(site, plate="沪C11111", snapshot=JPEG), metadata=keys.md(keys.camera))
    b = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=a.incident_id), metadata=keys.md(keys.police))
    assert [s.report_id for s in got.incident.sources] == [a.report_id, b.report_id]
    assert [x.action for x in got.audit] == [pb.AUDIT_ACTION_CREATED, pb.AUDIT_ACTION_SOURCE_ADDED]
    assert [(x.report_id, x.kind) for x in got.links] == [(a.report_id, pb.LINK_KIND_OPENED),
                                                          (b.report_id, pb.LINK_KIND_JOINED)]
    evidence = got.incident.sources[0].evidence
    assert evidence.plate == "沪C11111" and evidence.has_snapshot and not evidence.redacted
    assert not evidence.snapshot_jpeg  # images come from GetEvidence
    full = await stub.GetEvidence(pb.GetEvidenceRequest(report_id=a.report_id), metadata=keys.md(keys.police))
    assert full.snapshot_jpeg == JPEG and full.plate == "沪C11111"


@pytest.mark.parametrize("role", ["driver", "admin", "op_a", "platform"])
async def test_other_roles_see_evidence_redacted(stub: Stub, keys: Keys, site: Point, role: str) -> None:
    a = await stub.ReportEvent(camera(site, plate="沪D22222", snapshot=JPEG), metadata=keys.md(keys.camera))
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=a.incident_id),
                                 metadata=keys.md(getattr(keys, role)))
    evidence = got.incident.sources[0].evidence
    assert evidence.redacted and evidence.plate == "" and not evidence.has_snapshot
    assert "沪D22222" not in str(got)
    with pytest.raises(aio.AioRpcError) as err:
        await stub.GetEvidence(pb.GetEvidenceRequest(report_id=a.report_id), metadata=keys.md(getattr(keys, role)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_missing_incident_is_not_found(stub: Stub, keys: Keys) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await stub.GetIncident(pb.GetIncidentRequest(incident_id="Inope"), metadata=keys.md(keys.police))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
