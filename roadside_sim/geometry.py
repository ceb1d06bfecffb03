"""The simulator's own geometry: a local east/north plane at a WGS-84 origin, plane homographies and a pinhole
camera. The simulator is a client from outside: it shares no code with the service, only the contract (the
camera's homography is 4 image points and the ground points they show, in local metres from an origin)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Point = tuple[float, float]
EARTH_RADIUS_M = 6_371_008.8  # mean radius; an equirectangular plane is exact to centimetres over a district


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """Metres east and north of a WGS-84 origin on a local tangent plane."""

    lat0: float
    lon0: float

    def to_local(self, lat: float, lon: float) -> Point:
        k = math.pi / 180 * EARTH_RADIUS_M
        return (lon - self.lon0) * k * math.cos(math.radians(self.lat0)), (lat - self.lat0) * k

    def to_wgs84(self, east: float, north: float) -> tuple[float, float]:
        k = math.pi / 180 * EARTH_RADIUS_M
        return self.lat0 + north / k, self.lon0 + east / (k * math.cos(math.radians(self.lat0)))


class Homography:
    """Ground metres <-> image pixels through the plane homography of 4 point pairs."""

    def __init__(self, image_points: Sequence[Point], ground_points: Sequence[Point], frame: LocalFrame) -> None:
        src = np.asarray(image_points, np.float32)
        dst = np.asarray(ground_points, np.float32)
        self.matrix = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
        self.inverse = np.linalg.inv(self.matrix)
        self.frame = frame
        cx, cy = src.mean(axis=0)
        self._sign = 1.0 if float((self.matrix @ np.array([cx, cy, 1.0]))[2]) > 0 else -1.0
        gx, gy = dst.mean(axis=0)
        self._inverse_sign = 1.0 if float((self.inverse @ np.array([gx, gy, 1.0]))[2]) > 0 else -1.0

    def to_ground(self, p: Point) -> Point | None:
        x, y, w = self.matrix @ np.array([p[0], p[1], 1.0])
        return None if w * self._sign <= 1e-12 else (float(x / w), float(y / w))

    def to_image(self, g: Point) -> Point | None:
        x, y, w = self.inverse @ np.array([g[0], g[1], 1.0])
        return None if w * self._inverse_sign <= 1e-12 else (float(x / w), float(y / w))


@dataclass(frozen=True)
class PinholeCamera:
    """A 3x4 camera over a ground plane in local metres (x east, y north, z up): mounted at (east, north,
    height), looking along `heading_deg` (clockwise from north), tilted down by `pitch_deg`, with a horizontal
    field of view `hfov_deg` on an image of `size` pixels (no lens distortion)."""

    east: float
    north: float
    height: float
    heading_deg: float
    pitch_deg: float
    hfov_deg: float
    size: tuple[int, int]

    @property
    def focal_px(self) -> float:
        return self.size[0] / 2 / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def intrinsics(self) -> NDArray[np.float64]:
        f = self.focal_px
        return np.array([[f, 0, self.size[0] / 2], [0, f, self.size[1] / 2], [0, 0, 1]], np.float64)

    @property
    def rotation(self) -> NDArray[np.float64]:
        """World -> camera rotation (camera axes: x right, y down, z forward)."""
        h, p = math.radians(self.heading_deg), math.radians(self.pitch_deg)
        forward = np.array([math.sin(h) * math.cos(p), math.cos(h) * math.cos(p), -math.sin(p)])
        right = np.array([math.cos(h), -math.sin(h), 0.0])
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    @property
    def position(self) -> NDArray[np.float64]:
        return np.array([self.east, self.north, self.height], np.float64)

    def rvec_tvec(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        r = self.rotation
        rvec, _ = cv2.Rodrigues(r)
        return np.asarray(rvec, np.float64), np.asarray(-r @ self.position, np.float64)

    def depth(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance along the optical axis of world points (N x 3); <= 0 is behind the camera."""
        return np.asarray((points - self.position) @ self.rotation[2], np.float64)

    def project(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Image pixels of world points (N x 3), through cv2.projectPoints."""
        rvec, tvec = self.rvec_tvec()
        px, _ = cv2.projectPoints(np.asarray(points, np.float64).reshape(-1, 1, 3), rvec, tvec, self.intrinsics,
                                  None)
        return np.asarray(px.reshape(-1, 2), np.float64)

    def ground_to_image(self, east: float, north: float) -> Point:
        x, y = self.project(np.array([[east, north, 0.0]]))[0]
        return float(x), float(y)

    def image_to_ground(self, p: Point) -> Point | None:
        """The ground point an image pixel shows; None at or above the horizon."""
        ray_cam = np.linalg.inv(self.intrinsics) @ np.array([p[0], p[1], 1.0])
        ray = self.rotation.T @ ray_cam
        if ray[2] >= -1e-9:
            return None
        s = -self.height / ray[2]
        return float(self.east + s * ray[0]), float(self.north + s * ray[1])


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
