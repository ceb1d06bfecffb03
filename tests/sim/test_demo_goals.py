"""`make run`'s promise, checked as it runs: within two minutes of the simulator's start, police consoles see
camera-sourced incidents (903 stopped vehicle, 904 wrong way, 707 jam) with snapshots, and on-street spot states move
in parking.

The services are the suite's own, in this process on ports of their own: roadside with the real ONNX detector (as
`make models` builds it), IDPS, parking and charging on the test database and Redis. The simulator is started with the
very command line `v2x run` gives it (services/runner/suite.py `roadside_simulator`: the district's intersections,
cameras and frame rate of the banner, the time of day now), as a process of its own. Slow (about two and a half
minutes): marked `slow`. At night (7 p.m. to 7 a.m. in Shanghai, as simulated) the jam is not required: the detector
does not find the cars queued in the dark picture (measured; see the README's simulator section).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from grpc import aio
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from roadside_sim.cameras import rigs
from roadside_sim.network import District
from services.common.apikeys import create_key
from services.common.runtime import Resources, RunningService, start_service
from services.idps.app import build as build_idps
from services.roadside.app import make_builder
from services.runner.suite import SIM_CAMERAS_PER, SIM_INTERSECTIONS, roadside_simulator
from tests.charging.conftest import start_harness, stop_harness
from tests.conftest import Keys

if TYPE_CHECKING:
    from v2x.idps.v1.idps_pb2_grpc import IdpsServiceAsyncStub as IdpsStub
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
else:
    IdpsStub, ParkingStub = IdpsServiceStub, ParkingServiceStub

SHANGHAI = ZoneInfo("Asia/Shanghai")
GOAL_S = 120.0
WANTED: dict[int, str] = {ipb.EVENT_TYPE_STOPPED_VEHICLE: "903", ipb.EVENT_TYPE_WRONG_WAY: "904",
          ipb.EVENT_TYPE_TRAFFIC_JAM: "707"}


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def _police(idps: IdpsStub, key: str, t0: float, seen: dict[int, tuple[float, str]]) -> None:
    """Camera-sourced incidents of the wanted types with a snapshot, as a police console sees them."""
    request = ipb.SubscribeRequest(filter=ipb.IncidentFilter(area=cpb.Area(circle=cpb.Circle(
        center=cpb.LatLon(lat=31.40, lon=121.49), radius_m=3000))), heartbeat_interval_s=5)
    async for response in idps.Subscribe(request, metadata=_md(key)):
        for m in response.messages:
            inc = m.incident
            if m.kind not in (ipb.IncidentMessage.KIND_NEW, ipb.IncidentMessage.KIND_UPDATE) or \
                    inc.type not in WANTED or inc.type in seen or \
                    ipb.SOURCE_KIND_ROADSIDE_DETECTION not in inc.source_kinds:
                continue
            full = await idps.GetIncident(ipb.GetIncidentRequest(incident_id=inc.id),
                                          metadata=_md(key), timeout=10)
            if any(s.source_kind == ipb.SOURCE_KIND_ROADSIDE_DETECTION and s.evidence.has_snapshot
                   for s in full.incident.sources):
                seen[inc.type] = (time.monotonic() - t0, inc.id)


async def _spots(parking: ParkingStub, key: str, lots: list[str], t0: float,
                 moved: dict[str, float]) -> None:
    """When each on-street spot the cameras watch was first reported OCCUPIED (they all start free)."""
    while True:
        for lot in lots:
            with contextlib.suppress(aio.AioRpcError):
                reply = await parking.ListSpots(ppb.ListSpotsRequest(lot_id=lot),
                                                metadata=_md(key), timeout=5)
                for s in reply.spots:
                    if s.status == ppb.SPOT_STATUS_OCCUPIED and s.id not in moved:
                        moved[s.id] = time.monotonic() - t0
        await asyncio.sleep(2.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_police_see_camera_incidents_with_snapshots_and_spots_move_within_two_minutes(
        tmp_path: Path, resources: Resources, parking_service: RunningService, keys: Keys) -> None:
    street = await create_key(resources.engine, "operator:STREET", "roadside spot states (demo goals test)")
    env = {**resources.settings.env, "V2X_ROADSIDE_PARKING_TARGET": f"127.0.0.1:{parking_service.server.port}",
           "V2X_ROADSIDE_PARKING_KEY": street.key}
    res = Resources(dataclasses.replace(resources.settings, env=env), resources.engine, resources.redis,
                    resources.verifier, resources.reads)
    roadside = await start_service(make_builder(), res, port=0, host="127.0.0.1")
    idps = await start_service(build_idps, resources, port=0, host="127.0.0.1")
    charging = await start_harness(resources, lambda: datetime.now(UTC))
    ports = {**resources.settings.ports, "roadside": roadside.server.port, "idps": idps.server.port,
             "parking": parking_service.server.port, "charging": charging.running.server.port}
    spec = roadside_simulator(dataclasses.replace(resources.settings, ports=ports), keys.admin,
                              {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    hour = datetime.now(SHANGHAI).hour  # the simulator simulates now, as `make run` starts it
    daytime = 7 <= hour < 19
    seen: dict[int, tuple[float, str]] = {}
    moved: dict[str, float] = {}
    lots = sorted({r.lot_id for r in rigs(District(), SIM_INTERSECTIONS, SIM_CAMERAS_PER, lot_prefix="SIM")})
    log = tmp_path / "sim.log"
    tasks: list[asyncio.Task[None]] = []
    proc = None
    try:
        async with aio.insecure_channel(f"127.0.0.1:{idps.server.port}") as ich, \
                aio.insecure_channel(f"127.0.0.1:{parking_service.server.port}") as pch:
            with log.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(*spec.argv, env=spec.env, stdout=out,
                                                            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            t0 = time.monotonic()
            tasks = [asyncio.create_task(_police(IdpsServiceStub(ich), keys.police, t0, seen)),
                     asyncio.create_task(_spots(ParkingServiceStub(pch), keys.admin, lots, t0, moved))]
            while time.monotonic() - t0 < GOAL_S + 5 and not (len(seen) == len(WANTED) and moved):
                assert proc.returncode is None, log.read_text(errors="replace")[-3000:]
                await asyncio.sleep(1.0)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await stop_harness(charging)
        await idps.stop(0.5)
        await roadside.stop(0.5)
    output = log.read_text(errors="replace")
    found = {WANTED[t]: round(at, 1) for t, (at, _) in seen.items() if at <= GOAL_S}
    wanted = set(WANTED.values())
    if not daytime:
        # Measured: at night (the simulator's brightness then) the detector finds cars queued bumper to bumper with
        # scores below its floor of 0.3, or not at all, so no queue and no 707; the goal holds by day.
        wanted.discard("707")
    first_spot = min(moved.values()) if moved else None
    report = f"incidents (s after the start): {found}; first spot occupied at {first_spot}\n{output[-3000:]}"
    assert wanted <= set(found), report
    assert first_spot is not None and first_spot <= GOAL_S, report
