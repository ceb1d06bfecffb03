"""Builders for roadside tests: simulated frames and the analytics run over synthetic tracks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import cv2
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.scene import Scene, SimVehicle
from services.roadside import convert
from services.roadside.analytics import CameraAnalytics
from services.roadside.detector import DEFAULT_CAMERA_FLOORS, Detection, VehicleClass
from services.roadside.model import CameraSpec, Event, EventType, LaneStatus, MinuteCounts, SpotChange
from services.roadside.tracker import Tracker

T0 = datetime(2026, 11, 24, 8, 0, 0, tzinfo=UTC)


@dataclass
class Run:
    events: list[Event] = field(default_factory=list)
    spot_changes: list[SpotChange] = field(default_factory=list)
    lanes: list[list[LaneStatus]] = field(default_factory=list)
    speeds: dict[int, list[float]] = field(default_factory=dict)
    track_ids: set[int] = field(default_factory=set)
    analytics: CameraAnalytics | None = None

    def of(self, kind: EventType) -> list[Event]:
        return [e for e in self.events if e.type is kind]

    @property
    def minutes(self) -> list[MinuteCounts]:
        assert self.analytics is not None
        return self.analytics.minutes()

    def lane_total(self, lane_id: str) -> tuple[int, int]:
        """(vehicles with the lane's direction, wrong-way vehicles) over all minutes."""
        with_, against = 0, 0
        for m in self.minutes:
            for lane in m.lanes:
                if lane.lane_id == lane_id:
                    with_ += lane.vehicles
                    against += lane.wrong_way
        return with_, against

    def line_total(self, line_id: str) -> tuple[int, int]:
        pos, neg = 0, 0
        for m in self.minutes:
            for line in m.lines:
                if line.line_id == line_id:
                    pos += line.positive
                    neg += line.negative
        return pos, neg


def spec_of(camera: pb.Camera) -> CameraSpec:
    """The camera as its session sees it with the default model (YOLOv3-tiny's floors where it sets none)."""
    return convert.camera_spec(camera).with_floors(DEFAULT_CAMERA_FLOORS)


def run_tracks(scene: Scene, vehicles: Sequence[SimVehicle], end_s: float, *, fps: float = 5.0,
               camera: pb.Camera | None = None, jitter_px: float = 0.0, seed: int = 7,
               frame_size: tuple[int, int] | None = None) -> Run:
    """Synthetic tracks → detections → tracker → analytics, frame by frame at `fps` from t=0."""
    spec = spec_of(camera or scene.camera("sim"))
    analytics = CameraAnalytics(spec)
    tracker = Tracker()
    rng = random.Random(seed)
    run = Run(analytics=analytics)
    size = frame_size or scene.size
    sx, sy = size[0] / scene.size[0], size[1] / scene.size[1]
    n = round(end_s * fps)
    for i in range(n + 1):
        t = i / fps
        at = T0 + timedelta(seconds=t)
        detections = [Detection(VehicleClass(b.object_class.value), b.score, b.x1 * sx, b.y1 * sy, b.x2 * sx,
                                b.y2 * sy, b.object_class.value)
                      for b in scene.detections(vehicles, t, jitter_px=jitter_px, rng=rng)]
        tracked = tracker.update(detections, int(at.timestamp() * 1e9))
        result = analytics.process(at, i, tracked, size)
        run.events.extend(result.events)
        run.spot_changes.extend(result.spot_changes)
        run.lanes.append(result.lanes)
        for o in result.objects:
            run.track_ids.add(o.track_id)
            if o.speed_mps is not None:
                run.speeds.setdefault(o.track_id, []).append(o.speed_mps)
    return run


def sim_frame(scene: Scene, vehicles: Sequence[SimVehicle], camera_id: str, frame_id: int, t: float,
              t0: datetime, *, fmt: str = "png") -> pb.Frame:
    image = scene.render(vehicles, t)
    frame = pb.Frame(camera_id=camera_id, frame_id=frame_id)
    frame.captured_at.FromDatetime(t0 + timedelta(seconds=t))
    if fmt == "raw":
        frame.raw_bgr.CopyFrom(pb.RawBgrImage(data=image.tobytes(), width=image.shape[1], height=image.shape[0]))
    else:
        ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", image)
        assert ok
        frame.encoded = buf.tobytes()
    return frame


def sim_frames(scene: Scene, vehicles: Sequence[SimVehicle], camera_id: str, end_s: float, t0: datetime, *,
               fps: float = 2.0, fmt: str = "png", first_id: int = 1) -> list[pb.Frame]:
    n = round(end_s * fps)
    return [sim_frame(scene, vehicles, camera_id, first_id + i, i / fps, t0, fmt=fmt) for i in range(n + 1)]
