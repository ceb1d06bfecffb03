"""Frames of a simulated camera: the road drawn from the district's geometry, vehicles drawn from image crops of a
real photo, far to near, with an id buffer, so that each vehicle's ground-truth box is its visible pixels.

The crops are cut from the sample photos `make models` fetches (models/.cache/samples, from Debian's darknet
package) with fixed boxes committed here; a GrabCut inside the box separates the vehicle from the street behind it
(computed once, deterministic). No registry package ships vehicle images, so one real pickup, in a few paint
colours and mirrored for the direction of travel, stands for every car: the detector sees real vehicle pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from roadside_sim.cameras import CameraRig
from roadside_sim.scene import KEY_COLOURS
from roadside_sim.truth import VehicleClass

BgrImage = NDArray[np.uint8]
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "models" / ".cache" / "samples"


@dataclass(frozen=True)
class CropSpec:
    photo: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in the photo
    outline: tuple[tuple[int, int], ...]  # the vehicle's silhouette, pixels of the crop (cuts off what GrabCut leaks)
    object_class: VehicleClass
    faces_right: bool  # the vehicle's front is on the right of the crop


# The white pickup parked across the street in darknet's dog.jpg (768x576). COCO would call it a truck; the
# detector calls it a car first (0.64..0.85), and a pickup is a passenger vehicle here: ground truth says car.
CROPS = (CropSpec("dog.jpg", (466, 70, 690, 172),
                  ((8, 50), (30, 5), (118, 16), (126, 26), (153, 27), (174, 47), (217, 53), (223, 67), (221, 86),
                   (200, 95), (60, 90), (8, 68)), VehicleClass.CAR, True),)
# Paint shades (BGR multipliers of the white body) for variety. Only light ones: measured on the road background,
# YOLOv3-tiny finds the white and silver pickup from ~130 px long, a red or dark one hardly at any size.
PAINTS = ((1.0, 1.0, 1.0), (0.8, 0.8, 0.82), (0.92, 0.9, 0.85))


@dataclass(frozen=True)
class Crop:
    image: BgrImage
    mask: NDArray[np.uint8]  # 255 = vehicle
    spec: CropSpec


@lru_cache(maxsize=8)
def load_crop(index: int = 0, samples: Path = SAMPLES) -> Crop:
    spec = CROPS[index]
    photo = cv2.imread(str(samples / spec.photo), cv2.IMREAD_COLOR)
    if photo is None:
        raise FileNotFoundError(f"{samples / spec.photo} is missing: run `make models` (it fetches the sample photos)")
    x1, y1, x2, y2 = spec.box
    mask = np.zeros(photo.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(13)
    cv2.grabCut(photo, mask, (x1, y1, x2 - x1, y2 - y1), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    fg = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)[y1:y2, x1:x2]
    # The largest blob only, holes filled: the vehicle's silhouette.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    if n > 1:
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = np.where(labels == biggest, 255, 0).astype(np.uint8)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(fg, contours, -1, 255, -1)
    outline = np.zeros_like(fg)
    cv2.fillPoly(outline, [np.array(spec.outline, np.int32)], 255)
    fg = np.asarray(cv2.bitwise_and(fg, outline), np.uint8)
    return Crop(np.ascontiguousarray(photo[y1:y2, x1:x2]), fg, spec)


@dataclass(frozen=True)
class VehicleState:
    """A vehicle at one instant, in the district's local metres."""

    vid: str
    east: float  # front bumper centre
    north: float
    heading_deg: float  # direction it faces, clockwise from north
    speed_mps: float
    length: float
    width: float
    height: float
    lane_id: str
    object_class: VehicleClass = VehicleClass.CAR
    paint: int = 0
    parked: bool = False


@dataclass(frozen=True)
class RenderedBox:
    vid: str
    object_class: VehicleClass
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive ends) of the visible pixels
    visible: float  # visible pixels / drawn pixels
    drawn_box: tuple[int, int, int, int]  # the box of the whole vehicle as drawn (before occlusion)
    pixels: int


