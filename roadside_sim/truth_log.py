"""Ground truth of a simulator run, kept for scoring and written as JSON lines next to the run:

* ``frames.jsonl``: per camera and frame, every visible vehicle's box (its visible pixels), class, visible
  fraction, speed and lane, and the queue length of each lane coming in (E2 detectors, metres);
* ``minutes.jsonl``: per camera, lane and minute, the vehicles that entered the camera's stretch of the lane (and
  which, when: to trace a wrong count to its vehicle), and per counting line the crossings in each direction, the
  longest queue and the mean speed;
* ``events.jsonl``: every injected event with its start, end, hold and position (WGS-84);
* ``spots.jsonl``: every change of an on-street spot's true state;
* ``results.jsonl``: what the roadside service answered per frame (detections, lane states, events).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2  # noqa: F401  (the ErrorInfo in a failed frame's error, for MessageToDict)
from v2x.roadside.v1 import roadside_pb2 as rpb

from roadside_sim.cameras import COUNT_LINE_M, FAR_M, NEAR_M, CameraRig
from roadside_sim.render import RenderedBox, VehicleState
from roadside_sim.scenario import HOLD_S

if TYPE_CHECKING:
    from roadside_sim.run import SimRun

SPOT_OCCUPIED_AFTER_S = 10.0  # the roadside rule: standing in the spot this long
SPOT_FREE_AFTER_S = 5.0
CROSSING_MAX_GAP_S = 1.0  # frames further apart than this (a stall of the simulator) give no crossing time between them


@dataclass
class FrameTruth:
    camera_id: str
    frame_id: int
    captured_at: datetime
    sim_s: float
    boxes: list[RenderedBox]
    speeds: dict[str, float]
    lanes: dict[str, str]
    queues: dict[str, float]  # lane id -> metres (lanes coming in)


@dataclass
class LaneMinuteTruth:
    vehicles: int = 0
    entered: list[tuple[str, float]] = field(default_factory=list)  # vehicle id, capture time (epoch s)
    max_queue_m: float = 0.0
    speeds: list[float] = field(default_factory=list)


@dataclass
class SpotTruth:
    state: str = "FREE"  # as the documented rule would report it
    occupied_since: float | None = None
    empty_since: float | None = 0.0


def came_on(previous: tuple[float, float] | None, along: float, t: float) -> float:
    """When a vehicle first found on the stretch at ``t`` (its centre ``along`` the approach) came onto it: where its
    last frame had it outside the stretch, the moment it crossed the stretch's end, between the two frames at its
    speed over them; otherwise at ``t`` (it came into view there, or changed lanes between the frames). The frame's own
    time is up to a frame interval after the crossing (a third of a second at 3 frames/s), which at a minute's turn
    puts the vehicle in the next minute, while the service's count estimates the crossing itself."""
    if previous is None:
        return t
    before, then = previous
    if NEAR_M <= before <= FAR_M or before == along or not 0 < t - then <= CROSSING_MAX_GAP_S:
        return t
    end = FAR_M if before > FAR_M else NEAR_M
    return then + (before - end) / (before - along) * (t - then)


