"""The municipal lag for someone who typed `make run`: `v2x municipal-status`, the lag line `v2x run` prints, and
the demo platform the adapter delivers to there."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from v2x.municipal.v1 import municipal_pb2 as pb

from services.common.config import Settings
from services.common.runfile import run_file
from services.common.runtime import Resources
from services.municipal.demo import demo_platform_env, emulator_ready, municipal_banner, report_municipal_lag
from services.municipal.emulator import RunningEmulator
from services.municipal.settings import municipal_destinations
from services.municipal.status_report import AdminAccess, StatusClient, load_access, report_lag, save_access
from services.runner.embedded import free_port
from services.runner.supervisor import ChildSpec, Supervisor, python_argv
from tests.conftest import Keys
from tests.municipal.conftest import Adapter, StartAdapter, destination
from tests.municipal.helpers import eventually, insert, lot_dynamic
from tests.municipal.test_delivery import caught_up, status_of
from tests.waiting import assert_eventually

REPO = Path(__file__).resolve().parents[2]
Row = dict[str, str]


async def municipal_status(*args: str, runtime_dir: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`v2x municipal-status ARGS` as a user runs it (its own process); with `runtime_dir` as XDG_RUNTIME_DIR, so
    that a `make run` of the person running the tests is not what it finds."""
    full = {k: v for k, v in os.environ.items() if k != "V2X_ADMIN_KEY"}
    full.update({"XDG_RUNTIME_DIR": str(runtime_dir), **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "municipal-status", *args, cwd=REPO, env=full,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def row(output: str, name: str) -> Row:
    """The table row of destination `name`, by column heading."""
    lines = output.splitlines()
    head = re.split(r"\s{2,}", next(line for line in lines if line.startswith("DESTINATION")).strip())
    line = next(line for line in lines if line.split() and line.split()[0] == name)
    return dict(zip(head, re.split(r"\s{2,}", line.strip()), strict=True))


def target(a: Adapter) -> str:
    return f"127.0.0.1:{a.service.server.port}"


def suite_settings(resources: Resources, port: int) -> Settings:
    """The settings `v2x run` would have with the adapter on `port`."""
    return dataclasses.replace(resources.settings, ports={**resources.settings.ports, "municipal": port})


async def paused_backlog(a: Adapter, resources: Resources, lot: str, n: int) -> None:
    await a.stub.Pause(pb.PauseRequest(destination=a.name, reason="demo pause"), metadata=a.md)
    await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for seq in range(1, n + 1)])


# ----- v2x municipal-status -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_status_command_shows_the_backlog_of_a_paused_destination_then_zero_once_delivered(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, keys: Keys, unique: str,
        tmp_path: Path) -> None:
    a = await start_adapter(destination(emulator))
    await paused_backlog(a, resources, f"B{unique}", 7)
    before = await status_of(a)
    code, out, err = await municipal_status("--target", target(a), "--key", keys.admin, runtime_dir=tmp_path)
    after = await status_of(a)
    assert code == 0, err
    r = row(out, a.name)
    assert (r["LAG (RECORDS)"], r["DELIVERED"], r["DEAD LETTERS"], r["STATE"], r["LAST DELIVERY"]) == \
           ("7", "0", "0", "paused", "never")
    assert r["PROFILE"] == "municipal_json"
    # The age of the oldest waiting record, as GetStatus said it while the command ran (to 0.1 s).
    assert before.lag_s - 0.05 <= float(r["LAG (S)"]) <= after.lag_s + 0.05 and float(r["LAG (S)"]) > 0
    assert f"  {a.name}: paused: demo pause" in out.splitlines()

    await a.stub.Resume(pb.ResumeRequest(destination=a.name), metadata=a.md)
    await caught_up(a)
    code, out, err = await municipal_status("--target", target(a), "--key", keys.admin, runtime_dir=tmp_path)
    assert code == 0, err
    r = row(out, a.name)
    assert (r["LAG (RECORDS)"], r["LAG (S)"], r["DELIVERED"], r["STATE"]) == ("0", "0.0", "7", "delivering")
    assert r["LAST DELIVERY"].endswith(" s ago")
    assert "paused:" not in out


async def test_status_command_needs_no_configuration_while_v2x_run_runs(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, keys: Keys, unique: str,
        tmp_path: Path) -> None:
    a = await start_adapter(destination(emulator))
    await paused_backlog(a, resources, f"N{unique}", 3)
    # What a running `v2x run` leaves (tests/runner/test_supervisor.py checks that it does).
    save_access(AdminAccess(target(a), keys.admin, os.getpid()), run_file({"XDG_RUNTIME_DIR": str(tmp_path)}))
    code, out, err = await municipal_status(runtime_dir=tmp_path)
    assert code == 0, err
    assert out.startswith(f"municipal adapter {target(a)}: 1 destination")
    assert row(out, a.name)["LAG (RECORDS)"] == "3"


async def test_status_command_without_a_reachable_adapter_fails_with_a_clear_message(tmp_path: Path) -> None:
    where = f"127.0.0.1:{free_port()}"
    code, out, err = await municipal_status("--target", where, "--key", "v2x_not_checked", runtime_dir=tmp_path)
    assert code == 1
    assert out == ""
    assert err.startswith(f"v2x municipal-status: the municipal adapter at {where} is not reachable (UNAVAILABLE")
    assert "is `make run` (or `v2x serve municipal`) running?" in err
    assert "Traceback" not in err


async def test_status_command_without_a_running_suite_or_key_says_how_to_give_one(tmp_path: Path) -> None:
    code, out, err = await municipal_status(runtime_dir=tmp_path)
    assert (code, out) == (1, "")
    assert err.startswith("v2x municipal-status: no admin key: no `v2x run` is running for this user")
    assert "--key" in err and "Traceback" not in err


