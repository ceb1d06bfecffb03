"""Across services: a camera's frames go into the roadside service, its event comes out on a police console of IDPS.

The roadside service runs with the simulator's key-colour detector (the whole pipeline: decoding, tracking,
zone analytics, the Redis event stream); IDPS consumes that stream as it does in production. Nothing in between
is done by the test."""

from __future__ import annotations

import pytest
from v2x.idps.v1 import idps_pb2 as pb

from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import circle, subscribe
from tests.roadside.conftest import Stub as RoadsideStub
from tests.roadside.conftest import sim_channel, sim_service, sim_stub, stream  # noqa: F401 (fixtures)
from tests.roadside.helpers import sim_frames
from tests.roadside.test_service import SCENE, configure, recent_start, stopper

K = pb.IncidentMessage


@pytest.mark.slow  # ~12 s: 45 frames through the whole roadside pipeline
async def test_a_vehicle_stopped_in_a_camera_zone_reaches_a_police_console_with_the_camera_as_source(
        stub: Stub, sim_stub: RoadsideStub, keys: Keys, unique: str) -> None:  # noqa: F811 (fixture)
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    at = SCENE.camera(camera_id).location
    console = subscribe(stub, keys, keys.police, area=circle((at.lat, at.lon), 1000))
    await console.until_live()

    results = await stream(sim_stub, sim_frames(SCENE, [stopper()], camera_id, 45, recent_start(45), fps=4),
                           keys.admin, window=2)
    raised = [e for r in results for e in r.events]
    assert len(raised) == 1

    # The stop may join an open incident at this crossing (an earlier test's) or open one: either way the console
    # hears of a stopped-vehicle incident that now has this camera as a source, with the camera's snapshot.
    while True:
        m = await console.next(10.0)
        if m.kind in (K.KIND_NEW, K.KIND_UPDATE) and m.incident.type == pb.EVENT_TYPE_STOPPED_VEHICLE:
            got = await stub.GetIncident(pb.GetIncidentRequest(incident_id=m.incident.id),
                                         metadata=keys.md(keys.police))
            mine = [s for s in got.incident.sources if s.source_id.endswith(camera_id)]
            if mine:
                break
    (source,) = mine
    assert source.source_kind == pb.SOURCE_KIND_ROADSIDE_DETECTION and source.lane_id == "NB"
    assert source.evidence.has_snapshot and not source.evidence.redacted
    evidence = await stub.GetEvidence(pb.GetEvidenceRequest(report_id=source.report_id), metadata=keys.md(keys.police))
    assert evidence.snapshot_jpeg.startswith(b"\xff\xd8")  # the camera's snapshot, for the police
    console.cancel()
