"""The simulator's cameras and frames: boxes are the visible pixels of what the projection drew, and the camera's
configuration (homography, lanes) agrees with the pinhole model that renders the frames."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from roadside_sim.cameras import CameraRig, rigs
from roadside_sim.geometry import box_iou
from roadside_sim.network import District
from roadside_sim.render import Renderer, VehicleState, cuboid
from services.roadside import convert

DISTRICT = District()


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return rigs(DISTRICT, 1, 1, lot_prefix="SIM")[0]


def car_at(rig: CameraRig, vid: str, along: float, across: float) -> VehicleState:
    a = rig.approach
    e, n = a.point_upstream(along, across)
    return VehicleState(vid, e, n, a.lanes_in[0].heading_deg, 10.0, 4.5, 1.8, 1.5, a.lanes_in[0].id)


def test_a_lone_vehicles_box_is_its_projected_cuboid(rig: CameraRig) -> None:
    car = car_at(rig, "a", 38.0, -4.8)

    _, boxes = Renderer(rig).render([car])

    (box,) = boxes
    corners = rig.pinhole.project(cuboid(car))
    x1, y1 = corners.min(axis=0)
    x2, y2 = corners.max(axis=0)
    assert x1 > 0 and x2 < rig.size[0] and y1 > 0 and y2 < rig.size[1]  # wholly in the frame
    assert box.visible == 1.0
    # The photo's silhouette is drawn into the projected box: its extremes come within a few pixels of the box's
    # sides (the outline leaves a little room above the roof and behind the bumpers).
    assert box_iou(box.box, (x1, y1, x2, y2)) > 0.8
    assert all(abs(a - b) <= 0.1 * (x2 - x1) for a, b in zip(box.box, (x1, y1, x2, y2), strict=True))
    assert box.drawn_box[0] <= box.box[0] and box.box[2] <= box.drawn_box[2]


def test_a_vehicle_behind_another_keeps_only_its_visible_pixels(rig: CameraRig) -> None:
    far = car_at(rig, "far", 40.0, -4.8)
    near = car_at(rig, "near", 38.0, -1.6)
    renderer = Renderer(rig)

    _, alone = renderer.render([far])
    _, both = renderer.render([far, near])

    far_alone = next(b for b in alone if b.vid == "far")
    far_hidden = next(b for b in both if b.vid == "far")
    assert far_hidden.visible < 0.9
    assert far_hidden.pixels < far_alone.pixels
    # Its box shrinks to what is left of it, inside where it was drawn.
    assert far_hidden.drawn_box == far_alone.drawn_box
    fx1, fy1, fx2, fy2 = far_hidden.box
    ax1, ay1, ax2, ay2 = far_alone.box
    assert ax1 <= fx1 and ay1 <= fy1 and fx2 <= ax2 and fy2 <= ay2


def test_key_style_draws_the_same_silhouettes_in_key_colours(rig: CameraRig) -> None:
    car = car_at(rig, "a", 38.0, -4.8)

    img, (box,) = Renderer(rig, style="key").render([car])
    _, (photo_box,) = Renderer(rig).render([car])

    assert box.box == photo_box.box
    x1, y1, x2, y2 = box.box
    mask = cv2.inRange(img[y1:y2, x1:x2], np.array((0, 0, 215), np.uint8), np.array((40, 40, 255), np.uint8))
    assert mask.sum() / 255 == pytest.approx(box.pixels, rel=0.02)


def test_the_camera_configuration_passes_the_services_checks_and_its_homography_matches_the_projection(
        rig: CameraRig) -> None:
    camera = rig.camera()
    spec = convert.camera_spec(camera)  # the service's own validation: raises on anything it would refuse
    assert spec.calibration is not None
    mapping = spec.calibration.mapping()
    foot = (rig.pinhole.east, rig.pinhole.north)
    for along, across in ((30.0, -1.6), (40.0, -8.0), (48.0, -11.0)):
        g = rig.approach.point_upstream(along, across)
        px = rig.pinhole.ground_to_image(*g)
        seen = mapping.to_ground(px)
        assert seen is not None
        # Ground metres from the camera's foot, as the service's local frame (origin at the camera) has them.
        assert math.dist(seen, (g[0] - foot[0], g[1] - foot[1])) < 0.05


def test_each_lane_shows_the_vehicles_driving_on_it(rig: CameraRig) -> None:
    camera = rig.camera()
    polygons = {lane.id: [(p.x, p.y) for p in lane.polygon.points] for lane in camera.lanes}
    a = rig.approach
    for lane, across in ((a.lanes_in[0], -1.6), (a.lanes_in[1], -4.8), (a.lanes_out[1], -8.0), (a.lanes_out[0], -11.2)):
        e, n = a.point_upstream(40.0, across)
        px = rig.pinhole.ground_to_image(e, n)
        contour = np.array(polygons[lane.id], np.float32)
        assert cv2.pointPolygonTest(contour, px, False) >= 0, lane.id
