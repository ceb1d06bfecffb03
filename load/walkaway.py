"""Clients that walk away: every streaming rpc of the suite, each call cancelled by its client at a random moment.

Used by the regression test (`tests/runner/test_walkaway.py`) and the soak (`load/soak.py`). A call is one of the
suite's server-streaming or bidi rpcs (Subscribe, WatchAvailability, WatchStation, StreamFrames, StreamOccupancy,
StreamStatus, reflection's ServerReflectionInfo and health's Watch on every service), left at one of these moments:

- `before_first`: cancelled right after it starts, before any answer;
- `mid_stream`: cancelled after a few answers, while the server waits for more to say;
- `while_writing`: cancelled while the server has answers to write (a snapshot it is streaming, requests still
  being answered);
- `channel_close`: the client closes its connection in the middle of the stream, as a process that dies does;
- `deadline`: the call's deadline passes in the middle of the stream.

A server must come out of every one of them alive and serving. Only contracts are used: the generated stubs and
standard health and reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from v2x.charging.v1 import charging_pb2 as cpb
from v2x.charging.v1 import charging_pb2_grpc
from v2x.common.v1 import common_pb2
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1 import idps_pb2_grpc
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1 import parking_pb2_grpc
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1 import roadside_pb2_grpc

SERVICES = ("roadside", "idps", "parking", "charging", "municipal")
MOMENTS = ("before_first", "mid_stream", "while_writing", "channel_close", "deadline")
# What a client that walked away may see of its own call; anything else is a server fault.
EXPECTED = frozenset({grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED})
CLIENT_CORE_RACE = "Internal error from Core"
CENTER = common_pb2.LatLon(lat=31.40, lon=121.49)
CAMERA_PREFIX = "walkaway-cam-"
FRAME_SIZE = (320, 240)


@dataclass(frozen=True)
class Suite:
    """A running suite: each service's host:port and the keys of its callers."""

    targets: Mapping[str, str]
    admin_key: str
    police_key: str
    driver_key: str
    operator_key: str


@dataclass(frozen=True)
class Fixtures:
    """What the calls need from the suite, found or made once by `prepare`."""

    lot: ppb.Lot
    station: cpb.Station
    cameras: tuple[str, ...]
    frame: bytes


@dataclass
class Tally:
    """Calls made, by rpc and moment, and the status codes their clients saw."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _md(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def synthetic_frame(seed: int = 7) -> bytes:
    """A JPEG of a grey road with a few box-shaped 'vehicles': enough for the detector to run on."""
    rng = np.random.default_rng(seed)
    w, h = FRAME_SIZE
    image = np.full((h, w, 3), 90, np.uint8)
    image += rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x, y = int(rng.integers(0, w - 60)), int(rng.integers(h // 3, h - 40))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        cv2.rectangle(image, (x, y), (x + 60, y + 35), colour, -1)
    ok, jpeg = cv2.imencode(".jpg", image)
    if not ok:
        raise RuntimeError("could not encode a JPEG")
    return bytes(jpeg.tobytes())


async def prepare(suite: Suite, cameras: int = 4) -> Fixtures:
    """The operator's first lot and station, `cameras` cameras configured for the walk-away clients, a frame."""
    async with aio.insecure_channel(suite.targets["parking"]) as ch:
        lots = await parking_pb2_grpc.ParkingServiceStub(ch).ListLots(ppb.ListLotsRequest(),
                                                                      metadata=_md(suite.operator_key), timeout=10)
    async with aio.insecure_channel(suite.targets["charging"]) as ch:
        stations = await charging_pb2_grpc.ChargingServiceStub(ch).ListStations(
            cpb.ListStationsRequest(), metadata=_md(suite.operator_key), timeout=10)
    if not lots.lots or not stations.stations:
        raise RuntimeError("the operator key has no lot or no station: seed the demo district first")
    ids = []
    async with aio.insecure_channel(suite.targets["roadside"]) as ch:
        stub = roadside_pb2_grpc.RoadsideServiceStub(ch)
        for i in range(cameras):
            cam_id = f"{CAMERA_PREFIX}{i}"
            camera = rpb.Camera(id=cam_id, name=f"walk-away camera {i}", location=CENTER, heading_deg=90.0,
                                image_width=FRAME_SIZE[0], image_height=FRAME_SIZE[1])
            with contextlib.suppress(aio.AioRpcError):  # already configured by an earlier run: reuse it
                await stub.ConfigureCamera(rpb.ConfigureCameraRequest(camera=camera), metadata=_md(suite.admin_key),
                                           timeout=10)
            ids.append(cam_id)
    return Fixtures(lots.lots[0].lot, stations.stations[0], tuple(ids), synthetic_frame())


