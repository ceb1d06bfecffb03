"""Correlation: reports of one happening join one incident; others open their own."""

from __future__ import annotations

import asyncio

import pytest
from v2x.idps.v1 import idps_pb2 as pb

from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import camera, offset, report

Point = tuple[float, float]


async def get(stub: Stub, keys: Keys, incident_id: str) -> pb.GetIncidentResponse:
    return await stub.GetIncident(pb.GetIncidentRequest(incident_id=incident_id), metadata=keys.md(keys.police))


async def test_two_cameras_and_a_police_report_of_one_crash_make_one_incident_with_three_sources(
        stub: Stub, keys: Keys, site: Point, idps_resources: object) -> None:
    from services.common.apikeys import create_key
    from services.common.runtime import Resources

    assert isinstance(idps_resources, Resources)
    cam2 = (await create_key(idps_resources.engine, "camera:cam-2", "test")).key
    first = await stub.ReportEvent(camera(site, "cam-1", confidence=0.6, seconds_ago=110, lane="L2"),
                                   metadata=keys.md(keys.camera))
    second = await stub.ReportEvent(camera(offset(site, 60, 40), "cam-2", confidence=0.6, seconds_ago=50),
                                    metadata=keys.md(cam2))
    third = await stub.ReportEvent(report(offset(site, -30, 70), type=pb.EVENT_TYPE_ACCIDENT, confidence=0.5,
                                          description="two cars, one lane blocked"), metadata=keys.md(keys.police))
    assert first.opened and not second.opened and not third.opened
    assert first.incident_id == second.incident_id == third.incident_id
    got = (await get(stub, keys, first.incident_id)).incident
    assert got.source_count == 3 and len(got.sources) == 3
    assert {s.source_id for s in got.sources} == {"cam-1", "cam-2", "officer-7"}
    assert set(got.source_kinds) == {pb.SOURCE_KIND_ROADSIDE_DETECTION, pb.SOURCE_KIND_POLICE_OFFICER}
    assert got.type == pb.EVENT_TYPE_ACCIDENT  # the police's more specific type wins over STOPPED_VEHICLE
    assert got.confidence == pytest.approx(1 - 0.4 * 0.4 * 0.5, abs=1e-4)
    assert got.version == 3 and got.denm_cause_code == 2


async def test_confidence_rises_with_each_independent_source(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site, source="officer-1", confidence=0.5), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(site, source="officer-2", confidence=0.5), metadata=keys.md(keys.police))
    got = (await get(stub, keys, b.incident_id)).incident
    assert a.incident_id == b.incident_id and got.confidence == pytest.approx(0.75, abs=1e-4)


