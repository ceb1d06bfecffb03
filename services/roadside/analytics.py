"""Per-camera traffic analytics on tracked objects: counts, queues, speeds, congestion and events.

``CameraAnalytics.process`` takes one frame's tracked detections (in capture order) and returns what
the frame shows: the objects with ground positions, speeds and lanes; the events raised on this frame;
each lane's live state; parking spots that changed state. Per-minute counts accumulate inside and
are read with ``minutes()``. Pure Python + the camera's geometry: no I/O, no grpc.

Definitions (the issue leaves them open; constants below):

* Position of an object: the bottom centre of its box (where it touches the ground), mapped through the
  camera's homography to metres and WGS-84. Speed and heading: least-squares velocity of the ground
  positions over the last 1.2 s (at least 2 positions 0.25 s apart: a car at 80 km/h crosses a zoomed
  camera in a second; was 0.4 s, `v2x sim score` saw such cars get no speed before they left), since the track last
  jumped: a position more than 3 m from where its velocity put it (another vehicle's box given to the track, a box
  cut by a passing vehicle, a car put into a parking spot) starts the velocity again.
* Standing: the object stayed within 2 m (uncalibrated: a quarter of its box height) of an anchor
  point; standing time is the time since the anchor was set (a standing vehicle's one box outside the radius, as
  when a passing vehicle's box is given to its track for a frame, is set aside: the track stays where it stood
  unless the next box confirms the move). Standing in a zone counts from the later of the anchor and the zone
  entry. A vehicle is "standing" for queues from 2 s on.
* 903 stopped vehicle: standing in a GENERIC zone for the zone's threshold, or on a lane outside zones (parking
  spots included: a vehicle standing there is parked) for the camera's stop threshold while not waiting in traffic:
  no standing vehicle ahead of it on its lane within 12 m (uncalibrated: 2.5 box heights, either side), and no
  standing vehicle on a lane beside it with the same direction (traffic standing there too is a red light or a jam,
  as a signal controller would say; one vehicle standing while the traffic beside it flows is an incident; a
  vehicle with others standing behind it is what holds them up), nor did so in the last 5 s (a queue's first car
  follows the traffic ahead of it off a few seconds after it moved). Vehicles hidden on the frame but standing a
  moment ago (their stays, below) count as standing there. 1002 illegal parking:
  standing in a NO_STOPPING zone for the zone's threshold. Raised once per stay; the vehicle must leave
  the zone for 3 s before it can raise again.
* 1001 crash: two or more vehicles on one lane, outside zones, each standing for the camera's stop threshold,
  nose to tail: ground positions at most 6 m apart (a car's length and 1.5 m; vehicles queueing keep more than
  2 m between them), the group's first vehicle not waiting behind traffic standing ahead of it on its lane (or at the
  lane's downstream end), nor for 5 s after it did; standing traffic beside the group does not hold it (unlike 903:
  vehicles queueing do not touch, so two that do are no red light); a vehicle of the group hidden on
  the frame (its stay) is still in it. Raised once per group (by its lowest track id); its vehicles raise no 903.
* A stay: a vehicle standing at a place, whichever track shows it. A track that has stood 2 s where a standing vehicle
  was seen until at most 1.5 s before it stood there continues that stay: its standing time and the stay's 903 and
  1001 (traffic passing in front of a standing vehicle swaps tracks: the standing one shows again under a new track
  or one taken from the passing vehicle, or its box, cut by the passing one, lands metres away for a few frames). A
  stay not seen on a frame is hidden for up to 1.5 s, gone after 5 s.
* A standing vehicle that loses its track (hidden for a moment by traffic passing in front of it, the detector
  missing it on a frame or two) and shows again as a new track within 2 m of where it stood, within 5 s, is the
  same vehicle: it keeps its track id, its standing time, its counts and its events (so does a new track where a
  standing track stood until, taken by a passing vehicle's boxes, it moved off) (found by `v2x sim score`: the
  two cars of a crash got new tracks twice while cars passed in front, and 1001 came 56 s late; cars queued at a
  red light were counted again on each new track).
* 904 wrong way: moving against the lane's direction (more than 120 degrees off) for 1 s or on 3 frames in a
  row, having moved at least 3 m (uncalibrated: one box height), each of its last 2 steps against the lane too (at
  most 0.9 s and 40 m/s each: a trajectory, not a track given to another vehicle's box further back on the lane).
  Once per track and lane. (The 3 frames found by `v2x sim score`: a wrong-way car crossed a zoomed camera's lanes
  in 1.25 s and was lost at the edge.) "For 1 s"
  also when one velocity estimate comes from positions 1 s or more apart and the track has been on the lane for 1 s
  (found by `v2x sim score` on a loaded machine: at ~1.3 answered frames/s a wrong-way car was in view on 4 frames,
  and the condition, first known on the second, held 1 s only on the fourth).
* 901 overspeed: faster than the lane's limit plus the tolerance for 1 s (as for 904: or over positions 1 s apart),
  or on 2 speed estimates in a row (3 frames; found by `v2x sim score`: a car at 70 km/h crossed a zoomed camera's
  lanes in 1.3 s, 4 frames at 3 fps, and was never raised on 3 estimates; over 256 tracks of 8:00 traffic none had
  2 estimates in a row over the limit and tolerance, 9 had one). 902 slow: moving (>= 5 km/h) but slower than the
  slow threshold for 5 s while the lane's other traffic is not slow. Once per track.
* 405 pedestrian on road: a person on a lane for 2 s. Once per track.
* Queue length of a lane: standing vehicles chained from the most downstream one with gaps <= 12 m;
  span plus one vehicle length (5 m); from the lane's downstream end when that first one waits in traffic (as for
  903, below) and no vehicle is seen moving ahead of it on its lane: it stands behind traffic the detector missed or
  the camera does not see. Uncalibrated cameras report 0. A vehicle that stood when last seen, up to 3 s
  ago, is still in the queue: the detector finds cars standing bumper to bumper on some frames only (scores 0.30..
  0.39), and one missed broke the chain (replayed runs: error while queued 8.35 -> 7.99 m on the detector's boxes).
* Congestion of a lane: from the mean speed of its vehicles over the last 60 s (each vehicle's mean
  speed on the lane, averaged over vehicles, so one stopped car is an incident, not a jam), in bands
  like those of GA/T 115 for urban arterials: >= 30 km/h free flow, >= 20 light, >= 15 moderate,
  below heavy; it takes at least 3 vehicles to judge by speed. A queue of 60 m or more raises the
  level by one. No vehicles: free flow. Uncalibrated: UNKNOWN.
  707 traffic jam: a lane at MODERATE or worse that has kept a queue of standing vehicles or crawling moving ones
  (below 20 km/h now) for 60 s, either of them gone for at most 5 s (a missed detection or two): a queue that a
  signal cycle does not clear, or stop-and-go. The 60 s count from the queue's start, not from the lane's reading
  moderate, which lags a queue by up to the minute of its mean speed. (Found by
  `v2x sim score`: on the 60 s mean speed alone, traffic waiting at every rush-hour red light raised a jam.) The
  queue is of vehicles other than a stop or crash already raised (903, 1001: those are the incident), and a jam is
  cleared only after 60 s at LIGHT or better without a queue.
* Boxes cut off by the picture's left, right or bottom edge: their bottom centre is not the vehicle's, so a vehicle
  already on a lane keeps it, and it is not counted until its box is whole (found by `v2x sim score`: cars entering
  or leaving at the side were put on the lane beside theirs, counted there too, and raised a false 904).
* Lane counts: a vehicle counts once per lane, when it has been seen on the lane on 2 frames in a row (or, counted on
  another lane already, on the first frame it is on this one: a lane change; or on its first frame there when the
  camera's frames come 0.4 s apart or more, when a car crossing the view shows whole on one frame only), in the
  minute it came onto the lane (estimated back from its depth into the lane at its speed along it, by up to 3 s:
  the detector finds a car a few frames after it comes on), as wrong-way when it moves against the lane then (or is
  later found to). A track not moving (under 10 km/h) within 4 m of where a vehicle counted on the lane was last seen
  not moving, up to 30 s ago and not seen since, is that vehicle: not counted again; so is a track between two
  standing vehicles of its lane, a queue's gap from each (a car of their queue found again). A track given a box a
  vehicle length or more behind where its motion along the lane puts it shows the vehicle behind, which counts as
  itself. Two tracks that exchange lanes on a frame exchange their counts (the tracker swapped two cars side by side),
  and a track that continues the stay of a vehicle standing off the lanes takes its counts (a parked car pulling out
  is not new on the lane it came by). Line counts: each time a
  track's position changes side of the line (beyond 2 px), within the line's ends.
* Parking spots: OCCUPIED once a vehicle has stood in the spot zone for its threshold (default 10 s), the
  stay going on across track changes; FREE once no standing vehicle has been in it for 5 s.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from services.roadside.detector import Detection, VehicleClass
from services.roadside.geometry import (
    GroundMapping,
    Point,
    angle_between_deg,
    cross,
    distance_to_polyline,
    heading_deg,
    point_in_polygon,
    segment_intersection,
)
from services.roadside.model import (
    VEHICLES,
    Box,
    CameraSpec,
    Congestion,
    Event,
    EventType,
    Lane,
    LaneMinute,
    LaneStatus,
    LineMinute,
    MinuteCounts,
    SpotChange,
    SpotState,
    TrackedObject,
    Zone,
    ZoneKind,
)
from services.roadside.tracker import Tracker

STANDING_RADIUS_M = 2.0
STANDING_RADIUS_BOX = 0.25  # of the box height, uncalibrated
STANDING_MIN_S = 2.0
MOVING_MPS = 5 / 3.6
# Cars brake and pull away at the junction's stop line: over 2 s the velocity lagged (replayed `v2x sim score` runs,
# load/replay_analytics.py: speed RMSE on the detector's boxes 3.68 km/h with 2 s, 3.44 with 1.2 s; exact boxes 3.23
# and 3.06). 1.2 s rather than 1: at 3 frames/s the frame a second before stays in (901 and 904 take a velocity
# from positions 1 s apart as held for 1 s).
VELOCITY_WINDOW_S = 1.2
VELOCITY_MIN_SPAN_S = 0.25
HISTORY_S = 4.0
# A track's position this far from where its velocity puts it is a jump, not a motion (replayed `v2x sim score` runs,
# load/replay_analytics.py, the detector's boxes: speed RMSE 3.31 -> 2.54 and 3.40 -> 2.60 km/h on two 300 s 8:00
# runs, 4.45 -> 3.48 on a key-colour run, 1 % fewer speeds; false 904 fewer; 2 m and 4 m did a little worse).
JUMP_M = 3.0
# Seen on 2 frames: at 3 frames/s a car at 50 km/h is in these cameras' view for 6..8 frames and the detector finds
# it on half of them (replayed `v2x sim score` runs, load/replay_analytics.py: with 3, count MAPE 30 % on the
# detector's boxes, with 2 27 %; on a key-colour run's 50 % and 29 %; exact boxes 7..9 % either way).
COUNT_AFTER_FRAMES = 2
# ... or on its first frame on the lane when the camera's frames come this far apart (the service held frames back
# while busy, or a camera below 2.5 frames/s): a car at 50 km/h then shows whole, not cut by the picture's edge, on
# one frame only, and waiting for a second lost it (a replayed 600 s run at 2.4 answered frames/s,
# load/replay_analytics.py: count MAPE on the detector's boxes 20.6 -> 14.9 %, exact boxes 10.5 -> 8.2 %; the same
# run at its full 3 frames/s, exact boxes, 5.7 % either way: no gap there is this long, and counting on one frame
# there did worse, 6.5 %).
SPARSE_FRAME_GAP_S = 0.4
# A counted vehicle lost while standing or crawling (hidden by passing traffic, missed by the detector longer than a
# track lives) is still there for this long: a track that shows up not moving within this radius of where it was last
# seen is that vehicle, not counted again (less than the ~7 m between queued cars). Found by replaying `v2x sim score`
# runs (load/replay_analytics.py): the two cars of a crash were counted 7 times on new tracks; count MAPE on the
# detector's boxes 26.1 -> 22.1 % (a 180 s run of the 480x352 detector), 26.3 -> 25.7 and 22.8 -> 23.1 % (300 s runs
# of the 416 one); exact boxes 9.6 -> 9.2, 6.7 -> 6.4, 6.5 -> 5.9 %.
COUNT_MEMORY_S = 30.0
COUNT_MEMORY_RADIUS_M = 4.0
STILL_MPS = 10 / 3.6
EDGE_PX = 2.0  # a box within this of the picture's edge is cut off by it
CLIPPED_KEEP_LANE_S = 0.8  # a cut-off box keeps its track's lane when the track was seen this recently
WRONG_WAY_ANGLE_DEG = 120.0
WRONG_WAY_MIN_S = 1.0
WRONG_WAY_MIN_ESTIMATES = 3
WRONG_WAY_MIN_M = 3.0
WRONG_WAY_STEPS = 2  # the last steps of a track that must each go against the lane (a consistent trajectory)
# A longer gap between two positions is a lost track picked up again, not a step: unmatched for a second, a track is
# given the box of the next car back of a platoon on its lane, a "trajectory" against it (replayed `v2x sim score` runs,
# their own tracks: 3 of 4 false 904 had steps of 1.0..1.3 s, each a different car; the wrong-way cars' steps were
# 0.33 s; answered frames came up to 0.67 s apart on a busy service 88..96 % of the time). Was 1.5 s.
WRONG_WAY_STEP_MAX_S = 0.9
WRONG_WAY_STEP_MAX_MPS = 40.0  # a faster step is a track taken over by another vehicle's box, not driving
OVERSPEED_MIN_S = 1.0
OVERSPEED_MIN_ESTIMATES = 2
SLOW_MIN_S = 5.0
PEDESTRIAN_MIN_S = 2.0
ZONE_REARM_S = 3.0
SPOT_DEFAULT_THRESHOLD_S = 10
SPOT_FREE_AFTER_S = 5.0
QUEUE_GAP_M = 12.0
QUEUE_MEMORY_S = 3.0
CRASH_CONTACT_M = 6.0
# Two standing vehicles' grounds this near are one vehicle shown twice (a second track on it, a box over part of it),
# not two in contact: a car is 4-5 m long, and the simulator's crashed pairs read 5.0-5.1 m apart.
CRASH_MIN_APART_M = 3.5
# ... and in line along their lane: at most this far apart across it. Two cars of a jam's queue standing on
# neighbouring lanes, one of them put on the other's lane by its box, are side by side, not nose to tail (found by
# replaying `v2x sim score` runs with the tracker's lane cue, load/replay_analytics.py: a false 1001 on two of three
# 600 s runs; 2.0 m did the same; no crash of the runs lost).
CRASH_ASIDE_M = 1.5
QUEUE_GAP_BOX = 2.5
QUEUE_HEAD_END_M = 8.0  # a vehicle standing this near its lane's downstream end may wait for vehicles beyond it
VEHICLE_LENGTH_M = 5.0
CONGESTION_WINDOW_S = 60.0
CONGESTION_BANDS_KMH = (30.0, 20.0, 15.0)
QUEUE_RAISES_LEVEL_M = 60.0
CONGESTION_MIN_VEHICLES = 3
JAM_MIN_S = 60.0
JAM_CLEAR_S = 60.0
JAM_QUEUE_GRACE_S = 5.0
LANE_HALF_WIDTH_M = 1.75
LANE_HALF_WIDTH_BOX = 0.6
LINE_MARGIN_PX = 2.0
TRACK_FORGET_S = 5.0
VACATED_JUMP_M = 5.0  # a standing track's box this far off is another vehicle's (one starting off: ~2.5 m in 2 frames)
STAY_GAP_S = 1.5  # a vehicle standing where another track's standing vehicle was seen this recently continues its stay
WAITED_FOLLOWS_S = 5.0  # a vehicle that waited in traffic follows the traffic ahead of it off within this
STAY_HIDDEN_S = 1.5  # a stay not seen for up to this long (hidden by passing traffic, missed) still stands there
SAME_DIRECTION_DEG = 30.0  # lanes whose directions differ by less are beside each other, one way
MINUTES_KEPT = 15
# A count goes to the minute its vehicle came onto the lane. The detector finds a car a frame or a few after it did
# (far and small at the lane's upstream end, hidden, missed), so the time it came on is estimated back from how deep
# into the lane it is and its speed along the lane, by at most ENTRY_BACKDATE_MAX_S before it was first seen there, for
# a vehicle moving along the lane at ENTRY_MIN_MPS at least. Each count placed a minute late is two lane-minutes
# wrong. Two 600 s runs (seeds 1, 2) replayed with the detector's boxes (load/replay_analytics.py), with the tracker's
# off-lane cost: count MAPE 7.1 / 7.8 -> 5.3 / 6.5 %, exact boxes 4.3 / 4.2 -> 2.3 / 3.2 %, events unchanged; a bound
# of 1, 2, 4 or 8 s instead of 3 gave the same counts. Both together on a third run (seed 3): 7.1 -> 4.8 %.
ENTRY_BACKDATE_MAX_S = 3.0
ENTRY_MIN_MPS = 1.0


def vehicle_mean_speed(per_vehicle: dict[int, list[float]]) -> tuple[float | None, int]:
    """Mean over vehicles of each vehicle's mean speed ({track: [sum, n]}), and how many vehicles."""
    means = [total / n for total, n in per_vehicle.values() if n]
    return (sum(means) / len(means) if means else None), len(means)


