"""Image/ground geometry: the homography, WGS-84 and the polygon and line tests analytics rely on."""

from __future__ import annotations

import pytest

from roadside_sim.scene import CAMERA_LAT, CAMERA_LON, GROUND_POINTS, IMAGE_POINTS
from services.roadside.geometry import (
    GroundMapping,
    LocalFrame,
    any_three_collinear,
    heading_deg,
    point_in_polygon,
    segment_intersection,
)


def test_the_homography_maps_its_calibration_points_exactly() -> None:
    mapping = GroundMapping(IMAGE_POINTS, GROUND_POINTS, LocalFrame(CAMERA_LAT, CAMERA_LON))

    for image, ground in zip(IMAGE_POINTS, GROUND_POINTS, strict=True):
        assert mapping.to_ground(image) == pytest.approx(ground, abs=1e-6)
        assert mapping.to_image(ground) == pytest.approx(image, abs=1e-6)

def test_points_above_the_horizon_have_no_ground_position() -> None:
    mapping = GroundMapping(IMAGE_POINTS, GROUND_POINTS, LocalFrame(CAMERA_LAT, CAMERA_LON))

    assert mapping.to_ground((320, 0)) is None

def test_local_metres_and_wgs84_round_trip_within_a_centimetre() -> None:
    frame = LocalFrame(CAMERA_LAT, CAMERA_LON)

    lat, lon = frame.to_wgs84(120.0, -340.0)
    east, north = frame.to_local(lat, lon)

    assert (east, north) == pytest.approx((120.0, -340.0), abs=0.01)
    assert frame.to_wgs84(0, 1000)[0] - CAMERA_LAT == pytest.approx(1000 / 111_195, rel=1e-3)

def test_point_in_polygon() -> None:
    square = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]

    assert point_in_polygon((5, 5), square)
    assert not point_in_polygon((15, 5), square)

def test_segment_intersection_is_where_along_the_line() -> None:
    assert segment_intersection((5, -1), (5, 1), (0, 0), (10, 0)) == pytest.approx(0.5)
    assert segment_intersection((15, -1), (15, 1), (0, 0), (10, 0)) is None

def test_collinear_points_are_found() -> None:
    assert any_three_collinear([(0, 0), (1, 1), (2, 2), (0, 5)])
    assert not any_three_collinear([(0, 0), (10, 0), (10, 10), (0, 10)])

def test_headings_are_clockwise_from_north() -> None:
    assert heading_deg(0, 1) == 0
    assert heading_deg(1, 0) == 90
    assert heading_deg(0, -1) == 180
    assert heading_deg(-1, 0) == 270
