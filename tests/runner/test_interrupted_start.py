"""Ctrl-C while `v2x run` is still starting: it stops at once, whatever step it is at, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.runner.conftest import spawn_suite
from tests.waiting import assert_eventually


@pytest.mark.slow  # a `v2x run` interrupted in its start: ~20 s each
@pytest.mark.parametrize("at", ["embedded PostGIS cluster", "embedded Redis"])
async def test_ctrl_c_during_start_up_stops_everything_it_started(tmp_path: Path, at: str) -> None:
    suite = await spawn_suite(tmp_path)
    try:
        await assert_eventually(lambda: at in suite.output() or suite.proc.returncode is not None,
                                f"v2x run to reach '{at}'", within_s=120)
        assert suite.proc.returncode is None, suite.output()[-3000:]
        suite.proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(suite.proc.wait(), 90)
    finally:
        if suite.proc.returncode is None:
            os.killpg(suite.proc.pid, signal.SIGKILL)
            await suite.proc.wait()
    out = suite.output()
    assert code == 0, out[-3000:]
    assert "stopping..." in out and out.rstrip().endswith("stopped; nothing left running"), out[-3000:]
    assert "v2x-suite is up" not in out
    with pytest.raises(ProcessLookupError):  # nothing of its session is left: no service, no PostgreSQL, no Redis
        os.killpg(suite.proc.pid, 0)
    assert not suite.run_file.exists()
