"""The supervisor of `v2x run`: a process that exits is restarted with backoff and its exit is logged; the suite gives
up only when a process fails to start five times in a row; a native crash leaves a Python stack in the log."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from load.walkaway import serving
from services.runner.supervisor import ChildSpec, Probe, SuiteFailed, Supervisor
from tests.runner.conftest import RunningSuite
from tests.waiting import assert_eventually


def _script(tmp: Path, body: str) -> list[str]:
    path = tmp / "child.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def _ready_when(path: Path) -> Probe:
    async def probe() -> bool:
        return await asyncio.to_thread(path.exists)

    return probe


async def test_a_process_that_exits_is_restarted_and_its_exit_logged(tmp_path: Path) -> None:
    marker, runs = tmp_path / "ready", tmp_path / "runs"
    # Serves, then dies with code 3 on its first run only.
    argv = _script(tmp_path, f"""
import pathlib, time
runs = pathlib.Path({str(runs)!r}); n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n)); pathlib.Path({str(marker)!r}).touch()
time.sleep(0.3 if n == 1 else 60); raise SystemExit(3)
""")
    said: list[str] = []
    sup = Supervisor([ChildSpec("svc", argv, dict(os.environ), _ready_when(marker))], say=said.append,
                     backoff_base_s=0.1)
    sup.start()
    try:
        await sup.wait_ready()
        await assert_eventually(lambda: sup.children["svc"].starts == 2, "a second start")
        child = sup.children["svc"]
        assert child.starts == 2 and child.restarts == 1
        assert [e.code for e in child.exits] == [3]
        assert any("svc (pid" in line and "exited with code 3" in line and "restarting in" in line for line in said)
    finally:
        await sup.stop(1.0)
    assert sup.children["svc"].proc is not None and sup.children["svc"].proc.returncode is not None


async def test_a_process_that_exits_once_the_suite_holds_is_not_started_again(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    # Serves until its SIGINT, then exits 0, as the services do on a terminal's Ctrl-C (which reaches every child).
    argv = _script(tmp_path, f"""
import pathlib, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
pathlib.Path({str(marker)!r}).touch()
time.sleep(60)
""")
    said: list[str] = []
    sup = Supervisor([ChildSpec("svc", argv, dict(os.environ), _ready_when(marker))], say=said.append,
                     backoff_base_s=0.05)
    sup.start()
    try:
        await sup.wait_ready()
        proc = sup.children["svc"].proc
        assert proc is not None
        sup.hold()  # the suite is stopping (its simulator first), this supervisor's turn has not come
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 10)
        await asyncio.sleep(0.5)  # ten times the restart backoff

        assert sup.children["svc"].starts == 1
        assert not any("restarted" in line for line in said)
    finally:
        await sup.stop(1.0)


async def test_the_suite_gives_up_after_five_failed_starts_in_a_row_and_says_which(tmp_path: Path) -> None:
    argv = _script(tmp_path, "raise SystemExit(7)\n")
    said: list[str] = []
    never = tmp_path / "never"
    sup = Supervisor([ChildSpec("broken", argv, dict(os.environ), _ready_when(never))], say=said.append,
                     backoff_base_s=0.05, backoff_cap_s=0.1)
    sup.start()
    try:
        with pytest.raises(SuiteFailed, match=r"broken failed to start 5 times in a row .*exited with code 7"):
            await asyncio.wait_for(sup.wait_ready(), 30)
        assert sup.children["broken"].starts == 5
    finally:
        await sup.stop(1.0)


async def test_a_process_that_never_becomes_ready_counts_as_a_failed_start(tmp_path: Path) -> None:
    argv = _script(tmp_path, "import time\ntime.sleep(60)\n")
    sup = Supervisor([ChildSpec("stuck", argv, dict(os.environ), _ready_when(tmp_path / "never"))],
                     say=lambda _: None, backoff_base_s=0.05, backoff_cap_s=0.1, ready_timeout_s=0.5,
                     max_failed_starts=2)
    sup.start()
    try:
        with pytest.raises(SuiteFailed, match="stuck failed to start 2 times in a row"):
            await asyncio.wait_for(sup.wait_ready(), 30)
    finally:
        await sup.stop(1.0)


@pytest.mark.slow  # the whole `v2x run` (the session's suite: ~100 s to start on the 2-core machine)
@pytest.mark.chaos  # SIGSEGVs a service process
async def test_a_native_crash_of_a_service_is_logged_with_its_stack_and_the_service_comes_back(
        suite: RunningSuite) -> None:
    before = suite.processes()
    victim = before["parking"]["pid"]
    os.kill(victim, signal.SIGSEGV)

    async def back() -> bool:
        pid = suite.processes()["parking"]["pid"]
        return pid not in (None, victim) and (await serving({"parking": suite.targets["parking"]}))["parking"] == \
            "SERVING"

    await assert_eventually(back, "parking serving again", within_s=60)
    after = suite.processes()
    assert after["parking"]["restarts"] == before["parking"]["restarts"] + 1
    assert after["parking"]["crashes"] == before["parking"]["crashes"] + 1
    assert after["parking"]["exits"][-1]["signal"] == "SIGSEGV"
    # The others were not touched.
    for name in ("roadside", "idps", "charging", "municipal"):
        assert after[name]["pid"] == before[name]["pid"]
    log = suite.output()
    assert "Fatal Python error: Segmentation fault" in log  # faulthandler's stack of the crashed process
    assert "supervisor: parking (pid" in log and "was killed by SIGSEGV (a native crash" in log
    # The supervisor's own readiness probe says so too (it polls; the check above may have been first).
    await assert_eventually(lambda: "supervisor: parking serves again" in suite.output(), "the serves-again line")
    assert await serving(suite.targets) == {name: "SERVING" for name in suite.targets}


@pytest.mark.slow  # the whole `v2x run`
def test_v2x_run_leaves_where_it_listens_and_its_keys_in_a_private_run_file(suite: RunningSuite) -> None:
    state = suite.state()
    assert set(state["targets"]) == {"roadside", "idps", "parking", "charging", "municipal"}
    assert {"admin", "police", "driver", "operator:BSCT"} <= set(state["keys"])
    assert set(state["processes"]) == {*state["targets"], "platform-emulator", "console"}
    assert state["console_url"].startswith("http://127.0.0.1:")
    assert suite.run_file.stat().st_mode & 0o777 == 0o600
