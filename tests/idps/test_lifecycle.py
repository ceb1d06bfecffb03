"""Lifecycle over gRPC: transitions, audit trail, versions, reopening, reactivation, auto-close."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc import aio
from v2x.idps.v1 import idps_pb2 as pb

from services.common.runtime import Resources
from services.idps.settings import IdpsSettings
from services.idps.store import IdpsStore
from tests.conftest import Keys
from tests.idps.conftest import REOPEN_WINDOW_S, Stub
from tests.idps.helpers import camera, report

Point = tuple[float, float]
S = pb.IncidentStatus


async def open_incident(stub: Stub, keys: Keys, site: Point) -> str:
    return (await stub.ReportEvent(report(site), metadata=keys.md(keys.police))).incident_id


async def move(stub: Stub, keys: Keys, iid: str, target: int, version: int = 0, note: str = "") -> pb.Incident:
    return await stub.TransitionIncident(pb.TransitionIncidentRequest(
        incident_id=iid, target_status=target, expected_version=version, note=note),  # type: ignore[arg-type]
        metadata=keys.md(keys.police))


async def audit(stub: Stub, keys: Keys, iid: str) -> list[pb.AuditRecord]:
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(keys.police))
    return list(got.audit)


async def test_the_whole_lifecycle_with_an_audit_record_for_every_change(stub: Stub, keys: Keys,
                                                                         site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    path = [pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_DISPATCHED, pb.INCIDENT_STATUS_ON_SCENE,
            pb.INCIDENT_STATUS_CLEARED, pb.INCIDENT_STATUS_CLOSED]
    version = 1
    for step, target in enumerate(path):
        got = await move(stub, keys, iid, target, version, note=f"step {step}")
        version += 1
        assert got.status == target and got.version == version
    assert got.HasField("closed_at") and got.HasField("cleared_at")
    trail = await audit(stub, keys, iid)
    assert [a.action for a in trail] == [pb.AUDIT_ACTION_CREATED] + [pb.AUDIT_ACTION_TRANSITIONED] * 5
    assert [a.version for a in trail] == [1, 2, 3, 4, 5, 6]
    assert [a.to_status for a in trail[1:]] == path
    assert [a.from_status for a in trail[1:]] == [pb.INCIDENT_STATUS_REPORTED, *path[:-1]]
    assert all(a.actor == "police" and a.HasField("at") for a in trail)
    assert [a.note for a in trail[1:]] == [f"step {i}" for i in range(5)]


async def test_an_invalid_transition_is_failed_precondition_and_changes_nothing(stub: Stub, keys: Keys,
                                                                                site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    with pytest.raises(aio.AioRpcError) as err:
        await move(stub, keys, iid, pb.INCIDENT_STATUS_ON_SCENE)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await audit(stub, keys, iid)) == 1


async def test_false_alarm_is_terminal(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    assert (await move(stub, keys, iid, pb.INCIDENT_STATUS_FALSE_ALARM)).status == pb.INCIDENT_STATUS_FALSE_ALARM
    with pytest.raises(aio.AioRpcError) as err:
        await move(stub, keys, iid, pb.INCIDENT_STATUS_CONFIRMED)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_stale_version_is_aborted(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    await move(stub, keys, iid, pb.INCIDENT_STATUS_CONFIRMED, 1)
    with pytest.raises(aio.AioRpcError) as err:
        await move(stub, keys, iid, pb.INCIDENT_STATUS_DISPATCHED, 1)
    assert err.value.code() == grpc.StatusCode.ABORTED


async def test_of_two_concurrent_edits_of_one_version_exactly_one_wins(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    results = await asyncio.gather(move(stub, keys, iid, pb.INCIDENT_STATUS_CONFIRMED, 1, "a"),
                                   move(stub, keys, iid, pb.INCIDENT_STATUS_FALSE_ALARM, 1, "b"),
                                   return_exceptions=True)
    codes = sorted(r.code().name if isinstance(r, aio.AioRpcError) else "OK" for r in results)
    assert codes == ["ABORTED", "OK"]
    assert len(await audit(stub, keys, iid)) == 2


async def test_a_cleared_incident_can_be_reopened_within_the_window(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    for target in (pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_DISPATCHED, pb.INCIDENT_STATUS_CLEARED):
        await move(stub, keys, iid, target)
    got = await move(stub, keys, iid, pb.INCIDENT_STATUS_DISPATCHED, note="still there")
    assert got.status == pb.INCIDENT_STATUS_DISPATCHED and not got.HasField("cleared_at")


async def test_a_cleared_incident_cannot_be_reopened_after_the_window(stub: Stub, keys: Keys, site: Point,
                                                                       idps_resources: Resources) -> None:
    from sqlalchemy import text

    iid = await open_incident(stub, keys, site)
    for target in (pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_CLEARED):
        cleared = await move(stub, keys, iid, target)
    # The window passes: cleared_at moves back rather than the test sleeping through it, which would give the
    # auto-closer (every 5 s) time to close the incident first (a CLOSED -> ON_SCENE refusal instead).
    async with idps_resources.engine.begin() as conn:
        await conn.execute(text("UPDATE idps_incidents SET cleared_at = cleared_at - CAST(:back AS interval) "
                                "WHERE id = :id"), {"back": timedelta(seconds=REOPEN_WINDOW_S + 1), "id": iid})
    with pytest.raises(aio.AioRpcError) as err:  # at the version it was cleared with: were it closed, ABORTED
        await move(stub, keys, iid, pb.INCIDENT_STATUS_ON_SCENE, version=cleared.version)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == (f"the incident was cleared more than {REOPEN_WINDOW_S:g} s ago and can no "
                                   "longer be reopened")
    assert cleared.status == pb.INCIDENT_STATUS_CLEARED
    assert pb.INCIDENT_STATUS_ON_SCENE not in [a.to_status for a in await audit(stub, keys, iid)]


async def test_a_new_report_reactivates_a_recently_cleared_incident(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    for target in (pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_CLEARED):
        await move(stub, keys, iid, target)
    again = await stub.ReportEvent(camera(site, type=pb.EVENT_TYPE_STOPPED_VEHICLE), metadata=keys.md(keys.camera))
    assert again.incident_id == iid and again.reactivated
    trail = await audit(stub, keys, iid)
    assert trail[-1].action == pb.AUDIT_ACTION_REACTIVATED and trail[-1].to_status == pb.INCIDENT_STATUS_CONFIRMED
    assert trail[-1].actor == "camera:cam-1" and trail[-1].report_id == again.report_id


async def test_cleared_incidents_close_once_the_window_has_passed(stub: Stub, keys: Keys, site: Point,
                                                                  idps_resources: Resources) -> None:
    iid = await open_incident(stub, keys, site)
    for target in (pb.INCIDENT_STATUS_CONFIRMED, pb.INCIDENT_STATUS_CLEARED):
        await move(stub, keys, iid, target)
    store = IdpsStore(idps_resources.engine, IdpsSettings.from_env(idps_resources.settings.env))
    await store.close_expired(datetime.now(UTC) + timedelta(seconds=REOPEN_WINDOW_S + 1))
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(keys.police))
    assert got.incident.status == pb.INCIDENT_STATUS_CLOSED
    assert got.audit[-1].action == pb.AUDIT_ACTION_AUTO_CLOSED and got.audit[-1].actor == "system"


async def test_only_the_police_drive_the_lifecycle(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await open_incident(stub, keys, site)
    for key in (keys.admin, keys.driver, keys.camera, keys.op_a):
        with pytest.raises(aio.AioRpcError) as err:
            await stub.TransitionIncident(pb.TransitionIncidentRequest(
                incident_id=iid, target_status=pb.INCIDENT_STATUS_CONFIRMED), metadata=keys.md(key))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
