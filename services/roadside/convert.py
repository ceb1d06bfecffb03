"""Between the roadside protos and the domain: validate what comes in, build what goes out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import any_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from v2x.common.v1 import common_pb2 as cpb
from v2x.roadside.v1 import roadside_pb2 as pb

from services.common.error_mapping import DOMAIN, to_status_proto
from services.common.errors import DomainError, FieldViolation, InvalidArgument
from services.common.timestamps import ts
from services.common.validation import EARLIEST, Validator
from services.roadside import frames
from services.roadside.detector import Detection, VehicleClass
from services.roadside.geometry import GroundMapping, LocalFrame, Point, any_three_collinear, polygon_area
from services.roadside.model import (
    Calibration,
    CameraRecord,
    CameraSpec,
    CountingLine,
    Event,
    Lane,
    LaneStatus,
    MinuteCounts,
    Thresholds,
    TrackedObject,
    Zone,
    ZoneKind,
)
from services.roadside.plates import PlateReading

MAX_LANES = 16
MAX_ZONES = 256
MAX_LINES = 32
MAX_POINTS = 64
MAX_COUNTS_RANGE = timedelta(hours=24)

CLASS_TO_PROTO: dict[VehicleClass, int] = {
    VehicleClass.CAR: pb.OBJECT_CLASS_CAR,
    VehicleClass.BUS: pb.OBJECT_CLASS_BUS,
    VehicleClass.TRUCK: pb.OBJECT_CLASS_TRUCK,
    VehicleClass.MOTORCYCLE: pb.OBJECT_CLASS_MOTORCYCLE,
    VehicleClass.BICYCLE: pb.OBJECT_CLASS_BICYCLE,
    VehicleClass.PERSON: pb.OBJECT_CLASS_PERSON,
}


# ----- cameras in ---------------------------------------------------------------------------------


def _point(v: Validator, field: str, p: pb.PixelPoint, width: int, height: int) -> Point:
    x, y = p.x, p.y
    if not (math.isfinite(x) and math.isfinite(y)):
        v.fail(field, "must be finite")
    elif not (-0.5 <= x <= width + 0.5 and -0.5 <= y <= height + 0.5):
        v.fail(field, f"({x:g}, {y:g}) is outside the {width}x{height} image")
    return float(x), float(y)


def _points(v: Validator, field: str, pts: Sequence[pb.PixelPoint], minimum: int, width: int,
            height: int) -> tuple[Point, ...]:
    if not minimum <= len(pts) <= MAX_POINTS:
        v.fail(field, f"needs {minimum}..{MAX_POINTS} points, has {len(pts)}")
    return tuple(_point(v, f"{field}[{i}]", p, width, height) for i, p in enumerate(pts[:MAX_POINTS]))


def _unique_id(v: Validator, field: str, value: str, seen: set[str]) -> None:
    v.ident(field, value)
    if value in seen:
        v.fail(field, f"{value!r} appears twice")
    seen.add(value)


def _calibration(v: Validator, h: pb.Homography, width: int, height: int) -> Calibration | None:
    f = "camera.homography"
    if len(h.points) != 4:
        v.fail(f"{f}.points", f"needs exactly 4 correspondences, has {len(h.points)}")
        return None
    forms = {p.WhichOneof("ground") for p in h.points}
    if None in forms or len(forms) != 1:
        v.fail(f"{f}.points", "every correspondence needs a ground point, all in the same form (wgs84 or local)")
        return None
    image = tuple(_point(v, f"{f}.points[{i}].image", p.image, width, height) for i, p in enumerate(h.points))
    if forms == {"local"}:
        if not h.HasField("local_origin"):
            v.fail(f"{f}.local_origin", "is required when the points are in local metres")
            return None
        origin = v.lat_lon(f"{f}.local_origin", h.local_origin.lat, h.local_origin.lon)
        ground = []
        for i, p in enumerate(h.points):
            v.number(f"{f}.points[{i}].local.east_m", p.local.east_m, -5000, 5000)
            v.number(f"{f}.points[{i}].local.north_m", p.local.north_m, -5000, 5000)
            ground.append((p.local.east_m, p.local.north_m))
    else:
        lat_lons = [v.lat_lon(f"{f}.points[{i}].wgs84", p.wgs84.lat, p.wgs84.lon) for i, p in enumerate(h.points)]
        if h.HasField("local_origin"):
            origin = v.lat_lon(f"{f}.local_origin", h.local_origin.lat, h.local_origin.lon)
        else:
            origin = (sum(p[0] for p in lat_lons) / 4, sum(p[1] for p in lat_lons) / 4)
        frame = LocalFrame(*origin)
        ground = [frame.to_local(lat, lon) for lat, lon in lat_lons]
        if any(math.hypot(*g) > 5000 for g in ground):
            v.fail(f"{f}.points", "ground points must lie within 5 km of each other")
    if v.violations:
        return None
    if any_three_collinear(image):
        v.fail(f"{f}.points", "3 of the image points are on one line")
        return None
    if any_three_collinear(ground):
        v.fail(f"{f}.points", "3 of the ground points are on one line")
        return None
    cal = Calibration((image[0], image[1], image[2], image[3]),
                      (ground[0], ground[1], ground[2], ground[3]), (origin[0], origin[1]))
    try:
        GroundMapping(cal.image_points, cal.ground_points, LocalFrame(*cal.origin))
    except ValueError as exc:
        v.fail(f"{f}.points", str(exc))
        return None
    return cal


def camera_spec(c: pb.Camera) -> CameraSpec:
    """Validates a camera configuration (every bad field named in one INVALID_ARGUMENT)."""
    v = Validator()
    v.ident("camera.id", c.id)
    v.text("camera.name", c.name, 200)
    if not c.HasField("location"):
        v.fail("camera.location", "is required")
    v.lat_lon("camera.location", c.location.lat, c.location.lon)
    v.number("camera.heading_deg", c.heading_deg, 0, 360)
    v.integer("camera.image_width", c.image_width, 1, frames.MAX_SIDE)
    v.integer("camera.image_height", c.image_height, 1, frames.MAX_SIDE)
    v.check()
    w, h = c.image_width, c.image_height

    calibration = _calibration(v, c.homography, w, h) if c.HasField("homography") else None

    if len(c.lanes) > MAX_LANES:
        v.fail("camera.lanes", f"at most {MAX_LANES}, has {len(c.lanes)}")
    lanes: list[Lane] = []
    seen: set[str] = set()
    for i, lane in enumerate(c.lanes[:MAX_LANES]):
        f = f"camera.lanes[{i}]"
        _unique_id(v, f"{f}.id", lane.id, seen)
        shape = lane.WhichOneof("shape")
        polygon = centerline = None
        if shape == "polygon":
            polygon = _points(v, f"{f}.polygon.points", lane.polygon.points, 3, w, h)
            if len(polygon) >= 3 and polygon_area(polygon) < 1:
                v.fail(f"{f}.polygon", "has no area")
        elif shape == "centerline":
            centerline = _points(v, f"{f}.centerline.points", lane.centerline.points, 2, w, h)
        else:
            v.fail(f"{f}.shape", "set polygon or centerline")
        direction = lane.WhichOneof("direction")
        direction_px: Point | None = None
        heading: float | None = None
        if direction == "direction_vector":
            dx, dy = lane.direction_vector.x, lane.direction_vector.y
            if not (math.isfinite(dx) and math.isfinite(dy)) or math.hypot(dx, dy) == 0:
                v.fail(f"{f}.direction_vector", "must be a finite, non-zero vector")
            direction_px = (dx, dy)
        elif direction == "direction_heading_deg":
            heading = v.number(f"{f}.direction_heading_deg", lane.direction_heading_deg, 0, 360)
            if not c.HasField("homography"):
                v.fail(f"{f}.direction_heading_deg", "needs a calibrated camera (homography); use direction_vector")
        v.number(f"{f}.speed_limit_kmh", lane.speed_limit_kmh, 0, 200)
        lanes.append(Lane(lane.id, polygon, centerline, direction_px, heading, lane.speed_limit_kmh))

    if len(c.zones) > MAX_ZONES:
        v.fail("camera.zones", f"at most {MAX_ZONES}, has {len(c.zones)}")
    zones: list[Zone] = []
    seen = set()
    spots: set[tuple[str, str]] = set()
    for i, z in enumerate(c.zones[:MAX_ZONES]):
        f = f"camera.zones[{i}]"
        _unique_id(v, f"{f}.id", z.id, seen)
        v.enum(f"{f}.kind", z.kind, pb.ZoneKind.DESCRIPTOR)
        polygon = _points(v, f"{f}.polygon.points", z.polygon.points, 3, w, h)
        if len(polygon) >= 3 and polygon_area(polygon) < 1:
            v.fail(f"{f}.polygon", "has no area")
        v.integer(f"{f}.stop_threshold_s", z.stop_threshold_s, 0, 3600)
        if z.kind == pb.ZONE_KIND_PARKING_SPOT:
            v.ident(f"{f}.parking_lot_id", z.parking_lot_id)
            v.ident(f"{f}.parking_spot_id", z.parking_spot_id)
            if (z.parking_lot_id, z.parking_spot_id) in spots:
                v.fail(f"{f}.parking_spot_id", f"spot {z.parking_lot_id}/{z.parking_spot_id} has two zones")
            spots.add((z.parking_lot_id, z.parking_spot_id))
        elif z.parking_lot_id or z.parking_spot_id:
            v.fail(f"{f}.parking_lot_id", "only PARKING_SPOT zones link to a parking spot")
        if z.kind in pb.ZoneKind.DESCRIPTOR.values_by_number and z.kind != 0:
            zones.append(Zone(z.id, ZoneKind(z.kind), polygon, z.parking_lot_id, z.parking_spot_id,
                              z.stop_threshold_s))

    if len(c.counting_lines) > MAX_LINES:
        v.fail("camera.counting_lines", f"at most {MAX_LINES}, has {len(c.counting_lines)}")
    lines: list[CountingLine] = []
    seen = set()
    lane_ids = {lane.id for lane in lanes}
    for i, line in enumerate(c.counting_lines[:MAX_LINES]):
        f = f"camera.counting_lines[{i}]"
        _unique_id(v, f"{f}.id", line.id, seen)
        start = _point(v, f"{f}.start", line.start, w, h)
        end = _point(v, f"{f}.end", line.end, w, h)
        toward = (line.positive_toward.x, line.positive_toward.y)
        if not all(math.isfinite(x) for x in toward):
            v.fail(f"{f}.positive_toward", "must be finite")
        if math.dist(start, end) < 1:
            v.fail(f"{f}.end", "the line needs two distinct ends")
        elif any_three_collinear([start, end, toward], 1e-9):
            v.fail(f"{f}.positive_toward", "must lie off the line (it picks the positive side)")
        if line.lane_id and line.lane_id not in lane_ids:
            v.fail(f"{f}.lane_id", f"no lane {line.lane_id!r} on this camera")
        lines.append(CountingLine(line.id, start, end, toward, line.lane_id))

    t = c.thresholds
    v.number("camera.thresholds.min_detection_confidence", t.min_detection_confidence, 0, 1)
    v.number("camera.thresholds.min_plate_confidence", t.min_plate_confidence, 0, 1)
    v.number("camera.thresholds.overspeed_tolerance_kmh", t.overspeed_tolerance_kmh, 0, 100)
    v.number("camera.thresholds.slow_vehicle_kmh", t.slow_vehicle_kmh, 0, 100)
    v.integer("camera.thresholds.stop_threshold_s", t.stop_threshold_s, 0, 3600)
    v.number("camera.thresholds.min_event_confidence", t.min_event_confidence, 0, 1)
    if t.frame_deadline_ms:
        v.integer("camera.thresholds.frame_deadline_ms", t.frame_deadline_ms, 50, 60_000)
    v.check()
    d = Thresholds()
    thresholds = Thresholds(
        min_detection_confidence=t.min_detection_confidence or None,  # 0: the detector model's
        min_plate_confidence=t.min_plate_confidence or d.min_plate_confidence,
        overspeed_tolerance_kmh=t.overspeed_tolerance_kmh or d.overspeed_tolerance_kmh,
        slow_vehicle_kmh=t.slow_vehicle_kmh or d.slow_vehicle_kmh,
        stop_threshold_s=t.stop_threshold_s or d.stop_threshold_s,
        min_event_confidence=t.min_event_confidence or None,
        frame_deadline_ms=t.frame_deadline_ms,
    )
    return CameraSpec(c.id, c.name, c.location.lat, c.location.lon, c.heading_deg, w, h, tuple(lanes),
                      tuple(zones), tuple(lines), calibration, thresholds)


def stored_config(c: pb.Camera) -> str:
    """The camera as stored: proto JSON without the server-kept fields."""
    copy = pb.Camera()
    copy.CopyFrom(c)
    copy.ClearField("version")
    copy.ClearField("created_at")
    copy.ClearField("updated_at")
    return json_format.MessageToJson(copy, indent=None, preserving_proto_field_name=True)


def camera_from_json(config_json: str) -> tuple[pb.Camera, CameraSpec]:
    c = json_format.Parse(config_json, pb.Camera())
    return c, camera_spec(c)


def camera_proto(record: CameraRecord) -> pb.Camera:
    c = json_format.Parse(record.config_json, pb.Camera())
    c.version = record.version
    c.created_at.CopyFrom(ts(record.created_at))
    c.updated_at.CopyFrom(ts(record.updated_at))
    return c


def camera_id(value: str, field: str = "camera_id") -> str:
    v = Validator()
    v.ident(field, value)
    v.check()
    return value


def counts_range(req: pb.GetCountsRequest) -> tuple[datetime, datetime]:
    v = Validator()
    v.ident("camera_id", req.camera_id)
    start = v.timestamp("start_time", req.start_time)
    end = v.timestamp("end_time", req.end_time)
    if start is not None and end is not None:
        if end <= start:
            v.fail("end_time", "must be after start_time")
        elif end - start > MAX_COUNTS_RANGE:
            v.fail("end_time", "the range is at most 24 h")
    v.check()
    assert start is not None and end is not None
    return start.replace(second=0, microsecond=0), end


# ----- frames in -----------------------------------------------------------------------------------


def frame_image(frame: pb.Frame) -> frames.Image:
    """The frame's image after the header checks; InvalidArgument naming the field."""
    which = frame.WhichOneof("image")
    try:
        if which == "encoded":
            return frames.inspect_encoded(frame.encoded)
        if which == "raw_bgr":
            r = frame.raw_bgr
            return frames.inspect_raw(r.data, r.width, r.height)
    except frames.FrameError as exc:
        raise InvalidArgument(FieldViolation(f"frame.{which}", str(exc))) from None
    raise InvalidArgument(FieldViolation("frame.image", "set encoded (JPEG/PNG) or raw_bgr"))


