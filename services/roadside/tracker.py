"""Multi-object tracking: stable per-camera track ids for the detections of consecutive frames.

Association by motion: each track predicts where its box centre is now from its last box and its velocity
(constant velocity, pixels per second, blended over its last steps), and detections go to the tracks whose
prediction they lie nearest, in box diagonals, closest pairs first over the whole frame (greedy), within a gate:

* a track with a velocity: 0.6 of a diagonal, plus 1 diagonal per second since it was last seen (a missed frame
  or two, a car braking or pulling away);
* a track seen once (velocity unknown): a diagonal, or 3 diagonals a second since (a car at 60 km/h at 1.5 frames/s),
  the size difference weighing double (UNKNOWN_SIZE_WEIGHT);
* a track standing still: a quarter of a diagonal, plus a tenth per second since (a standing car hidden by passing
  traffic is still there; the moving gate gave it the passing car's box); none at all when it has missed more than
  STANDING_MAX_MISSED frames in a row both before its last box and since: a vehicle standing in view is found on most
  frames, and a "standing" track seen once every few frames is a place, not a vehicle (below);
* boxes of about the track's size only (half to twice its width and height);
* a box on another lane than the track's last one (when the camera's lanes are given: ``lane_of``; off the lanes
  counts as a lane) is farther by CROSS_LANE_PENALTY: a car keeps its lane from one frame to the next far more often
  than it changes lanes, and a car parked beside the lanes stays off them.
* never a box on a lane whose traffic runs against the track's last lane (``opposed``): a car does not cross to the
  other side of the road between two frames. Traced on a replayed `v2x sim score` run: a car driving into the
  junction, missed on a frame, had its track take the box of a car coming out on the lane beside; that car was
  counted there under the first car's track, as a lane change, and again on its own next track. Three 600 s runs
  (seeds 13, 2, 3) replayed with the detector's boxes (load/replay_analytics.py --boxes detector), count MAPE over
  the 60 minute phases 5.32 / 3.89 / 5.84 -> 4.43 / 3.88 / 5.11 %, speed RMSE 2.95 / 3.10 / 3.32 -> 2.81 / 2.99 /
  3.27 km/h, every event as before.

A detection that no track takes starts one when its score is at least the high confidence; a track unseen for
1.5 s is dropped. Why not ByteTrack (``edgefirst-tracker``, used before; `supervision`'s is the same scheme): its
association is IoU of the detection with the track's Kalman-predicted box. At 3 frames/s a car in these cameras'
zoomed view moves about its own box width between frames, so a moving car's box overlaps its predicted box less than
it overlaps the box of a car standing behind it, or of the track of another car: measured on a 300 s scored run's
frames with exact boxes (load/replay_analytics.py), fast cars were cut into 2..4 tracks, a car passing in front of a
stalled one took the stalled car's track (its speed read 0..4 km/h, it was counted on the stalled car's lane), and
count MAPE was 13 % and speed RMSE 3.8 km/h with exact boxes; association by the predicted centre: 7 % and 3.2 km/h.

We add:

* a class-agnostic merge of duplicate boxes before tracking (YOLOv3-tiny sometimes puts a car and a
  truck box on one pickup, and NMS runs per class), so that one vehicle is one track;
* int64 track ids that stay unique per camera across service restarts: the first sighting's capture
  time in milliseconds times 1000 plus a counter;
* the class of a track by majority vote over its detections, so a car/truck flicker does not flip it.

Positions handed on to analytics are the detections' own boxes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from services.roadside.detector import Detection, VehicleClass
from services.roadside.model import VEHICLES

# Association gates in box diagonals: a track with a velocity, at the next frame and per second since it was last
# seen; a track seen once, at least and per second since. (Chosen on a scored run's frames replayed, exact boxes and
# the detector's: tighter known gates cut fast cars into more tracks, wider ones swap cars in a queue.)
KNOWN_GATE = 0.6
KNOWN_GATE_PER_S = 1.0
UNKNOWN_GATE = 1.0
UNKNOWN_GATE_PER_S = 3.0
# A track standing still (its velocity under STANDING_SPEED box diagonals a second) takes a box only near where it
# stands, and its gate barely widens while it is unseen: a standing car hidden by passing traffic is still there when it
# shows again, or pulling away, a metre or so in a second. With the moving tracks' gate, a car passing in front of a
# parked or stalled one took its track: the passing car was never counted (the track had counted its lane already) and
# the standing one was counted again on its next track. Replayed `v2x sim score` runs, the detector's boxes
# (load/replay_analytics.py --boxes detector, two 600 s runs): count MAPE 17.0 -> 12.8 % and 18.9 -> 16.2 %, speed
# RMSE 3.31 -> 3.27 and 3.87 -> 3.65 km/h, events unchanged; exact boxes 5.2 -> 6.2 % and 10.6 -> 11.1 %.
STANDING_SPEED = 0.2
STANDING_GATE = 0.25
STANDING_GATE_PER_S = 0.1
# A standing track that came back after missing more than this many frames in a row, and has missed more again, takes
# no box. Traced on a replayed `v2x sim score` run (seed 3): a platoon at 45 km/h passing a stalled car, a car every
# four frames, each car's boxes at the same few places in the picture; the tracks left at those places (standing:
# each took the next car's box where the last one's had been) took every car's box there in turn, so that no car kept
# a track of its own and, the places' tracks counted already, 9 cars of the platoon were not counted. A car standing in
# view is found on most frames, hidden by passing traffic for a frame or two. Three 600 s runs replayed with the
# detector's boxes (load/replay_analytics.py --boxes detector), count MAPE over the 60 minute phases 4.47 / 3.74 / 5.29
# -> 4.44 / 3.47 / 5.10 % (default, seed 2, seed 3; cars missed 20 / 28 / 31 -> 20 / 15 / 21), speed RMSE 2.81 / 2.99 /
# 3.27 -> 2.71 / 2.50 / 2.61 km/h, queue error while queued 6.04 / 3.80 / 3.51 -> 5.79 / 3.34 / 3.18 m; seed 3's false
# 707 (those tracks, standing behind the stalled car, made a queue) is gone, every other event as before. (Dropping
# every standing track unseen for a second, without the condition on the gap before its last box: the default run 4.47
# -> 4.90 %, a parked car's track lost while a passing vehicle hid it, and a false 904 on seed 3.)
STANDING_MAX_MISSED = 2
# A box's size differs from its track's (ln of the width and height ratios) at this weight per unit, added to the
# distance: the same car grows or shrinks a little between frames, a car in the lane nearer the camera passing in front
# of a standing one is a third bigger (replayed runs, detector's boxes: count MAPE 31.8 -> 28.5 %, speed RMSE 3.45 ->
# 3.31 km/h; exact boxes 7.4 -> 7.2 %, 3.06 -> 2.94 km/h).
SIZE_WEIGHT = 1.0
# For a track seen once: it has no velocity, so its predicted centre is its last one, while at 3 frames/s a car has
# moved about its own box width since; the box's size (its distance from the camera, its lane in perspective) tells
# the car from the next one of a platoon on the lane beside, nearer than where the car got to, better (replayed 600 s
# run, exact boxes: count MAPE 5.1 -> 4.6 %, 30 % missed 21.6 -> 21.4 % over 6 seeds, the detector's boxes 21.0 ->
# 20.2 %; 3 gained no more on counts and did worse with boxes missed).
UNKNOWN_SIZE_WEIGHT = 2.0
# A box on another lane than the track's is this much farther (box diagonals). Without it, a track whose car the
# detector missed on a frame took the box of the car beside it on the next lane, queued or passing: traced on a
# replayed `v2x sim score` run, 21 of its 46 double counts were made on the frame a track went over to another car.
# Three 600 s runs (seeds 1, 2, 1) replayed with the detector's boxes (load/replay_analytics.py --boxes detector),
# count MAPE 9.4 / 11.8 / 11.9 % without: 0.2 6.3 / 8.7 / 9.4, **0.4 6.3 / 6.6 / 8.2**, (first two runs) 0.3 7.2 / 7.5,
# 0.5 7.3 / 7.3; exact boxes 3.2 / 3.2 / 3.7 -> 2.0 / 3.2 / 2.2 %; speed RMSE 3.20 / 3.49 / 3.20 -> 2.98 / 3.24 /
# 2.98 km/h; every event type as before, with the crash rule's cars in line along their lane (analytics.py,
# CRASH_ASIDE_M): without that, two cars of a jam's queue on neighbouring lanes, kept apart by the cost, raised 1001.
# (Spared to standing tracks, or to tracks seen once, the cost left false 707 and 901 on other runs.)
# Off the lanes counts as a lane of its own: a car parked at the kerb beside the lanes, and one passing it on the lane,
# are on different lanes. Without that, a passing car's track seen once took the parked car's box on its second frame
# (nearer its first box than where the car had got to), and the parked car's standing track took the passing car's:
# the passing car was never counted, traced on a replayed run. Two 600 s runs (seeds 1, 2) replayed with the
# detector's boxes: count MAPE 9.0 / 10.0 -> 7.1 / 7.8 %, exact boxes and every event type unchanged.
CROSS_LANE_PENALTY = 0.4
SIZE_RATIO = 2.0  # a track takes boxes from half to twice its width and height
VELOCITY_BLEND = 0.7  # weight of the newest step in a track's velocity


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    # Detections above this start tracks; below it they can only continue one. The detector already drops vehicles
    # below 0.35 (services/roadside/detector.py); at 416 x 416 cars standing bumper to bumper in a queue scored
    # 0.30..0.39 (`v2x sim score`'s jam: at 0.45 none of its 12 cars was tracked, so no queue and no 707).
    high_confidence: float = 0.3
    lifespan_s: float = 1.5  # a track unmatched this long is dropped
    duplicate_overlap: float = 0.8  # intersection / smaller area above which two vehicle boxes are one


@dataclass(slots=True)
class _Track:
    track_id: int
    box: tuple[float, float, float, float]
    last_ns: int
    velocity: tuple[float, float] | None = None  # centre pixels per second
    votes: Counter[VehicleClass] = field(default_factory=Counter)
    lane: str = ""  # the lane of its last box ("" off the lanes, or no lanes given)
    gap_ns: int = 0  # how long it had been unseen when it got its last box

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def predicted(self, ns: int) -> tuple[float, float]:
        dt = (ns - self.last_ns) / 1e9
        vx, vy = self.velocity or (0.0, 0.0)
        cx, cy = self.centre
        return cx + vx * dt, cy + vy * dt

    def distance_to(self, d: Detection, ns: int, lane: str = "", frame_ns: int = 0) -> float | None:
        """Distance of the detection's centre from the predicted one in box diagonals, plus its size difference and
        a lane change (``lane``: the detection's); None outside the gate. ``frame_ns``: the camera's frame interval
        (0: unknown)."""
        w0, h0 = max(self.box[2] - self.box[0], 1.0), max(self.box[3] - self.box[1], 1.0)
        w, h = max(d.width, 1.0), max(d.height, 1.0)
        if not (1 / SIZE_RATIO <= w / w0 <= SIZE_RATIO and 1 / SIZE_RATIO <= h / h0 <= SIZE_RATIO):
            return None
        px, py = self.predicted(ns)
        diagonal = math.hypot(w + w0, h + h0) / 2
        distance = math.hypot(px - (d.x1 + d.x2) / 2, py - (d.y1 + d.y2) / 2) / diagonal
        dt = (ns - self.last_ns) / 1e9
        if self.velocity is None:
            gate = max(UNKNOWN_GATE, UNKNOWN_GATE_PER_S * dt)
        elif math.hypot(*self.velocity) < STANDING_SPEED * math.hypot(w0, h0):
            # More than STANDING_MAX_MISSED frames missed is a gap of STANDING_MAX_MISSED + 2 intervals or more; the
            # bound sits half an interval short of that, as capture times jitter.
            if frame_ns and min(ns - self.last_ns, self.gap_ns) > (STANDING_MAX_MISSED + 1.5) * frame_ns:
                return None
            gate = STANDING_GATE + STANDING_GATE_PER_S * dt
        else:
            gate = KNOWN_GATE + KNOWN_GATE_PER_S * dt
        if lane != self.lane:
            distance += CROSS_LANE_PENALTY
        if distance > gate:
            return None
        weight = SIZE_WEIGHT if self.velocity is not None else UNKNOWN_SIZE_WEIGHT
        return distance + weight * (abs(math.log(w / w0)) + abs(math.log(h / h0)))

    def observe(self, d: Detection, ns: int) -> None:
        if ns > self.last_ns:
            dt = (ns - self.last_ns) / 1e9
            cx, cy = self.centre
            step = (((d.x1 + d.x2) / 2 - cx) / dt, ((d.y1 + d.y2) / 2 - cy) / dt)
            self.velocity = step if self.velocity is None else (
                VELOCITY_BLEND * step[0] + (1 - VELOCITY_BLEND) * self.velocity[0],
                VELOCITY_BLEND * step[1] + (1 - VELOCITY_BLEND) * self.velocity[1])
        self.gap_ns = ns - self.last_ns
        self.box, self.last_ns = (d.x1, d.y1, d.x2, d.y2), ns

    def vote(self, c: VehicleClass) -> VehicleClass:
        self.votes[c] += 1
        return self.votes.most_common(1)[0][0]


def merge_duplicates(detections: Sequence[Detection], overlap: float) -> list[Detection]:
    """Drops a vehicle box that mostly covers, or is mostly covered by, a higher-scoring vehicle box."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        if d.vehicle_class in VEHICLES:
            duplicate = False
            for k in kept:
                if k.vehicle_class not in VEHICLES:
                    continue
                ix = max(0.0, min(d.x2, k.x2) - max(d.x1, k.x1))
                iy = max(0.0, min(d.y2, k.y2) - max(d.y1, k.y1))
                smaller = min(d.width * d.height, k.width * k.height)
                if smaller > 0 and ix * iy / smaller >= overlap:
                    duplicate = True
                    break
            if duplicate:
                continue
        kept.append(d)
    return kept


class Tracker:
    """One camera's tracker. Not thread-safe: one frame at a time, in capture order."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._counter = 0
        self._last_ns: int | None = None
        self._frame_ns = 0  # the last interval between two frames
        # The last frame's detections that belong to no track: low-confidence ones no track took. (Not the duplicates
        # merged into a vehicle's box, nor a tracked detection whose class the track's vote changed: each is a vehicle
        # already answered with its track.)
        self.untracked: list[Detection] = []

    def _new_id(self, timestamp_ns: int) -> int:
        self._counter = (self._counter + 1) % 1000
        return (timestamp_ns // 1_000_000) * 1000 + self._counter

    def update(self, detections: Sequence[Detection], timestamp_ns: int,
               lane_of: Callable[[Detection], str] | None = None,
               opposed: Callable[[str, str], bool] | None = None) -> list[tuple[int, Detection]]:
        """(track id, detection) for every detection that belongs to a track; unmatched low-confidence
        detections are left out. Detections keep their boxes; the class is the track's vote. ``lane_of``: the lane
        a detection is on ("" off the lanes), when the camera's lanes are known; ``opposed``: whether traffic on two
        lanes runs opposite ways, so that no track goes from one to the other."""
        ns = timestamp_ns
        if self._last_ns is not None and ns > self._last_ns:
            self._frame_ns = ns - self._last_ns
        self._last_ns = ns
        lifespan_ns = int(self.config.lifespan_s * 1e9)
        self._tracks = [t for t in self._tracks if ns - t.last_ns <= lifespan_ns]
        merged = merge_duplicates(detections, self.config.duplicate_overlap)
        lanes = [lane_of(d) for d in merged] if lane_of is not None else [""] * len(merged)
        pairs: list[tuple[float, int, int]] = []
        for k, d in enumerate(merged):
            for i, t in enumerate(self._tracks):
                if t.last_ns >= ns or (opposed is not None and opposed(t.lane, lanes[k])):
                    continue
                distance = t.distance_to(d, ns, lanes[k], self._frame_ns)
                if distance is not None:
                    pairs.append((distance, k, i))
        taken: dict[int, _Track] = {}
        used: set[int] = set()
        for _, k, i in sorted(pairs):
            if k not in taken and i not in used:
                taken[k] = self._tracks[i]
                used.add(i)
        out: list[tuple[int, Detection]] = []
        self.untracked = []
        for k, d in enumerate(merged):
            track = taken.get(k)
            if track is None:
                if d.score < self.config.high_confidence:
                    self.untracked.append(d)
                    continue
                track = _Track(self._new_id(ns), (d.x1, d.y1, d.x2, d.y2), ns)
                self._tracks.append(track)
            else:
                track.observe(d, ns)
            track.lane = lanes[k]
            voted = track.vote(d.vehicle_class)
            if voted is not d.vehicle_class:
                d = replace(d, vehicle_class=voted)
            out.append((track.track_id, d))
        return out

    @property
    def active_tracks(self) -> int:
        return len(self._tracks)
