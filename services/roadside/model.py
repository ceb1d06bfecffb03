"""Domain objects of the roadside service: cameras and their geometry, tracked objects, events.

Enumerations are the proto enum numbers (``v2x.roadside.v1``), as plain ints, so that domain code needs
no generated classes. Nothing here imports grpc.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from services.roadside.detector import CameraFloors, VehicleClass
from services.roadside.geometry import GroundMapping, LocalFrame, Point


class ZoneKind(enum.IntEnum):
    NO_STOPPING = 1
    PARKING_SPOT = 2
    GENERIC = 3


class EventType(enum.IntEnum):
    """RSI event codes (GB/T 29100) and the suite's own codes; equal to v2x.idps.v1.EventType."""

    PEDESTRIAN_ON_ROAD = 405
    TRAFFIC_JAM = 707
    OVERSPEED = 901
    SLOW_VEHICLE = 902
    STOPPED_VEHICLE = 903
    WRONG_WAY = 904
    ACCIDENT = 1001
    ILLEGAL_PARKING = 1002


class Congestion(enum.IntEnum):
    """v2x.roadside.v1.CongestionLevel."""

    FREE_FLOW = 1
    LIGHT = 2
    MODERATE = 3
    HEAVY = 4
    UNKNOWN = 5


class SpotState(enum.IntEnum):
    """v2x.parking.v1.SpotStatus (the values roadside reports)."""

    FREE = 1
    OCCUPIED = 2


# Classes that are vehicles for counts, queues and vehicle events (people are not).
VEHICLES = frozenset({VehicleClass.CAR, VehicleClass.BUS, VehicleClass.TRUCK, VehicleClass.MOTORCYCLE,
                      VehicleClass.BICYCLE})


@dataclass(frozen=True, slots=True)
class Lane:
    id: str
    polygon: tuple[Point, ...] | None = None
    centerline: tuple[Point, ...] | None = None
    direction_px: Point | None = None  # image-space vector of travel
    direction_heading_deg: float | None = None  # ground heading of travel
    speed_limit_kmh: float = 0.0

    @property
    def has_direction(self) -> bool:
        return self.direction_px is not None or self.direction_heading_deg is not None


@dataclass(frozen=True, slots=True)
class Zone:
    id: str
    kind: ZoneKind
    polygon: tuple[Point, ...]
    lot_id: str = ""
    spot_id: str = ""
    stop_threshold_s: int = 0  # 0: the camera's default (spots: SPOT_DEFAULT_THRESHOLD_S)


@dataclass(frozen=True, slots=True)
class CountingLine:
    id: str
    start: Point
    end: Point
    positive_toward: Point
    lane_id: str = ""


@dataclass(frozen=True, slots=True)
class Calibration:
    """4 image points and the ground points (local metres from `origin`) they show."""

    image_points: tuple[Point, Point, Point, Point]
    ground_points: tuple[Point, Point, Point, Point]
    origin: tuple[float, float]  # WGS-84 lat, lon of the local frame

    def mapping(self) -> GroundMapping:
        return GroundMapping(self.image_points, self.ground_points, LocalFrame(*self.origin))


class UnresolvedFloor(RuntimeError):
    """A camera's confidence floor was read before the detector's default was filled in (a bug, not a request)."""


def _floor(name: str, value: float | None) -> float:
    if value is None:
        raise UnresolvedFloor(f"{name} is the model's default, not filled in: use CameraSpec.with_floors")
    return value


@dataclass(frozen=True, slots=True)
class Thresholds:
    # None: the camera leaves it to the detector model (CameraFloors from its metadata), filled in by with_floors
    # where the engine opens the camera's session; what the operator configured stays as configured.
    min_detection_confidence: float | None = None
    min_plate_confidence: float = 0.8
    overspeed_tolerance_kmh: float = 10.0
    slow_vehicle_kmh: float = 10.0
    stop_threshold_s: int = 60
    min_event_confidence: float | None = None
    frame_deadline_ms: int = 0  # 0: the service default

    def with_floors(self, floors: CameraFloors) -> Thresholds:
        """The floors the camera left unset taken from the model's defaults; the ones it set stay."""
        return replace(
            self,
            min_detection_confidence=(
                floors.min_detection_confidence if self.min_detection_confidence is None
                else self.min_detection_confidence
            ),
            min_event_confidence=(
                floors.min_event_confidence if self.min_event_confidence is None else self.min_event_confidence
            ),
        )

    @property
    def detection_floor(self) -> float:
        """min_detection_confidence after with_floors; UnresolvedFloor before."""
        return _floor("min_detection_confidence", self.min_detection_confidence)

    @property
    def event_floor(self) -> float:
        """min_event_confidence after with_floors; UnresolvedFloor before."""
        return _floor("min_event_confidence", self.min_event_confidence)


@dataclass(frozen=True, slots=True)
class CameraSpec:
    id: str
    name: str
    lat: float
    lon: float
    heading_deg: float
    image_width: int
    image_height: int
    lanes: tuple[Lane, ...] = ()
    zones: tuple[Zone, ...] = ()
    lines: tuple[CountingLine, ...] = ()
    calibration: Calibration | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)

    def with_floors(self, floors: CameraFloors) -> CameraSpec:
        return replace(self, thresholds=self.thresholds.with_floors(floors))


@dataclass(frozen=True, slots=True)
class CameraRecord:
    spec: CameraSpec
    version: int
    created_at: datetime
    updated_at: datetime
    config_json: str  # the Camera message as proto JSON, as stored


@dataclass(frozen=True, slots=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def bottom_center(self) -> Point:
        return (self.x1 + self.x2) / 2, self.y2

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(self.x1 * sx, self.y1 * sy, self.x2 * sx, self.y2 * sy)


@dataclass(frozen=True, slots=True)
class TrackedObject:
    """One object on one frame after tracking and analytics (box in frame pixels)."""

    track_id: int
    object_class: VehicleClass
    confidence: float
    box: Box
    lat_lon: tuple[float, float] | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    lane_id: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: EventType
    camera_id: str
    frame_id: int
    observed_at: datetime
    lat: float
    lon: float
    confidence: float
    track_id: int = 0
    object_class: VehicleClass | None = None
    lane_id: str = ""
    zone_id: str = ""
    speed_mps: float | None = None
    heading_deg: float | None = None
    stationary_s: int = 0
    box: Box | None = None  # frame pixels, for the snapshot crop; None: the whole frame
    congestion: Congestion | None = None
    queue_length_m: float = 0.0


@dataclass(frozen=True, slots=True)
class SpotChange:
    lot_id: str
    spot_id: str
    state: SpotState
    observed_at: datetime
    camera_id: str


@dataclass(frozen=True, slots=True)
class LaneStatus:
    lane_id: str
    vehicles: int
    standing: int
    queue_length_m: float
    mean_speed_mps: float | None
    congestion: Congestion


@dataclass(frozen=True, slots=True)
class LaneMinute:
    lane_id: str
    vehicles: int
    wrong_way: int
    max_queue_m: float
    mean_speed_mps: float | None
    congestion: Congestion


@dataclass(frozen=True, slots=True)
class LineMinute:
    line_id: str
    positive: int
    negative: int


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    minute_start: datetime
    frames: int
    lanes: tuple[LaneMinute, ...]
    lines: tuple[LineMinute, ...]