def congestion_level(mean_speed_mps: float | None, queue_m: float, calibrated: bool, vehicles: int) -> Congestion:
    if not calibrated:
        return Congestion.UNKNOWN
    if mean_speed_mps is None or vehicles < CONGESTION_MIN_VEHICLES:
        level = 0
    else:
        kmh = mean_speed_mps * 3.6
        free, light, moderate = CONGESTION_BANDS_KMH
        level = 0 if kmh >= free else 1 if kmh >= light else 2 if kmh >= moderate else 3
    if queue_m >= QUEUE_RAISES_LEVEL_M:
        level = min(3, level + 1)
    return Congestion(Congestion.FREE_FLOW + level)


@dataclass(slots=True)
class _Track:
    track_id: int
    object_class: VehicleClass
    first_t: float
    last_t: float
    anchor_t: float
    anchor_px: Point
    anchor_g: Point | None
    observations: int = 0
    history: deque[tuple[float, Point, Point | None]] = field(default_factory=deque)
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    box_h: float = 1.0
    box: Box | None = None
    point: Point = (0.0, 0.0)
    ground: Point | None = None
    velocity_px: Point | None = None
    velocity_g: Point | None = None
    velocity_span_s: float = 0.0  # time between the first and last position the velocity is estimated from
    lane_since: float = 0.0  # when the track was first seen on its current lane (of a row of frames on it)
    lane_frames: int = 0  # the frames of that row it was seen on
    clipped: bool = False  # its box touches the picture's left, right or bottom edge
    lane_id: str = ""
    lane_before: str = ""  # the lane it was on before its current one ("": none, or off the lanes)
    counted: dict[str, tuple[int, bool]] = field(default_factory=dict)  # lane -> (minute, as wrong-way)
    line_sides: dict[str, tuple[int, Point]] = field(default_factory=dict)
    zone_entered: dict[str, float] = field(default_factory=dict)
    zone_left: dict[str, float] = field(default_factory=dict)
    zone_raised: dict[str, int] = field(default_factory=dict)  # zone -> episodes raised
    zone_active: set[str] = field(default_factory=set)  # zones whose current stay raised already
    since: dict[str, float] = field(default_factory=dict)  # condition -> since when (wrong, over, slow, ...)
    raised: set[str] = field(default_factory=set)
    over_streak: int = 0  # consecutive frames with a speed over the limit and tolerance
    wrong_streak: int = 0  # consecutive frames moving against the lane
    jumped: bool = False  # a standing track's last box lay outside its anchor's radius and was set aside
    waited_t: float | None = None  # when it last stood waiting in traffic
    queued_t: float | None = None  # when it last stood behind traffic on its own lane (or at the lane's end)
    # Whether it came to its halt behind traffic on its lane (None: not judged yet for this halt), until traffic is seen
    # moving on its lane ahead of it: see _judge_halts.
    halted_queued: bool | None = None
    # When it last drove off a place it had stood at, and where that was (anchor_g, anchor_px): the vehicle itself moved
    # on, gradually, not a box of another vehicle given to its track.
    drove_off: tuple[float, Point | None, Point] | None = None

    @property
    def confidence(self) -> float:
        return float(sum(self.scores) / len(self.scores)) if self.scores else 0.0

    @property
    def came_from(self) -> str:
        """The lane it was on before, when it came onto this one on this frame."""
        return self.lane_before if self.lane_since == self.last_t else ""

    @property
    def speed(self) -> float | None:
        return None if self.velocity_g is None else math.hypot(*self.velocity_g)

    @property
    def heading(self) -> float | None:
        v = self.velocity_g
        if v is None or math.hypot(*v) < MOVING_MPS:
            return None
        return heading_deg(v[0], v[1])

    def standing_s(self, t: float) -> float:
        return t - self.anchor_t


@dataclass(slots=True)
class _LaneAgg:
    vehicles: int = 0
    wrong_way: int = 0
    max_queue_m: float = 0.0
    speeds: dict[int, list[float]] = field(default_factory=dict)  # track -> [sum, n]


@dataclass(slots=True)
class _Minute:
    frames: int = 0
    lanes: dict[str, _LaneAgg] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    dirty: bool = True


@dataclass(slots=True)
class _LaneLive:
    speeds: deque[tuple[float, int, float]] = field(default_factory=deque)  # (t, track, speed)
    jam_since: float | None = None
    jam_raised: bool = False
    clear_since: float | None = None
    queue_seen: float | None = None  # last time the lane had a queue, or its traffic crawled
    queue_since: float | None = None  # since when it has had one (gaps of at most JAM_QUEUE_GRACE_S)


def _where_it_stood(point: Point, ground: Point | None, box: Box, stood: Point, stood_ground: Point | None,
                    stood_box_h: float) -> float | None:
    """How far a new box is from where a standing vehicle stood, if it can be that vehicle (about its size, within
    the standing radius: on the ground where both have a ground point, else in the picture); else None."""
    if not 0.67 <= max(box.height, 1.0) / stood_box_h <= 1.5:
        return None
    if ground is not None and stood_ground is not None:
        d, limit = math.dist(ground, stood_ground), STANDING_RADIUS_M
    else:
        d, limit = math.dist(point, stood), max(3.0, STANDING_RADIUS_BOX * stood_box_h)
    return d if d <= limit else None


@dataclass(slots=True)
class _Vacated:
    """Where a standing track stood before it moved off: the track may have been taken by a passing vehicle's boxes
    while the standing one, hidden by it, shows again as a new track there."""

    t: float
    point: Point
    ground: Point | None
    box_h: float
    anchor_t: float
    lane_id: str
    counted: dict[str, tuple[int, bool]]
    raised: set[str]
    # Its wait in traffic goes with it too (found by `v2x sim score`, replayed: a queued car shown so as its queue drove
    # off had stood 43 s and, its wait lost, raised 903 at once).
    waited_t: float | None = None
    queued_t: float | None = None
    halted_queued: bool | None = None


