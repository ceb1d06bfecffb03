"""A whole `v2x run`, as a user starts it: its own process, embedded PostGIS and Redis, every port its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.config import SERVICE_PORTS
from services.common.processes import METRICS_STRIDE
from services.common.runfile import run_file
from tests.ports import free_port
from tests.waiting import assert_eventually

READY_S = 180.0


@dataclass
class RunningSuite:
    proc: asyncio.subprocess.Process
    runtime_dir: Path
    log: Path

    @property
    def run_file(self) -> Path:
        return run_file({"XDG_RUNTIME_DIR": str(self.runtime_dir)})

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.run_file.read_text()))

    @property
    def targets(self) -> dict[str, str]:
        return dict(self.state()["targets"])

    @property
    def keys(self) -> dict[str, str]:
        return dict(self.state()["keys"])

    def processes(self) -> dict[str, dict[str, Any]]:
        return dict(self.state()["processes"])

    def output(self) -> str:
        return self.log.read_text(errors="replace")


async def start_suite(tmp: Path, extra_env: dict[str, str] | None = None, *, simulate: bool = False,
                      args: Sequence[str] = (), ready_s: float = READY_S) -> RunningSuite:
    """A `v2x run` that is up (every service serving); with `simulate`, its simulators too; `args` go to `v2x run`."""
    suite = await spawn_suite(tmp, extra_env, simulate=simulate, args=args)

    def up() -> bool:
        if suite.proc.returncode is not None:
            raise AssertionError(f"v2x run exited with {suite.proc.returncode}:\n{suite.output()[-4000:]}")
        return "v2x-suite is up" in suite.output()

    try:
        try:
            await assert_eventually(up, "v2x run to say it is up", ready_s, every_s=0.5)
        except AssertionError as exc:
            raise AssertionError(f"v2x run did not come up ({exc}):\n{suite.output()[-4000:]}") from None
    except BaseException:
        # However the wait ends (no start, the test's timeout, Ctrl-C), no suite is left behind: the fixture's
        # teardown never runs for a fixture that did not finish setting up.
        await asyncio.shield(stop_suite(suite))
        raise
    return suite


async def spawn_suite(tmp: Path, extra_env: dict[str, str] | None = None, *, simulate: bool = False,
                      args: Sequence[str] = ()) -> RunningSuite:
    """A `v2x run` just started (in a session of its own, every port free)."""
    runtime = tmp / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"XDG_RUNTIME_DIR": str(runtime), "V2X_BIND_HOST": "127.0.0.1", "V2X_GRACE_S": "1",
                "V2X_OCPP_PORT": str(free_port()), "V2X_EMULATOR_PORT": str(free_port()),
                "V2X_CONSOLE_PORT": str(free_port()), "LOG_LEVEL": "WARNING"})
    for name in SERVICE_PORTS:
        env[f"V2X_{name.upper()}_PORT"] = str(free_port())
        # `--replicas N` gives process i the metrics port + i * METRICS_STRIDE: those must be free too.
        env[f"V2X_{name.upper()}_METRICS_PORT"] = str(free_port(*(i * METRICS_STRIDE for i in range(1, 4))))
    env.update(extra_env or {})
    log = tmp / "run.log"
    with log.open("wb") as out:
        argv = ["run", *args] if simulate else ["run", "--no-sim", *args]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", *argv, env=env,
                                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return RunningSuite(proc, runtime, log)


async def stop_suite(suite: RunningSuite) -> int:
    if suite.proc.returncode is None:
        suite.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(suite.proc.wait(), 60)
        except TimeoutError:
            os.killpg(suite.proc.pid, signal.SIGKILL)
            await suite.proc.wait()
    with contextlib.suppress(ProcessLookupError):  # anything of its session the suite left (it must not)
        os.killpg(suite.proc.pid, signal.SIGKILL)
    return suite.proc.returncode or 0


@pytest.fixture(scope="session")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSuite]:
    running = await start_suite(tmp_path_factory.mktemp("suite"))
    yield running
    code = await stop_suite(running)
    assert code == 0, running.output()[-4000:]
    assert not running.run_file.exists(), "the run file outlived the run"