class TruthLog:
    def __init__(self, out: Path, rigs: list[CameraRig]) -> None:
        self.out = out
        self.rigs = {r.camera_id: r for r in rigs}
        self.frames: dict[tuple[str, int], FrameTruth] = {}
        self.results: dict[tuple[str, int], rpb.FrameResult] = {}
        self.minutes: dict[tuple[str, str, int], LaneMinuteTruth] = defaultdict(LaneMinuteTruth)
        self.lines: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
        self._counted: set[tuple[str, str, str]] = set()
        self._along: dict[tuple[str, str], tuple[float, float]] = {}  # (camera, vehicle) -> (along, capture time)
        self.spot_truth: dict[tuple[str, str], SpotTruth] = {}
        self.spot_history: list[tuple[datetime, str, str, str]] = []
        self._spots_logged: set[tuple[str, str]] = set()
        self.event_truth: list[dict[str, Any]] = []
        self._frames = (out / "frames.jsonl").open("w")
        self._results = (out / "results.jsonl").open("w")
        self._spots = (out / "spots.jsonl").open("w")

    def frame(self, rig: CameraRig, frame_id: int, captured: datetime, sim_s: float, boxes: list[RenderedBox],
              vehicles: list[VehicleState], queues: dict[str, float]) -> None:
        a = rig.approach
        by_id = {v.vid: v for v in vehicles}
        lanes_in = {lane.id for lane in a.lanes_in}
        lanes_all = lanes_in | {lane.id for lane in a.lanes_out}
        minute = int(captured.timestamp() // 60) * 60
        speeds: dict[str, float] = {}
        lanes: dict[str, str] = {}
        for b in boxes:
            v = by_id.get(b.vid)
            if v is None:
                continue
            speeds[b.vid] = v.speed_mps
            lanes[b.vid] = v.lane_id if v.lane_id in lanes_all and not v.parked else ""
        # Lane counts: a vehicle counts once per lane, when it is first seen on the camera's stretch of it (once: a car
        # that parks at the kerb there and drives off again has come onto the stretch once, as a track that follows it
        # through its stay counts it once).
        for v in vehicles:
            if v.lane_id not in lanes_all or v.parked:
                continue
            cx = v.east - math.sin(math.radians(v.heading_deg)) * v.length / 2
            cy = v.north - math.cos(math.radians(v.heading_deg)) * v.length / 2
            along, _ = a.coordinates((cx, cy))
            key = (rig.camera_id, v.vid)
            previous = self._along.get(key)
            before = previous[0] if previous is not None else None
            self._along[key] = (along, captured.timestamp())
            if v.lane_id in lanes_in and before is not None and v.speed_mps > 0.3:
                moving_in = along < before
                if (before - COUNT_LINE_M) * (along - COUNT_LINE_M) < 0:
                    self.lines[(rig.camera_id, "in", minute)][0 if moving_in else 1] += 1
            if NEAR_M <= along <= FAR_M and (rig.camera_id, v.lane_id, v.vid) not in self._counted \
                    and v.vid in speeds:
                self._counted.add((rig.camera_id, v.lane_id, v.vid))
                at = came_on(previous, along, captured.timestamp())
                m = self.minutes[(rig.camera_id, v.lane_id, int(at // 60) * 60)]
                m.vehicles += 1
                m.entered.append((v.vid, round(at, 3)))
            if NEAR_M <= along <= FAR_M:
                self.minutes[(rig.camera_id, v.lane_id, minute)].speeds.append(v.speed_mps)
        for lane, q in queues.items():
            if lane in lanes_in:
                m = self.minutes[(rig.camera_id, lane, minute)]
                m.max_queue_m = max(m.max_queue_m, q)
        ours = {lane: q for lane, q in queues.items() if lane in lanes_in}
        t = FrameTruth(rig.camera_id, frame_id, captured, sim_s, boxes, speeds, lanes, ours)
        self.frames[(rig.camera_id, frame_id)] = t
        self._frames.write(json.dumps({
            "camera": rig.camera_id, "frame_id": frame_id, "captured_at": captured.isoformat(),
            "sim_s": round(sim_s, 2),
            "boxes": [{"vid": b.vid, "class": str(b.object_class), "box": [int(c) for c in b.box],
                       "visible": round(b.visible, 3), "speed_mps": round(speeds.get(b.vid, 0.0), 3),
                       "lane": lanes.get(b.vid, "")} for b in boxes],
            "queues_m": {k: round(v, 2) for k, v in ours.items()}}) + "\n")

    def spots(self, captured: datetime, sim_s: float, vehicles: list[VehicleState]) -> None:
        t = captured.timestamp()
        for rig in self.rigs.values():
            for spot in rig.spots:
                key = (rig.lot_id, spot.spot_id)
                st = self.spot_truth.setdefault(key, SpotTruth())
                a = rig.approach
                near = min(rig.approach.coordinates(c)[0] for c in spot.corners)
                far = max(rig.approach.coordinates(c)[0] for c in spot.corners)
                occupied = False
                for v in vehicles:
                    if not v.parked or v.lane_id not in {lane.id for lane in a.lanes_out}:
                        continue
                    cx = v.east - math.sin(math.radians(v.heading_deg)) * v.length / 2
                    cy = v.north - math.cos(math.radians(v.heading_deg)) * v.length / 2
                    along, _ = a.coordinates((cx, cy))
                    occupied = occupied or near <= along <= far
                if occupied:
                    st.empty_since = None
                    st.occupied_since = st.occupied_since if st.occupied_since is not None else t
                    new = "OCCUPIED" if t - st.occupied_since >= SPOT_OCCUPIED_AFTER_S else st.state
                else:
                    st.occupied_since = None
                    st.empty_since = st.empty_since if st.empty_since is not None else t
                    new = "FREE" if st.empty_since == 0.0 or t - st.empty_since >= SPOT_FREE_AFTER_S else st.state
                if new != st.state or key not in self._spots_logged:
                    self._spots_logged.add(key)
                    st.state = new
                    self.spot_history.append((captured, key[0], key[1], new))
                    self._spots.write(json.dumps({"at": captured.isoformat(), "lot": key[0], "spot": key[1],
                                                  "state": new}) + "\n")

    def spot_state_at(self, lot: str, spot: str, at: datetime) -> str | None:
        state = None
        for when, lot_id, spot_id, s in self.spot_history:
            if when > at:
                break
            if (lot_id, spot_id) == (lot, spot):
                state = s
        return state

    def result(self, camera_id: str, r: rpb.FrameResult) -> None:
        self.results[(camera_id, r.frame_id)] = r
        self._results.write(json.dumps(MessageToDict(r, preserving_proto_field_name=True)) + "\n")

    def events(self, run: SimRun) -> None:
        with (self.out / "events.jsonl").open("w") as f:
            for inj in run.injections:
                rig = inj.rig
                lat, lon = rig.frame.to_wgs84(*inj.position) if inj.position else (None, None)
                row = {"type": int(inj.kind), "camera": rig.camera_id, "lane": inj.lane_id,
                       "injected_at": run.wall_of(inj.at_s).isoformat(),
                       "start": run.wall_of(inj.start_s).isoformat() if inj.start_s is not None else None,
                       "end": run.wall_of(inj.end_s).isoformat() if inj.end_s is not None else None,
                       "hold_s": HOLD_S[inj.kind], "lat": lat, "lon": lon, "vehicles": inj.vids}
                self.event_truth.append(row)
                f.write(json.dumps(row) + "\n")
        with (self.out / "minutes.jsonl").open("w") as f:
            for (camera, lane, minute), m in sorted(self.minutes.items()):
                f.write(json.dumps({"camera": camera, "lane": lane, "minute": minute, "vehicles": m.vehicles,
                                    "entered": m.entered,
                                    "max_queue_m": round(m.max_queue_m, 2),
                                    "mean_speed_mps": round(sum(m.speeds) / len(m.speeds), 3) if m.speeds else None})
                        + "\n")
            for (camera, line, minute), (pos, neg) in sorted(self.lines.items()):
                f.write(json.dumps({"camera": camera, "line": line, "minute": minute, "positive": pos,
                                    "negative": neg}) + "\n")

    def close(self) -> None:
        for f in (self._frames, self._results, self._spots):
            f.close()
