"""`v2x sim score` against a whole suite started here (`v2x run --no-sim` on its own ports), as a user runs it.

The suite's roadside service uses its demo key-colour detector (V2X_ROADSIDE_DETECTOR=sim) and the simulator draws
key-coloured vehicles (--render key): the whole path is real (ConfigureCamera, StreamFrames, tracking, analytics,
the Redis event stream, IDPS incidents over Subscribe, parking spot states) and deterministic enough for a test;
the real detector's figures are the 10-minute run in the README. The run is 60 s on 3 cameras with a stalled
vehicle (903), a wrong-way driver (904) and a speeding car (901), one each; the test fails when any of the three is
not reported as an incident (recall below 1.0), which `v2x sim score --min-recall` checks (exit code 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.runner.conftest import start_suite, stop_suite

RECALL_FLOOR = {"903": 1.0, "904": 1.0, "901": 1.0}


@pytest.mark.timeout(900)
async def test_a_one_minute_scenario_scores_every_injected_event_as_an_incident(tmp_path: Path) -> None:
    suite = await start_suite(tmp_path, {"V2X_ROADSIDE_DETECTOR": "sim"})
    try:
        scores_path = tmp_path / "score.json"
        env = {**os.environ, "XDG_RUNTIME_DIR": str(suite.runtime_dir)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "sim", "score", "--render", "key", "--intersections", "3",
            "--cameras-per", "1", "--fps", "4", "--seconds", "60", "--start", "08:00", "--events", "903,904,901",
            "--out", str(tmp_path / "run"), "--json", str(scores_path),
            "--min-recall", ",".join(f"{k}={v}" for k, v in RECALL_FLOOR.items()),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report
        scores = json.loads(scores_path.read_text())
    finally:
        await stop_suite(suite)

    per_type = scores["events"]["per_type"]
    for kind in RECALL_FLOOR:
        assert per_type[kind]["events"] == 1, report
        assert per_type[kind]["recall"] >= RECALL_FLOOR[kind], report
    # The table and the truth behind it are there, next to the run.
    assert "events        events  found  recall" in report
    for name in ("frames.jsonl", "minutes.jsonl", "events.jsonl", "spots.jsonl", "results.jsonl"):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    assert scores["detection"]["any_class"]["recall"] > 0.5