@dataclass(slots=True, eq=False)
class _Stay:
    """A vehicle standing at a place, whichever track shows it. Traffic passing in front of a standing vehicle hides it
    and the tracker gives its track to the passing vehicle's boxes, and the standing one shows again under another
    track, new or taken from the passing vehicle (found by `v2x sim score`: a crash's car stood under 4 tracks in 50 s,
    and 1001 came 46 s late; a stalled car's box, shifted by a car passing in front for two frames, restarted its
    standing time, and its 903 came 14 s late). A stay goes on while a standing vehicle is seen there again within
    STAY_GAP_S of the last sighting; its events are raised once."""

    point: Point  # where it was seen last
    ground: Point | None
    box_h: float
    lane_id: str
    since: float
    last_t: float
    raised: set[str] = field(default_factory=set)
    waited_t: float | None = None
    queued_t: float | None = None
    halted_queued: bool | None = None
    # It began off the lanes or in a parking spot: a parked vehicle, whose box a vehicle pulling out beside it may
    # stretch onto the lane for a few frames (found by `v2x sim score`, replayed: a parked car raised 903 so, with its
    # time in the spot as its standing time on the lane).
    parked: bool = False
    track_id: int = 0  # the track that showed it last
    # Lanes its vehicle was counted on, under any of its tracks: a vehicle parked off the lanes that shows again under
    # another track (traffic passing in front of it swaps tracks) and later pulls out is not a new vehicle on the lane
    # it came by (replayed 600 s run, exact boxes: 3 parked cars counted twice on their lane).
    counted: dict[str, tuple[int, bool]] = field(default_factory=dict)


@dataclass(slots=True)
class _Spot:
    state: SpotState | None = None
    empty_since: float | None = None
    stay_since: float | None = None  # a vehicle has stood in the zone since, whichever track showed it


@dataclass(frozen=True, slots=True)
class FrameAnalysis:
    objects: list[TrackedObject]
    events: list[Event]
    lanes: list[LaneStatus]
    spot_changes: list[SpotChange]


class _Geometry:
    """What the analytics precompute from a camera spec."""

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec
        self.mapping: GroundMapping | None = spec.calibration.mapping() if spec.calibration else None
        self.lane_dir_g: dict[str, Point | None] = {}
        self.lane_centerline_g: dict[str, list[Point] | None] = {}
        for lane in spec.lanes:
            self.lane_dir_g[lane.id] = self._ground_direction(lane)
            if lane.centerline is not None and self.mapping is not None:
                pts = [self.mapping.to_ground(p) for p in lane.centerline]
                self.lane_centerline_g[lane.id] = None if any(p is None for p in pts) else [
                    p for p in pts if p is not None]
        self.lanes = {lane.id: lane for lane in spec.lanes}
        self.opposed = frozenset((a.id, b.id) for a in spec.lanes for b in spec.lanes if self._run_against(a, b))
        ends = {lane.id: self._alongs(lane) for lane in spec.lanes}
        self.lane_end_along = {k: max(a) if a else None for k, a in ends.items()}
        self.lane_start_along = {k: min(a) if a else None for k, a in ends.items()}
        self.stop_zones = [z for z in spec.zones if z.kind in (ZoneKind.NO_STOPPING, ZoneKind.GENERIC)]
        self.spot_zones = [z for z in spec.zones if z.kind is ZoneKind.PARKING_SPOT]

    def _run_against(self, a: Lane, b: Lane) -> bool:
        """Whether traffic on the two lanes runs opposite ways (more than WRONG_WAY_ANGLE_DEG apart, as a vehicle going
        against a lane): on the ground when both directions are known there, else in the picture."""
        u, v = self.lane_dir_g.get(a.id), self.lane_dir_g.get(b.id)
        if u is None or v is None:
            if a.direction_px is None or b.direction_px is None:
                return False
            u, v = a.direction_px, b.direction_px
        return angle_between_deg(heading_deg(*u), heading_deg(*v)) > WRONG_WAY_ANGLE_DEG

    def _reference_point(self, lane: Lane) -> Point:
        pts = lane.polygon or lane.centerline or ((0.0, 0.0),)
        return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)

    def _alongs(self, lane: Lane) -> list[float]:
        """How far along its direction (ground metres, as `along` below) each point of the lane's drawn stretch lies:
        the largest is where the stretch ends downstream, the smallest where it starts upstream."""
        u = self.lane_dir_g.get(lane.id)
        pts = lane.polygon or lane.centerline
        if u is None or self.mapping is None or not pts:
            return []
        grounds = [self.mapping.to_ground(p) for p in pts]
        return [_along(g, u) for g in grounds if g is not None]

    def _ground_direction(self, lane: Lane) -> Point | None:
        if lane.direction_heading_deg is not None:
            r = math.radians(lane.direction_heading_deg)
            return math.sin(r), math.cos(r)
        if lane.direction_px is None or self.mapping is None:
            return None
        p0 = self._reference_point(lane)
        n = math.hypot(*lane.direction_px) or 1.0
        p1 = (p0[0] + lane.direction_px[0] / n * 20, p0[1] + lane.direction_px[1] / n * 20)
        g0, g1 = self.mapping.to_ground(p0), self.mapping.to_ground(p1)
        if g0 is None or g1 is None:
            return None
        d = (g1[0] - g0[0], g1[1] - g0[1])
        length = math.hypot(*d)
        return None if length == 0 else (d[0] / length, d[1] / length)

    def box_of(self, d: Detection, frame_size: tuple[int, int]) -> Box:
        """A detection's box on the camera's configured picture (frames may come at another size)."""
        fw, fh = frame_size
        return Box(d.x1, d.y1, d.x2, d.y2).scaled(self.spec.image_width / fw, self.spec.image_height / fh)

    def ground_of(self, point: Point) -> Point | None:
        return self.mapping.to_ground(point) if self.mapping is not None else None

    def lane_of(self, point: Point, ground: Point | None, box: Box) -> str:
        for lane in self.spec.lanes:
            if lane.polygon is not None and point_in_polygon(point, lane.polygon):
                return lane.id
        best, best_d = "", math.inf
        for lane in self.spec.lanes:
            if lane.centerline is None:
                continue
            line_g = self.lane_centerline_g.get(lane.id)
            if ground is not None and line_g:
                d, limit = distance_to_polyline(ground, line_g), LANE_HALF_WIDTH_M
            else:
                d, limit = distance_to_polyline(point, lane.centerline), LANE_HALF_WIDTH_BOX * box.width
            if d <= limit and d < best_d:
                best, best_d = lane.id, d
        return best

    def zone_threshold(self, zone: Zone) -> float:
        if zone.stop_threshold_s > 0:
            return float(zone.stop_threshold_s)
        if zone.kind is ZoneKind.PARKING_SPOT:
            return float(SPOT_DEFAULT_THRESHOLD_S)
        return float(self.spec.thresholds.stop_threshold_s)


def _velocity(samples: Sequence[tuple[float, Point]]) -> Point | None:
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < VELOCITY_MIN_SPAN_S:
        return None
    t = np.array([s[0] for s in samples])
    xy = np.array([s[1] for s in samples])
    t = t - t.mean()
    denom = float((t * t).sum())
    if denom <= 0:
        return None
    v = (t[:, None] * (xy - xy.mean(axis=0))).sum(axis=0) / denom
    return float(v[0]), float(v[1])


def _along(p: Point, u: Point, origin: Point = (0.0, 0.0)) -> float:
    """How far ``p`` lies from ``origin`` along the unit direction ``u`` (ground metres, or a velocity's part)."""
    return (p[0] - origin[0]) * u[0] + (p[1] - origin[1]) * u[1]


def _touching(a: Point, b: Point, u: Point | None) -> bool:
    """Whether two standing vehicles' ground points are two vehicles in contact, nose to tail (not one shown twice) on
    a lane of direction ``u``: in line along it."""
    if not CRASH_MIN_APART_M <= math.dist(a, b) <= CRASH_CONTACT_M:
        return False
    return u is None or abs((b[0] - a[0]) * u[1] - (b[1] - a[1]) * u[0]) <= CRASH_ASIDE_M


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


_STAY_EVENTS = frozenset({"903", "1001"})  # what a stay raises once, whichever of its tracks raises it


