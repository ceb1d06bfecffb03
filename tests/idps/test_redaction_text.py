"""Plate numbers typed into free text (descriptions, notes) are masked for every role but the police,
in GetIncident, ListIncidents and Subscribe alike; the police read them as written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from v2x.idps.v1 import idps_pb2 as pb

from services.common.plate_numbers import MAINLAND_PLATE, PLATE_MASK, mask_plates, may_contain_plate
from services.idps.convert import redact_subscribe_chunk
from services.idps.feed import NEW, frame
from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import circle, report, subscribe

Point = tuple[float, float]

DESCRIPTION = "白色轿车 沪A·12345 追尾 苏E8K9L2, one lane blocked"
MASKED = f"白色轿车 {PLATE_MASK} 追尾 {PLATE_MASK}, one lane blocked"
NOTE = "driver of 粤b 12345 left the scene"
MASKED_NOTE = f"driver of {PLATE_MASK} left the scene"
NOT_POLICE = ("driver", "admin", "op_a", "platform")


async def reported(stub: Stub, keys: Keys, site: Point, description: str = DESCRIPTION) -> str:
    r = report(site, description=description)
    return (await stub.ReportEvent(r, metadata=keys.md(keys.police))).incident_id


# ----- the masking itself -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "masked"), [
    ("沪A12345", PLATE_MASK),
    ("追尾车辆沪A12345逃逸", f"追尾车辆{PLATE_MASK}逃逸"),
    ("new-energy 粤BD12345 and 京A1234学", f"new-energy {PLATE_MASK} and {PLATE_MASK}"),
    ("typed 沪a-1234o by hand", f"typed {PLATE_MASK} by hand"),
    ("京港澳高速 G4, 沪A路 exit", "京港澳高速 G4, 沪A路 exit"),
    ("", ""),
])
def test_plates_in_text_are_masked_and_other_text_is_kept(text: str, masked: str) -> None:
    assert mask_plates(text) == masked


@given(before=st.text(max_size=20), plate=st.from_regex(MAINLAND_PLATE, fullmatch=True), after=st.text(max_size=20))
def test_no_plate_survives_masking_whatever_surrounds_it(before: str, plate: str, after: str) -> None:
    text = before + plate + after
    out = mask_plates(text)
    assert plate not in out and MAINLAND_PLATE.search(out) is None
    assert may_contain_plate(text.encode())


def test_a_subscribe_chunk_without_a_plate_is_passed_on_as_it_is() -> None:
    chunk = frame(NEW, "1-0", pb.Incident(id="i-1", description="two cars, one lane blocked"))
    assert redact_subscribe_chunk(chunk) is chunk


def test_a_subscribe_chunk_of_several_frames_has_every_plate_masked() -> None:
    chunk = b"".join(frame(NEW, f"{i}-0", pb.Incident(id=f"i-{i}", description=f"{i}: {DESCRIPTION}"))
                     for i in range(3))
    out = pb.SubscribeResponse.FromString(redact_subscribe_chunk(chunk))
    assert [(m.cursor, m.incident.id, m.incident.description) for m in out.messages] == [
        (f"{i}-0", f"i-{i}", f"{i}: {MASKED}") for i in range(3)]


# ----- over gRPC --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", NOT_POLICE)
async def test_get_incident_masks_plates_in_descriptions_and_notes_for_other_roles(
        stub: Stub, keys: Keys, site: Point, role: str) -> None:
    iid = await reported(stub, keys, site)
    await stub.TransitionIncident(pb.TransitionIncidentRequest(
        incident_id=iid, target_status=pb.INCIDENT_STATUS_CONFIRMED, note=NOTE), metadata=keys.md(keys.police))
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(getattr(keys, role)))
    assert got.incident.description == MASKED
    assert [s.description for s in got.incident.sources] == [MASKED]
    assert [a.note for a in got.audit] == ["", MASKED_NOTE]


async def test_get_incident_shows_the_police_the_text_as_written(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await reported(stub, keys, site)
    await stub.TransitionIncident(pb.TransitionIncidentRequest(
        incident_id=iid, target_status=pb.INCIDENT_STATUS_CONFIRMED, note=NOTE), metadata=keys.md(keys.police))
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=iid), metadata=keys.md(keys.police))
    assert got.incident.description == DESCRIPTION
    assert [s.description for s in got.incident.sources] == [DESCRIPTION]
    assert [a.note for a in got.audit] == ["", NOTE]


async def test_list_incidents_masks_plates_for_other_roles_only(stub: Stub, keys: Keys, site: Point) -> None:
    iid = await reported(stub, keys, site)
    request = pb.ListIncidentsRequest(area=circle(site, 200))
    driver = await stub.ListIncidents(request, metadata=keys.md(keys.driver))
    police = await stub.ListIncidents(request, metadata=keys.md(keys.police))
    assert [(i.id, i.description) for i in driver.incidents] == [(iid, MASKED)]
    assert [(i.id, i.description) for i in police.incidents] == [(iid, DESCRIPTION)]


async def test_subscribe_masks_plates_for_other_roles_in_the_snapshot_and_live(stub: Stub, keys: Keys,
                                                                               site: Point) -> None:
    before = await reported(stub, keys, site)
    driver = subscribe(stub, keys, keys.driver, area=circle(site))
    police = subscribe(stub, keys, keys.police, area=circle(site))
    try:
        assert [(m.incident.id, m.incident.description) for m in await driver.until_live()] == [(before, MASKED)]
        assert [(m.incident.id, m.incident.description) for m in await police.until_live()] == [
            (before, DESCRIPTION)]
        live = await reported(stub, keys, (site[0] + 0.002, site[1]), description=f"live: {DESCRIPTION}")
        seen_by_driver, seen_by_police = await driver.next(), await police.next()
        assert (seen_by_driver.kind, seen_by_driver.incident.id) == (NEW, live)
        assert seen_by_driver.incident.description == f"live: {MASKED}"
        assert (seen_by_police.kind, seen_by_police.incident.id) == (NEW, live)
        assert seen_by_police.incident.description == f"live: {DESCRIPTION}"
    finally:
        driver.cancel()
        police.cancel()
