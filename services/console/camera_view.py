"""A camera's field of view on the ground, for the map: its image mapped through its calibration (a plane
homography), from the bottom of the picture up to where the ground is still within reach."""

from __future__ import annotations

import math

import numpy as np
from v2x.roadside.v1 import roadside_pb2

M_PER_DEG = 111_320.0
# The picture's upper part shows the ground far away (or sky): the drawn view stops this far from the camera.
MAX_REACH_M = 120.0
# A camera without a calibration is drawn as a wedge along its heading, this wide and this long.
WEDGE_DEG, WEDGE_M = 60.0, 80.0


def _solve(image: list[tuple[float, float]], ground: list[tuple[float, float]]) -> np.ndarray | None:
    """The 3x3 homography taking image points to ground points (4 correspondences), or None when degenerate."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(image, ground, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    try:
        h = np.linalg.solve(np.array(rows, float), np.array(rhs, float))
    except np.linalg.LinAlgError:
        return None
    return np.append(h, 1.0).reshape(3, 3)


def _to_ground(h: np.ndarray, x: float, y: float) -> tuple[float, float] | None:
    u, v, w = h @ np.array([x, y, 1.0])
    if abs(w) < 1e-12:
        return None
    return float(u / w), float(v / w)


def _wedge(camera: roadside_pb2.Camera) -> list[list[float]]:
    lat, lon = camera.location.lat, camera.location.lon
    ring = [[lat, lon]]
    for a in (camera.heading_deg - WEDGE_DEG / 2, camera.heading_deg, camera.heading_deg + WEDGE_DEG / 2):
        r = math.radians(a)
        ring.append([lat + WEDGE_M * math.cos(r) / M_PER_DEG,
                     lon + WEDGE_M * math.sin(r) / (M_PER_DEG * math.cos(math.radians(lat)))])
    return ring


def field_of_view(camera: roadside_pb2.Camera) -> list[list[float]]:
    """A [lat, lon] ring."""
    hom = camera.homography
    w, h = camera.image_width, camera.image_height
    if len(hom.points) != 4 or w <= 0 or h <= 0:
        return _wedge(camera)
    # Ground points in metres east/north of an origin: the local frame's, or the camera for WGS-84 points.
    origin = hom.local_origin if hom.HasField("local_origin") else camera.location
    cos0 = math.cos(math.radians(origin.lat))
    ground = []
    for p in hom.points:
        if p.HasField("wgs84"):
            ground.append(((p.wgs84.lon - origin.lon) * M_PER_DEG * cos0, (p.wgs84.lat - origin.lat) * M_PER_DEG))
        else:
            ground.append((p.local.east_m, p.local.north_m))
    matrix = _solve([(p.image.x, p.image.y) for p in hom.points], ground)
    if matrix is None:
        return _wedge(camera)
    cam_e = (camera.location.lon - origin.lon) * M_PER_DEG * cos0
    cam_n = (camera.location.lat - origin.lat) * M_PER_DEG

    def reach(y: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
        left, right = _to_ground(matrix, 0, y), _to_ground(matrix, w, y)
        if left is None or right is None:
            return None
        # Beyond the horizon the homography flips sign: the row then maps behind the camera or very far.
        if any(math.hypot(e - cam_e, n - cam_n) > MAX_REACH_M for e, n in (left, right)):
            return None
        return left, right

    bottom = reach(float(h))
    if bottom is None:
        return _wedge(camera)
    top = bottom
    for step in range(19, -1, -1):  # from the bottom row upwards, while the ground is within reach
        row = reach(h * step / 20)
        if row is None:
            break
        top = row
    corners = [bottom[0], bottom[1], top[1], top[0]]
    return [[origin.lat + n / M_PER_DEG, origin.lon + e / (M_PER_DEG * cos0)] for e, n in corners]
