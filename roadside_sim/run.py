"""A simulator session: SUMO traffic with scenarios, cameras streaming rendered frames to the roadside service, the
district's on-street spots registered in parking, and ground truth written as JSON lines next to the run.

Everything goes over the suite's public interfaces, as real cameras and an administrator would use them: parking
RegisterLot/UpsertSpots (admin) for the on-street segments the cameras watch, roadside ConfigureCamera (admin), then
one StreamFrames call per camera sending JPEG frames at the camera's frame rate (a camera that is not answered in
time drops its frame, as a camera agent does, rather than queueing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import grpc
from grpc import aio
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub
from v2x.roadside.v1 import roadside_pb2 as rpb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim import scenario as sc
from roadside_sim.cameras import FAR_M, NEAR_M, CameraRig, rigs
from roadside_sim.chargers import Chargers, district_chargers
from roadside_sim.gates import GateLog, register_garage, run_gate
from roadside_sim.network import District
from roadside_sim.render import Renderer, brightness_at, encode_jpeg
from roadside_sim.traffic import Traffic
from roadside_sim.truth_log import TruthLog

if TYPE_CHECKING:
    from v2x.charging.v1.charging_pb2_grpc import ChargingServiceAsyncStub as ChargingStub
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as RoadsideStub
else:
    ChargingStub, ParkingStub, RoadsideStub = ChargingServiceStub, ParkingServiceStub, RoadsideServiceStub

log = logging.getLogger("roadside_sim")
SHANGHAI = ZoneInfo("Asia/Shanghai")
STREET_OPERATOR = "STREET"  # the on-street operator of the demo district (its key is the roadside service's)
WARM_UP_S = 240.0
# A camera sends its next frame only while fewer than this many are unanswered (one inferred, one waiting): it sends
# at its frame rate when the service keeps up and as fast as the service answers when it does not, instead of
# sending frames the service would drop unseen.
IN_FLIGHT = 2
RATE_REPORT_S = 60.0
# A stream with frames in flight and no answer for this long is started again, as a camera agent does when its link
# or the service stops answering.
STALL_S = 6.0
# grpc shares a connection among a process's channels to the same target; a camera has a link of its own.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
FIRST_RATE_REPORT_S = 20.0


@dataclass
class SimConfig:
    roadside: str
    parking: str
    admin_key: str
    intersections: int = 4
    cameras_per: int = 1
    fps: float = 3.0
    seconds: float = 0.0  # 0: until stopped
    start: datetime | None = None  # local time of day to simulate (default: now in Shanghai)
    out: Path | None = None  # ground truth and results; default: a fresh temp folder
    seed: int = 13
    scenarios: bool = True
    kinds: tuple[sc.Kind, ...] = sc.DEMO_ORDER
    spots: bool = True
    lot_prefix: str = "SIM"
    traffic_scale: float = 1.0
    gate_operator: str = ""  # an operator whose key is gate_key: a simulated garage with gate cameras (plates)
    gate_key: str = ""
    jam_lead_s: float = 0.0  # start the first jam this long before the cameras (demo: a 707 within two minutes)
    render: str = "photo"  # or "key": key-coloured silhouettes for the service's demo detector
    charging: str = ""  # the charging service: kerbside chargers over its OCPP gateway ("": none)
    keep_every: int = 60  # keep every Nth frame of each camera as JPEG in <out>/frames (0: none)
    say: Callable[[str], None] = print


@dataclass
class CameraFeed:
    rig: CameraRig
    renderer: Renderer
    queue: asyncio.Queue[rpb.Frame | None] = field(default_factory=lambda: asyncio.Queue(maxsize=2))
    sent: int = 0
    dropped: int = 0
    answered: int = 0
    held: int = 0  # frames not sent: IN_FLIGHT frames were still unanswered (the service was busy)
    outstanding: int = 0  # sent on this stream, neither answered nor dropped by the service yet
    last_service_dropped: int = 0
    last_progress: float = field(default_factory=time.monotonic)  # the stream's start or its last answer
    call: Any = None  # the StreamFrames call in progress
    stalls: int = 0
    restart: bool = False  # the call was cancelled to start the stream again
    errors: int = 0
    record_failures: int = 0  # answers the simulator failed to record (logged; the stream goes on)
    results: list[rpb.FrameResult] = field(default_factory=list)


@dataclass
class SimRun:
    config: SimConfig
    rigs: list[CameraRig]
    injections: list[sc.Injection]
    truth: TruthLog
    feeds: dict[str, CameraFeed]
    started_wall: datetime
    ended_wall: datetime | None = None
    sim_begin_s: float = 0.0
    gates: GateLog | None = None
    chargers: Chargers | None = None

    def wall_of(self, sim_s: float) -> datetime:
        return self.started_wall + timedelta(seconds=sim_s - self.sim_begin_s)


def _metadata(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def register_spots(parking: ParkingStub, key: str, district: District, cameras: list[CameraRig]) -> int:
    """The on-street segment each camera watches (its far kerb), registered once, with its spots."""
    made = 0
    for rig in cameras:
        if not rig.lot_id or not rig.spots:
            continue
        a = rig.approach
        first, last = rig.spots[0].corners, rig.spots[-1].corners
        p0 = district.frame.to_wgs84(*first[1])
        p1 = district.frame.to_wgs84(*last[2])
        mid = district.frame.to_wgs84((first[1][0] + last[2][0]) / 2, (first[1][1] + last[2][1]) / 2)
        lot = ppb.Lot(id=rig.lot_id, operator_id=STREET_OPERATOR,
                      name=f"{a.junction} {a.edge_out} kerbside (simulated)",
                      region_code="310113", kind=ppb.LOT_KIND_ON_STREET_SEGMENT,
                      location=cpb.LatLon(lat=mid[0], lon=mid[1]),
                      line=cpb.LineString(points=[cpb.LatLon(lat=p0[0], lon=p0[1]), cpb.LatLon(lat=p1[0], lon=p1[1])]),
                      capacity=ppb.Capacity(general=len(rig.spots)), detection_type=ppb.DETECTION_TYPE_SINGLE_SPACE,
                      occupancy_ttl_s=600, opening_hours=ppb.OpeningHours(always_open=True))
        try:
            await parking.RegisterLot(ppb.RegisterLotRequest(lot=lot), metadata=_metadata(key), timeout=60,
                                      wait_for_ready=True)
            made += 1
        except aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        spots = []
        for s in rig.spots:
            cx = sum(c[0] for c in s.corners) / 4
            cy = sum(c[1] for c in s.corners) / 4
            lat, lon = district.frame.to_wgs84(cx, cy)
            spots.append(ppb.Spot(id=s.spot_id, space_class=ppb.SPACE_CLASS_GENERAL,
                                  location=cpb.LatLon(lat=lat, lon=lon)))
        await parking.UpsertSpots(ppb.UpsertSpotsRequest(lot_id=rig.lot_id, spots=spots), metadata=_metadata(key),
                                  timeout=10)
    return made


async def _stream(target: str, feed: CameraFeed, key: str, on_result: Callable[[rpb.FrameResult], None]) -> None:
    """One camera's StreamFrames, on a connection of its own as a camera has; a stalled stream is started again on a
    new connection (all streams on one connection stalled together on the loaded machine: one stuck stream can hold
    the connection's flow-control window)."""

    async def frames() -> AsyncIterator[rpb.Frame]:
        while (frame := await feed.queue.get()) is not None:
            yield frame

    delay = 0.5
    while True:
        feed.outstanding, feed.last_service_dropped = feed.queue.qsize(), 0
        feed.last_progress = time.monotonic()
        restart = False
        try:
            async with aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
                stub: RoadsideStub = RoadsideServiceStub(channel)
                feed.call = stub.StreamFrames(frames(), metadata=_metadata(key))
                async for result in feed.call:
                    feed.answered += 1
                    feed.last_progress = time.monotonic()
                    gone = max(0, result.dropped_frames - feed.last_service_dropped)
                    feed.last_service_dropped = result.dropped_frames
                    feed.outstanding = max(0, feed.outstanding - 1 - gone)
                    if result.HasField("error"):
                        feed.errors += 1
                    try:
                        on_result(result)
                    except Exception:
                        # Recording an answer is the simulator's business: a failure there must not end the
                        # camera's stream (it once did, silently, on every failed frame's answer).
                        feed.record_failures += 1
                        log.exception("camera %s: recording frame %d's answer failed", feed.rig.camera_id,
                                      result.frame_id)
                    delay = 0.5
                restart = feed.call.cancelled() and feed.restart
        except asyncio.CancelledError:
            if not feed.restart:
                raise
            restart = True  # the frame loop cancelled this call to start the stream again
        except aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and feed.restart:
                restart = True
            else:
                log.warning("camera %s stream ended: %s %s; reconnecting", feed.rig.camera_id, exc.code().name,
                            exc.details())
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
        if not restart:
            return
        feed.restart = False


async def simulate(cfg: SimConfig, stop: asyncio.Event | None = None,
                   on_result: Callable[[str, rpb.FrameResult], None] | None = None) -> SimRun:
    stop = stop or asyncio.Event()
    district = District()
    cams = rigs(district, cfg.intersections, cfg.cameras_per, lot_prefix=cfg.lot_prefix if cfg.spots else "")
    local_start = (cfg.start or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    sim_begin = local_start.hour * 3600 + local_start.minute * 60 + local_start.second
    horizon = cfg.seconds if cfg.seconds > 0 else 24 * 3600 - 60
    out = cfg.out or Path(tempfile.mkdtemp(prefix="roadside-sim-"))
    out.mkdir(parents=True, exist_ok=True)
    traffic = Traffic(district, out / "sumo", sim_begin - WARM_UP_S, sim_begin + horizon + 60, seed=cfg.seed,
                      scale=cfg.traffic_scale)
    for rig in cams:
        traffic.add_e2(rig.approach, NEAR_M, FAR_M)
    await asyncio.to_thread(traffic.start)
    injections = sc.plan(cams, sim_begin, horizon, cfg.kinds, jam_lead_s=cfg.jam_lead_s) if cfg.scenarios else []
    parkers = sc.parking_plan(cams, sim_begin, horizon, cfg.seed) if cfg.spots else []
    scenario = sc.Scenario(district, injections, parkers)
    traffic.step_to(sim_begin, scenario.step)
    feeds = {r.camera_id: CameraFeed(r, Renderer(r, seed=cfg.seed, style=cfg.render)) for r in cams}
    truth = TruthLog(out, cams)
    run = SimRun(cfg, cams, injections, truth, feeds, datetime.now(UTC), sim_begin_s=sim_begin)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")
    async with aio.insecure_channel(cfg.roadside) as rch, aio.insecure_channel(cfg.parking) as pch, \
            aio.insecure_channel(cfg.charging or cfg.roadside) as cch:
        roadside: RoadsideStub = RoadsideServiceStub(rch)
        parking: ParkingStub = ParkingServiceStub(pch)
        if cfg.charging:
            charging: ChargingStub = ChargingServiceStub(cch)
            run.chargers = await Chargers.start(charging, cfg.admin_key,
                                                district_chargers(district, cfg.intersections, cfg.lot_prefix), out,
                                                seed=cfg.seed)
        if cfg.spots:
            await register_spots(parking, cfg.admin_key, district, cams)
        for rig in cams:
            await roadside.ConfigureCamera(rpb.ConfigureCameraRequest(camera=rig.camera()),
                                           metadata=_metadata(cfg.admin_key), timeout=60,
                                           wait_for_ready=True)

        def record(camera_id: str) -> Callable[[rpb.FrameResult], None]:
            def take(result: rpb.FrameResult) -> None:
                feeds[camera_id].results.append(result)
                truth.result(camera_id, result)
                if on_result is not None:
                    on_result(camera_id, result)
            return take

        streams = [asyncio.create_task(_stream(cfg.roadside, f, cfg.admin_key, record(cid)))
                   for cid, f in feeds.items()]
        gate_stop = asyncio.Event()
        if cfg.gate_operator and cfg.gate_key:
            run.gates = GateLog(f"{cfg.lot_prefix}-GARAGE-{cfg.gate_operator}")
            await register_garage(parking, cfg.admin_key, run.gates.lot_id, cfg.gate_operator,
                                  district.frame.to_wgs84(*district.local(350.0, 200.0)))
            streams.append(asyncio.create_task(run_gate(roadside, parking, cfg.admin_key, cfg.gate_key, run.gates,
                                                        gate_stop, seed=cfg.seed)))
        chargers = (f", {len(run.chargers.points)} kerbside charge points over OCPP"
                    if run.chargers is not None else "")
        cfg.say(f"roadside_sim: {len(cams)} cameras at {cfg.fps:g} fps on {cfg.intersections} intersections"
                f"{chargers}, simulating from {local_start:%H:%M:%S} (Asia/Shanghai); ground truth in {out}")
        run.started_wall = datetime.now(UTC)
        t0 = time.monotonic()
        next_report = t0 + FIRST_RATE_REPORT_S
        rates = RateReport()
        frame_no = 0
        try:
            while not stop.is_set():
                elapsed = frame_no / cfg.fps
                if cfg.seconds > 0 and elapsed > cfg.seconds:
                    break
                await asyncio.sleep(max(0.0, t0 + elapsed - time.monotonic()))
                sim_t = sim_begin + elapsed
                traffic.step_to(sim_t, scenario.step)
                captured = run.started_wall + timedelta(seconds=elapsed)
                if run.chargers is not None:
                    run.chargers.step(sim_t, captured)
                vehicles = traffic.vehicles()
                hour = (sim_t / 3600) % 24
                light = brightness_at(hour)
                loop = asyncio.get_running_loop()
                rendered = await asyncio.gather(*[loop.run_in_executor(pool, partial(f.renderer.render, vehicles,
                                                                                     brightness=light))
                                                  for f in feeds.values()])
                queues = {lane: traffic.queue_m(lane) for lane in traffic.e2}
                frame_no += 1
                for f, (img, boxes) in zip(feeds.values(), rendered, strict=True):
                    truth.frame(f.rig, frame_no, captured, sim_t, boxes, vehicles, queues)
                    if f.outstanding >= IN_FLIGHT:
                        f.held += 1
                        if time.monotonic() - f.last_progress > STALL_S and f.call is not None:
                            f.stalls += 1
                            log.warning("camera %s: %d frames unanswered for %.0f s; starting its stream again",
                                        f.rig.camera_id, f.outstanding, STALL_S)
                            f.last_progress = time.monotonic()
                            f.restart = True
                            f.call.cancel()
                        continue
                    jpeg = await loop.run_in_executor(pool, encode_jpeg, img)
                    frame = rpb.Frame(camera_id=f.rig.camera_id, frame_id=frame_no, encoded=jpeg)
                    if cfg.keep_every and frame_no % cfg.keep_every == 0:
                        kept = out / "frames" / f"{f.rig.camera_id}-{frame_no:06d}.jpg"
                        await loop.run_in_executor(pool, _save, kept, jpeg)
                    frame.captured_at.FromDatetime(captured)
                    if f.queue.full():
                        f.dropped += 1  # the stream has not taken the last one yet: a camera sends fresh frames
                        f.outstanding -= 1
                        with contextlib.suppress(asyncio.QueueEmpty):
                            f.queue.get_nowait()
                    f.queue.put_nowait(frame)
                    f.sent += 1
                    f.outstanding += 1
                truth.spots(captured, sim_t, vehicles)
                if time.monotonic() >= next_report:
                    next_report += RATE_REPORT_S
                    cfg.say(rates.report(feeds, cfg.fps))
        finally:
            scenario.finish(traffic.time)
            gate_stop.set()
            for f in feeds.values():
                with contextlib.suppress(asyncio.QueueFull):
                    f.queue.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), 15)
            for s in streams:
                s.cancel()
            if run.chargers is not None:
                await run.chargers.stop()
            run.ended_wall = datetime.now(UTC)
            truth.events(run)
            truth.close()
            traffic.close()
            pool.shutdown(wait=False)
    return run


