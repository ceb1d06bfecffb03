"""Seeded frames with ground truth for measuring a vehicle detector: simulator frames (photo style, every camera
of the demo district) and the real sample photos with boxes a person drew.

    from roadside_sim.detection_set import sim_frames, real_photos

The same seed gives the same frames. Calibration (models/quantize_detector.py) and evaluation
(load/eval_detector.py) use different seeds, so int8 is never measured on the frames it was calibrated on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from roadside_sim.cameras import CameraRig, rigs
from roadside_sim.network import District
from roadside_sim.render import PAINTS, SAMPLES, Renderer, VehicleState, brightness_at
from roadside_sim.truth import VehicleClass

BgrImage = NDArray[np.uint8]
Box = tuple[float, float, float, float]

CALIBRATION_SEED = 1
EVALUATION_SEED = 2

# A ground-truth box counts toward recall when it is at least this wide and mostly visible: YOLOv3-tiny finds the
# photo pickup from about 130 px long, nothing finds a 20 px sliver, and both would only dilute the comparison.
MIN_EVAL_WIDTH = 48
MIN_EVAL_VISIBLE = 0.7


@dataclass(frozen=True)
class Truth:
    box: Box
    object_class: str  # "car", "bus", "truck", "motorcycle", "bicycle", "person"
    counted: bool  # large and visible enough to count toward recall


@dataclass(frozen=True)
class LabelledFrame:
    name: str
    image: BgrImage
    truth: tuple[Truth, ...]


# Boxes a person drew on Darknet's sample photos (the same as tests/roadside/test_detector.py uses).
REAL_TRUTH: dict[str, tuple[Truth, ...]] = {
    "dog.jpg": (Truth((465.0, 72.0, 690.0, 172.0), "car", True), Truth((125.0, 135.0, 565.0, 420.0), "bicycle", True)),
    "person.jpg": (Truth((188.0, 95.0, 277.0, 378.0), "person", True),),
    "kite.jpg": (
        Truth((105.0, 615.0, 160.0, 755.0), "person", True),
        Truth((212.0, 695.0, 277.0, 855.0), "person", True),
    ),
    "horses.jpg": (),
    "giraffe.jpg": (),
    "eagle.jpg": (),
    "scream.jpg": (),
}


def real_photos(samples: Path = SAMPLES) -> list[LabelledFrame]:
    out = []
    for name, truth in REAL_TRUTH.items():
        image = cv2.imread(str(samples / name), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{samples / name} missing; run `make models` (models/fetch_samples.sh)")
        out.append(LabelledFrame(name, np.asarray(image, np.uint8), truth))
    return out


def _vehicles(rig: CameraRig, rng: random.Random, count: int) -> list[VehicleState]:
    a = rig.approach
    lanes = [(lane, -(lane.index + 0.5) * a.lane_width) for lane in a.lanes_in]
    lanes += [(lane, -(len(a.lanes_in) + lane.index + 0.5) * a.lane_width) for lane in a.lanes_out]
    out = []
    for n in range(count):
        lane, across = rng.choice(lanes)
        along = rng.uniform(8.0, 70.0)
        heading = lane.heading_deg
        east, north = a.point_upstream(along, across + rng.uniform(-0.4, 0.4))
        if not lane.incoming:
            # Outgoing traffic faces away: its front bumper is the far end.
            east, north = a.point_upstream(along + 4.5, across)
        out.append(
            VehicleState(
                f"v{n}",
                east,
                north,
                heading,
                10.0,
                rng.uniform(4.2, 5.2),
                rng.uniform(1.7, 1.95),
                rng.uniform(1.45, 1.9),
                lane.id,
                VehicleClass.CAR,
                paint=rng.randrange(len(PAINTS)),
            )
        )
    return out


def sim_frames(seed: int, count: int, *, cameras: int = 4) -> list[LabelledFrame]:
    """``count`` 640x480 photo-style frames over ``cameras`` of the demo district's cameras, 1-5 vehicles each,
    daylight to dusk."""
    rng = random.Random(seed)
    district = District()
    rig_list = rigs(district, max(1, (cameras + 3) // 4), 4)[:cameras]
    renderers = [Renderer(rig, seed=seed * 100 + i) for i, rig in enumerate(rig_list)]
    out: list[LabelledFrame] = []
    for n in range(count):
        index = n % len(rig_list)
        rig, renderer = rig_list[index], renderers[index]
        brightness = brightness_at(rng.uniform(7.0, 19.5))
        image, boxes = renderer.render(_vehicles(rig, rng, rng.randint(1, 5)), brightness=brightness)
        truth = tuple(
            Truth(
                tuple(float(v) for v in b.box),  # type: ignore[arg-type]
                str(b.object_class.value),
                b.box[2] - b.box[0] >= MIN_EVAL_WIDTH and b.visible >= MIN_EVAL_VISIBLE,
            )
            for b in boxes
        )
        out.append(LabelledFrame(f"sim-{seed}-{n}-{rig.camera_id}", image, truth))
    return out


VEHICLE_CLASSES = frozenset({"car", "bus", "truck", "motorcycle"})


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Score:
    """Recall at an IoU over the counted truth boxes; a vehicle matches a box of any vehicle class (car, bus, truck,
    motorcycle: the classes one vehicle is confused between), others their own class. Each box matches once."""

    truths: int = 0
    found: int = 0
    detections: int = 0
    unmatched: int = 0  # detections that match no truth box, counted or not: false alarms or tiny vehicles

    @property
    def recall(self) -> float:
        return self.found / self.truths if self.truths else 0.0

    def add(self, truth: tuple[Truth, ...], detections: list[tuple[Box, str]], iou: float = 0.5) -> None:
        used: set[int] = set()
        matched_any: set[int] = set()
        for t in sorted(truth, key=lambda t: not t.counted):  # counted boxes pick first
            group = VEHICLE_CLASSES if t.object_class in VEHICLE_CLASSES else {t.object_class}
            best, best_iou = -1, iou
            for i, (box, cls) in enumerate(detections):
                if i in used or cls not in group:
                    continue
                overlap = _iou(box, t.box)
                if overlap >= best_iou:
                    best, best_iou = i, overlap
            if best >= 0:
                used.add(best)
                matched_any.add(best)
            if t.counted:
                self.truths += 1
                self.found += best >= 0
        self.detections += len(detections)
        self.unmatched += len(detections) - len(matched_any)