def cuboid(v: VehicleState) -> NDArray[np.float64]:
    """The 8 corners (world metres, z up) of a vehicle's box: front bumper centre, heading, size."""
    h = math.radians(v.heading_deg)
    fwd = np.array([math.sin(h), math.cos(h), 0.0])
    right = np.array([math.cos(h), -math.sin(h), 0.0])
    front = np.array([v.east, v.north, 0.0])
    pts = []
    for a in (0.0, -v.length):
        for b in (-v.width / 2, v.width / 2):
            for z in (0.0, v.height):
                pts.append(front + fwd * a + right * b + np.array([0.0, 0.0, z]))
    return np.array(pts)


class Renderer:
    """Draws a camera's frames. `style` "photo" draws vehicles from the photo crop (for the real detector); "key"
    draws the same silhouettes in their class's key colour (roadside_sim/scene.py), for the service's demo detector
    (V2X_ROADSIDE_DETECTOR=sim): the whole pipeline, fast and exact, as in the tests."""

    def __init__(self, rig: CameraRig, *, seed: int = 7, style: str = "photo") -> None:
        if style not in ("photo", "key"):
            raise ValueError(f"unknown render style {style!r}: photo or key")
        self.style = style
        self.rig = rig
        self.cam = rig.pinhole
        self.size = rig.size
        self._background = self._draw_background(seed)

    def _poly(self, corners: Sequence[tuple[float, float]]) -> NDArray[np.int32] | None:
        pts = np.array([[c[0], c[1], 0.0] for c in corners])
        if (self.cam.depth(pts) <= 0.3).any():
            return None
        return np.round(self.cam.project(pts)).astype(np.int32)

    def _draw_background(self, seed: int) -> BgrImage:
        w, h = self.size
        a = self.rig.approach
        rng = np.random.default_rng(seed)
        img = np.zeros((h, w, 3), np.uint8)
        # Sky above the horizon, pavement and verges below.
        img[:] = (95, 118, 105)
        far = a.point_upstream(3000.0, -2 * a.lane_width)
        horizon_y = int(self.cam.project(np.array([[far[0], far[1], 0.0]]))[0][1])
        if horizon_y > 0:
            img[: min(h, horizon_y)] = (200, 180, 160)
        lw = a.lane_width
        road = self._poly([a.point_upstream(0.5, 0.0), a.point_upstream(0.5, -4 * lw),
                           a.point_upstream(400, -4 * lw), a.point_upstream(400, 0.0)])
        kerbs = [self._poly([a.point_upstream(0.5, 3.5), a.point_upstream(0.5, 0.0), a.point_upstream(400, 0.0),
                             a.point_upstream(400, 3.5)]),
                 self._poly([a.point_upstream(0.5, -4 * lw), a.point_upstream(0.5, -4 * lw - 3.5),
                             a.point_upstream(400, -4 * lw - 3.5), a.point_upstream(400, -4 * lw)])]
        for k in kerbs:
            if k is not None:
                cv2.fillPoly(img, [k], (150, 155, 160))
        if road is not None:
            cv2.fillPoly(img, [road], (88, 90, 92))
        # Lane lines: dashed white between lanes of one direction, double yellow in the middle, a stop line.
        for across, colour, dashed in ((-lw, (235, 235, 235), True), (-3 * lw, (235, 235, 235), True),
                                       (-2 * lw + 0.1, (40, 200, 230), False), (-2 * lw - 0.1, (40, 200, 230), False)):
            s = 1.0
            while s < 400:
                e = s + (3.0 if dashed else 400.0)
                q = self._poly([a.point_upstream(s, across + 0.07), a.point_upstream(s, across - 0.07),
                                a.point_upstream(e, across - 0.07), a.point_upstream(e, across + 0.07)])
                if q is not None:
                    cv2.fillPoly(img, [q], colour)
                s = e + 6.0
        stop = self._poly([a.point_upstream(1.0, 0.0), a.point_upstream(1.0, -2 * lw), a.point_upstream(1.4, -2 * lw),
                           a.point_upstream(1.4, 0.0)])
        if stop is not None:
            cv2.fillPoly(img, [stop], (235, 235, 235))
        noise = rng.normal(0, 6, img.shape)
        return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)

    def render(self, vehicles: Sequence[VehicleState], *, brightness: float = 1.0
               ) -> tuple[BgrImage, list[RenderedBox]]:
        """The frame and the ground-truth box of every vehicle with visible pixels."""
        w, h = self.size
        img = self._background.copy()
        ids = np.zeros((h, w), np.int32)
        drawn: list[tuple[int, VehicleState, tuple[int, int, int, int], int]] = []
        order = []
        for v in vehicles:
            corners = cuboid(v)
            depth = self.cam.depth(corners)
            if (depth <= 1.0).any():
                continue
            order.append((float(depth.mean()), v, corners))
        order.sort(key=lambda t: -t[0])  # far first
        for n, (_, v, corners) in enumerate(order, start=1):
            px = self.cam.project(corners)
            x1, y1 = np.floor(px.min(axis=0)).astype(int)
            x2, y2 = np.ceil(px.max(axis=0)).astype(int)
            if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h or x2 - x1 < 2 or y2 - y1 < 2 or x2 - x1 > 4 * w:
                continue
            crop = load_crop(0)
            # Which way it faces on the image: from the rear to the front bumper.
            front_px = self.cam.project(corners[[0, 2]]).mean(axis=0)
            rear_px = self.cam.project(corners[[4, 6]]).mean(axis=0)
            faces_right = front_px[0] >= rear_px[0]
            image, mask = crop.image, crop.mask
            if faces_right != crop.spec.faces_right:
                image, mask = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
            bw, bh = x2 - x1, y2 - y1
            sprite = cv2.resize(image, (bw, bh), interpolation=cv2.INTER_AREA if bw < image.shape[1] else
                                cv2.INTER_LINEAR)
            alpha = cv2.resize(mask, (bw, bh), interpolation=cv2.INTER_NEAREST) > 127
            if self.style == "key":
                sprite = np.empty_like(sprite)
                sprite[:] = KEY_COLOURS[v.object_class]
            else:
                paint = np.array(PAINTS[v.paint % len(PAINTS)], np.float32)
                # Paint the bright body panels; windows, tyres and shadows stay as they are.
                lum = sprite.mean(axis=2, keepdims=True) / 255.0
                body = np.clip((lum - 0.55) * 3.0, 0.0, 1.0)
                sprite = np.clip(sprite * (1 - body) + sprite * paint * body, 0, 255).astype(np.uint8)
            # A shadow on the road under it (background, not part of the vehicle's pixels).
            ground = self.cam.project(corners[[0, 2, 4, 6]])
            cv2.fillConvexPoly(img, cv2.convexHull(np.round(ground).astype(np.int32)), (42, 42, 45))
            # Clip to the frame.
            cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            sx, sy = cx1 - x1, cy1 - y1
            sub_alpha = alpha[sy:sy + cy2 - cy1, sx:sx + cx2 - cx1]
            img[cy1:cy2, cx1:cx2][sub_alpha] = sprite[sy:sy + cy2 - cy1, sx:sx + cx2 - cx1][sub_alpha]
            ids[cy1:cy2, cx1:cx2][sub_alpha] = n
            drawn.append((n, v, (cx1, cy1, cx2, cy2), int(sub_alpha.sum())))
        boxes: list[RenderedBox] = []
        for n, v, (cx1, cy1, cx2, cy2), total in drawn:
            if total == 0:
                continue
            ys, xs = np.nonzero(ids[cy1:cy2, cx1:cx2] == n)
            if xs.size == 0:
                continue
            box = (cx1 + int(xs.min()), cy1 + int(ys.min()), cx1 + int(xs.max()) + 1, cy1 + int(ys.max()) + 1)
            boxes.append(RenderedBox(v.vid, v.object_class, box, xs.size / total, (cx1, cy1, cx2, cy2), int(xs.size)))
        if brightness < 0.999:
            img = np.clip(img.astype(np.float32) * brightness, 0, 255).astype(np.uint8)
        return img, boxes


def brightness_at(hour: float) -> float:
    """Daylight by hour of the day (local time): full from 7 to 17, dusk and dawn ramps, street-lit night."""
    if 7 <= hour < 17:
        return 1.0
    if 5 <= hour < 7:
        return 0.45 + 0.55 * (hour - 5) / 2
    if 17 <= hour < 19:
        return 1.0 - 0.55 * (hour - 17) / 2
    return 0.45


def encode_jpeg(img: BgrImage, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())