def captured_at(frame: pb.Frame, now: datetime, max_future_s: float) -> datetime:
    if not frame.HasField("captured_at"):
        return now
    v = Validator()
    at = v.timestamp("frame.captured_at", frame.captured_at, max_future_s=max_future_s, now=now)
    v.check()
    assert at is not None and at >= EARLIEST
    return at


# ----- out -----------------------------------------------------------------------------------------


def error_status(error: DomainError) -> status_pb2.Status:
    return to_status_proto(error)


def plain_status(code: int, reason: str, message: str) -> status_pb2.Status:
    """A status for codes the domain errors do not name (DEADLINE_EXCEEDED, INTERNAL)."""
    status = status_pb2.Status(code=code, message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    status.details.append(info)
    return status


def deadline_status(waited_ms: float, deadline_ms: int) -> status_pb2.Status:
    return plain_status(code_pb2.DEADLINE_EXCEEDED, "FRAME_DEADLINE_EXCEEDED",
                        f"the frame waited {waited_ms:.0f} ms for inference; its deadline is {deadline_ms} ms")


def internal_status() -> status_pb2.Status:
    return plain_status(code_pb2.INTERNAL, "INTERNAL", "internal error while processing the frame")


def _box(x1: float, y1: float, x2: float, y2: float) -> pb.PixelBox:
    return pb.PixelBox(x_min=round(x1, 1), y_min=round(y1, 1), x_max=round(x2, 1), y_max=round(y2, 1))


def detection_proto(d: Detection) -> pb.Detection:
    return pb.Detection(box=_box(d.x1, d.y1, d.x2, d.y2), object_class=CLASS_TO_PROTO[d.vehicle_class],  # type: ignore[arg-type]
                        confidence=round(d.score, 4))


def object_proto(o: TrackedObject) -> pb.Detection:
    out = pb.Detection(box=_box(o.box.x1, o.box.y1, o.box.x2, o.box.y2),
                       object_class=CLASS_TO_PROTO[o.object_class],  # type: ignore[arg-type]
                       confidence=round(o.confidence, 4), track_id=o.track_id, lane_id=o.lane_id)
    if o.lat_lon is not None:
        out.ground_position.CopyFrom(cpb.LatLon(lat=round(o.lat_lon[0], 7), lon=round(o.lat_lon[1], 7)))
    if o.speed_mps is not None:
        out.speed_mps = o.speed_mps
    if o.heading_deg is not None:
        out.heading_deg = o.heading_deg
    return out


def plate_proto(p: PlateReading) -> pb.Plate:
    out = pb.Plate(text=p.text, colour=p.colour, confidence=round(p.confidence, 4),  # type: ignore[arg-type]
                   box=_box(*p.box))
    for x, y in p.corners:
        out.corners.add(x=round(x, 1), y=round(y, 1))
    return out


def event_proto(e: Event, snapshot: bytes = b"", plate: PlateReading | None = None) -> pb.AnalyticsEvent:
    out = pb.AnalyticsEvent(
        event_id=e.event_id, type=int(e.type), camera_id=e.camera_id, frame_id=e.frame_id,  # type: ignore[arg-type]
        observed_at=ts(e.observed_at), track_id=e.track_id,
        object_class=CLASS_TO_PROTO[e.object_class] if e.object_class else 0,  # type: ignore[arg-type]
        position=cpb.LatLon(lat=round(e.lat, 7), lon=round(e.lon, 7)), lane_id=e.lane_id, zone_id=e.zone_id,
        confidence=e.confidence, stationary_s=e.stationary_s, snapshot_jpeg=snapshot,
        congestion=int(e.congestion) if e.congestion else 0,  # type: ignore[arg-type]
        queue_length_m=e.queue_length_m,
    )
    if e.speed_mps is not None:
        out.speed_mps = e.speed_mps
    if e.heading_deg is not None:
        out.heading_deg = e.heading_deg
    if plate is not None:
        out.plate.CopyFrom(plate_proto(plate))
    return out


def lane_status_proto(s: LaneStatus) -> pb.LaneStatus:
    out = pb.LaneStatus(lane_id=s.lane_id, vehicles=s.vehicles, standing_vehicles=s.standing,
                        queue_length_m=s.queue_length_m, congestion=int(s.congestion))  # type: ignore[arg-type]
    if s.mean_speed_mps is not None:
        out.mean_speed_mps = s.mean_speed_mps
    return out


def minute_proto(m: MinuteCounts) -> pb.MinuteCounts:
    out = pb.MinuteCounts(minute_start=ts(m.minute_start), frames=m.frames)
    for lane in m.lanes:
        item = out.lanes.add(lane_id=lane.lane_id, vehicles=lane.vehicles, wrong_way_vehicles=lane.wrong_way,
                             max_queue_length_m=lane.max_queue_m, congestion=int(lane.congestion))
        if lane.mean_speed_mps is not None:
            item.mean_speed_mps = lane.mean_speed_mps
    for line in m.lines:
        out.lines.add(line_id=line.line_id, positive=line.positive, negative=line.negative)
    return out


def utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
