"""The locust load test, smoke-sized: locust in a subprocess for 15 s with one user of each class against a suite
started here (every service in this process on ports of its own, the OCPP gateway, a municipal platform emulator),
frames rendered in advance by the simulator (key-coloured, for the roadside service's key-colour detector).

It passes when locust exits 0, every class made requests and none failed. pytest never imports the locustfile:
locust patches its process with gevent, after which grpc.aio hangs.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from grpc import aio
from v2x.common.v1 import common_pb2 as cpb
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from load.harness import free_port
from services.common.runtime import Resources, RunningService, start_service
from services.idps.app import build as build_idps
from services.municipal.emulator import Faults, Platform, start_emulator
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from services.roadside.app import make_builder
from services.roadside.keycolour import KeyColourDetector
from tests.charging.conftest import start_harness, stop_harness
from tests.conftest import Keys
from tests.municipal.helpers import SECRET

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECONDS = 15
SETTLE_S = 3.0  # the first seconds, fired as "warm-up" types
# What each class's requests are called in the report (load/users/*): each class must make one of them at least.
CLASSES = {
    "Camera": ("roadside.StreamFrames frame",),
    "Operator": ("parking.StreamOccupancy ack", "parking.RecordPassage"),
    "Driver": ("parking.FindAvailable", "charging.FindChargers", "parking.WatchAvailability snapshot message"),
    "PoliceConsole": ("idps.Subscribe message", "idps.ReportEvent"),
    "ChargePoint": ("BootNotification", "StatusNotification"),
    "PlatformAdmin": ("municipal.GetStatus",),
}


@dataclasses.dataclass
class Suite:
    targets: dict[str, str]
    ocpp_url: str


@pytest.fixture(scope="package")
async def suite(resources: Resources, parking_service: RunningService) -> AsyncIterator[Suite]:
    res = Resources(dataclasses.replace(resources.settings, bind_host="127.0.0.1"), resources.engine, resources.redis,
                    resources.verifier, resources.reads)
    roadside = await start_service(make_builder(KeyColourDetector(), plates=False), res, port=0, host="127.0.0.1")
    idps = await start_service(build_idps, res, port=0, host="127.0.0.1")
    charging = await start_harness(res, lambda: datetime.now(UTC))
    emulator = await start_emulator(Platform([SECRET], 300.0, Faults(), seed=7))
    destination = MunicipalDestination(name="city", url=emulator.url + "/municipal/v1/records",
                                       profile="municipal_json", secret=SECRET, start="now", batch_size=100,
                                       timeout_s=2.0)
    from services.municipal.app import assemble

    municipal_settings = MunicipalSettings(destinations=(destination,), poll_s=0.1, reconcile_hour=-1)
    municipal = await start_service(lambda r: assemble(r, municipal_settings), res, port=0, host="127.0.0.1")
    try:
        yield Suite({"roadside": f"127.0.0.1:{roadside.server.port}", "idps": f"127.0.0.1:{idps.server.port}",
                     "parking": f"127.0.0.1:{parking_service.server.port}",
                     "charging": f"127.0.0.1:{charging.running.server.port}",
                     "municipal": f"127.0.0.1:{municipal.server.port}"}, charging.ocpp_url)
    finally:
        await municipal.stop(0.5)
        await emulator.stop()
        await stop_harness(charging)
        await idps.stop(0.5)
        await roadside.stop(0.5)


async def _run(*argv: str, env: dict[str, str] | None = None, timeout_s: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{argv[:3]} did not end within {timeout_s} s:\n{out.decode(errors='replace')}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture(scope="package")
async def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frames of one simulated camera, 4 s at 5 fps, key-coloured (rendered once for the package's tests)."""
    path = tmp_path_factory.mktemp("frames") / "frames.zip"
    code, out = await _run(sys.executable, "-m", "load.frames", "--out", str(path), "--render", "key",
                           "--intersections", "1", "--fps", "5", "--seconds", "4", timeout_s=180)
    assert code == 0, out
    return path


