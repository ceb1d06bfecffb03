"""Scenarios: events made to happen in the traffic at chosen times, with their ground truth.

Each injection puts vehicles of its own into SUMO (type `scenario`) on a camera's approach and drives them:

* 903 stalled vehicle: stops on the inner lane coming in (``setStop``) for its duration;
* 1001 crash: two vehicles stop nose to tail on the inner lane (no gap) for its duration;
* 1002 illegal parking: pulls over into the kerb strip of the no-stopping zone (a parking stop) for its duration;
* 904 wrong way: drives up the kerb lane against the traffic, moved every step with ``moveToXY(keepRoute=2)``;
* 901 overspeed: drives through at 70 km/h (speed mode 0, fixed speed) where the limit is 50;
* 707 jam: the approach's signal stays red for its duration (a copy of the junction's program with the approach's
  links red), so a queue backs up along it (measured by the E2 detectors); a platoon of JAM_PLATOON vehicles per
  lane comes with it, so that it backs up at night too.

Ground truth of an event: `start` is when its condition first holds where the camera sees it (a stopped vehicle has
stood for the camera's stop threshold; a wrong-way or speeding vehicle is on the camera's lanes; the queue coming in
reaches JAM_QUEUE_M), `end` when it stops holding; `hold_s` is the rule's own waiting time after that (1 s for motion
events, 60 s of congestion for a jam) during which no system can report it yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import libsumo

from roadside_sim.cameras import FAR_M, NEAR_M, NO_STOPPING_M, SPEED_LIMIT_KMH, STOP_THRESHOLD_S, CameraRig
from roadside_sim.network import Approach, District

WRONG_WAY_MPS = 8.0
OVERSPEED_MPS = 19.5  # 70 km/h where the limit is 50 (and 60 raises 901)
OVERSPEED_TOLERANCE_KMH = 10.0
JAM_QUEUE_M = 15.0
JAM_HOLD_S = 60.0
JAM_PLATOON = 14  # vehicles per lane a jam brings along: a 70 m queue, past the far end of the camera's lanes (52 m)
STOP_ALONG_M = 38.0  # where stalls and crashes happen: mid-view on the inner lane coming in


class Kind(IntEnum):
    OVERSPEED = 901
    STOPPED = 903
    WRONG_WAY = 904
    JAM = 707
    CRASH = 1001
    ILLEGAL_PARKING = 1002


# The order events are planned in: the ones the police should see first in a demo (stopped, wrong way, jam) first.
DEMO_ORDER = (Kind.STOPPED, Kind.WRONG_WAY, Kind.JAM, Kind.ILLEGAL_PARKING, Kind.CRASH, Kind.OVERSPEED)
HOLD_S = {Kind.OVERSPEED: 1.0, Kind.WRONG_WAY: 1.0, Kind.JAM: JAM_HOLD_S, Kind.STOPPED: 0.0, Kind.CRASH: 0.0,
          Kind.ILLEGAL_PARKING: 0.0}
# Roughly how long after injection an event's condition holds in view (driving there, the stop threshold).
STARTS_AFTER_S = {Kind.OVERSPEED: 10.0, Kind.WRONG_WAY: 2.0, Kind.JAM: 90.0, Kind.STOPPED: 32.0, Kind.CRASH: 35.0,
                  Kind.ILLEGAL_PARKING: 32.0}
DURATION_S = {Kind.OVERSPEED: 30.0, Kind.WRONG_WAY: 30.0, Kind.JAM: 180.0, Kind.STOPPED: 70.0, Kind.CRASH: 80.0,
              Kind.ILLEGAL_PARKING: 70.0}


@dataclass
class Injection:
    kind: Kind
    rig: CameraRig
    at_s: float  # SUMO time
    duration_s: float
    vids: list[str] = field(default_factory=list)
    injected: bool = False
    finished: bool = False
    start_s: float | None = None  # when the condition first held in view
    end_s: float | None = None
    halted_since: float | None = None
    position: tuple[float, float] | None = None  # local metres
    lane_id: str = ""
    wrong_way_from: float = 0.0

    @property
    def camera_id(self) -> str:
        return self.rig.camera_id


# Events whose vehicles stand: the next event on their camera waits longer, for IDPS joins a compatible report near an
# incident within 120 s of its last one (an illegal parking's incident took the next stopped vehicle on its camera:
# found by `v2x sim score`, 903 recall 2/3 on two runs, the roadside's 903 raised on time).
_STANDING = (Kind.STOPPED, Kind.CRASH, Kind.JAM, Kind.ILLEGAL_PARKING)


def plan(rigs: list[CameraRig], begin_s: float, seconds: float, kinds: tuple[Kind, ...] = DEMO_ORDER,
         first_after_s: float = 10.0, gap_s: float = 25.0, jam_lead_s: float = 0.0) -> list[Injection]:
    """Injections round-robin over kinds and cameras: each camera hosts one at a time, with a pause after it (so
    that IDPS does not join two of them into one incident), until `seconds` is used up. With `jam_lead_s` the first
    jam starts that long before `begin_s` (during the warm-up: a demo's police see its 707 within two minutes)."""
    out: list[Injection] = []
    free_at = {r.camera_id: begin_s + first_after_s for r in rigs}
    k = 0
    while True:
        kind = kinds[k % len(kinds)]
        rig = min(rigs, key=lambda r: (free_at[r.camera_id], r.camera_id))
        at = free_at[rig.camera_id]
        duration = DURATION_S[kind]
        if at + STARTS_AFTER_S[kind] + HOLD_S[kind] + 15 > begin_s + seconds:
            break  # (an event running past the end is cut there)
        if kind is Kind.JAM and jam_lead_s and not any(i.kind is Kind.JAM for i in out):
            at -= jam_lead_s + first_after_s
        out.append(Injection(kind, rig, at, duration))
        free_at[rig.camera_id] = at + duration + (140.0 if kind in _STANDING else gap_s)
        k += 1
    return out


def _straight_on(district: District, approach: Approach) -> str:
    node = district.net.getNode(approach.junction)
    d = approach.direction
    best, best_dot = approach.edge_out, -2.0
    for e in node.getOutgoing():
        (x0, y0), (x1, y1) = e.getShape()[0], e.getShape()[-1]
        n = math.hypot(x1 - x0, y1 - y0) or 1.0
        dot = (x1 - x0) / n * d[0] + (y1 - y0) / n * d[1]
        if e.getID() != approach.edge_out and dot > best_dot:
            best, best_dot = e.getID(), dot
    return best


@dataclass
class Parking:
    """A driver parking in an on-street spot the camera sees, for a while."""

    rig: CameraRig
    spot: int
    at_s: float
    duration_s: float
    vid: str = ""
    injected: bool = False


def parking_plan(rigs: list[CameraRig], begin_s: float, seconds: float, seed: int) -> list[Parking]:
    """Each spot taken now and then: free for 20..90 s, then occupied for 40..150 s, over the run."""
    import random

    rng = random.Random(seed)
    out = []
    for rig in rigs:
        for i, _ in enumerate(rig.spots):
            t = begin_s + rng.uniform(5, 40)
            while t < begin_s + seconds:
                stay = rng.uniform(40, 150)
                out.append(Parking(rig, i, t, stay))
                t += stay + rng.uniform(20, 90)
    return out


class Scenario:
    def __init__(self, district: District, injections: list[Injection], parking: list[Parking] | None = None) -> None:
        self.district = district
        self.injections = injections
        self.parking = parking or []
        self._routes: set[str] = set()
        self._n = 0

    def _route(self, approach: Approach) -> str:
        rid = f"scenario-{approach.edge_in}"
        if rid not in self._routes:
            libsumo.route.add(rid, [approach.edge_in, _straight_on(self.district, approach)])
            self._routes.add(rid)
        return rid

    def _add(self, inj: Injection, lane: int, depart_pos: float, speed: str = "max") -> str:
        self._n += 1
        vid = f"x{int(inj.kind)}-{self._n}"
        libsumo.vehicle.add(vid, self._route(inj.rig.approach), typeID="scenario", depart="now",
                            departLane=str(lane), departPos=f"{max(0.0, depart_pos):.1f}", departSpeed=speed)
        inj.vids.append(vid)
        return vid

    def step(self, t: float) -> None:
        for p in self.parking:
            if not p.injected and t >= p.at_s:
                self._park(p)
        for inj in self.injections:
            if inj.finished:
                continue
            if not inj.injected:
                if t >= inj.at_s:
                    self._inject(inj, t)
                continue
            self._follow(inj, t)

    def _park(self, p: Parking) -> None:
        a = p.rig.approach
        rid = f"park-{a.edge_out}"
        if rid not in self._routes:
            libsumo.route.add(rid, [a.edge_out])
            self._routes.add(rid)
        self._n += 1
        p.vid = f"park-{self._n}"
        p.injected = True
        pos = p.rig.spots[p.spot].lane_pos + 2.25  # the front bumper; the car's middle on the spot's middle
        libsumo.vehicle.add(p.vid, rid, typeID="scenario", depart="now", departLane="0", departPos="0",
                            departSpeed="max")
        libsumo.vehicle.setStop(p.vid, a.edge_out, pos, 0, p.duration_s, 1)

    def _inject(self, inj: Injection, t: float) -> None:
        a = inj.rig.approach
        length = a.lanes_in[0].length
        inj.injected = True
        if inj.kind in (Kind.STOPPED, Kind.CRASH):
            stop = length - STOP_ALONG_M
            first = self._add(inj, 1, stop - 90)
            libsumo.vehicle.setStop(first, a.edge_in, stop, 1, inj.duration_s)
            inj.lane_id = a.lanes_in[1].id
            if inj.kind is Kind.CRASH:
                second = self._add(inj, 1, stop - 110)
                libsumo.vehicle.setStop(second, a.edge_in, stop - 5.0, 1, inj.duration_s)
        elif inj.kind is Kind.ILLEGAL_PARKING:
            # The front 2 m into the zone: the camera sees the whole car there (at the zone's middle, 36 m, it stood at
            # the picture's left edge, at 32.5 m at its bottom edge, its box cut off: `v2x sim score` saw no 1002).
            along = NO_STOPPING_M[0] + 2.0
            vid = self._add(inj, 0, length - along - 90)
            libsumo.vehicle.setStop(vid, a.edge_in, length - along, 0, inj.duration_s, 1)  # flags 1: parking
            inj.lane_id = "no-stopping"
        elif inj.kind is Kind.WRONG_WAY:
            self._add(inj, 0, length - 22.0, "0")
            inj.wrong_way_from = t
            inj.lane_id = a.lanes_in[0].id
        elif inj.kind is Kind.OVERSPEED:
            vid = self._add(inj, 1, max(0.0, length - FAR_M - 120), "max")
            libsumo.vehicle.setSpeedMode(vid, 0)
            libsumo.vehicle.setSpeed(vid, OVERSPEED_MPS)
            inj.lane_id = a.lanes_in[1].id
        elif inj.kind is Kind.JAM:
            tls = a.junction
            logic = libsumo.trafficlight.getAllProgramLogics(tls)[0]
            links = libsumo.trafficlight.getControlledLinks(tls)
            ours = {lane.id for lane in a.lanes_in}
            red = {i for i, group in enumerate(links) if any(link[0] in ours for link in group)}
            phases = []
            for p in logic.phases:
                state = "".join("r" if i in red else c for i, c in enumerate(p.state))
                phases.append(libsumo.trafficlight.Phase(p.duration, state))
            libsumo.trafficlight.setProgramLogic(tls, libsumo.trafficlight.Logic("jam", 0, 0, phases))
            libsumo.trafficlight.setProgram(tls, "jam")
            # Traffic of its own, so that the queue backs up at any hour (at night the district's own is too thin):
            # a platoon on every lane coming in, queueing at the red light.
            for k in range(JAM_PLATOON):
                for lane in range(len(a.lanes_in)):
                    self._add(inj, lane, length - FAR_M - 15.0 - 9.0 * k, "max")
            inj.lane_id = a.lanes_in[0].id
            p = a.point_upstream((NEAR_M + FAR_M) / 2, -a.lane_width)
            inj.position = p

    def _alive(self, vid: str) -> bool:
        return vid in libsumo.vehicle.getIDList()

    def _follow(self, inj: Injection, t: float) -> None:
        a = inj.rig.approach
        v = libsumo.vehicle
        if inj.kind in (Kind.STOPPED, Kind.CRASH, Kind.ILLEGAL_PARKING):
            alive = [vid for vid in inj.vids if self._alive(vid)]
            halted = bool(alive) and len(alive) == len(inj.vids) and all(
                v.isStopped(vid) or (v.getSpeed(vid) < 0.1 and v.getStopState(vid) & 1) for vid in alive)
            if halted and inj.halted_since is None:
                inj.halted_since = t
                x, y = v.getPosition(alive[0])
                inj.position = self.district.local(x, y)
            if inj.halted_since is not None and inj.start_s is None and t - inj.halted_since >= STOP_THRESHOLD_S:
                inj.start_s = t
            if inj.halted_since is not None and not halted:
                inj.end_s = t
                inj.finished = True
            elif inj.halted_since is None and not alive and t > inj.at_s + 60:
                inj.finished = True  # never got there (could not be inserted in time)
        elif inj.kind is Kind.WRONG_WAY:
            vid = inj.vids[0]
            if not self._alive(vid):
                if inj.start_s is not None or t > inj.at_s + 30:
                    inj.finished = True
                inj.wrong_way_from = t  # still waiting to be inserted: it starts where it is put in
                return
            along = 22.0 + WRONG_WAY_MPS * (t - inj.wrong_way_from)
            e, n = a.point_upstream(along, -a.lane_width / 2)
            x, y = e + self.district.offset[0], n + self.district.offset[1]
            heading = (a.lanes_in[0].heading_deg + 180.0) % 360.0
            v.moveToXY(vid, a.edge_in, 0, x, y, heading, 2)
            if inj.start_s is None and along >= NEAR_M:
                inj.start_s = t
                inj.position = (e, n)
            if along > FAR_M + 20:
                inj.end_s = t
                v.remove(vid)
                inj.finished = True
        elif inj.kind is Kind.OVERSPEED:
            vid = inj.vids[0]
            if not self._alive(vid):
                if inj.start_s is None and t < inj.at_s + 30:
                    return  # not inserted yet
                inj.finished = True
                if inj.start_s is not None and inj.end_s is None:
                    inj.end_s = t
                return
            if v.getRoadID(vid) == a.edge_in:
                x, y = v.getPosition(vid)
                along, _ = a.coordinates(self.district.local(x, y))
                if inj.start_s is None and along <= FAR_M and v.getSpeed(vid) * 3.6 > SPEED_LIMIT_KMH + \
                        OVERSPEED_TOLERANCE_KMH:
                    inj.start_s = t
                    inj.position = self.district.local(x, y)
                if inj.start_s is not None and along < NEAR_M and inj.end_s is None:
                    inj.end_s = t
            elif inj.start_s is not None and inj.end_s is None:
                inj.end_s = t
        elif inj.kind is Kind.JAM:
            queue = max(libsumo.lanearea.getJamLengthMeters(f"e2_{lane.id}") for lane in a.lanes_in)
            if inj.start_s is None and queue >= JAM_QUEUE_M:
                inj.start_s = t
            if t >= inj.at_s + inj.duration_s:
                libsumo.trafficlight.setProgram(a.junction, "0")
                inj.end_s = t
                inj.finished = True

    def finish(self, t: float) -> None:
        for inj in self.injections:
            if inj.injected and not inj.finished:
                inj.end_s = inj.end_s or t
                inj.finished = True
