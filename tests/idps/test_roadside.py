"""Camera events from the roadside stream become incidents, at least once and without duplicates."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.roadside.v1 import roadside_pb2 as rpb

from services.common.redis_streams import stream_id
from services.common.runtime import Resources
from services.idps.roadside import EVENTS_STREAM, GROUP, REJECTED_STREAM
from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import JPEG, circle, subscribe, ts
from tests.waiting import assert_eventually

Point = tuple[float, float]


def event(point: Point, camera: str = "cam-9", event_id: str | None = None,
          kind: int = rpb.ANALYTICS_EVENT_TYPE_STOPPED_VEHICLE) -> rpb.AnalyticsEvent:
    return rpb.AnalyticsEvent(
        event_id=event_id or f"{camera}-{uuid.uuid4().hex}", type=kind, camera_id=camera,  # type: ignore[arg-type]
        frame_id=42, observed_at=ts(1), track_id=7, position=cpb.LatLon(lat=point[0], lon=point[1]), lane_id="L1",
        zone_id="Z3", confidence=0.8, stationary_s=75, snapshot_jpeg=JPEG,
        plate=rpb.Plate(text="沪A99999", colour=ppb.PLATE_COLOUR_BLUE, confidence=0.9))


async def incidents_at(stub: Stub, keys: Keys, point: Point) -> list[pb.Incident]:
    out = await stub.ListIncidents(pb.ListIncidentsRequest(area=circle(point, 200)), metadata=keys.md(keys.police))
    return list(out.incidents)


async def wait_for(stub: Stub, keys: Keys, point: Point, sources: int) -> pb.Incident:
    found: list[pb.Incident] = []

    async def there() -> bool:
        nonlocal found
        found = await incidents_at(stub, keys, point)
        return bool(found) and found[0].source_count >= sources

    await assert_eventually(there, f"an incident with {sources} sources at {point}")
    return found[0]


async def acknowledged(redis: Redis, entry_id: bytes | str) -> None:
    """Returns once IDPS has read the events stream up to `entry_id` and acknowledged all it read (after the commit
    of each: see below)."""

    async def done() -> bool:
        groups = await redis.xinfo_groups(EVENTS_STREAM)
        last = next(g["last-delivered-id"] for g in groups if g["name"] in (GROUP, GROUP.encode()))
        return stream_id(last) >= stream_id(entry_id) and (await redis.xpending(EVENTS_STREAM, GROUP))["pending"] == 0

    await assert_eventually(done, f"the events stream acknowledged up to {entry_id!r}")


async def test_a_camera_event_on_the_roadside_stream_becomes_an_incident_on_the_consoles(
        stub: Stub, keys: Keys, site: Point, idps_resources: Resources) -> None:
    console = subscribe(stub, keys, keys.police, area=circle(site))
    await console.until_live()
    e = event(site)
    await idps_resources.redis.xadd(EVENTS_STREAM, {"event": e.SerializeToString()})
    message = await console.next()
    assert message.kind == pb.IncidentMessage.KIND_NEW and message.incident.type == pb.EVENT_TYPE_STOPPED_VEHICLE
    got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=message.incident.id), metadata=keys.md(keys.police))
    source = got.incident.sources[0]
    assert source.source_kind == pb.SOURCE_KIND_ROADSIDE_DETECTION and source.source_id == "cam-9"
    assert source.evidence.plate == "沪A99999" and source.evidence.has_snapshot
    assert "zone Z3" in source.description and got.audit[0].actor == "camera:cam-9"
    console.cancel()


async def test_entries_are_acknowledged_after_the_commit(stub: Stub, keys: Keys, site: Point,
                                                         idps_resources: Resources) -> None:
    await idps_resources.redis.xadd(EVENTS_STREAM, {"event": event(site).SerializeToString()})
    await wait_for(stub, keys, site, 1)

    async def none_pending() -> bool:
        return bool((await idps_resources.redis.xpending(EVENTS_STREAM, GROUP))["pending"] == 0)

    await assert_eventually(none_pending, "no entry pending")


async def test_a_redelivered_event_is_not_a_second_source(stub: Stub, keys: Keys, site: Point,
                                                          idps_resources: Resources) -> None:
    e = event(site)
    await idps_resources.redis.xadd(EVENTS_STREAM, {"event": e.SerializeToString()})
    await wait_for(stub, keys, site, 1)
    # As after a crash between the commit and the XACK: the same event comes again.
    await idps_resources.redis.xadd(EVENTS_STREAM, {"event": e.SerializeToString()})
    second = event(site, camera="cam-10")
    last = await idps_resources.redis.xadd(EVENTS_STREAM, {"event": second.SerializeToString()})
    incident = await wait_for(stub, keys, site, 2)
    await acknowledged(idps_resources.redis, last)  # the redelivered one, before it, too
    incident = (await incidents_at(stub, keys, site))[0]
    assert incident.source_count == 2 and incident.version == 2


async def test_a_malformed_entry_is_acknowledged_and_set_aside(idps_resources: Resources, site: Point) -> None:
    before = await idps_resources.redis.xlen(REJECTED_STREAM)
    bad = event(site)
    bad.position.lat = 123.0
    await idps_resources.redis.xadd(EVENTS_STREAM, {"event": b"\xff\x00 not a protobuf"})
    last = await idps_resources.redis.xadd(EVENTS_STREAM, {"event": bad.SerializeToString()})
    await acknowledged(idps_resources.redis, last)
    assert await idps_resources.redis.xlen(REJECTED_STREAM) == before + 2
    assert (await idps_resources.redis.xpending(EVENTS_STREAM, GROUP))["pending"] == 0
