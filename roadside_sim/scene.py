"""A small simulated intersection approach: a camera, its configuration, vehicles and rendered frames.

The camera stands at the kerb of a two-lane street in Shanghai (31.2304 N, 121.4737 E) looking north
along it. Ground coordinates are metres east/north of the camera; a 4-point homography maps them to a
640x480 image. On the ground:

* lane ``NB`` (east half, 0..3.5 m, travel north) and lane ``SB`` (west half, -3.5..0 m, travel
  south), 10..70 m ahead, limit 50 km/h;
* counting line ``L1`` across both lanes at 30 m (positive = northbound);
* a GENERIC zone ``box`` (a yellow box junction, 45..55 m, both lanes, 30 s threshold);
* a NO_STOPPING zone ``bus-stop`` on the west shoulder (-6..-3.5 m, 20..40 m, 20 s);
* two on-street parking spots on the east kerb (3.5..6 m, 14..20 m and 20..26 m), linked to parking
  lot ``lot_id`` spots ``S1`` and ``S2``.

Vehicles follow piecewise-linear ground paths. ``detections`` gives what an ideal detector would see at
a time (with optional pixel jitter); ``render`` draws a frame in which each class has its own key
colour, and the service's demo detector (``V2X_ROADSIDE_DETECTOR=sim``, services/roadside/keycolour.py)
finds them again exactly: the service under test runs its whole pipeline (decode, batching, tracking,
analytics) on these frames without the ONNX model. The key colours are the one thing both sides must agree
on (like a contract; tests/sim/test_boundary.py checks the two tables agree).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray
from v2x.common.v1 import common_pb2 as cpb
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.geometry import Homography, LocalFrame, Point
from roadside_sim.truth import TruthBox, VehicleClass

BgrImage = NDArray[np.uint8]

CAMERA_LAT, CAMERA_LON = 31.2304, 121.4737
IMAGE_SIZE = (640, 480)
# Ground (east, north) metres -> image pixels, the calibration of the simulated camera.
GROUND_POINTS: tuple[Point, Point, Point, Point] = ((-8.0, 10.0), (8.0, 10.0), (8.0, 70.0), (-8.0, 70.0))
IMAGE_POINTS: tuple[Point, Point, Point, Point] = ((40.0, 460.0), (600.0, 460.0), (380.0, 120.0), (260.0, 120.0))
LANE_WIDTH_M = 3.5
NB_CENTRE_E = LANE_WIDTH_M / 2
SB_CENTRE_E = -LANE_WIDTH_M / 2
NEAR_N, FAR_N = 10.0, 70.0
LINE_N = 30.0
SPEED_LIMIT_KMH = 50.0

# Key colours (BGR) per class: pure and far from asphalt grey and the white markings.
KEY_COLOURS: dict[VehicleClass, tuple[int, int, int]] = {
    VehicleClass.CAR: (0, 0, 255),
    VehicleClass.TRUCK: (0, 255, 0),
    VehicleClass.BUS: (255, 0, 0),
    VehicleClass.MOTORCYCLE: (0, 255, 255),
    VehicleClass.BICYCLE: (255, 255, 0),
    VehicleClass.PERSON: (255, 0, 255),
}
# Footprints: (width m, length m, height m).
SIZES: dict[VehicleClass, tuple[float, float, float]] = {
    VehicleClass.CAR: (1.8, 4.5, 1.5),
    VehicleClass.TRUCK: (2.4, 8.0, 3.0),
    VehicleClass.BUS: (2.5, 12.0, 3.2),
    VehicleClass.MOTORCYCLE: (0.8, 2.0, 1.4),
    VehicleClass.BICYCLE: (0.6, 1.8, 1.6),
    VehicleClass.PERSON: (0.6, 0.5, 1.7),
}


@dataclass
class SimVehicle:
    """A road user with a piecewise-linear ground path: (time s, east m, north m) waypoints."""

    id: int
    object_class: VehicleClass
    path: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.path[0][0]

    @property
    def end(self) -> float:
        return self.path[-1][0]

    def position(self, t: float) -> Point | None:
        if not self.path or t < self.path[0][0] or t > self.path[-1][0]:
            return None
        for (t0, e0, n0), (t1, e1, n1) in zip(self.path, self.path[1:], strict=False):
            if t0 <= t <= t1:
                f = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return e0 + (e1 - e0) * f, n0 + (n1 - n0) * f
        return self.path[-1][1], self.path[-1][2]

    def then(self, duration_s: float, east: float, north: float) -> SimVehicle:
        """Appends a leg: move (or stay) to (east, north) over `duration_s`."""
        t, _, _ = self.path[-1]
        self.path.append((t + duration_s, east, north))
        return self

    def hold(self, duration_s: float) -> SimVehicle:
        t, e, n = self.path[-1]
        self.path.append((t + duration_s, e, n))
        return self


def drive(vehicle_id: int, start_s: float, from_n: float, to_n: float, speed_kmh: float, *,
          east: float = NB_CENTRE_E, object_class: VehicleClass = VehicleClass.CAR) -> SimVehicle:
    """A vehicle driving straight from `from_n` to `to_n` (north or south) at a constant speed."""
    duration = abs(to_n - from_n) / (speed_kmh / 3.6)
    return SimVehicle(vehicle_id, object_class, [(start_s, east, from_n), (start_s + duration, east, to_n)])


class Scene:
    """The simulated camera: geometry, configuration, detections and frames."""

    def __init__(self, size: tuple[int, int] = IMAGE_SIZE) -> None:
        self.size = size
        sx, sy = size[0] / IMAGE_SIZE[0], size[1] / IMAGE_SIZE[1]
        self.image_points = tuple((x * sx, y * sy) for x, y in IMAGE_POINTS)
        self.mapping = Homography(self.image_points, GROUND_POINTS, LocalFrame(CAMERA_LAT, CAMERA_LON))
        self._background: BgrImage | None = None

    # ----- geometry ----------------------------------------------------------------------------------

    def to_image(self, east: float, north: float) -> Point:
        p = self.mapping.to_image((east, north))
        assert p is not None, (east, north)
        return p

    def ground_polygon(self, east0: float, east1: float, north0: float, north1: float) -> list[Point]:
        return [self.to_image(east0, north0), self.to_image(east1, north0), self.to_image(east1, north1),
                self.to_image(east0, north1)]

    def box_of(self, vehicle: SimVehicle, t: float) -> tuple[float, float, float, float] | None:
        """Image box of a vehicle at time t: bottom centre on its rear (nearest) ground point."""
        pos = vehicle.position(t)
        if pos is None:
            return None
        e, n = pos
        width_m, length_m, height_m = SIZES[vehicle.object_class]
        rear = n - length_m / 2 if n >= 0 else n + length_m / 2
        if rear < NEAR_N - 8 or n > FAR_N + 15:
            return None
        left, right = self.to_image(e - width_m / 2, rear), self.to_image(e + width_m / 2, rear)
        front = self.to_image(e, rear + length_m)
        px_per_m = (right[0] - left[0]) / width_m
        x1, x2 = left[0], right[0]
        y2 = left[1]
        y1 = min(front[1], y2 - height_m * px_per_m)
        w, h = self.size
        x1, x2, y1, y2 = max(0.0, x1), min(float(w), x2), max(0.0, y1), min(float(h), y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return x1, y1, x2, y2

    # ----- the camera's configuration ---------------------------------------------------------------

    def camera(self, camera_id: str, *, lot_id: str = "", name: str = "Simulated approach",
               generic_threshold_s: int = 30, no_stopping_threshold_s: int = 20, stop_threshold_s: int = 60,
               calibrated: bool = True) -> pb.Camera:
        def poly(points: Sequence[Point]) -> pb.PixelPolygon:
            return pb.PixelPolygon(points=[pb.PixelPoint(x=round(x, 2), y=round(y, 2)) for x, y in points])

        def px(p: Point) -> pb.PixelPoint:
            return pb.PixelPoint(x=round(p[0], 2), y=round(p[1], 2))

        nb_dir = np.subtract(self.to_image(NB_CENTRE_E, 50), self.to_image(NB_CENTRE_E, 20))
        sb_dir = np.subtract(self.to_image(SB_CENTRE_E, 20), self.to_image(SB_CENTRE_E, 50))
        cam = pb.Camera(
            id=camera_id, name=name, location=cpb.LatLon(lat=CAMERA_LAT, lon=CAMERA_LON), heading_deg=0.0,
            image_width=self.size[0], image_height=self.size[1],
            thresholds=pb.CameraThresholds(stop_threshold_s=stop_threshold_s),
        )
        cam.lanes.add(id="NB", polygon=poly(self.ground_polygon(0, LANE_WIDTH_M, NEAR_N, FAR_N)),
                      direction_vector=pb.PixelPoint(x=float(nb_dir[0]), y=float(nb_dir[1])),
                      speed_limit_kmh=SPEED_LIMIT_KMH)
        cam.lanes.add(id="SB", polygon=poly(self.ground_polygon(-LANE_WIDTH_M, 0, NEAR_N, FAR_N)),
                      direction_vector=pb.PixelPoint(x=float(sb_dir[0]), y=float(sb_dir[1])),
                      speed_limit_kmh=SPEED_LIMIT_KMH)
        cam.zones.add(id="box", kind=pb.ZONE_KIND_GENERIC,
                      polygon=poly(self.ground_polygon(-LANE_WIDTH_M, LANE_WIDTH_M, 45, 55)),
                      stop_threshold_s=generic_threshold_s)
        cam.zones.add(id="bus-stop", kind=pb.ZONE_KIND_NO_STOPPING,
                      polygon=poly(self.ground_polygon(-6.0, -LANE_WIDTH_M, 20, 40)),
                      stop_threshold_s=no_stopping_threshold_s)
        if lot_id:
            for spot_id, (n0, n1) in (("S1", (14.0, 20.0)), ("S2", (20.0, 26.0))):
                cam.zones.add(id=f"spot-{spot_id}", kind=pb.ZONE_KIND_PARKING_SPOT,
                              polygon=poly(self.ground_polygon(LANE_WIDTH_M, 6.0, n0, n1)),
                              parking_lot_id=lot_id, parking_spot_id=spot_id)
        cam.counting_lines.add(id="L1", start=px(self.to_image(-LANE_WIDTH_M - 0.5, LINE_N)),
                               end=px(self.to_image(LANE_WIDTH_M + 0.5, LINE_N)),
                               positive_toward=px(self.to_image(0, LINE_N + 10)))
        if calibrated:
            cam.homography.local_origin.CopyFrom(cpb.LatLon(lat=CAMERA_LAT, lon=CAMERA_LON))
            for (x, y), (e, n) in zip(self.image_points, GROUND_POINTS, strict=True):
                cam.homography.points.add(image=pb.PixelPoint(x=x, y=y),
                                          local=pb.LocalPoint(east_m=e, north_m=n))
        return cam

    # ----- what a detector sees ----------------------------------------------------------------------

    def detections(self, vehicles: Sequence[SimVehicle], t: float, *, jitter_px: float = 0.0,
                   rng: random.Random | None = None, score: float = 0.9) -> list[TruthBox]:
        """What an ideal detector would report at time t (boxes of every visible road user)."""
        out = []
        for v in vehicles:
            box = self.box_of(v, t)
            if box is None:
                continue
            if jitter_px and rng is not None:
                box = tuple(c + rng.uniform(-jitter_px, jitter_px) for c in box)  # type: ignore[assignment]
            x1, y1, x2, y2 = box
            out.append(TruthBox(v.object_class, x1, y1, x2, y2, score))
        return out

    # ----- frames ------------------------------------------------------------------------------------

    def background(self) -> BgrImage:
        if self._background is None:
            w, h = self.size
            img = np.full((h, w, 3), (70, 75, 70), np.uint8)
            road = np.array(self.ground_polygon(-6.5, 6.5, NEAR_N - 8, FAR_N + 40), np.int32)
            cv2.fillPoly(img, [road], (90, 90, 90))
            for e in (-LANE_WIDTH_M, 0.0, LANE_WIDTH_M):
                a, b = self.to_image(e, NEAR_N - 8), self.to_image(e, FAR_N + 40)
                cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (230, 230, 230), 2)
            self._background = img
        return self._background.copy()

    def render(self, vehicles: Sequence[SimVehicle], t: float) -> BgrImage:
        """A frame at time t: vehicles as key-coloured boxes, far ones first (near ones occlude)."""
        img = self.background()
        visible = [(v, self.box_of(v, t)) for v in vehicles]
        for v, box in sorted(((v, b) for v, b in visible if b is not None), key=lambda vb: vb[1][3]):
            x1, y1, x2, y2 = (round(c) for c in box)
            cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), KEY_COLOURS[v.object_class], -1)
        return img


def frame_times(start_s: float, end_s: float, fps: float) -> list[float]:
    n = round((end_s - start_s) * fps)
    return [start_s + i / fps for i in range(n + 1)]