# ----- the calls -------------------------------------------------------------------------------------------------


class _Clock:
    """Monotonic sequence numbers for occupancy reports across every call of a run."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last


@dataclass
class Walker:
    """Makes walk-away calls against one suite; `run` makes many, concurrently."""

    suite: Suite
    fixtures: Fixtures
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    tally: Tally = field(default_factory=Tally)
    _channels: dict[str, aio.Channel] = field(default_factory=dict)
    _sequence: _Clock = field(default_factory=_Clock)
    _frame_ids: int = 0

    def calls(self, deadline_s: float = 30.0) -> dict[str, Callable[[aio.Channel], Any]]:
        """Each walk-away call: its name and how to start it on a channel to its service."""
        s, f = self.suite, self.fixtures
        timeout = deadline_s
        out: dict[str, Callable[[aio.Channel], aio.Call]] = {
            "idps.Subscribe": lambda ch: idps_pb2_grpc.IdpsServiceStub(ch).Subscribe(
                ipb.SubscribeRequest(filter=ipb.IncidentFilter(area=common_pb2.Area(
                    circle=common_pb2.Circle(center=CENTER, radius_m=5000)))),
                metadata=_md(s.police_key), timeout=timeout),
            "parking.WatchAvailability": lambda ch: parking_pb2_grpc.ParkingServiceStub(ch).WatchAvailability(
                ppb.WatchAvailabilityRequest(area=common_pb2.Area(circle=common_pb2.Circle(center=CENTER,
                                                                                             radius_m=5000)),
                                             snapshot=True),
                metadata=_md(s.driver_key), timeout=timeout),
            "charging.WatchStation": lambda ch: charging_pb2_grpc.ChargingServiceStub(ch).WatchStation(
                cpb.WatchStationRequest(station_id=f.station.id), metadata=_md(s.driver_key),
                timeout=timeout),
            "parking.StreamOccupancy": lambda ch: parking_pb2_grpc.ParkingServiceStub(ch).StreamOccupancy(
                self._occupancy(), metadata=_md(s.operator_key), timeout=timeout),
            "charging.StreamStatus": lambda ch: charging_pb2_grpc.ChargingServiceStub(ch).StreamStatus(
                self._statuses(), metadata=_md(s.operator_key), timeout=timeout),
            "roadside.StreamFrames": lambda ch: roadside_pb2_grpc.RoadsideServiceStub(ch).StreamFrames(
                self._frames(), metadata=_md(s.admin_key), timeout=timeout),
        }
        for service in SERVICES:
            out[f"{service}.ServerReflectionInfo"] = lambda ch: reflection_pb2_grpc.ServerReflectionStub(
                ch).ServerReflectionInfo(self._reflection(), timeout=timeout)
            out[f"{service}.HealthWatch"] = lambda ch: health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(), timeout=timeout)
        return out

    async def _occupancy(self) -> AsyncIterator[ppb.OccupancyReportBatch]:
        lot = self.fixtures.lot
        for _ in range(self.rng.randint(1, 40)):
            batch = ppb.OccupancyReportBatch()
            for _ in range(self.rng.randint(1, 5)):
                free = self.rng.randint(0, lot.capacity.general)
                batch.reports.add(lot_id=lot.id, sequence=self._sequence.next(), observed_at=_now(),
                                  counts=[ppb.ClassCount(space_class=ppb.SPACE_CLASS_GENERAL, free=free)])
            yield batch
            await asyncio.sleep(self.rng.choice((0, 0, 0.005)))

    async def _statuses(self) -> AsyncIterator[cpb.StatusReport]:
        connectors = [c.id for e in self.fixtures.station.evses for c in e.connectors]
        for _ in range(self.rng.randint(1, 60)):
            status = self.rng.choice((cpb.CONNECTOR_STATUS_AVAILABLE, cpb.CONNECTOR_STATUS_CHARGING))
            yield cpb.StatusReport(connector_id=self.rng.choice(connectors), status=status, observed_at=_now())
            await asyncio.sleep(self.rng.choice((0, 0, 0.005)))

    async def _frames(self) -> AsyncIterator[rpb.Frame]:
        camera = self.rng.choice(self.fixtures.cameras)
        for _ in range(self.rng.randint(1, 20)):
            self._frame_ids += 1
            yield rpb.Frame(camera_id=camera, frame_id=self._frame_ids, captured_at=_now(),
                            encoded=self.fixtures.frame)
            await asyncio.sleep(self.rng.choice((0, 0.01, 0.05)))

    async def _reflection(self) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        for _ in range(self.rng.randint(1, 30)):
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")

    def _channel(self, service: str) -> aio.Channel:
        ch = self._channels.get(service)
        if ch is None:
            ch = self._channels[service] = aio.insecure_channel(self.suite.targets[service])
        return ch

    async def one(self, name: str, moment: str) -> None:
        """Makes call `name` and leaves it at `moment`."""
        service = name.split(".", 1)[0]
        own = moment == "channel_close"
        channel = aio.insecure_channel(self.suite.targets[service]) if own else self._channel(service)
        # Only the `deadline` moment relies on the deadline; the others leave well before it.
        call = self.calls(self.rng.uniform(0.05, 0.4) if moment == "deadline" else 30.0)[name](channel)
        self.tally.calls[(name, moment)] += 1
        try:
            await _leave(call, moment, self.rng, channel if own else None)
            code = await call.code()
        except aio.AioRpcError as exc:
            code = exc.code()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
        finally:
            if own:
                await channel.close(None)
        details = await _details(call) if code not in EXPECTED else ""
        if moment == "deadline" and code is grpc.StatusCode.INTERNAL and details == CLIENT_CORE_RACE:
            # The client's own core, not the server: when the deadline passes while the client's request-writing
            # task is mid-write, grpc's client reports this instead of DEADLINE_EXCEEDED (seen ~1 in 500 deadline
            # calls of a client-streaming rpc). The server's side of such calls is checked through its log.
            self.tally.codes["DEADLINE_EXCEEDED (client core race)"] += 1
            return
        self.tally.codes[code.name] += 1
        if code not in EXPECTED:
            self.tally.unexpected.append(f"{name} [{moment}]: {code.name} {details}")

    async def run(self, n: int, concurrency: int = 16, names: Sequence[str] | None = None) -> Tally:
        """`n` calls, `concurrency` at a time: every (rpc, moment) pair in turn, then at random."""
        pairs = [(c, m) for c in (names or sorted(self.calls())) for m in MOMENTS]
        plan = [pairs[i] if i < len(pairs) else self.rng.choice(pairs) for i in range(n)]
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        for p in plan:
            queue.put_nowait(p)

        async def worker() -> None:
            while not queue.empty():
                await self.one(*queue.get_nowait())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return self.tally

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(None)
        self._channels.clear()


async def _details(call: aio.Call) -> str:
    with contextlib.suppress(Exception):
        return await call.details() or ""
    return ""


async def _read(call: Any, n: int) -> int:
    """Reads up to `n` answers; how many came."""
    got = 0
    while got < n:
        message = await call.read()
        if message is aio.EOF:
            break
        got += 1
    return got


async def _leave(call: Any, moment: str, rng: random.Random, channel: aio.Channel | None) -> None:
    if moment == "before_first":
        await asyncio.sleep(rng.choice((0, 0, 0.001, 0.005)))
        call.cancel()
    elif moment == "mid_stream":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_read(call, rng.randint(1, 3)), 2.0)
        await asyncio.sleep(rng.uniform(0, 0.05))
        call.cancel()
    elif moment == "while_writing":
        # The first answer says the server is writing; stop reading and leave while it has more to write.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_read(call, 1), 2.0)
        call.cancel()
    elif moment == "channel_close":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_read(call, rng.randint(0, 2)), 2.0)
        assert channel is not None
        await channel.close(None)
    elif moment == "deadline":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_read(call, 1_000_000), 5.0)
    else:
        raise ValueError(f"unknown moment {moment}")


async def serving(targets: Mapping[str, str], timeout_s: float = 5.0) -> dict[str, str]:
    """Each service's overall health status, DOWN when it does not answer."""
    out = {}
    for name, target in targets.items():
        try:
            async with aio.insecure_channel(target) as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
            out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except aio.AioRpcError:
            out[name] = "DOWN"
    return out

