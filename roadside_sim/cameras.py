"""Cameras of the demo district: one per approach of an intersection, watching the traffic coming in from the side.

Each camera stands on a 14 m pole 20 m off the kerb of its approach, 20 m before the stop line, and looks obliquely
across the road at a point 40 m up the approach with a 30 degree lens: zoomed in, because YOLOv3-tiny at 416
pixels finds the photo's car reliably only from ~130 pixels long (measured on these frames), from the side, as the
photo shows it, and from high enough that the lanes hide each other little. Whole cars of 135..215 pixels fill the
29..47 m stretch before the stop line of the lanes coming in. (Measured on SUMO traffic at 8:00, 4 cameras, 10
frames each: an 8 m pole 30 m off found 17 % of the cars, this one 67 %, a 6 m pole 12 m off 73 % but saw only
5 m of the near lane.)

Its configuration for the roadside service (ConfigureCamera) is computed from the same pinhole camera the renderer
draws with: the lanes (the approach's two lanes coming in and the two going out beside them) as image polygons
with their ground headings, a no-stopping zone on the kerb, on-street parking spots on the far kerb, a counting
line across the lanes coming in, and the homography of 4 image points and the ground points they show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
from v2x.common.v1 import common_pb2 as cpb
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.geometry import LocalFrame, PinholeCamera, Point
from roadside_sim.network import Approach, District

IMAGE_SIZE = (640, 480)
POLE_HEIGHT_M = 14.0
LENS_HFOV_DEG = 30.0
LOOK_AT_M = 40.0  # how far up the approach the optical axis meets the road...
LOOK_ACROSS_M = -6.4  # ...and how far from the kerb of the lanes coming in (-6.4: the middle of the road)
POLE_ALONG_M = 20.0  # the pole stands this far before the stop line...
KERB_OFFSET_M = 20.0  # ...and this far outside the kerb, looking obliquely across the road
NEAR_M, FAR_M = 26.0, 52.0  # the stretch of the approach configured as lanes (metres before the stop line)
NO_STOPPING_M = (32.0, 44.0)  # the kerb strip of the lanes coming in where stopping is forbidden
KERB_STRIP_M = 2.2  # width of the kerb strip beside lane 0 where vehicles stop or park
SPOT_BEYOND_M = 1.5  # the camera's spot zones reach this far beyond the kerb strip
SPOTS_M = (34.0, 40.0)  # on-street spots on the far kerb (metres from the stop line, 6 m each)
COUNT_LINE_M = 38.0
# The service places a vehicle at its box's bottom centre, which this oblique view puts nearer the camera than the
# middle of the vehicle: the lanes (and the counting line) are drawn where the bottom centres of their vehicles fall,
# this far towards the camera, as an installer draws them over where the vehicles show. (Measured on rendered frames
# of 8:00 traffic, whole boxes: 1.3..1.4 m on each of the 4 lanes; drawn on the painted lanes, 58 % of the matched
# detections were put on the lane beside theirs by `v2x sim score`, and counted there.)
BOX_FOOT_ACROSS_M = 1.35
SPEED_LIMIT_KMH = 50.0
# The cameras' frame deadline, longer than the service's default of 2 s: a camera keeps at most two frames in flight
# (roadside_sim/run.py), so a frame waits for one other at most and the deadline could only turn a slow answer into a
# gap in the tracks whose speeds, stops and counts the score checks; a late answer is better than none (on the
# loaded machine frames waited 2..3 s).
FRAME_DEADLINE_MS = 8000
STOP_THRESHOLD_S = 20  # the cameras' stop threshold (903 on a lane, 1002 in the no-stopping zone)


@dataclass(frozen=True)
class SpotZone:
    spot_id: str
    corners: tuple[Point, Point, Point, Point]  # ground (local metres)
    lane_pos: float  # position on the outgoing kerb lane of the spot's centre (metres from the lane's start)


@dataclass
class CameraRig:
    """One simulated camera: its pinhole model, the approach it watches and its configuration."""

    camera_id: str
    approach: Approach
    frame: LocalFrame  # the district's local frame (net coordinates minus the net offset)
    size: tuple[int, int] = IMAGE_SIZE
    lot_id: str = ""
    spots: list[SpotZone] = field(default_factory=list)

    @cached_property
    def pinhole(self) -> PinholeCamera:
        a = self.approach
        east, north = a.point_upstream(POLE_ALONG_M, KERB_OFFSET_M)
        target = a.point_upstream(LOOK_AT_M, LOOK_ACROSS_M)
        dist = math.hypot(target[0] - east, target[1] - north)
        heading = math.degrees(math.atan2(target[0] - east, target[1] - north)) % 360
        pitch = math.degrees(math.atan2(POLE_HEIGHT_M, dist))
        return PinholeCamera(east, north, POLE_HEIGHT_M, heading, pitch, LENS_HFOV_DEG, self.size)

    @property
    def location(self) -> tuple[float, float]:
        p = self.pinhole
        return self.frame.to_wgs84(p.east, p.north)

    def ground_polygon(self, corners: Sequence[Point]) -> list[Point] | None:
        """Image polygon of a ground polygon, clipped to the image; None when nothing of it is visible."""
        pts = np.array([self.pinhole.ground_to_image(*c) for c in corners], np.float32)
        if (self.pinhole.depth(np.array([[c[0], c[1], 0.0] for c in corners])) <= 0.5).any():
            return None
        w, h = self.size
        # Half a pixel beyond the picture's edges (as far as ConfigureCamera takes), so that boxes ending there are
        # inside: a zone clipped at h - 1 left out the bottom centres of the boxes of cars cut off by the picture's
        # bottom (`v2x sim score`: the illegal parker's, at y = 480).
        e = 0.5
        frame = np.array([[-e, -e], [w + e, -e], [w + e, h + e], [-e, h + e]], np.float32)
        area, clipped = cv2.intersectConvexConvex(pts, frame)
        if area < 50 or clipped is None:
            return None
        return [(float(x), float(y)) for x, y in clipped.reshape(-1, 2)]

    # ----- the configuration sent with ConfigureCamera --------------------------------------------------------

    def camera(self, *, name: str = "") -> pb.Camera:
        a = self.approach
        lat, lon = self.location
        cam = pb.Camera(id=self.camera_id, name=name or f"{a.junction} approach from {a.edge_in}",
                        location=cpb.LatLon(lat=lat, lon=lon), heading_deg=round(self.pinhole.heading_deg, 2),
                        image_width=self.size[0], image_height=self.size[1],
                        thresholds=pb.CameraThresholds(stop_threshold_s=STOP_THRESHOLD_S,
                                                           frame_deadline_ms=FRAME_DEADLINE_MS))
        for lane in a.lanes_in + a.lanes_out:
            poly = self.ground_polygon(a.lane_quad(lane, NEAR_M, FAR_M, shift=BOX_FOOT_ACROSS_M))
            if poly is None:
                continue
            cam.lanes.add(id=lane.id, polygon=_poly(poly), direction_heading_deg=round(lane.heading_deg, 3),
                          speed_limit_kmh=SPEED_LIMIT_KMH)
        # Drawn where the bottoms of the boxes of vehicles standing at the kerb fall: the service places a vehicle at
        # its box's bottom centre, which this oblique view puts beyond the vehicle, up to 6 m beyond the kerb line.
        # (`v2x sim score` measured the bottom centres of a parked car 4.9..5.6 m beyond the kerb line while
        # roadside_sim/traffic.py put parked cars 2.8 m outside the strip; standing in it they fall nearer the kerb,
        # inside the zone as drawn: 1002 found 4 of 4.)
        kerb = self.ground_polygon(a.kerb_quad(*NO_STOPPING_M, KERB_STRIP_M + 4.3, inner=0.2))
        if kerb is not None:
            cam.zones.add(id="no-stopping", kind=pb.ZONE_KIND_NO_STOPPING, polygon=_poly(kerb))
        for spot in self.spots:
            # Like the no-stopping zone, drawn where the boxes of the cars parked in it put them: the bottom centre of
            # the box of a car at the far kerb lands up to ~1.5 m beyond it in this view (`v2x sim score` found
            # parked cars 0.6 m outside the spot as drawn, and every occupied spot read free).
            along = sorted({round(a.coordinates(c)[0], 3) for c in spot.corners})
            poly = self.ground_polygon(a.far_kerb_quad(along[0], along[-1], KERB_STRIP_M + SPOT_BEYOND_M, reach=1.5))
            if poly is not None and self.lot_id:
                cam.zones.add(id=f"spot-{spot.spot_id}", kind=pb.ZONE_KIND_PARKING_SPOT, polygon=_poly(poly),
                              parking_lot_id=self.lot_id, parking_spot_id=spot.spot_id)
        left = a.point_upstream(COUNT_LINE_M, -2 * a.lane_width - 0.3 + BOX_FOOT_ACROSS_M)
        right = a.point_upstream(COUNT_LINE_M, 0.3 + BOX_FOOT_ACROSS_M)
        toward = a.point_upstream(COUNT_LINE_M - 10, -a.lane_width)
        cam.counting_lines.add(id="in", start=_px(self.pinhole.ground_to_image(*left)),
                               end=_px(self.pinhole.ground_to_image(*right)),
                               positive_toward=_px(self.pinhole.ground_to_image(*toward)))
        # The homography: 4 image points spread over the road and the ground points they show, in metres from the
        # camera's foot (the pinhole model's own inverse: exact).
        foot = (self.pinhole.east, self.pinhole.north)
        cam.homography.local_origin.CopyFrom(cpb.LatLon(lat=lat, lon=lon))
        w, h = self.size
        for x, y in ((0.1 * w, 0.55 * h), (0.9 * w, 0.55 * h), (0.9 * w, 0.95 * h), (0.1 * w, 0.95 * h)):
            g = self.pinhole.image_to_ground((x, y))
            assert g is not None, "the homography's points must lie below the horizon"
            cam.homography.points.add(image=_px((x, y)),
                                      local=pb.LocalPoint(east_m=round(g[0] - foot[0], 4),
                                                          north_m=round(g[1] - foot[1], 4)))
        return cam


def _px(p: Point) -> pb.PixelPoint:
    return pb.PixelPoint(x=round(p[0], 2), y=round(p[1], 2))


def _poly(points: Sequence[Point]) -> pb.PixelPolygon:
    return pb.PixelPolygon(points=[_px(p) for p in points])


def rigs(district: District, intersections: int, cameras_per: int, *, lot_prefix: str = "") -> list[CameraRig]:
    """The cameras of the first `intersections` junctions, `cameras_per` approaches each (1..4)."""
    out = []
    for junction in district.junctions[:intersections]:
        for approach in district.approaches(junction)[:cameras_per]:
            camera_id = f"sim-{junction}-{approach.edge_in}"
            rig = CameraRig(camera_id, approach, district.frame)
            if lot_prefix:
                rig.lot_id = f"{lot_prefix}-{junction}-{approach.edge_out}"
                rig.spots = [SpotZone(f"K{i:02d}", approach.far_kerb_quad(s, s + 6.0, KERB_STRIP_M, reach=1.5),
                                      approach.out_lane_pos(s + 3.0)) for i, s in enumerate(SPOTS_M)]
            out.append(rig)
    return out
