"""Ground-truth types of the simulator: what a road user is, and where it is in a frame."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VehicleClass(StrEnum):
    """Road users, named as the roadside contract's object classes are (lower case)."""

    CAR = "car"
    BUS = "bus"
    TRUCK = "truck"
    MOTORCYCLE = "motorcycle"
    BICYCLE = "bicycle"
    PERSON = "person"


@dataclass(frozen=True, slots=True)
class TruthBox:
    """A road user's box in image pixels (x1 <= x2, y1 <= y2)."""

    object_class: VehicleClass
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0  # for synthetic "ideal detector" output; ground truth itself is certain

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2
