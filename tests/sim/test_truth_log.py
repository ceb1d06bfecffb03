"""The simulator's log of the service's answers takes every answer the service gives, a failed frame's too: a result
whose `error` carries a google.rpc.ErrorInfo (DEADLINE_EXCEEDED, ...) once made MessageToDict raise in the camera's
stream task, which ended it, and the camera streamed no more until the process exited."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roadside_sim.cameras import FAR_M, NEAR_M, CameraRig, rigs
from roadside_sim.network import District, SimLane
from roadside_sim.render import RenderedBox, VehicleState
from roadside_sim.truth import VehicleClass
from roadside_sim.truth_log import TruthLog

ROOT = Path(__file__).resolve().parents[2]
BOX = RenderedBox("v1", VehicleClass.CAR, (10, 10, 60, 40), 1.0, (10, 10, 60, 40), 1500)

# In a process of its own: this test process has imported google.rpc's error details already (the services use
# them), which would hide a simulator that does not.
SCRIPT = """
import sys
from pathlib import Path
from v2x.roadside.v1 import roadside_pb2 as rpb
from roadside_sim.truth_log import TruthLog

r = rpb.FrameResult(frame_id=7)
r.error.code = 4
r.error.message = "frame expired after 2000 ms in the queue"
detail = r.error.details.add()
detail.type_url = "type.googleapis.com/google.rpc.ErrorInfo"
detail.value = b"\\n\\x0dFRAME_EXPIRED"  # ErrorInfo(reason="FRAME_EXPIRED"), written by hand on purpose
log = TruthLog(Path(sys.argv[1]), [])
log.result("cam-1", r)
log._results.close()
"""


def test_a_failed_frames_answer_with_error_details_is_logged(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [line] = (tmp_path / "results.jsonl").read_text().splitlines()
    logged = json.loads(line)
    assert logged["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": "FRAME_EXPIRED"}]


def test_a_vehicle_counts_once_per_lane_and_names_itself_in_its_minute(tmp_path: Path) -> None:
    # v1 parks at the kerb for two frames and drives on; v2 drives on. Each came onto the stretch once: one count each,
    # named with its time (the service's track follows a parked car through its stay and counts it once too).
    rig, lane = _kerb_lane_in()
    # The vehicle's reference point (length 0) in the middle of the camera's stretch of the kerb lane coming in.
    east, north = _on(rig, lane, NEAR_M, FAR_M)
    log = TruthLog(tmp_path, [rig])
    start = datetime(2026, 12, 7, 8, 0, 5, tzinfo=UTC)
    steady = RenderedBox("v2", VehicleClass.CAR, (100, 10, 150, 40), 1.0, (100, 10, 150, 40), 1500)
    for n, parked in enumerate((False, False, True, True, False, False)):
        v1 = VehicleState("v1", east, north, lane.heading_deg, 0.0 if parked else 5.0, 0.0, 1.8, 1.5, lane.id,
                          parked=parked)
        v2 = VehicleState("v2", east, north, lane.heading_deg, 5.0, 0.0, 1.8, 1.5, lane.id)
        log.frame(rig, n, start + timedelta(seconds=n), float(n), [BOX, steady], [v1, v2], {})
    [minute] = [m for key, m in log.minutes.items() if key[1] == lane.id]
    assert sorted(vid for vid, _ in minute.entered) == ["v1", "v2"]
    assert minute.vehicles == 2
    assert all(start <= datetime.fromtimestamp(at, UTC) < start + timedelta(seconds=60) for _, at in minute.entered)


def test_a_vehicle_comes_onto_the_stretch_when_it_crosses_its_end_between_two_frames(tmp_path: Path) -> None:
    # Its last frame had it 1 m short of the stretch, this one (a third of a second later, after the minute turned) 3 m
    # into it: it came on a quarter of the way between the two frames, in the minute before, as the service's count
    # estimates the crossing itself rather than the frame that first shows the vehicle past it.
    rig, lane = _kerb_lane_in()
    log = TruthLog(tmp_path, [rig])
    turn = datetime(2026, 12, 7, 8, 1, 0, tzinfo=UTC)
    for n, (dt, along) in enumerate(((-0.2, FAR_M + 1.0), (0.2 - 1 / 15, FAR_M - 3.0))):
        east, north = _on(rig, lane, along - 0.5, along + 0.5)
        assert rig.approach.coordinates((east, north))[0] == pytest.approx(along, abs=1e-6)
        v1 = VehicleState("v1", east, north, lane.heading_deg, 12.0, 0.0, 1.8, 1.5, lane.id)
        log.frame(rig, n, turn + timedelta(seconds=dt), float(n), [BOX], [v1], {})
    [(key, minute)] = [(key, m) for key, m in log.minutes.items() if key[1] == lane.id and m.vehicles]
    assert key[2] == int((turn - timedelta(minutes=1)).timestamp())
    [(vid, entered)] = minute.entered
    assert vid == "v1"
    assert entered == pytest.approx((turn - timedelta(seconds=0.2 - 1 / 12)).timestamp(), abs=1e-3)


def test_a_vehicle_first_found_inside_the_stretch_comes_on_at_that_frame(tmp_path: Path) -> None:
    rig, lane = _kerb_lane_in()
    east, north = _on(rig, lane, NEAR_M, FAR_M)
    log = TruthLog(tmp_path, [rig])
    t = datetime(2026, 12, 7, 8, 1, 0, 100_000, tzinfo=UTC)
    log.frame(rig, 0, t, 0.0, [BOX], [VehicleState("v1", east, north, lane.heading_deg, 12.0, 0.0, 1.8, 1.5, lane.id)],
              {})
    [minute] = [m for key, m in log.minutes.items() if key[1] == lane.id and m.vehicles]
    assert minute.entered == [("v1", round(t.timestamp(), 3))]


def _kerb_lane_in() -> tuple[CameraRig, SimLane]:
    rig = rigs(District(), 1, 1)[0]
    return rig, rig.approach.lanes_in[0]


def _on(rig: CameraRig, lane: SimLane, near: float, far: float) -> tuple[float, float]:
    """The middle of the lane between ``near`` and ``far`` metres before the stop line."""
    quad = rig.approach.lane_quad(lane, near, far)
    return sum(p[0] for p in quad) / 4, sum(p[1] for p in quad) / 4