def write_plan(path: Path, suite: Suite, keys: Keys, frames: Path, tag: str, counts: dict[str, int],
               settle_s: float = 0.0) -> dict[str, str]:
    """The plan the users read; returns the environment locust runs with."""
    path.write_text(json.dumps({
        "targets": suite.targets, "ocpp_url": suite.ocpp_url, "operator_id": "OPA", "frames": str(frames),
        "fps": 5.0, "tag": tag, "counts": counts, "settle_s": settle_s,
        "keys": {"admin": keys.admin, "police": keys.police, "driver": keys.driver, "operator": keys.op_a}}))
    return {**os.environ, "V2X_LOAD_PLAN": str(path), "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}


def read_stats(prefix: Path) -> list[dict[str, str]]:
    with prefix.with_name(prefix.name + "_stats.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["Name"] != "Aggregated"]


HEADLESS = ("--headless", "--stop-timeout", "5", "--exit-code-on-error", "1", "--only-summary")


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_locust_runs_every_user_class_against_the_suite_without_a_failure(
        tmp_path: Path, suite: Suite, keys: Keys, frames: Path) -> None:
    env = write_plan(tmp_path / "plan.json", suite, keys, frames, "SMOKE", {name: 1 for name in CLASSES}, SETTLE_S)
    code, out = await _run(str(BIN / "locust"), "-f", "load/locustfile.py", *HEADLESS, "-u", str(len(CLASSES)),
                           "-r", str(len(CLASSES)), "-t", f"{SECONDS}s", "--csv", str(tmp_path / "locust"),
                           *CLASSES, env=env, timeout_s=120)
    assert code == 0, out
    rows = read_stats(tmp_path / "locust")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["Name"]] = counts.get(r["Name"], 0) + int(r["Request Count"])
    # The plan's first seconds are reported as "warm-up" types (what make load-capacity holds to no bound), the rest
    # under their own.
    frame_types = {r["Type"] for r in rows if r["Name"] == "roadside.StreamFrames frame"}
    assert frame_types == {"warm-up grpc", "grpc"}, out
    failed = {f"{r['Type']} {r['Name']}": r["Failure Count"] for r in rows if int(r["Failure Count"])}
    assert not failed, out
    for cls, names in CLASSES.items():
        assert sum(counts.get(name, 0) for name in names) > 0, f"{cls} made none of {names}:\n{out}"
    assert counts.get("roadside.StreamFrames frame", 0) >= 2 * SECONDS, out  # 5 fps, answered


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_distributed_a_master_and_two_workers_share_the_users(
        tmp_path: Path, suite: Suite, keys: Keys, frames: Path) -> None:
    """`--master` and two `--worker` processes on this machine: the master hands each worker one camera (the ids a
    user registers carry its worker's index, so workers never share one), its report holds what both sent, and
    every process exits 0. (With several classes locust's dispatcher may put both cameras on one worker: one class
    here, so that the split is certain.)"""
    env = write_plan(tmp_path / "plan.json", suite, keys, frames, "DIST", {"Camera": 2})
    port = free_port()
    master = asyncio.create_task(_run(
        str(BIN / "locust"), "-f", "load/locustfile.py", *HEADLESS, "-u", "2", "-r", "2", "-t", "12s", "--master",
        "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "2",
        "--expect-workers-max-wait", "60", "--csv", str(tmp_path / "locust"), "Camera", env=env,
        timeout_s=150))
    workers = [asyncio.create_task(_run(str(BIN / "locust"), "-f", "load/locustfile.py", "--worker", "--master-host",
                                        "127.0.0.1", "--master-port", str(port), "Camera", env=env,
                                        timeout_s=150)) for _ in range(2)]
    code, out = await master
    results = [await w for w in workers]
    assert code == 0, out
    assert all(c == 0 for c, _ in results), [o for _, o in results]
    rows = read_stats(tmp_path / "locust")
    assert not [r for r in rows if int(r["Failure Count"])], out
    frames_answered = sum(int(r["Request Count"]) for r in rows if r["Name"] == "roadside.StreamFrames frame")
    assert frames_answered >= 20, out  # both cameras streamed (at 5 fps each; fewer are answered on a busy machine)
    async with aio.insecure_channel(suite.targets["roadside"]) as ch:
        listed = await RoadsideServiceStub(ch).ListCameras(rpb.ListCamerasRequest(page=cpb.PageRequest(page_size=500)),
                                                          metadata=keys.md(keys.admin), timeout=10)
    ours = sorted(c.id for c in listed.cameras if c.id.startswith("dist-cam-"))
    assert {i.split("-")[2] for i in ours} == {"w0", "w1"}, (ours, out)