async def test_a_source_repeating_itself_does_not_raise_the_confidence(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(camera(site, confidence=0.6), metadata=keys.md(keys.camera))
    b = await stub.ReportEvent(camera(site, confidence=0.6), metadata=keys.md(keys.camera))
    got = (await get(stub, keys, a.incident_id)).incident
    assert a.incident_id == b.incident_id and got.source_count == 2
    assert got.confidence == pytest.approx(0.6, abs=1e-4)


async def test_a_report_beyond_the_distance_window_opens_another_incident(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(offset(site, 150, 0)), metadata=keys.md(keys.police))
    assert b.opened and a.incident_id != b.incident_id


async def test_a_report_beyond_the_time_window_opens_another_incident(stub: Stub, keys: Keys, site: Point) -> None:
    a = await stub.ReportEvent(report(site, seconds_ago=400), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    assert b.opened and a.incident_id != b.incident_id


async def test_an_incompatible_type_at_the_same_place_opens_another_incident(stub: Stub, keys: Keys,
                                                                             site: Point) -> None:
    a = await stub.ReportEvent(report(site, type=pb.EVENT_TYPE_ACCIDENT), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(site, type=pb.EVENT_TYPE_ROADWORKS), metadata=keys.md(keys.police))
    assert b.opened and a.incident_id != b.incident_id


async def test_the_other_direction_is_another_incident_and_an_unknown_direction_joins(stub: Stub, keys: Keys,
                                                                                      site: Point) -> None:
    north = await stub.ReportEvent(camera(site, heading=0.0), metadata=keys.md(keys.camera))
    south = await stub.ReportEvent(camera(site, heading=180.0), metadata=keys.md(keys.camera))
    near_north = await stub.ReportEvent(camera(site, heading=350.0), metadata=keys.md(keys.camera))
    unknown = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    assert south.opened and south.incident_id != north.incident_id
    assert near_north.incident_id == north.incident_id
    assert not unknown.opened and unknown.incident_id in (north.incident_id, south.incident_id)


async def test_per_vehicle_events_with_different_plates_are_different_incidents(stub: Stub, keys: Keys,
                                                                                site: Point) -> None:
    a = await stub.ReportEvent(camera(site, type=pb.EVENT_TYPE_ILLEGAL_PARKING, plate="沪A12345"),
                               metadata=keys.md(keys.camera))
    b = await stub.ReportEvent(camera(site, type=pb.EVENT_TYPE_ILLEGAL_PARKING, plate="沪B67890"),
                               metadata=keys.md(keys.camera))
    c = await stub.ReportEvent(camera(site, type=pb.EVENT_TYPE_ILLEGAL_PARKING, plate="沪A12345"),
                               metadata=keys.md(keys.camera))
    assert b.opened and a.incident_id != b.incident_id and c.incident_id == a.incident_id


async def test_a_repeated_idempotency_key_changes_nothing(stub: Stub, keys: Keys, site: Point) -> None:
    first = await stub.ReportEvent(camera(site, key="evt-1"), metadata=keys.md(keys.camera))
    again = await stub.ReportEvent(camera(site, key="evt-1"), metadata=keys.md(keys.camera))
    assert again.duplicate and again.incident_id == first.incident_id and again.report_id == first.report_id
    got = (await get(stub, keys, first.incident_id)).incident
    assert got.source_count == 1 and got.version == 1


async def test_reports_of_one_crash_arriving_at_the_same_moment_make_one_incident(stub: Stub, keys: Keys,
                                                                                  site: Point) -> None:
    requests = [report(offset(site, 7 * i, -5 * i), source=f"officer-{i}") for i in range(12)]
    answers = await asyncio.gather(*(stub.ReportEvent(r, metadata=keys.md(keys.police)) for r in requests))
    assert len({a.incident_id for a in answers}) == 1
    assert sum(a.opened for a in answers) == 1
    assert sorted(a.incident_version for a in answers) == list(range(1, 13))


async def test_the_same_report_delivered_twice_at_once_is_stored_once(stub: Stub, keys: Keys, site: Point) -> None:
    r = camera(site, key="evt-twice")
    answers = await asyncio.gather(*(stub.ReportEvent(r, metadata=keys.md(keys.camera)) for _ in range(5)))
    assert len({a.report_id for a in answers}) == 1 and sum(not a.duplicate for a in answers) == 1
    got = (await get(stub, keys, answers[0].incident_id)).incident
    assert got.source_count == 1


async def test_a_denm_cause_code_is_mapped_to_the_canonical_type(stub: Stub, keys: Keys, site: Point) -> None:
    r = report(site, type=0, kind=pb.SOURCE_KIND_EXTERNAL_FEED, source="eu-feed", denm_cause_code=2)
    got = await get(stub, keys, (await stub.ReportEvent(r, metadata=keys.md(keys.admin))).incident_id)
    assert got.incident.type == pb.EVENT_TYPE_ACCIDENT


async def test_an_unmapped_denm_cause_keeps_its_code(stub: Stub, keys: Keys, site: Point) -> None:
    r = report(site, type=0, kind=pb.SOURCE_KIND_EXTERNAL_FEED, source="eu-feed", denm_cause_code=97)
    got = await get(stub, keys, (await stub.ReportEvent(r, metadata=keys.md(keys.admin))).incident_id)
    assert got.incident.type == pb.EVENT_TYPE_UNMAPPED and got.incident.denm_cause_code == 0
    assert got.incident.sources[0].external_code == "denm:97"
