"""The demo detector (``V2X_ROADSIDE_DETECTOR=sim``): finds road users drawn as key-coloured boxes.

The simple simulated approach of roadside_sim (roadside_sim/scene.py) draws each class as a box of its own pure
colour; this detector finds those boxes again exactly, so that demos and tests run the service's whole pipeline
(decode, queues, batching, tracking, analytics, events, spots) fast and without the ONNX model. The colour table
is the only thing the two sides share, by value (the service imports nothing from the simulator);
tests/sim/test_boundary.py checks that they agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import cv2
import numpy as np

from services.roadside.detector import DEFAULT_CAMERA_FLOORS, BgrImage, CameraFloors, Detection, VehicleClass

# Key colours (BGR) per class: pure and far from asphalt grey and the white markings.
KEY_COLOURS: Mapping[VehicleClass, tuple[int, int, int]] = MappingProxyType({
    VehicleClass.CAR: (0, 0, 255),
    VehicleClass.TRUCK: (0, 255, 0),
    VehicleClass.BUS: (255, 0, 0),
    VehicleClass.MOTORCYCLE: (0, 255, 255),
    VehicleClass.BICYCLE: (255, 255, 0),
    VehicleClass.PERSON: (255, 0, 255),
})


class KeyColourDetector:
    """Finds key-coloured boxes (exactly, for PNG or raw frames; JPEG blurs edges by a pixel or two).
    Implements the engine's detector interface."""

    def __init__(self, score: float = 0.9, min_area_px: int = 12, tolerance: int = 40) -> None:
        self.score = score
        self.min_area_px = min_area_px
        self.tolerance = tolerance
        self.calls = 0
        # Every box scores `score`, so any floor under it lets them all through: the service's usual ones.
        self.camera_floors: CameraFloors = DEFAULT_CAMERA_FLOORS

    def detect(self, image: BgrImage) -> list[Detection]:
        out: list[Detection] = []
        for cls, colour in KEY_COLOURS.items():
            lo = np.clip(np.array(colour) - self.tolerance, 0, 255).astype(np.uint8)
            hi = np.clip(np.array(colour) + self.tolerance, 0, 255).astype(np.uint8)
            mask = cv2.inRange(image, lo, hi)
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
            for i in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[i])
                if area >= self.min_area_px:
                    out.append(Detection(cls, self.score, float(x), float(y), float(x + w), float(y + h), cls.value))
        return out

    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]:
        self.calls += 1
        return [self.detect(image) for image in bgr_images]
