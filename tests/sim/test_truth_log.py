"""The simulator's log of the service's answers takes every answer the service gives, a failed frame's too: a result
whose `error` carries a google.rpc.ErrorInfo (DEADLINE_EXCEEDED, ...) once made MessageToDict raise in the camera's
stream task, which ended it, and the camera streamed no more until the process exited."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from roadside_sim.cameras import FAR_M, NEAR_M, rigs
from roadside_sim.network import District
from roadside_sim.render import RenderedBox, VehicleState
from roadside_sim.truth import VehicleClass
from roadside_sim.truth_log import TruthLog

ROOT = Path(__file__).resolve().parents[2]

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
    rig = rigs(District(), 1, 1)[0]
    a = rig.approach
    lane = a.lanes_in[0]
    # The vehicle's reference point (length 0) in the middle of the camera's stretch of the kerb lane coming in.
    quad = a.lane_quad(lane, NEAR_M, FAR_M)
    east, north = sum(p[0] for p in quad) / 4, sum(p[1] for p in quad) / 4
    log = TruthLog(tmp_path, [rig])
    start = datetime(2026, 12, 7, 8, 0, 5, tzinfo=UTC)
    box = RenderedBox("v1", VehicleClass.CAR, (10, 10, 60, 40), 1.0, (10, 10, 60, 40), 1500)
    steady = RenderedBox("v2", VehicleClass.CAR, (100, 10, 150, 40), 1.0, (100, 10, 150, 40), 1500)
    for n, parked in enumerate((False, False, True, True, False, False)):
        v1 = VehicleState("v1", east, north, lane.heading_deg, 0.0 if parked else 5.0, 0.0, 1.8, 1.5, lane.id,
                          parked=parked)
        v2 = VehicleState("v2", east, north, lane.heading_deg, 5.0, 0.0, 1.8, 1.5, lane.id)
        log.frame(rig, n, start + timedelta(seconds=n), float(n), [box, steady], [v1, v2], {})
    [minute] = [m for key, m in log.minutes.items() if key[1] == lane.id]
    assert sorted(vid for vid, _ in minute.entered) == ["v1", "v2"]
    assert minute.vehicles == 2
    assert all(start <= datetime.fromtimestamp(at, UTC) < start + timedelta(seconds=60) for _, at in minute.entered)
