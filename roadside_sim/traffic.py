"""The district's traffic: Eclipse SUMO in this process (libsumo), with routes from randomTrips on a daily profile,
lane-area (E2) detectors for queue lengths, and the hooks scenarios use to make things happen.

Times: SUMO's clock is seconds since local midnight (Asia/Shanghai), so that the profile's rush hour is the rush
hour of the day being simulated. Positions handed out are the district's local metres (roadside_sim/network.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libsumo
import sumo

from roadside_sim.network import Approach, District
from roadside_sim.render import PAINTS, VehicleState
from roadside_sim.truth import VehicleClass

STEP_S = 0.1
# Vehicles entering the district per hour, by local hour of the day: a quiet night, a morning and an evening rush.
DAILY_PROFILE = (120, 80, 60, 60, 80, 180, 600, 1800, 2400, 1600, 1200, 1200, 1300, 1200, 1200, 1300, 1600, 2300,
                 2000, 1400, 1000, 700, 400, 200)
HALTING_MPS = 0.5  # the E2 detectors' halting speed: a vehicle slower than this stands (in a queue)
JAM_GAP_M = 12.0  # halting vehicles closer than this form one jam (the service's queue gap)


@dataclass(frozen=True)
class E2:
    det_id: str
    lane_id: str
    pos: float
    end_pos: float


def sumo_home() -> Path:
    return Path(sumo.SUMO_HOME)


def _tool(name: str) -> Path:
    return sumo_home() / "tools" / name


def vehicles_per_hour(hour: float) -> float:
    return float(DAILY_PROFILE[int(hour) % 24])


def write_routes(district: District, workdir: Path, begin_s: float, end_s: float, seed: int,
                 scale: float = 1.0) -> Path:
    """Trips from randomTrips with an hourly insertion rate from DAILY_PROFILE over [begin_s, end_s)."""
    first_hour = int(begin_s // 3600)
    last_hour = math.ceil(end_s / 3600)
    rates = [max(1.0, vehicles_per_hour(h) * scale) for h in range(first_hour, last_hour)]
    vtypes = workdir / "vtypes.add.xml"
    vtypes.write_text(VTYPES)
    out = workdir / "routes.rou.xml"
    cmd = [sys.executable, str(_tool("randomTrips.py")), "-n", str(district.net_path), "-r", str(out),
           "-o", str(workdir / "trips.trips.xml"), "-b", str(first_hour * 3600), "-e", str(last_hour * 3600),
           "--insertion-rate", *[f"{r:g}" for r in rates], "--fringe-factor", "max", "--min-distance", "300",
           "--seed", str(seed), "--validate", "--prefix", "t", "--trip-attributes", 'type="car" departLane="best"',
           "--additional-files", str(vtypes)]
    env = {**os.environ, "SUMO_HOME": str(sumo_home())}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"randomTrips failed: {proc.stderr[-2000:]}")
    return out


VTYPES = """<additional>
    <!-- A passenger car: speed factor 1.0 +- 0.04 (few natural speeders), 4.5 x 1.8 x 1.5 m. -->
    <vType id="car" vClass="passenger" length="4.5" width="1.8" height="1.5" minGap="2.5" speedFactor="1.0"
           speedDev="0.04" sigma="0.4" lcStrategic="1" lcSpeedGain="1"/>
</additional>
"""
SCENARIO_VTYPES = """<additional>
    <!-- Scenario vehicles: they stop where they are told (a crash leaves no gap). -->
    <vType id="scenario" vClass="passenger" length="4.5" width="1.8" height="1.5" minGap="0.5" speedFactor="1.0"
           speedDev="0" sigma="0"/>
</additional>
"""


class Traffic:
    """One SUMO simulation (one per process: libsumo holds a single simulation)."""

    def __init__(self, district: District, workdir: Path, begin_s: float, end_s: float, *, seed: int = 13,
                 scale: float = 1.0) -> None:
        self.district = district
        self.workdir = workdir
        self.begin_s = begin_s
        self.end_s = end_s
        self.seed = seed
        self.scale = scale
        self.e2: dict[str, E2] = {}
        self.started = False

    def add_e2(self, approach: Approach, near: float, far: float) -> None:
        """E2 detectors on the lanes coming in, covering `near`..`far` metres before the stop line."""
        for lane in approach.lanes_in:
            pos, end = max(0.0, lane.length - far), max(0.1, lane.length - near)
            self.e2[lane.id] = E2(f"e2_{lane.id}", lane.id, pos, end)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        routes = write_routes(self.district, self.workdir, self.begin_s, self.end_s, self.seed, self.scale)
        additional = self.workdir / "detectors.add.xml"
        rows = [f'    <laneAreaDetector id="{d.det_id}" lane="{d.lane_id}" pos="{d.pos:.2f}" endPos="{d.end_pos:.2f}" '
                f'period="60" file="NUL" timeThreshold="1" speedThreshold="{HALTING_MPS}" '
                f'jamThreshold="{JAM_GAP_M}"/>' for d in self.e2.values()]
        additional.write_text("<additional>\n" + "\n".join(rows) + "\n</additional>\n")
        scenario_types = self.workdir / "scenario.add.xml"
        scenario_types.write_text(SCENARIO_VTYPES)
        libsumo.start(["sumo", "-n", str(self.district.net_path), "-r", str(routes),
                       "-a", f"{scenario_types},{additional}", "--begin", f"{self.begin_s:.1f}",
                       "--end", f"{self.end_s + 60:.1f}", "--step-length", str(STEP_S), "--seed", str(self.seed),
                       "--no-step-log", "--no-warnings", "--collision.action", "none", "--time-to-teleport", "300",
                       "--ignore-route-errors"])
        self.started = True

    def close(self) -> None:
        if self.started:
            libsumo.close()
            self.started = False

    @property
    def time(self) -> float:
        return float(libsumo.simulation.getTime())

    def step_to(self, t: float, on_step: Callable[[float], None] | None = None) -> None:
        """Advances to time t; `on_step(time)` before every step (scenarios steer their vehicles there)."""
        while self.time + STEP_S / 2 < t:
            if on_step is not None:
                on_step(self.time)
            libsumo.simulationStep()

    def vehicles(self) -> list[VehicleState]:
        out = []
        v = libsumo.vehicle
        for vid in v.getIDList():
            x, y = v.getPosition(vid)
            east, north = self.district.local(x, y)
            parked = bool(v.isStoppedParking(vid))
            heading = float(v.getAngle(vid))
            lane_id = v.getLaneID(vid)
            if parked:
                # SUMO takes a parked vehicle off its lane (its lane is the kerb lane of the edge it stopped on) and
                # already places it beside the road, a lane width right of the kerb lane's centre: 1.6 m outside the
                # kerb line, in the kerb strip. (Moved another 2.8 m here before, it stood on the pavement, at the
                # bottom edge of its camera's picture, cut off, where the detector scored it 0.47..0.66.)
                route = v.getRoute(vid)
                lane_id = f"{route[max(0, v.getRouteIndex(vid))]}_0"
            out.append(VehicleState(vid, east, north, heading, float(v.getSpeed(vid)), float(v.getLength(vid)),
                                    float(v.getWidth(vid)), float(v.getHeight(vid)), lane_id,
                                    VehicleClass.CAR, zlib.crc32(vid.encode()) % len(PAINTS), parked))
        return out

    def queue_m(self, lane_id: str) -> float:
        d = self.e2.get(lane_id)
        return 0.0 if d is None else float(libsumo.lanearea.getJamLengthMeters(d.det_id))
