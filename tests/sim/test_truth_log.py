"""The simulator's log of the service's answers takes every answer the service gives, a failed frame's too: a result
whose `error` carries a google.rpc.ErrorInfo (DEADLINE_EXCEEDED, ...) once made MessageToDict raise in the camera's
stream task, which ended it, and the camera streamed no more until the process exited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