async def test_status_command_reports_a_refused_key(
        emulator: RunningEmulator, start_adapter: StartAdapter, keys: Keys, tmp_path: Path) -> None:
    a = await start_adapter(destination(emulator))
    code, _, err = await municipal_status("--target", target(a), "--key", keys.driver, runtime_dir=tmp_path)
    assert code == 1
    assert f"the municipal adapter at {target(a)} refused the key (PERMISSION_DENIED" in err


# ----- the run file -------------------------------------------------------------------------------------------


def test_a_run_file_left_by_a_run_that_is_gone_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = run_file({"XDG_RUNTIME_DIR": str(tmp_path)})
    save_access(AdminAccess("127.0.0.1:50055", "v2x_key", gone.pid), path)
    assert load_access(path) is None
    save_access(AdminAccess("127.0.0.1:50055", "v2x_key", os.getpid()), path)
    assert load_access(path) == AdminAccess("127.0.0.1:50055", "v2x_key", os.getpid())
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


def test_the_admin_key_is_not_left_in_a_folder_others_may_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(PermissionError):
        save_access(AdminAccess("127.0.0.1:50055", "v2x_key", os.getpid()), shared / "run.json")
    assert not (shared / "run.json").exists()


# ----- the lag line of `v2x run` ------------------------------------------------------------------------------


async def test_v2x_run_prints_the_lag_every_interval_until_stopped(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, keys: Keys, unique: str,
        tmp_path: Path) -> None:
    a = await start_adapter(destination(emulator))
    await paused_backlog(a, resources, f"R{unique}", 3)
    lines: list[str] = []
    reporter = asyncio.create_task(report_municipal_lag(suite_settings(resources, a.service.server.port),
                                                        keys.admin, lines.append, interval_s=0.2))

    async def said(pattern: str) -> bool:
        return any(re.search(pattern, line) for line in lines)

    await eventually(lambda: said(rf"municipal lag: {a.name} 3 records / \d+\.\d s \(0 delivered, PAUSED\)$"),
                     what="the paused backlog")
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] municipal lag: .*", lines[0])
    await a.stub.Resume(pb.ResumeRequest(destination=a.name), metadata=a.md)
    await eventually(lambda: said(rf"municipal lag: {a.name} 0 records / 0\.0 s \(3 delivered\)$"),
                     what="lag 0 after delivery")
    reporter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reporter
    assert reporter.cancelled()  # stopped: a finished task prints nothing more (no need to wait and see)


async def test_v2x_run_says_once_that_the_lag_is_unknown_while_the_adapter_does_not_answer(
        resources: Resources, keys: Keys, tmp_path: Path) -> None:
    lines: list[str] = []

    class CountingClient(StatusClient):
        """The reporter's client, counting its attempts (the test waits for ten, not for a second)."""

        attempts = 0

        async def get(self, destination: str = "") -> list[pb.DestinationStatus]:
            CountingClient.attempts += 1
            return await super().get(destination)

    async with CountingClient(f"127.0.0.1:{free_port()}", keys.admin) as client:
        reporter = asyncio.create_task(report_lag(client, lines.append, interval_s=0.05))
        await assert_eventually(lambda: CountingClient.attempts >= 10, "ten attempts to read the status", 20.0)
        reporter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reporter
    assert len(lines) == 1
    assert "municipal lag: unknown: the municipal adapter at 127.0.0.1:" in lines[0]
    assert "not reachable" in lines[0]


# ----- the demo platform of `v2x run` -------------------------------------------------------------------------


@pytest.fixture
async def demo_platform() -> AsyncIterator[dict[str, str]]:
    """The platform emulator as `v2x run` runs it (under its supervisor); the adapter's settings for it."""
    port = free_port()
    emulator_env, adapter_env = demo_platform_env(port)
    supervisor = Supervisor([ChildSpec("platform-emulator", python_argv("platform-emulator", "--port", str(port)),
                                       {**os.environ, **emulator_env}, lambda: emulator_ready(port))])
    supervisor.start()
    await supervisor.wait_ready()
    yield adapter_env
    await supervisor.stop(5.0)


async def test_the_demo_platform_takes_the_adapters_deliveries_for_both_destinations(
        resources: Resources, demo_platform: dict[str, str], start_adapter: StartAdapter, keys: Keys, unique: str,
        tmp_path: Path) -> None:
    # The demo's destinations start at the beginning of the outbox; here, where other tests' records are
    # queued, they start now so that what they receive is this test's.
    demo = [dataclasses.replace(d, start="now") for d in municipal_destinations(demo_platform)]
    assert [(d.name, d.profile) for d in demo] == [("city", "municipal_json"), ("city-fiware", "ngsi_ld")]
    a = await start_adapter(*demo)
    lot = f"D{unique}"
    await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1))])
    for d in demo:
        await caught_up(a, d.name)
    code, out, err = await municipal_status("--target", target(a), "--key", keys.admin, runtime_dir=tmp_path)
    assert code == 0, err
    for d in demo:
        r = row(out, d.name)
        assert (r["LAG (RECORDS)"], r["DELIVERED"], r["DEAD LETTERS"], r["STATE"]) == ("0", "1", "0", "delivering")
    base = demo[0].url.removesuffix("/municipal/v1/records")
    async with aiohttp.ClientSession() as http, http.get(f"{base}/_admin/state") as answer:
        assert (await answer.json())["unique_records"] == 2  # one per destination, signatures accepted


def test_the_banner_names_the_status_command_and_no_grpcurl() -> None:
    banner = municipal_banner(Settings(), 8700)
    assert "municipal-status" in banner and "grpcurl" not in banner
    assert "every 30 s" in banner
