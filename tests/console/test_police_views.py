"""What else the police page shows: cameras with their field of view and counts per approach, the municipal
delivery status, and merging incidents."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from playwright.async_api import BrowserContext, expect
from v2x.idps.v1 import idps_pb2
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim.scene import Scene, drive
from tests.conftest import Keys
from tests.console.conftest import Console
from tests.console.helpers import http_client, http_sign_in, idps, report, sign_in_page, site
from tests.roadside.conftest import stream
from tests.roadside.helpers import sim_frames
from tests.roadside.test_service import recent_start


def _inside(lat: float, lon: float, ring: list[list[float]], margin: float) -> bool:
    """Within the convex ring (or on its edge, give or take `margin` degrees)."""
    signs = set()
    for (a_lat, a_lon), (b_lat, b_lon) in zip(ring, ring[1:] + ring[:1], strict=True):
        cross = (b_lon - a_lon) * (lat - a_lat) - (b_lat - a_lat) * (lon - a_lon)
        if abs(cross) > margin * margin:
            signs.add(cross > 0)
    return len(signs) <= 1


@pytest.mark.slow  # 90 rendered frames through the roadside service (~7 s here)
async def test_a_camera_shows_with_its_field_of_view_and_its_counts_per_lane(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    roadside = RoadsideServiceStub(console.channels["roadside"])
    camera_id = f"cam-{unique}"
    scene = Scene()
    camera = await roadside.ConfigureCamera(pb.ConfigureCameraRequest(camera=scene.camera(camera_id)),
                                            metadata=Keys.md(keys.admin))
    start = recent_start(20).replace(second=0) - timedelta(minutes=1)
    frames = sim_frames(scene, [drive(i, 2.0 * i, 12, 66, 40) for i in range(5)], camera_id, 16, start, fps=5)
    await stream(roadside, frames, keys.admin, window=2)

    async with http_client() as http:
        await http_sign_in(http, console, keys.police)
        async with http.get(console.url + "/api/v1/cameras") as r:
            assert r.status == 200, await r.text()
            (mine,) = [c for c in (await r.json())["cameras"] if c["id"] == camera_id]
    # The view: the picture's ground from its bottom row up to the calibration's far points (70 m ahead here),
    # holding every calibration point.
    ring = mine["fov"]
    assert len(ring) == 4
    origin = camera.homography.local_origin
    for point in camera.homography.points:
        lat = origin.lat + point.local.north_m / 111_320
        lon = origin.lon + point.local.east_m / (111_320 * math.cos(math.radians(origin.lat)))
        assert _inside(lat, lon, ring, margin=1e-6), (point, ring)
    lanes = {lane["lane_id"]: lane for lane in mine["lanes"]}
    assert lanes["NB"]["vehicles_per_min"] == 5 and lanes["SB"]["vehicles_per_min"] == 0
    assert lanes["NB"]["queue_m"] == 0

    page = await sign_in_page(context, console, "/police", keys.police)
    card = page.locator(f'#cameras .card[data-camera="{camera_id}"]')
    await expect(card).to_contain_text("NB: 5/min, queue 0 m")
    await expect(page.locator("#municipal")).to_contain_text("no destinations")


async def test_merging_an_incident_into_another_closes_it_and_shows_in_the_audit(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    lat, lon = site(unique)
    target = await report(console, keys, unique, lat=lat, lon=lon, kind=idps_pb2.EVENT_TYPE_STOPPED_VEHICLE)
    other = await report(console, keys, unique, lat=lat + 0.01, lon=lon, kind=idps_pb2.EVENT_TYPE_ACCIDENT)
    page = await sign_in_page(context, console, "/police", keys.police)
    await expect(page.locator("#stream-state")).to_have_text("live", timeout=15_000)
    await page.locator(f'#incidents tr[data-id="{other.incident_id}"]').wait_for()
    await page.locator(f'#incidents tr[data-id="{target.incident_id}"]').click()
    await page.select_option("#merge-select", [other.incident_id])
    await page.click("#merge")
    await expect(page.locator("#audit li").last).to_contain_text("merged")
    # The merged incident ends: it leaves the live list.
    await expect(page.locator(f'#incidents tr[data-id="{other.incident_id}"]')).to_have_count(0, timeout=2_000)
    got = await idps(console).GetIncident(idps_pb2.GetIncidentRequest(incident_id=other.incident_id),
                                          metadata=Keys.md(keys.police))
    assert got.incident.status == idps_pb2.INCIDENT_STATUS_CLOSED
    assert got.incident.merged_into_id == target.incident_id
