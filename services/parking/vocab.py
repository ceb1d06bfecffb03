"""The parking domain's vocabularies: the values lots, spots, readings and passages take.

Each enum mirrors the proto enum of the same name (`protos/v2x/parking/v1/parking.proto`): the same numbers, the
names without the proto's prefix, every value but UNSPECIFIED; `tests/house/test_mirrored_enums.py` holds them to
it. The numbers are also what the database stores. Domain code uses these, `convert.py` maps to and from the wire.
"""

from __future__ import annotations

from enum import IntEnum


class SpaceClass(IntEnum):
    GENERAL = 1
    EV = 2
    DISABLED = 3
    RESERVED = 4


class LotKind(IntEnum):
    GARAGE = 1
    SURFACE_LOT = 2
    ON_STREET_SEGMENT = 3


class DetectionType(IntEnum):
    NONE = 1
    BALANCING = 2  # counting entries and exits
    SINGLE_SPACE = 3
    MODEL_BASED = 4
    MANUAL = 5


class SpotStatus(IntEnum):
    FREE = 1
    OCCUPIED = 2
    CLOSED = 3
    UNKNOWN = 4


class SiteStatus(IntEnum):
    SPACES_AVAILABLE = 1
    ALMOST_FULL = 2
    FULL_AT_ENTRANCE = 3
    FULL = 4
    CLOSED = 5
    UNKNOWN = 6


class OccupancyTrend(IntEnum):
    INCREASING = 1
    DECREASING = 2
    STABLE = 3
    UNKNOWN = 4


class PassageDirection(IntEnum):
    ENTRY = 1
    EXIT = 2


class PlateColour(IntEnum):
    BLUE = 1
    YELLOW = 2
    GREEN = 3
    WHITE = 4
    BLACK = 5
    OTHER = 6


class PassageAmendAction(IntEnum):
    CORRECT = 1
    VOID = 2


class PassageState(IntEnum):
    RECORDED = 1
    CORRECTED = 2
    VOIDED = 3


class AckResult(IntEnum):
    ACCEPTED = 1
    STALE = 2
    DUPLICATE = 3
    REJECTED = 4


CLASSES: tuple[SpaceClass, ...] = tuple(SpaceClass)