@dataclass
class RateReport:
    """Each camera's frames per second sent and answered since the last report, and what was held back."""

    last: dict[str, tuple[float, int, int, int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def report(self, feeds: dict[str, CameraFeed], fps: float) -> str:
        now = time.monotonic()
        parts, slow = [], []
        for cid, f in feeds.items():
            t, sent, answered, held = self.last.get(cid, (self.started, 0, 0, 0))
            span = max(now - t, 1e-3)
            a = (f.answered - answered) / span
            parts.append(f"{cid} {a:.1f}")
            if a < 0.9 * fps:
                slow.append(f"{cid} ({f.held - held} frames held back, {(f.sent - sent) / span:.1f} fps sent)")
            self.last[cid] = (now, f.sent, f.answered, f.held)
        line = f"roadside_sim: frames/s answered per camera (of {fps:g}): {', '.join(parts)}"
        if slow:
            line += "; the service did not keep up with " + ", ".join(slow)
        return line


def _save(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def summary(run: SimRun) -> dict[str, Any]:
    return {"cameras": len(run.feeds), "frames_sent": sum(f.sent for f in run.feeds.values()),
            "frames_answered": sum(f.answered for f in run.feeds.values()),
            "frames_dropped_by_sim": sum(f.dropped for f in run.feeds.values()),
            "frames_held_back": sum(f.held for f in run.feeds.values()),
            "streams_restarted": sum(f.stalls for f in run.feeds.values()),
            "frame_errors": sum(f.errors for f in run.feeds.values()),
            "injections": len(run.injections),
            "gate_passages": len(run.gates.passages) if run.gates else 0,
            **({"chargers": run.chargers.summary()} if run.chargers else {})}


