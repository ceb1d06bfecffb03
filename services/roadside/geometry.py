"""Plane geometry of a camera's image and the ground it sees.

Image points are pixels (x right, y down). Ground points are metres east and north of a WGS-84
origin on a local tangent plane (an equirectangular projection, accurate to centimetres over the
few hundred metres a camera sees). A 4-point homography maps the image plane to the ground plane.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from services.common.geo import EARTH_RADIUS_M

Point = tuple[float, float]


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd rule; points on an edge may fall either way."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < cross_x:
                inside = not inside
    return inside


def polygon_area(polygon: Sequence[Point]) -> float:
    """Unsigned area (shoelace)."""
    n = len(polygon)
    twice = sum(polygon[i][0] * polygon[(i + 1) % n][1] - polygon[(i + 1) % n][0] * polygon[i][1] for i in range(n))
    return abs(twice) / 2


def cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): > 0 when b is to the left of o→a in a y-up frame (right in image pixels)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def segment_intersection(p1: Point, p2: Point, a: Point, b: Point) -> float | None:
    """Where the segment p1→p2 crosses the segment a→b, as the fraction along a→b; None if it doesn't."""
    rx, ry = p2[0] - p1[0], p2[1] - p1[1]
    sx, sy = b[0] - a[0], b[1] - a[1]
    denom = rx * sy - ry * sx
    if denom == 0:
        return None
    qpx, qpy = a[0] - p1[0], a[1] - p1[1]
    t = (qpx * sy - qpy * sx) / denom  # along p1→p2
    u = (qpx * ry - qpy * rx) / denom  # along a→b
    if 0 <= t <= 1 and 0 <= u <= 1:
        return u
    return None


def distance_to_polyline(p: Point, line: Sequence[Point]) -> float:
    best = math.inf
    for a, b in itertools.pairwise(line):
        dx, dy = b[0] - a[0], b[1] - a[1]
        length2 = dx * dx + dy * dy
        t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
        best = min(best, math.hypot(p[0] - (a[0] + t * dx), p[1] - (a[1] + t * dy)))
    return best


def any_three_collinear(points: Sequence[Point], tolerance: float = 1e-6) -> bool:
    """True when some 3 of the points lie on one line (relative to the points' spread)."""
    scale = max((math.dist(a, b) for a in points for b in points), default=0.0) ** 2
    if scale == 0:
        return True
    n = len(points)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                if abs(cross(points[i], points[j], points[k])) <= tolerance * scale:
                    return True
    return False


def heading_deg(east: float, north: float) -> float:
    """Compass heading of a ground vector, degrees clockwise from north, 0..360."""
    return math.degrees(math.atan2(east, north)) % 360.0


def angle_between_deg(a: float, b: float) -> float:
    """Smallest difference between two headings, 0..180."""
    d = abs(a - b) % 360.0
    return 360.0 - d if d > 180.0 else d


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """A local east/north tangent plane at a WGS-84 origin."""

    lat0: float
    lon0: float

    def to_local(self, lat: float, lon: float) -> Point:
        k = math.pi / 180 * EARTH_RADIUS_M
        return (lon - self.lon0) * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k

    def to_wgs84(self, east: float, north: float) -> tuple[float, float]:
        k = math.pi / 180 * EARTH_RADIUS_M
        return self.lat0 + north / k, self.lon0 + east / (k * math.cos(math.radians(self.lat0)))


class GroundMapping:
    """Image pixels → ground metres (local frame) → WGS-84, through a plane homography."""

    def __init__(self, image_points: Sequence[Point], ground_points: Sequence[Point], frame: LocalFrame) -> None:
        if len(image_points) != 4 or len(ground_points) != 4:
            raise ValueError("a homography needs exactly 4 point pairs")
        src = np.asarray(image_points, dtype=np.float64)
        dst = np.asarray(ground_points, dtype=np.float64)
        matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
        if not np.all(np.isfinite(matrix)) or abs(float(np.linalg.det(matrix))) < 1e-12:
            raise ValueError("the 4 point pairs do not define a usable homography")
        self.matrix = matrix
        self.inverse = np.linalg.inv(matrix)
        self.frame = frame
        # Points on the ground side of the horizon share the sign of w with the calibration points.
        cx, cy = src.mean(axis=0)
        self._sign = 1.0 if float((matrix @ np.array([cx, cy, 1.0]))[2]) > 0 else -1.0
        gx, gy = dst.mean(axis=0)
        self._inverse_sign = 1.0 if float((self.inverse @ np.array([gx, gy, 1.0]))[2]) > 0 else -1.0

    def to_ground(self, p: Point) -> Point | None:
        """Ground point of an image point; None at or above the horizon."""
        x, y, w = self.matrix @ np.array([p[0], p[1], 1.0])
        if w * self._sign <= 1e-12:
            return None
        return float(x / w), float(y / w)

    def to_image(self, g: Point) -> Point | None:
        """Image point of a ground point; None when the camera cannot see it (behind it)."""
        x, y, w = self.inverse @ np.array([g[0], g[1], 1.0])
        if w * self._inverse_sign <= 1e-12:
            return None
        return float(x / w), float(y / w)

    def to_wgs84(self, g: Point) -> tuple[float, float]:
        return self.frame.to_wgs84(g[0], g[1])

    def image_to_wgs84(self, p: Point) -> tuple[float, float] | None:
        g = self.to_ground(p)
        return None if g is None else self.to_wgs84(g)