class CameraAnalytics:
    """One camera's analytics state. Frames must come one at a time in capture order; `minutes()` and
    `spot_states()` may be called from another thread."""

    def __init__(self, spec: CameraSpec) -> None:
        self._geo = _Geometry(spec)
        self._tracks: dict[int, _Track] = {}
        self._lanes: dict[str, _LaneLive] = {}
        self._spots: dict[str, _Spot] = {}
        self._minutes: dict[int, _Minute] = {}
        self._lock = threading.Lock()
        self.last_frame_at: datetime | None = None
        self._frame_gap_s = 0.0  # since the camera's frame before this one
        self._vacated: list[_Vacated] = []
        self._lost_still: list[tuple[float, Point, str]] = []  # counted vehicles lost standing: (last seen, at, lane)
        self._stays: list[_Stay] = []
        self._stay_of: dict[int, _Stay] = {}  # this frame: track id -> the stay it stands in
        self._hidden: list[_Stay] = []  # this frame: stays not seen on it, but within STAY_HIDDEN_S
        # Vehicles seen halting or standing on a lane, WAITED_FOLLOWS_S back: (when, lane, ground position, track id).
        self._halting: deque[tuple[float, str, Point, int]] = deque()

    @property
    def spec(self) -> CameraSpec:
        return self._geo.spec

    @property
    def has_spot_zones(self) -> bool:
        return bool(self._geo.spot_zones)

    def reconfigure(self, spec: CameraSpec) -> None:
        """A new configuration (next frame on). Tracks are kept; lane and spot memory of removed ids goes."""
        self._geo = _Geometry(spec)
        self._lanes = {k: v for k, v in self._lanes.items() if k in self._geo.lanes}
        spot_ids = {z.id for z in self._geo.spot_zones}
        self._spots = {k: v for k, v in self._spots.items() if k in spot_ids}

    # ----- per frame ----------------------------------------------------------------------------

    def process(self, captured_at: datetime, frame_id: int, tracked: Sequence[tuple[int, Detection]],
                frame_size: tuple[int, int], untracked: Sequence[Detection] = ()) -> FrameAnalysis:
        geo = self._geo
        spec = geo.spec
        t = captured_at.timestamp()
        self._frame_gap_s = t - self.last_frame_at.timestamp() if self.last_frame_at is not None else 0.0
        self.last_frame_at = captured_at
        fw, fh = frame_size
        sx, sy = spec.image_width / fw, spec.image_height / fh
        minute_key = int(t // 60) * 60
        events: list[Event] = []
        with self._lock:
            bucket = self._bucket(minute_key)
            bucket.frames += 1
            bucket.dirty = True

        seen: list[_Track] = []
        present = {track_id for track_id, _ in tracked}
        for track_id, d in tracked:
            if d.score < spec.thresholds.detection_floor:
                continue
            box = geo.box_of(d, frame_size)
            seen.append(self._observe(track_id, d, box, t, present))
        self._update_stays(seen, t)
        self._exchange_counts(seen)

        by_lane: dict[str, list[_Track]] = {lane.id: [] for lane in spec.lanes}
        for tr in seen:
            if tr.lane_id and tr.object_class in VEHICLES:
                by_lane.setdefault(tr.lane_id, []).append(tr)

        lane_status: list[LaneStatus] = []
        lane_congestion: dict[str, Congestion] = {}
        lane_mean: dict[str, float | None] = {}
        for lane in spec.lanes:
            on_lane = by_lane.get(lane.id, [])
            live = self._lanes.setdefault(lane.id, _LaneLive())
            for tr in on_lane:
                if tr.speed is not None:
                    live.speeds.append((t, tr.track_id, tr.speed))
            while live.speeds and live.speeds[0][0] < t - CONGESTION_WINDOW_S:
                live.speeds.popleft()
            standing = [tr for tr in on_lane if self._is_standing(tr, t)]
            queue_m = self._queue_length(lane, standing + self._unseen_standing(lane.id, seen, t), by_lane, t)
            per_vehicle: dict[int, list[float]] = {}
            for _, track_id, speed in live.speeds:
                acc = per_vehicle.setdefault(track_id, [0.0, 0])
                acc[0] += speed
                acc[1] += 1
            mean, vehicles = vehicle_mean_speed(per_vehicle)
            level = congestion_level(mean, queue_m, geo.mapping is not None, vehicles)
            lane_congestion[lane.id] = level
            lane_mean[lane.id] = mean
            lane_status.append(LaneStatus(lane.id, len(on_lane), len(standing), round(queue_m, 2),
                                          None if mean is None else round(mean, 3), level))
            with self._lock:
                agg = bucket.lanes.setdefault(lane.id, _LaneAgg())
                agg.max_queue_m = max(agg.max_queue_m, queue_m)
                for tr in on_lane:
                    if tr.speed is not None:
                        acc = agg.speeds.setdefault(tr.track_id, [0.0, 0])
                        acc[0] += tr.speed
                        acc[1] += 1
            moving = [tr.speed for tr in on_lane if tr.speed is not None and tr.speed >= MOVING_MPS]
            crawling = bool(moving) and sum(moving) / len(moving) * 3.6 < CONGESTION_BANDS_KMH[1]
            events.extend(self._jam(lane, live, level, queue_m, crawling, t, captured_at, frame_id))

        self._judge_halts(seen, by_lane, t)
        crashed = self._crashes(by_lane, t)
        for group, hidden in crashed:
            events.extend(self._crash_event(group, hidden, t, captured_at, frame_id))
        for tr in seen:
            events.extend(self._track_events(tr, t, captured_at, frame_id, by_lane, lane_mean, minute_key))
            self._count_lines(tr, minute_key)
        for tr in seen:
            stay = self._stay_of.get(tr.track_id)
            if stay is not None:
                stay.raised |= tr.raised & _STAY_EVENTS
                for lane_id, counted in tr.counted.items():
                    stay.counted.setdefault(lane_id, counted)
                stay.waited_t = _latest(stay.waited_t, tr.waited_t)
                stay.queued_t = _latest(stay.queued_t, tr.queued_t)
                stay.halted_queued = tr.halted_queued

        spot_changes = self._update_spots(seen, t, captured_at)
        self._forget(t)

        objects = [self._object(tr, 1 / sx, 1 / sy) for tr in seen]
        for d in untracked:
            objects.append(TrackedObject(0, d.vehicle_class, d.score, Box(d.x1, d.y1, d.x2, d.y2)))
        floor = spec.thresholds.event_floor
        kept = [e for e in events if e.confidence >= floor]
        scaled = [self._event_to_frame(e, 1 / sx, 1 / sy) for e in kept]
        return FrameAnalysis(objects, scaled, lane_status, spot_changes)

    def lane_at(self, d: Detection, frame_size: tuple[int, int]) -> str:
        """The lane a detection on a frame of this size stands on ("" off the lanes): the tracker's lane cue."""
        geo = self._geo
        box = geo.box_of(d, frame_size)
        return geo.lane_of(box.bottom_center, geo.ground_of(box.bottom_center), box)

    def track(self, tracker: Tracker, detections: Sequence[Detection], timestamp_ns: int,
              frame_size: tuple[int, int]) -> list[tuple[int, Detection]]:
        """A frame's detections through the camera's tracker, with this camera's lanes as its cues: the lane each box
        stands on, and which lanes run against each other."""
        return tracker.update(detections, timestamp_ns, lambda d: self.lane_at(d, frame_size), self.lanes_opposed)

    def lanes_opposed(self, a: str, b: str) -> bool:
        """Whether traffic on the two lanes runs opposite ways: the tracker's cue that a box on one is not the vehicle
        of a track on the other."""
        return (a, b) in self._geo.opposed

    def _observe(self, track_id: int, d: Detection, box: Box, t: float, present: set[int]) -> _Track:
        geo = self._geo
        point = box.bottom_center
        ground = geo.ground_of(point)
        tr = self._tracks.get(track_id)
        if tr is None:
            tr = self._resume_standing(track_id, point, ground, box, t, present)
        if tr is None:
            tr = self._tracks[track_id] = _Track(track_id, d.vehicle_class, t, t, t, point, ground)
        tr.object_class = d.vehicle_class
        gap = t - tr.last_t
        was_standing = tr.observations > 0 and tr.last_t - tr.anchor_t >= STANDING_MIN_S
        tr.last_t = t
        tr.observations += 1
        # Standing: re-anchor when the object leaves the anchor's radius. A standing vehicle's first box outside it
        # may be another vehicle's, given to its track for a frame while the standing one was hidden by it (found by
        # `v2x sim score`: each car passing in front of a stalled one reset its standing time, and its 903 came 10..
        # 13 s late, the crash's 1001 56 s): the track stays where it stood until the next box confirms the move.
        if ground is not None and tr.anchor_g is not None:
            moved = math.dist(ground, tr.anchor_g) > STANDING_RADIUS_M
        else:
            moved = math.dist(point, tr.anchor_px) > max(3.0, STANDING_RADIUS_BOX * tr.box_h)
        tr.jumped = moved and was_standing and not tr.jumped
        if tr.jumped:
            return tr
        if moved:
            # Only a jump leaves the place to a new track: a vehicle driving off moves gradually, and the next vehicle
            # of its queue moving up into its place is another vehicle (found by `v2x sim score`: the car behind a
            # jam's first car took its 200 s standing time as it moved up, and raised 903).
            if was_standing and self._jumped_off(tr, point, ground, box):
                self._vacated.append(_Vacated(t, tr.anchor_px, tr.anchor_g, tr.box_h, tr.anchor_t, tr.lane_id,
                                              dict(tr.counted), set(tr.raised), tr.waited_t, tr.queued_t,
                                              tr.halted_queued))
            elif was_standing:
                tr.drove_off = (t, tr.anchor_g, tr.anchor_px)
            tr.anchor_t, tr.anchor_px, tr.anchor_g = t, point, ground
            tr.halted_queued = None
        tr.scores.append(d.score)
        # A position far from where the track's velocity puts it is a jump (another vehicle's box, a box cut by a
        # passing vehicle), not a motion: the velocity starts again from it. A vehicle length or more behind it along
        # the lane, the box is the next vehicle's, come to where this one was: it counts as the vehicle it is.
        if ground is not None and tr.ground is not None and tr.velocity_g is not None:
            predicted = (tr.ground[0] + tr.velocity_g[0] * gap, tr.ground[1] + tr.velocity_g[1] * gap)
            if math.dist(ground, predicted) > JUMP_M:
                tr.history.clear()
                if self._fell_behind(tr, ground, predicted):
                    tr.counted, tr.lane_id = {}, ""
        tr.box, tr.box_h, tr.point, tr.ground = box, max(box.height, 1.0), point, ground
        tr.history.append((t, point, ground))
        while tr.history and tr.history[0][0] < t - HISTORY_S:
            tr.history.popleft()
        recent = [h for h in tr.history if h[0] >= t - VELOCITY_WINDOW_S]
        if len(recent) < 2:
            recent = list(tr.history)[-2:]
        tr.velocity_px = _velocity([(h[0], h[1]) for h in recent])
        tr.velocity_span_s = recent[-1][0] - recent[0][0] if len(recent) >= 2 else 0.0
        if ground is not None and all(h[2] is not None for h in recent):
            tr.velocity_g = _velocity([(h[0], h[2]) for h in recent if h[2] is not None])
        else:
            tr.velocity_g = None
        spec = geo.spec
        tr.clipped = spec.image_width > 0 and spec.image_height > 0 and (
            box.x1 <= EDGE_PX or box.x2 >= spec.image_width - EDGE_PX or box.y2 >= spec.image_height - EDGE_PX)
        # A box cut off by the picture's edge has its bottom centre elsewhere than the vehicle's: a vehicle already on
        # a lane keeps it (leaving the view it was put on the lane beside, against which it then moved).
        # (Only while the track is seen frame after frame: one that comes back after a gap may be another vehicle.)
        keep = tr.clipped and tr.lane_id and gap <= CLIPPED_KEEP_LANE_S
        lane = tr.lane_id if keep else geo.lane_of(point, ground, box)
        if lane != tr.lane_id or tr.observations == 1:
            tr.lane_since, tr.lane_frames = t, 0
            tr.lane_before = tr.lane_id if tr.observations > 1 else ""
        tr.lane_id = lane
        tr.lane_frames += 1
        return tr

    @staticmethod
    def _exchange_counts(seen: list[_Track]) -> None:
        """Two tracks that exchanged lanes on this frame exchanged vehicles: the counts go with the vehicles.

        The tracker swaps two cars driving side by side when their boxes shrink or grow alike (found by replaying a
        600 s `v2x sim score` run with exact boxes, load/replay_analytics.py: a pair swapped on a track's second frame
        and back three frames on, and each track was counted on both lanes, 4 counts for 2 cars). Two cars changing
        lanes across each other on the same frame do not happen; two tracks doing so are one swap."""
        moved = [tr for tr in seen if tr.came_from and tr.lane_id]
        done: set[int] = set()
        for a, b in itertools.combinations(moved, 2):
            if a.track_id in done or b.track_id in done:
                continue
            if a.came_from == b.lane_id and b.came_from == a.lane_id:
                a.counted, b.counted = b.counted, a.counted
                done |= {a.track_id, b.track_id}

    def _jumped_off(self, tr: _Track, point: Point, ground: Point | None, box: Box) -> bool:
        """Whether a standing track's new box is another vehicle's rather than its own driving off: on another lane,
        or further than a vehicle starting off gets in the frames that confirm a move."""
        if self._geo.lane_of(point, ground, box) != tr.lane_id:
            return True
        if ground is not None and tr.anchor_g is not None:
            return math.dist(ground, tr.anchor_g) > VACATED_JUMP_M
        return math.dist(point, tr.anchor_px) > tr.box_h

    def _resume_standing(self, track_id: int, point: Point, ground: Point | None, box: Box, t: float,
                         present: set[int]) -> _Track | None:
        """The lost track of a vehicle that stood where this new track shows, which it continues; else None."""
        best: tuple[float, int, _Track] | None = None
        for key, old in self._tracks.items():
            if key in present or old.last_t >= t or old.last_t - old.anchor_t < STANDING_MIN_S:
                continue
            d = _where_it_stood(point, ground, box, old.point, old.ground, old.box_h)
            if d is not None and (best is None or d < best[0]):
                best = (d, key, old)
        if best is None:
            return self._resume_vacated(track_id, point, ground, box, t)
        _, key, old = best
        del self._tracks[key]
        self._tracks[track_id] = old
        return old

    def _resume_vacated(self, track_id: int, point: Point, ground: Point | None, box: Box, t: float) -> _Track | None:
        """A new track where a standing track stood until it moved off (taken by a passing vehicle's boxes for two
        frames or more: found by `v2x sim score`, a crash's car lost its standing time so, and 1001 came 56 s late):
        the vehicle standing there still, with its standing time, counts and events."""
        best: tuple[float, _Vacated] | None = None
        for v in self._vacated:
            if t - v.t > TRACK_FORGET_S:
                continue
            d = _where_it_stood(point, ground, box, v.point, v.ground, v.box_h)
            if d is not None and (best is None or d < best[0]):
                best = (d, v)
        if best is None:
            return None
        v = best[1]
        self._vacated.remove(v)
        tr = _Track(track_id, VehicleClass.CAR, t, t, v.anchor_t, v.point, v.ground, box_h=v.box_h, lane_id=v.lane_id,
                    counted=v.counted, raised=v.raised, waited_t=v.waited_t, queued_t=v.queued_t,
                    halted_queued=v.halted_queued)
        tr.observations = 1  # seen before, as the track it stood on
        self._tracks[track_id] = tr
        return tr

    def _update_stays(self, seen: list[_Track], t: float) -> None:
        """Puts each standing vehicle in its stay: the one where a standing vehicle was seen until at most STAY_GAP_S
        before this track stood there (its standing time and its events go on, on this track), else a new one."""
        self._stay_of = {}
        claimed: set[int] = set()
        for tr in sorted(seen, key=lambda tr: tr.anchor_t):  # the longest standing first
            if tr.object_class not in VEHICLES or tr.jumped or tr.box is None or not self._is_standing(tr, t):
                continue
            best: tuple[float, _Stay] | None = None
            for stay in self._stays:
                d = self._continues(tr, tr.box, stay, claimed)
                if d is not None and (best is None or d < best[0]):
                    best = (d, stay)
            if best is None:
                stay = _Stay(tr.point, tr.ground, tr.box_h, tr.lane_id, tr.anchor_t, t, parked=not tr.lane_id or any(
                    point_in_polygon(tr.point, z.polygon) for z in self._geo.spot_zones))
                self._stays.append(stay)
            else:
                stay = best[1]
                tr.anchor_t = min(tr.anchor_t, stay.since)
                tr.raised |= stay.raised
                if not stay.lane_id:
                    # Off the lanes only: a stay on a lane is a queue, whose next car moving up into the place is
                    # another vehicle; one that is the same is found again by _counted_there.
                    for lane_id, counted in stay.counted.items():
                        tr.counted.setdefault(lane_id, counted)
                tr.waited_t = _latest(tr.waited_t, stay.waited_t)
                tr.queued_t = _latest(tr.queued_t, stay.queued_t)
                if stay.halted_queued is not None:
                    tr.halted_queued = stay.halted_queued
                # Where it was seen last (its track's anchor may lie up to the standing radius off: set as it slowed
                # down, or on a box cut by a passing vehicle).
                stay.point, stay.ground, stay.box_h, stay.last_t = tr.point, tr.ground, tr.box_h, t
            stay.track_id = tr.track_id
            claimed.add(id(stay))
            self._stay_of[tr.track_id] = stay
        # A track not moving where a stay's vehicle stood, come there within STAY_GAP_S of its last sighting, shows that
        # vehicle there still, though it has not stood STANDING_MIN_S yet: the stay goes on (it is hidden on this frame,
        # standing there) and the next track to stand there continues it. (Found by `v2x sim score`: a crash's front
        # car was shown by a track given to it after its own went to another car's box, lost 1.7 s later, and by a
        # third track 0.7 s on; neither stood 2 s before the next took over, the car's standing time was lost, and its
        # 1001 came 17 s late.)
        for tr in seen:
            if tr.track_id in self._stay_of or tr.object_class not in VEHICLES or tr.jumped or tr.box is None \
                    or tr.speed is None or tr.speed >= MOVING_MPS:
                continue
            for stay in self._stays:
                if self._continues(tr, tr.box, stay, claimed) is not None:
                    stay.last_t = t
                    break
        self._hidden = [s for s in self._stays if id(s) not in claimed and t - s.last_t <= STAY_HIDDEN_S]

    def _continues(self, tr: _Track, box: Box, stay: _Stay, claimed: set[int]) -> float | None:
        """How far from where a stay's vehicle stood a track stands, when it may be that vehicle still (the stay
        unclaimed on this frame, its vehicle seen within STAY_GAP_S before the track stood, the track not seen
        standing elsewhere since); else None."""
        if id(stay) in claimed or tr.anchor_t - stay.last_t > STAY_GAP_S or self._stood_elsewhere(tr, stay):
            return None
        return _where_it_stood(tr.point, tr.ground, box, stay.point, stay.ground, stay.box_h)

    @staticmethod
    def _stood_elsewhere(tr: _Track, stay: _Stay) -> bool:
        """Whether the track's vehicle stood at another place while the stay's stood here, and drove up from there: it
        is the next vehicle of a queue moving up into the place of the one that drove off, not the stay's vehicle
        (found in tests at 5 frames/s: a car that waited behind another, moved up into its place within 1.5 s of its
        last standing sighting and stalled there took its standing time, and raised 903 16 s early)."""
        if tr.drove_off is None or tr.drove_off[0] < stay.since:
            return False
        _, ground, point = tr.drove_off
        if ground is not None and stay.ground is not None:
            return math.dist(ground, stay.ground) > STANDING_RADIUS_M
        return math.dist(point, stay.point) > max(3.0, STANDING_RADIUS_BOX * stay.box_h)

    def _standing_others(self, tr: _Track | _Stay, lane_id: str, by_lane: dict[str, list[_Track]], t: float
                         ) -> list[_Track | _Stay]:
        """The standing vehicles on a lane other than `tr`: those seen on this frame, and those hidden on it (their
        stays; not where `tr` stands)."""
        out: list[_Track | _Stay] = [o for o in by_lane.get(lane_id, []) if o is not tr and self._is_standing(o, t)]
        for s in self._hidden:
            if s.lane_id != lane_id or s is tr or t - s.since < STANDING_MIN_S:
                continue
            if tr.ground is not None and s.ground is not None:
                if math.dist(tr.ground, s.ground) <= STANDING_RADIUS_M:
                    continue
            elif math.dist(tr.point, s.point) <= max(3.0, STANDING_RADIUS_BOX * tr.box_h):
                continue
            out.append(s)
        return out

    def _waiting(self, tr: _Track | _Stay, lane: Lane, by_lane: dict[str, list[_Track]], t: float) -> str:
        """Whether a standing vehicle waits in traffic: "ahead" behind a standing vehicle on its lane (or at the lane's
        downstream end), "beside" standing traffic of the same direction (a red light, a jam), else "". Vehicles hidden
        on this frame but standing a moment ago count (a detection missed on a frame is no gap in the queue)."""
        u = self._geo.lane_dir_g.get(lane.id)
        # Near the downstream end of the lane's drawn stretch the queue may go on where the camera's lanes do not reach
        # (the stop line, vehicles the camera does not see): a vehicle standing there may wait for them (found by
        # `v2x sim score`: the first car of each red light's queue in view raised 903, and with the car behind it,
        # 1001, its leaders standing beyond the lane's end).
        end = self._geo.lane_end_along.get(lane.id)
        if u is not None and end is not None and tr.ground is not None \
                and end - _along(tr.ground, u) <= QUEUE_HEAD_END_M:
            return "ahead"
        for other in self._standing_others(tr, lane.id, by_lane, t):
            if u is not None and tr.ground is not None and other.ground is not None:
                ahead = _along(other.ground, u, tr.ground)
                if 0 < ahead <= QUEUE_GAP_M:
                    return "ahead"
            elif tr.ground is not None and other.ground is not None:
                if math.dist(tr.ground, other.ground) <= QUEUE_GAP_M:
                    return "ahead"
            elif math.dist(tr.point, other.point) <= QUEUE_GAP_BOX * tr.box_h:
                return "ahead"
        if u is None:
            return ""
        for lane_id in {*by_lane, *(s.lane_id for s in self._hidden)}:
            v = self._geo.lane_dir_g.get(lane_id)
            if lane_id == lane.id or v is None or u[0] * v[0] + u[1] * v[1] < math.cos(
                    math.radians(SAME_DIRECTION_DEG)):
                continue
            if self._standing_others(tr, lane_id, by_lane, t):
                return "beside"
        return ""

    def _in_contact(self, tr: _Track, by_lane: dict[str, list[_Track]], t: float) -> bool:
        """Whether a standing vehicle touches another standing one on its lane (seen, or hidden on this frame: its
        crash partner missed on the frame its stop reached the threshold raised 903, found by `v2x sim score`)."""
        ground = tr.ground
        return ground is not None and any(
            other.ground is not None and _touching(ground, other.ground, self._geo.lane_dir_g.get(tr.lane_id))
            for other in self._standing_others(tr, tr.lane_id, by_lane, t))

    def _unseen_standing(self, lane_id: str, seen: list[_Track], t: float) -> list[_Track]:
        """Vehicles of the lane that stood when last seen, QUEUE_MEMORY_S ago at most, and are not seen now."""
        shown = {id(tr) for tr in seen}
        return [tr for tr in self._tracks.values() if id(tr) not in shown and tr.lane_id == lane_id
                and tr.object_class in VEHICLES and 0 < t - tr.last_t <= QUEUE_MEMORY_S
                and tr.last_t - tr.anchor_t >= STANDING_MIN_S]

    def _is_standing(self, tr: _Track, t: float) -> bool:
        return tr.standing_s(t) >= STANDING_MIN_S

    def _queue_length(self, lane: Lane, standing: list[_Track], by_lane: dict[str, list[_Track]] | None = None,
                      t: float = 0.0) -> float:
        tracks = [tr for tr in standing if tr.ground is not None]
        if not tracks or self._geo.mapping is None:
            return 0.0
        u = self._geo.lane_dir_g.get(lane.id)
        lane_end = self._geo.lane_end_along.get(lane.id)
        if u is None:
            if len(tracks) == 1:
                return VEHICLE_LENGTH_M
            points = [tr.ground for tr in tracks if tr.ground is not None]
            a, b = max(((p, q) for p in points for q in points), key=lambda pq: math.dist(*pq))
            length = math.dist(a, b) or 1.0
            u, lane_end = ((b[0] - a[0]) / length, (b[1] - a[1]) / length), None
        along = sorted(((_along(tr.ground, u), tr) for tr in tracks if tr.ground is not None),
                       key=lambda at: -at[0])
        end, head = along[0]
        last = end
        for s, _ in along[1:]:
            if last - s > QUEUE_GAP_M:
                break
            last = s
        # A vehicle waiting in traffic (beside standing traffic of its direction, or at the lane's downstream end)
        # stands behind the traffic ahead of it, up to the stop line: the queue starts at the lane's downstream end
        # unless a vehicle is seen moving ahead of its first standing one (the queue's front drives off). (Found by
        # replaying `v2x sim score` runs, load/replay_analytics.py: the detector finds a few of the cars of a jam's
        # queue, whose cars overlap in the view, and the queue read 5..18 m of 26; the standing ones it found were the
        # queue's tail. A vehicle standing alone while the traffic beside it flows, a stalled one, is no queue.)
        on_lane = [] if by_lane is None else by_lane.get(lane.id, [])
        if lane_end is not None and lane_end > end and by_lane is not None and self._waiting(head, lane, by_lane, t) \
                and not any(tr.ground is not None and tr.speed is not None and tr.speed >= MOVING_MPS
                            and _along(tr.ground, u) > end for tr in on_lane):
            return lane_end - last + VEHICLE_LENGTH_M / 2
        return end - last + VEHICLE_LENGTH_M

    def _against_lane(self, tr: _Track, lane: Lane) -> bool | None:
        """True when the track moves against the lane's direction, False along it, None unknown."""
        if lane.direction_heading_deg is not None:
            h = tr.heading
            if h is None:
                return None
            return angle_between_deg(h, lane.direction_heading_deg) > WRONG_WAY_ANGLE_DEG
        if lane.direction_px is None or tr.velocity_px is None:
            return None
        vx, vy = tr.velocity_px
        speed_px = math.hypot(vx, vy)
        if tr.speed is not None:
            if tr.speed < MOVING_MPS:
                return None
        elif speed_px < 0.5 * tr.box_h:  # less than half a box height per second: not clearly moving
            return None
        dx, dy = lane.direction_px
        cos = (vx * dx + vy * dy) / (speed_px * (math.hypot(dx, dy) or 1.0))
        return cos < math.cos(math.radians(WRONG_WAY_ANGLE_DEG))

    def _moved_enough(self, tr: _Track) -> bool:
        first, last = tr.history[0], tr.history[-1]
        if first[2] is not None and last[2] is not None:
            return math.dist(first[2], last[2]) >= WRONG_WAY_MIN_M
        return math.dist(first[1], last[1]) >= tr.box_h

    def _steps_against(self, tr: _Track, lane: Lane) -> float | None:
        """The time each of the track's last WRONG_WAY_STEPS steps has gone against the lane over (None when one does
        not): a trajectory, not one jump of a track given to another vehicle's box (found by `v2x sim score`: a
        stalled car's box given to a track last seen further down its lane, whose velocity then pointed back up the
        lane, and where cars cross the picture's side).
        """
        steps = list(tr.history)[-(WRONG_WAY_STEPS + 1):]
        if len(steps) < WRONG_WAY_STEPS + 1:
            return None
        u_g = self._geo.lane_dir_g.get(lane.id)
        u_px = None
        if lane.direction_px is not None:
            n = math.hypot(*lane.direction_px) or 1.0
            u_px = (lane.direction_px[0] / n, lane.direction_px[1] / n)
        limit = math.cos(math.radians(WRONG_WAY_ANGLE_DEG))
        for (t0, p0, g0), (t1, p1, g1) in itertools.pairwise(steps):
            dt = t1 - t0
            if not 0 < dt <= WRONG_WAY_STEP_MAX_S:
                return None
            if u_g is not None and g0 is not None and g1 is not None:
                u, d = u_g, (g1[0] - g0[0], g1[1] - g0[1])
                least, most = MOVING_MPS * dt, WRONG_WAY_STEP_MAX_MPS * dt
            elif u_px is not None:
                u, d = u_px, (p1[0] - p0[0], p1[1] - p0[1])
                least, most = 0.1 * tr.box_h, math.inf
            else:
                return None
            step = math.hypot(*d)
            if not least <= step <= most or _along(d, u) >= limit * step:
                return None
        return steps[-1][0] - steps[0][0]

    def _held(self, tr: _Track, key: str, condition: bool, t: float, seconds: float) -> bool:
        """True when `condition` has held since at least `seconds` ago (continuously)."""
        if not condition:
            tr.since.pop(key, None)
            return False
        since = tr.since.setdefault(key, t)
        return t - since >= seconds

    def _track_events(self, tr: _Track, t: float, at: datetime, frame_id: int,
                      by_lane: dict[str, list[_Track]], lane_mean: dict[str, float | None],
                      minute_key: int) -> list[Event]:
        geo = self._geo
        spec = geo.spec
        out: list[Event] = []
        lane = geo.lanes.get(tr.lane_id)
        vehicle = tr.object_class in VEHICLES

        # Zones: stopped vehicle / illegal parking.
        in_zone = False
        for zone in geo.stop_zones:
            inside = point_in_polygon(tr.point, zone.polygon)
            if inside:
                in_zone = True
                tr.zone_entered.setdefault(zone.id, t)
                tr.zone_left.pop(zone.id, None)
            elif zone.id in tr.zone_entered:
                left = tr.zone_left.setdefault(zone.id, t)
                if t - left >= ZONE_REARM_S:
                    tr.zone_entered.pop(zone.id, None)
                    tr.zone_left.pop(zone.id, None)
                    tr.zone_active.discard(zone.id)
            if not inside or not vehicle or zone.id in tr.zone_active:
                continue
            stood = t - max(tr.anchor_t, tr.zone_entered[zone.id])
            # A vehicle queued in traffic on a no-stopping stretch of its lane waits, it has not stopped there (found
            # by `v2x sim score`: in a jam's queue on the kerb lane, whose no-stopping strip the oblique view puts
            # under the cars' feet, a queued car raised a false 1002). It is judged again once the queue moves off.
            if zone.kind is ZoneKind.NO_STOPPING and lane is not None:
                if self._waiting(tr, lane, by_lane, t) == "ahead":
                    tr.queued_t = t
                if tr.queued_t is not None and t - tr.queued_t < WAITED_FOLLOWS_S:
                    continue
            if stood >= geo.zone_threshold(zone):
                n = tr.zone_raised.get(zone.id, 0) + 1
                tr.zone_raised[zone.id] = n
                tr.zone_active.add(zone.id)
                kind = EventType.ILLEGAL_PARKING if zone.kind is ZoneKind.NO_STOPPING else EventType.STOPPED_VEHICLE
                out.append(self._event(kind, tr, at, frame_id, f"{zone.id}:{n}", zone_id=zone.id,
                                       stationary_s=int(stood)))

        if lane is None:
            return out

        if tr.object_class is VehicleClass.PERSON:
            if self._held(tr, "person", True, t, PEDESTRIAN_MIN_S) and "405" not in tr.raised:
                tr.raised.add("405")
                out.append(self._event(EventType.PEDESTRIAN_ON_ROAD, tr, at, frame_id, lane.id))
            return out
        tr.since.pop("person", None)
        if not vehicle:
            return out

        against = self._against_lane(tr, lane) if lane.has_direction else None
        # Lane count, once per lane, after a few frames on the lane, or on the frame a vehicle counted on another lane
        # already comes onto it (a lane change: SUMO's take one step, and near the picture's edge the next box is cut).
        # Seen on the lane on 2 frames, not on 2 frames of which the last is on the lane: the tracker gives a track seen
        # once (velocity unknown) the nearest box on its second frame, at 3 frames/s often the next car of a platoon
        # on the lane beside, and that track was counted there (replayed 600 s run, load/replay_analytics.py, with
        # the exchange of counts in _exchange_counts: count MAPE exact boxes 6.4 -> 5.4 %, 30 % missed 22.3 -> 21.4 %,
        # the detector's boxes 23.2 -> 20.5 %).
        if lane.id not in tr.counted and not tr.clipped and (
                tr.lane_frames >= COUNT_AFTER_FRAMES or (tr.observations >= COUNT_AFTER_FRAMES and bool(tr.counted))
                or self._frame_gap_s >= SPARSE_FRAME_GAP_S):
            # A vehicle counted already, found again (or in a standing queue, which it joined when it was counted): its
            # count stands.
            if self._counted_there(tr, lane.id, t) or self._inside_queue(tr, lane.id, by_lane, t):
                tr.counted[lane.id] = (minute_key, bool(against))
            else:
                self._count(tr, lane.id, bool(against))

        # Wrong way.
        key = f"904:{lane.id}"
        steps_s = self._steps_against(tr, lane) if against and self._moved_enough(tr) else None
        wrong = steps_s is not None
        tr.wrong_streak = tr.wrong_streak + 1 if wrong else 0
        # Held for 1 s: the condition on frames 1 s apart, or steps against the lane or a velocity against it spanning
        # 1 s (at a low frame rate the first frame the steps are known on already spans a second of driving).
        if ((self._held(tr, key, wrong, t, WRONG_WAY_MIN_S) or tr.wrong_streak >= WRONG_WAY_MIN_ESTIMATES
             or (steps_s is not None
                 and min(max(steps_s, tr.velocity_span_s), t - tr.lane_since) >= WRONG_WAY_MIN_S))
                and key not in tr.raised):
            tr.raised.add(key)
            out.append(self._event(EventType.WRONG_WAY, tr, at, frame_id, lane.id))
            counted = tr.counted.get(lane.id)
            if counted is not None and not counted[1]:
                tr.counted[lane.id] = (counted[0], True)
                with self._lock:
                    minute = self._minutes.get(counted[0])
                    if minute is not None:
                        agg = minute.lanes.setdefault(lane.id, _LaneAgg())
                        agg.vehicles = max(0, agg.vehicles - 1)
                        agg.wrong_way += 1
                        minute.dirty = True

        speed = tr.speed
        th = spec.thresholds
        if speed is None:
            # No speed (a jump started its estimate again): the frames over the limit are no longer consecutive. A track
            # seen once on a car leaving the picture took the box of one coming in at its edge (84 km/h), the jump
            # cleared its speed, and the next step read 61 km/h for the 46 km/h car: two readings over the limit, a
            # false 901 (a replayed run, seed 3; no other event of four runs changed with this).
            tr.over_streak = 0
        else:
            kmh = speed * 3.6
            if lane.speed_limit_kmh > 0:
                over = kmh > lane.speed_limit_kmh + th.overspeed_tolerance_kmh
                tr.over_streak = tr.over_streak + 1 if over else 0
                if (self._held(tr, "901", over, t, OVERSPEED_MIN_S) or tr.over_streak >= OVERSPEED_MIN_ESTIMATES
                        or (over and min(tr.velocity_span_s, t - tr.lane_since) >= OVERSPEED_MIN_S)) \
                        and "901" not in tr.raised:
                    tr.raised.add("901")
                    out.append(self._event(EventType.OVERSPEED, tr, at, frame_id, lane.id))
            others = [o.speed for o in by_lane.get(lane.id, []) if o is not tr and o.speed is not None]
            flowing = not others or sum(others) / len(others) * 3.6 >= 2 * th.slow_vehicle_kmh
            slow = speed >= MOVING_MPS and kmh < th.slow_vehicle_kmh and flowing
            if self._held(tr, "902", slow, t, SLOW_MIN_S) and "902" not in tr.raised:
                tr.raised.add("902")
                out.append(self._event(EventType.SLOW_VEHICLE, tr, at, frame_id, lane.id))

        # Stopped on the lane, outside zones, not waiting in traffic. A vehicle standing in a parking spot is
        # parked, not stopped (found by `v2x sim score`: kerbside spots overlap the kerb lane in an oblique view), and
        # so is one whose stay began off the lanes or in a spot.
        # (A track whose box was set aside on this frame is in no stay on it: the stay it showed last.)
        stay = self._stay_of.get(tr.track_id) or next((s for s in self._stays if s.track_id == tr.track_id), None)
        in_spot = any(point_in_polygon(tr.point, z.polygon) for z in geo.spot_zones) or (
            stay is not None and stay.parked)
        # (A vehicle standing in contact with another is a crash once both have stood the threshold: 1001, not 903.)
        # A vehicle that waited in traffic a moment ago is not stopped the moment the traffic ahead of it moves off:
        # it follows a few seconds later (found by `v2x sim score`: the first car of a jam's queue standing 200 s
        # raised 903 as the car ahead of it drove off).
        if not in_zone and not in_spot and "903" not in tr.raised and self._is_standing(tr, t):
            waiting = self._waiting(tr, lane, by_lane, t)
            if waiting:
                tr.waited_t = t
            if waiting == "ahead":
                tr.queued_t = t
            elif tr.standing_s(t) >= th.stop_threshold_s and (tr.waited_t is None or t - tr.waited_t >= WAITED_FOLLOWS_S
                                                                ) and not self._in_contact(tr, by_lane, t):
                tr.raised.add("903")
                out.append(self._event(EventType.STOPPED_VEHICLE, tr, at, frame_id, lane.id,
                                       stationary_s=int(tr.standing_s(t))))
        return out

    def _judge_halts(self, seen: list[_Track], by_lane: dict[str, list[_Track]], t: float) -> None:
        """Judges, once per halt, whether each vehicle standing on a lane came to its halt behind traffic on its lane: a
        vehicle standing or halting (under MOVING_MPS) ahead of it within QUEUE_GAP_M, seen up to WAITED_FOLLOWS_S
        before, or the lane's downstream end (as `_waiting`). Such a vehicle waits in traffic until traffic is seen
        moving on its lane ahead of it, however long the detector loses the one it halted behind: in a dense queue it
        finds each car on some frames only, and the tracker gives a lost car's track to the car beside it (found by
        `v2x sim score`: cars of a jam's queue, nose to tail as the oblique view misjudges their gaps, their leader lost
        as it crept to a halt, raised 1001 once they had stood the threshold; the queue's cars as it moved off did too,
        their leaders gone unseen)."""
        while self._halting and t - self._halting[0][0] > WAITED_FOLLOWS_S:
            self._halting.popleft()
        on_lanes = [tr for tr in seen if tr.lane_id and tr.object_class in VEHICLES and tr.ground is not None]
        for tr in on_lanes:
            lane = self._geo.lanes.get(tr.lane_id)
            u = self._geo.lane_dir_g.get(tr.lane_id)
            if lane is None or u is None or tr.ground is None:
                continue
            if tr.halted_queued and any(
                    o.ground is not None and o.velocity_g is not None and o is not tr
                    and _along(o.velocity_g, u) >= MOVING_MPS
                    and _along(o.ground, u, tr.ground) > STANDING_RADIUS_M
                    for o in by_lane.get(tr.lane_id, [])):
                tr.halted_queued = False  # the traffic ahead drives off: it follows within WAITED_FOLLOWS_S
                tr.queued_t = t
            if tr.halted_queued is not None or not self._is_standing(tr, t):
                continue
            stay = self._stay_of.get(tr.track_id)
            if stay is not None and stay.halted_queued is not None:
                tr.halted_queued = stay.halted_queued
                continue
            ground = tr.ground
            waiting = self._waiting(tr, lane, by_lane, t)
            if tr.standing_s(t) > STANDING_MIN_S + WAITED_FOLLOWS_S:
                # Its halt was not seen on a lane (it stood off the lanes, its box cut by the picture's side, or its
                # stay was never judged): traffic standing around it now, ahead or beside, is what it waits in (found
                # by `v2x sim score`, replayed: such a car of a jam's queue, shown on its lane at last, raised 1001
                # with the car behind it).
                tr.halted_queued = bool(waiting)
                continue
            tr.halted_queued = waiting == "ahead" or any(
                lane_id == tr.lane_id and track_id != tr.track_id
                and STANDING_RADIUS_M < _along(g, u, ground) <= QUEUE_GAP_M
                for _, lane_id, g, track_id in self._halting)
        for tr in on_lanes:
            if tr.ground is not None and (self._is_standing(tr, t) or (tr.speed is not None and tr.speed < MOVING_MPS)):
                self._halting.append((t, tr.lane_id, tr.ground, tr.track_id))

    def _crashes(self, by_lane: dict[str, list[_Track]], t: float) -> list[tuple[list[_Track], list[_Stay]]]:
        """Groups of vehicles standing nose to tail on a lane, outside zones, for the stop threshold, not waiting in
        traffic: the tracks seen on this frame, and the stays of those hidden on it (a group has one seen at least)."""
        threshold = self._geo.spec.thresholds.stop_threshold_s
        zones = (*self._geo.stop_zones, *self._geo.spot_zones)
        groups: list[tuple[list[_Track], list[_Stay]]] = []
        for lane_id, tracks in by_lane.items():
            lane = self._geo.lanes.get(lane_id)
            if lane is None:
                continue
            u = self._geo.lane_dir_g.get(lane_id) or (0.0, 0.0)
            stood: list[_Track | _Stay] = [
                tr for tr in tracks if tr.ground is not None and tr.standing_s(t) >= threshold
                and not any(point_in_polygon(tr.point, z.polygon) for z in zones)]
            seen_grounds = [m.ground for m in stood if m.ground is not None]
            stood += [s for s in self._hidden if s.lane_id == lane_id and s.ground is not None
                      and t - s.since >= threshold and not any(point_in_polygon(s.point, z.polygon) for z in zones)
                      and all(math.dist(s.ground, g) > STANDING_RADIUS_M for g in seen_grounds)]
            grouped: set[int] = set()
            for start in stood:
                if not isinstance(start, _Track) or id(start) in grouped:
                    continue
                group: list[_Track | _Stay] = [start]
                todo: list[_Track | _Stay] = [start]
                grouped.add(id(start))
                while todo:
                    cur = todo.pop()
                    for other in stood:
                        if id(other) not in grouped and cur.ground is not None and other.ground is not None \
                                and math.dist(cur.ground, other.ground) <= CRASH_CONTACT_M:
                            grouped.add(id(other))
                            group.append(other)
                            todo.append(other)
                if len(group) >= 2 and self._two_vehicles(group, self._geo.lane_dir_g.get(lane_id)):
                    first = max(group, key=lambda g: 0.0 if g.ground is None else g.ground[0] * u[0]
                                + g.ground[1] * u[1])
                    # Standing traffic beside the group does not hold it: vehicles waiting at a red light or in a
                    # jam keep a gap to the one ahead, and two that touch are a crash whatever the next lane does.
                    # (`v2x sim score` puts its crashes 38 m before the stop line, where the rush hour's red-light
                    # queues of the next lane reach: such a crash waited until 5 s after that queue drove off, up to
                    # the red's 45 s.) Traffic standing ahead of it on its own lane does hold it.
                    if first.halted_queued or self._waiting(first, lane, by_lane, t) == "ahead":
                        first.queued_t = t
                    elif first.queued_t is None or t - first.queued_t >= WAITED_FOLLOWS_S:
                        groups.append(([g for g in group if isinstance(g, _Track)],
                                       [g for g in group if isinstance(g, _Stay)]))
        for tracks_of, hidden_of in groups:
            members: list[_Track | _Stay] = [*tracks_of, *hidden_of]
            for m in members:
                m.raised.add("903")  # the crash is the event; its vehicles are not stopped vehicles too
        return groups

    @staticmethod
    def _two_vehicles(group: Sequence[_Track | _Stay], u: Point | None) -> bool:
        """Whether a group standing in contact holds two vehicles: two of its members apart by a vehicle's length at
        least (found by `v2x sim score`, replayed: in a jam's queue a car shown by two tracks 2.4 m apart, the queue's
        car ahead of it missed, raised 1001)."""
        grounds = [m.ground for m in group if m.ground is not None]
        return any(_touching(a, b, u) for i, a in enumerate(grounds) for b in grounds[i + 1:])

    def _crash_event(self, group: list[_Track], hidden: list[_Stay], t: float, at: datetime, frame_id: int
                     ) -> list[Event]:
        members: list[_Track | _Stay] = [*group, *hidden]
        if any("1001" in m.raised for m in members):
            for m in members:
                m.raised.add("1001")
            return []
        for m in members:
            m.raised.add("1001")
        first = min(group, key=lambda tr: tr.track_id)
        e = self._event(EventType.ACCIDENT, first, at, frame_id, first.lane_id,
                        stationary_s=int(min(t - m.since if isinstance(m, _Stay) else m.standing_s(t)
                                             for m in members)))
        geo = self._geo
        grounds = [m.ground for m in members if m.ground is not None]
        if geo.mapping is not None and grounds:
            lat, lon = geo.mapping.to_wgs84((sum(g[0] for g in grounds) / len(grounds),
                                             sum(g[1] for g in grounds) / len(grounds)))
            e = replace(e, lat=lat, lon=lon)
        return [e]

    def _count_lines(self, tr: _Track, minute_key: int) -> None:
        if tr.object_class not in VEHICLES:
            return
        for line in self._geo.spec.lines:
            length = math.dist(line.start, line.end) or 1.0
            dist = cross(line.start, line.end, tr.point) / length
            if abs(dist) < LINE_MARGIN_PX:
                continue
            side = 1 if dist > 0 else -1
            previous = tr.line_sides.get(line.id)
            tr.line_sides[line.id] = (side, tr.point)
            if previous is None or previous[0] == side:
                continue
            if segment_intersection(previous[1], tr.point, line.start, line.end) is None:
                continue
            positive_side = 1 if cross(line.start, line.end, line.positive_toward) > 0 else -1
            with self._lock:
                minute = self._bucket(minute_key)
                counts = minute.lines.setdefault(line.id, [0, 0])
                counts[0 if side == positive_side else 1] += 1
                minute.dirty = True

    def _jam(self, lane: Lane, live: _LaneLive, level: Congestion, queue_m: float, crawling: bool, t: float,
             at: datetime, frame_id: int) -> list[Event]:
        if level is Congestion.UNKNOWN:
            return []
        # Vehicles of a stop or a crash already raised (903, 1001) are that incident, not a queue of traffic (found by
        # `v2x sim score`: a crash's two cars, seen under several tracks as traffic passed in front, made their lane
        # "moderate" with a "queue", and a 707 followed the 1001).
        if (queue_m > 0 and self._queue_beyond_incidents(lane, t)) or crawling:
            if live.queue_seen is None or t - live.queue_seen > JAM_QUEUE_GRACE_S:
                live.queue_since = t
            live.queue_seen = t
        queued = live.queue_seen is not None and t - live.queue_seen <= JAM_QUEUE_GRACE_S
        if level >= Congestion.MODERATE and (queued or live.jam_raised):
            live.clear_since = None
            if live.jam_since is None:
                # The jam's minute counts from when its queue formed, not from when the lane's 60-s mean speed fell to
                # moderate: the mean still holds the free-flowing vehicles of the minute before the queue, and lagged
                # the queue by up to a minute (found by `v2x sim score`: a jam's queue stood 44 s before its lane read
                # moderate, and its 707 came 105 s after the queue reached 15 m).
                live.jam_since = live.queue_since if queued and live.queue_since is not None else t
            if not live.jam_raised and t - live.jam_since >= JAM_MIN_S:
                live.jam_raised = True
                spec = self._geo.spec
                lat, lon = self._lane_position(lane)
                episode = int(live.jam_since * 1000)
                return [Event(f"{spec.id}:707:{lane.id}:{episode}", EventType.TRAFFIC_JAM, spec.id, frame_id, at,
                              lat, lon, 0.8, lane_id=lane.id, congestion=level, queue_length_m=round(queue_m, 1))]
            return []
        if live.jam_raised:
            # Cleared once the lane has been light or better without a queue for JAM_CLEAR_S: a queue that is still
            # there is the same jam, though its cars are seen too rarely to judge the lane by speed (found by
            # `v2x sim score`: a jam's queue whose inner lane the detector barely saw was "light", re-armed, and raised
            # a second 707 as it drove off).
            if queued or live.clear_since is None:
                live.clear_since = t
            if t - live.clear_since >= JAM_CLEAR_S:
                live.jam_raised, live.jam_since, live.clear_since = False, None, None
        else:
            live.jam_since = None
        return []

    def _queue_beyond_incidents(self, lane: Lane, t: float) -> bool:
        """Whether a vehicle stands on the lane on this frame that is not itself a stop or a crash already raised."""
        return any(tr.lane_id == lane.id and tr.last_t == t and tr.object_class in VEHICLES
                   and self._is_standing(tr, t) and not tr.raised & _STAY_EVENTS for tr in self._tracks.values())

    def _lane_position(self, lane: Lane) -> tuple[float, float]:
        geo = self._geo
        pts = lane.polygon or lane.centerline
        if geo.mapping is not None and pts:
            c = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
            ll = geo.mapping.image_to_wgs84(c)
            if ll is not None:
                return ll
        return geo.spec.lat, geo.spec.lon

    def _update_spots(self, seen: list[_Track], t: float, at: datetime) -> list[SpotChange]:
        geo = self._geo
        changes: list[SpotChange] = []
        vehicles = [tr for tr in seen if tr.object_class in VEHICLES]
        for zone in geo.spot_zones:
            spot = self._spots.setdefault(zone.id, _Spot())
            inside = [tr for tr in vehicles if point_in_polygon(tr.point, zone.polygon)]
            for tr in inside:
                tr.zone_entered.setdefault(zone.id, t)
            threshold = geo.zone_threshold(zone)
            # A stay belongs to the spot, not to a track: traffic passing in front of a parked car hides it for a
            # moment and its next sighting is a new track (found by `v2x sim score` on kerbside spots behind four
            # lanes). It ends once no standing vehicle has been seen in the zone for SPOT_FREE_AFTER_S.
            standing = [tr for tr in inside if t - max(tr.anchor_t, tr.zone_entered[zone.id]) >= STANDING_MIN_S]
            new_state: SpotState | None = None
            if standing:
                spot.empty_since = None
                if spot.stay_since is None:
                    spot.stay_since = min(max(tr.anchor_t, tr.zone_entered[zone.id]) for tr in standing)
                if t - spot.stay_since >= threshold and spot.state is not SpotState.OCCUPIED:
                    new_state = SpotState.OCCUPIED
            else:
                if spot.empty_since is None:
                    spot.empty_since = t
                if t - spot.empty_since >= SPOT_FREE_AFTER_S:
                    spot.stay_since = None
                    if spot.state is not SpotState.FREE:
                        new_state = SpotState.FREE
            for tr in vehicles:
                if tr not in inside:
                    tr.zone_entered.pop(zone.id, None)
            if new_state is not None:
                spot.state = new_state
                if zone.lot_id and zone.spot_id:
                    changes.append(SpotChange(zone.lot_id, zone.spot_id, new_state, at, geo.spec.id))
        return changes

    def _forget(self, t: float) -> None:
        self._vacated = [v for v in self._vacated if t - v.t <= TRACK_FORGET_S]
        self._lost_still = [s for s in self._lost_still if t - s[0] <= COUNT_MEMORY_S]
        self._stays = [s for s in self._stays if t - s.last_t <= TRACK_FORGET_S]
        for track_id in [k for k, tr in self._tracks.items() if t - tr.last_t > TRACK_FORGET_S]:
            tr = self._tracks.pop(track_id)
            if tr.ground is not None and tr.counted and (tr.speed is None or tr.speed < STILL_MPS):
                self._lost_still.extend((tr.last_t, tr.ground, lane_id) for lane_id in tr.counted)

    def _count(self, tr: _Track, lane_id: str, wrong: bool) -> None:
        """Counts the track on the lane, in the minute it came onto the lane (or this one, when that has gone)."""
        entered = int(self._count_time(tr, lane_id) // 60) * 60
        tr.counted[lane_id] = (entered, wrong)
        with self._lock:
            bucket = self._bucket(entered)
            agg = bucket.lanes.setdefault(lane_id, _LaneAgg())
            if wrong:
                agg.wrong_way += 1
            else:
                agg.vehicles += 1
            bucket.dirty = True

    def _count_time(self, tr: _Track, lane_id: str) -> float:
        """When a count of the track on the lane is placed: when its vehicle came onto the lane, or now (the frame that
        counts it) when that minute has gone."""
        came = self._came_onto(tr, lane_id)
        return came if int(came // 60) * 60 in self._minutes else tr.last_t

    def _fell_behind(self, tr: _Track, ground: Point, predicted: Point) -> bool:
        """Whether the track, moving along its lane, was given a box a vehicle length or more behind where its motion
        puts it (``predicted``): the box of the vehicle behind, not its own. At 3 frames/s a platoon's cars come into
        the picture at the same place a second or so apart, and the track of a car that the tracker lost for a frame
        (its box went to a new track) took the next car's box there; that car was never counted, as the track had
        counted its lane already. Three 600 s runs (seeds 1, 2, 3) replayed with the detector's boxes
        (load/replay_analytics.py): count MAPE 5.3 / 6.5 / 4.8 -> 4.9 / 5.9 / 4.7 % (3.5 m: 5.1 / 5.9 / 4.3; 6.5 m:
        4.9 / 5.9 / 4.8; 8 m: 4.9 / 6.9 / 4.8)."""
        u = self._geo.lane_dir_g.get(tr.lane_id) if tr.lane_id else None
        if u is None or tr.velocity_g is None or _along(tr.velocity_g, u) < MOVING_MPS:
            return False
        return _along(predicted, u, ground) >= VEHICLE_LENGTH_M

    def _inside_queue(self, tr: _Track, lane_id: str, by_lane: dict[str, list[_Track]], t: float) -> bool:
        """Whether the track is between two standing vehicles of its lane, each a queue's gap away at most: a vehicle
        of their queue, found again, not one come onto the lane (it cannot have driven through them). Its first boxes
        jitter (a queue's cars score 0.30..0.39 and their boxes come and go), so it may read as moving, and the count
        memory (_counted_there) holds for standing vehicles only: on a scored run's jammed lane, 7 counts in a minute
        for the 2 cars that came onto it. Three 600 s runs (seeds 1, 2, 3) replayed with the detector's boxes
        (load/replay_analytics.py): count MAPE 4.9 / 5.9 / 4.7 -> 4.8 / 3.9 / 4.8 %, every event type as before."""
        u = self._geo.lane_dir_g.get(lane_id)
        if u is None or tr.ground is None:
            return False
        ahead = behind = False
        for other in self._standing_others(tr, lane_id, by_lane, t):
            if other.ground is None:
                continue
            d = _along(other.ground, u, tr.ground)
            ahead = ahead or 0 < d <= QUEUE_GAP_M
            behind = behind or -QUEUE_GAP_M <= d < 0
        return ahead and behind

    def _came_onto(self, tr: _Track, lane_id: str) -> float:
        """When the track's vehicle came onto the lane: when it was first seen there, or earlier, as far back as its
        depth into the lane at its speed along it puts it (see ENTRY_BACKDATE_MAX_S), unless it came from another lane:
        then when it changed lanes (the estimate put a car changing lanes just after a minute turned into the minute
        before; five replayed runs: count MAPE 4.8 / 3.9 / 4.8 / 5.4 / 5.7 -> 4.8 / 3.8 / 4.8 / 5.4 / 5.3 %)."""
        geo = self._geo
        u, start = geo.lane_dir_g.get(lane_id), geo.lane_start_along.get(lane_id)
        if tr.lane_before or u is None or start is None or tr.velocity_g is None or tr.ground is None:
            return tr.lane_since
        speed = _along(tr.velocity_g, u)
        if speed < ENTRY_MIN_MPS:
            return tr.lane_since
        depth = max(0.0, _along(tr.ground, u) - start)
        return max(min(tr.lane_since, tr.last_t - depth / speed), tr.lane_since - ENTRY_BACKDATE_MAX_S)

    def _counted_there(self, tr: _Track, lane_id: str, t: float) -> bool:
        """Whether this track, not moving, shows a vehicle counted on the lane that stood or crawled where it is when it
        was last seen, COUNT_MEMORY_S ago at most (lost while hidden or missed): then it takes that one's place."""
        if tr.ground is None or (tr.speed is not None and tr.speed >= STILL_MPS):
            return False
        for entry in self._lost_still:
            if entry[2] == lane_id and math.dist(entry[1], tr.ground) <= COUNT_MEMORY_RADIUS_M:
                self._lost_still.remove(entry)
                return True
        for other in self._tracks.values():
            if other is not tr and other.last_t < t and lane_id in other.counted and other.ground is not None \
                    and (other.speed is None or other.speed < STILL_MPS) \
                    and math.dist(other.ground, tr.ground) <= COUNT_MEMORY_RADIUS_M:
                return True
        return False

    # ----- output --------------------------------------------------------------------------------

    def _object(self, tr: _Track, sx: float, sy: float) -> TrackedObject:
        geo = self._geo
        lat_lon = geo.mapping.to_wgs84(tr.ground) if geo.mapping is not None and tr.ground is not None else None
        assert tr.box is not None
        return TrackedObject(tr.track_id, tr.object_class, tr.scores[-1], tr.box.scaled(sx, sy), lat_lon,
                             None if tr.speed is None else round(tr.speed, 3),
                             None if tr.heading is None else round(tr.heading, 1), tr.lane_id)

    def _event(self, kind: EventType, tr: _Track, at: datetime, frame_id: int, discriminator: str, *,
               zone_id: str = "", stationary_s: int = 0) -> Event:
        geo = self._geo
        spec = geo.spec
        lat, lon = spec.lat, spec.lon
        if geo.mapping is not None and tr.ground is not None:
            lat, lon = geo.mapping.to_wgs84(tr.ground)
        return Event(
            event_id=f"{spec.id}:{int(kind)}:{tr.track_id}:{discriminator}", type=kind, camera_id=spec.id,
            frame_id=frame_id, observed_at=at, lat=lat, lon=lon, confidence=round(tr.confidence, 3),
            track_id=tr.track_id, object_class=tr.object_class, lane_id=tr.lane_id, zone_id=zone_id,
            speed_mps=None if tr.speed is None else round(tr.speed, 3),
            heading_deg=None if tr.heading is None else round(tr.heading, 1),
            stationary_s=stationary_s, box=tr.box,
        )

    @staticmethod
    def _event_to_frame(e: Event, sx: float, sy: float) -> Event:
        if e.box is None:
            return e
        return replace(e, box=e.box.scaled(sx, sy))

    # ----- counts and spots, read from other threads ------------------------------------------------

    def _bucket(self, minute_key: int) -> _Minute:
        minute = self._minutes.get(minute_key)
        if minute is None:
            minute = self._minutes[minute_key] = _Minute()
            for old in sorted(self._minutes)[:-MINUTES_KEPT]:
                del self._minutes[old]
        return minute

    def minutes(self, *, dirty_only: bool = False, clear_dirty: bool = False) -> list[MinuteCounts]:
        spec = self._geo.spec
        calibrated = self._geo.mapping is not None
        out: list[MinuteCounts] = []
        with self._lock:
            for key in sorted(self._minutes):
                m = self._minutes[key]
                if dirty_only and not m.dirty:
                    continue
                if clear_dirty:
                    m.dirty = False
                lanes = []
                for lane in spec.lanes:
                    a = m.lanes.get(lane.id, _LaneAgg())
                    mean, vehicles = vehicle_mean_speed(a.speeds)
                    level = (congestion_level(mean, a.max_queue_m, calibrated, vehicles) if m.frames
                             else Congestion.UNKNOWN)
                    lanes.append(LaneMinute(lane.id, a.vehicles, a.wrong_way, round(a.max_queue_m, 2),
                                            None if mean is None else round(mean, 3), level))
                lines = [LineMinute(line.id, *m.lines.get(line.id, [0, 0])) for line in spec.lines]
                out.append(MinuteCounts(datetime.fromtimestamp(key, UTC), m.frames, tuple(lanes), tuple(lines)))
        return out

    def mark_dirty(self, minute_starts: Sequence[datetime]) -> None:
        """Marks minutes to be written again (their last write failed)."""
        with self._lock:
            for start in minute_starts:
                minute = self._minutes.get(int(start.timestamp()))
                if minute is not None:
                    minute.dirty = True

    def spot_states(self) -> list[tuple[str, str, SpotState]]:
        """(lot id, spot id, state) of every spot zone with a known state."""
        out = []
        for zone in self._geo.spot_zones:
            spot = self._spots.get(zone.id)
            if spot is not None and spot.state is not None and zone.lot_id and zone.spot_id:
                out.append((zone.lot_id, zone.spot_id, spot.state))
        return out
