"""The map's district layers: every lane of the simulated net, where the simulator itself puts it."""

from __future__ import annotations

import sys

import pytest
import sumolib

from roadside_sim.geometry import LocalFrame
from services.console.district import district_geojson
from services.console.settings import DISTRICT_NET


def test_every_lane_of_the_net_is_drawn_where_the_simulator_has_it() -> None:
    layers = district_geojson(str(DISTRICT_NET))["features"]
    outline = [f for f in layers if f["properties"]["layer"] == "outline"]
    lanes = {f["properties"]["id"]: f["geometry"]["coordinates"] for f in layers if f["properties"]["layer"] == "lane"}
    net = sumolib.net.readNet(str(DISTRICT_NET), withInternal=False)
    shapes = {lane.getID(): lane.getShape() for edge in net.getEdges() for lane in edge.getLanes()}
    assert len(outline) == 1 and set(lanes) == set(shapes) and len(lanes) >= 40
    frame = LocalFrame(31.40, 121.49)  # the simulator's own frame, centred where the net's projection is
    ox, oy = net.getLocationOffset()
    worst = 0.0
    for lane_id, coordinates in lanes.items():
        for (lon, lat), (x, y) in zip(coordinates, shapes[lane_id], strict=True):
            east, north = frame.to_local(lat, lon)
            worst = max(worst, abs(east - (x - ox)), abs(north - (y - oy)))
    assert worst < 0.05, f"{worst:.3f} m off"
    (ring,) = outline[0]["geometry"]["coordinates"]
    lats, lons = [p[1] for p in ring], [p[0] for p in ring]
    assert min(lats) < 31.40 < max(lats) and min(lons) < 121.49 < max(lons)


def test_without_a_net_the_map_has_no_district_layers() -> None:
    assert district_geojson("")["features"] == []


def test_without_sumolib_as_in_the_image_the_map_has_no_lanes_and_the_console_still_starts(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sumolib", None)  # what `import sumolib` meets without the `sim` extra
    assert district_geojson(str(DISTRICT_NET)) == {"type": "FeatureCollection", "features": []}
    assert "sumolib" in caplog.text
