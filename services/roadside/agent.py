"""The camera agent: reads a camera with OpenCV and streams its frames to the roadside service.

    v2x camera --camera-id cam-1 --source rtsp://user:pass@10.0.0.7/stream1   (or file.mp4, /dev/video0)

Real deployments start here: one agent per camera, next to it (or on the NVR), with the camera's own
``camera:<id>`` API key (``--key`` or ``V2X_CAMERA_KEY``). Frames are sent at ``--fps`` (others are
skipped at the source) as JPEG, shrunk to ``--max-side``; ``captured_at`` is the wall clock at capture
for live sources and the file position for files (replayed in real time unless ``--fast``). At most
``--window`` frames are in flight: when the service falls behind, the agent skips frames rather than
queue them (the service drops the oldest of what it has anyway). A lost connection is retried with
backoff; a bad source ends the agent with an error. Every 10 s it logs what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import grpc
import numpy as np
from grpc import aio
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from services.roadside.detector import BgrImage

if TYPE_CHECKING:
    from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceAsyncStub as Stub
else:
    Stub = RoadsideServiceStub

log = logging.getLogger("v2x.camera")
_T = TypeVar("_T")
_STATUS = {c.value[0]: c for c in grpc.StatusCode}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
             grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED}


class SourceError(RuntimeError):
    pass


@dataclass
class AgentConfig:
    camera_id: str
    source: str
    target: str = "127.0.0.1:50051"
    key: str = field(default="", repr=False)
    fps: float = 5.0
    max_side: int = 1280
    jpeg_quality: int = 80
    window: int = 4
    fast: bool = False  # files: as fast as the window allows instead of real time
    loop: bool = False  # files: start again at the end
    tls_ca: str = ""
    max_frames: int = 0  # stop after this many frames (0 = never; tests and demos)


@dataclass
class Stats:
    sent: int = 0
    skipped: int = 0
    results: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    events: Counter[int] = field(default_factory=Counter)
    dropped: int = 0
    late: int = 0
    latency_ms: list[float] = field(default_factory=list)

    def line(self) -> str:
        lat = sorted(self.latency_ms)
        p50 = f"{lat[len(lat) // 2]:.0f}" if lat else "-"
        return (f"sent {self.sent} skipped {self.skipped} results {self.results} dropped {self.dropped} "
                f"late {self.late} errors {dict(self.errors)} events {dict(self.events)} p50 {p50} ms")


def open_source(source: str) -> cv2.VideoCapture:
    target: Any = source
    if source.isdigit():
        target = int(source)
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        raise SourceError(f"cannot open video source {source!r}")
    return capture


def is_live(source: str) -> bool:
    return source.isdigit() or source.startswith(("/dev/", "rtsp://", "rtsps://", "http://", "https://", "udp://"))


def encode(frame: BgrImage, max_side: int, quality: int) -> bytes:
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        frame = np.asarray(cv2.resize(frame, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA),
                           dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SourceError("could not encode a frame as JPEG")
    return bytes(buf.tobytes())


class CameraAgent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stats = Stats()
        self._frame_id = 0
        self._in_flight = 0
        self._credit = asyncio.Event()
        self._credit.set()
        self._stop = asyncio.Event()
        # OpenCV captures are not thread-safe: every read and the release go through this one thread,
        # so a release (on stop) never races a read still running after its stream was cancelled.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camera-io")

    async def _io_call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn)

    async def frames(self, capture: cv2.VideoCapture) -> AsyncIterator[pb.Frame]:
        """Frames at the configured rate; skips what the window has no room for."""
        live = is_live(self.config.source)
        period = 1.0 / self.config.fps
        started_wall = datetime.now(UTC)
        started = time.monotonic()
        next_at = started
        while not self._stop.is_set():
            ok, image = await self._io_call(capture.read)
            if not ok:
                if live:
                    raise SourceError(f"the video source {self.config.source!r} stopped delivering frames")
                if not self.config.loop:
                    return
                await self._io_call(lambda: capture.set(cv2.CAP_PROP_POS_FRAMES, 0))
                started_wall = datetime.now(UTC)
                started = next_at = time.monotonic()
                continue
            if live:
                captured = datetime.now(UTC)
                now = time.monotonic()
                if now < next_at:
                    continue  # the camera delivers faster than we send
                next_at = max(next_at + period, now)
            else:
                position_s = await self._io_call(lambda: capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
                if position_s + 1e-6 < (next_at - started):
                    continue
                next_at += period
                captured = started_wall + timedelta(seconds=position_s)
                if not self.config.fast:
                    await asyncio.sleep(max(0.0, started + position_s - time.monotonic()))
            if self._in_flight >= self.config.window:
                if self.config.fast:
                    self._credit.clear()
                    await self._credit.wait()
                else:
                    self.stats.skipped += 1
                    continue
            self._frame_id += 1
            frame = pb.Frame(camera_id=self.config.camera_id, frame_id=self._frame_id,
                             encoded=await asyncio.to_thread(encode, np.asarray(image, np.uint8),
                                                             self.config.max_side, self.config.jpeg_quality))
            frame.captured_at.FromDatetime(captured)
            self._in_flight += 1
            self.stats.sent += 1
            yield frame
            if self.config.max_frames and self.stats.sent >= self.config.max_frames:
                return

    def _result(self, r: pb.FrameResult) -> None:
        self.stats.results += 1
        newly_dropped = r.dropped_frames - self.stats.dropped
        self.stats.dropped = max(self.stats.dropped, r.dropped_frames)
        self.stats.late = max(self.stats.late, r.late_frames)
        self._in_flight = max(0, self._in_flight - 1 - max(0, newly_dropped))
        self._credit.set()
        if r.HasField("error"):
            self.stats.errors[_STATUS.get(r.error.code, grpc.StatusCode.UNKNOWN).name] += 1
            log.warning("frame %d: %s", r.frame_id, r.error.message)
        else:
            self.stats.latency_ms.append(r.service_latency_ms)
            self.stats.latency_ms = self.stats.latency_ms[-1000:]
        for e in r.events:
            self.stats.events[e.type] += 1
            log.info("event %s %s lane=%s zone=%s track=%d", e.type, e.event_id, e.lane_id, e.zone_id, e.track_id)

    async def run_once(self, stub: Stub, capture: cv2.VideoCapture) -> None:
        metadata = (("authorization", f"Bearer {self.config.key}"),) if self.config.key else ()
        call = stub.StreamFrames(self.frames(capture), metadata=metadata)
        async for result in call:
            self._result(result)

    async def run(self) -> Stats:
        capture = await self._io_call(lambda: open_source(self.config.source))
        reporter = asyncio.create_task(self._report())
        delay = 0.5
        try:
            while True:
                credentials = None
                if self.config.tls_ca:
                    ca = await asyncio.to_thread(Path(self.config.tls_ca).read_bytes)
                    credentials = grpc.ssl_channel_credentials(ca)
                channel = (aio.secure_channel(self.config.target, credentials) if credentials
                           else aio.insecure_channel(self.config.target))
                async with channel:
                    try:
                        await self.run_once(RoadsideServiceStub(channel), capture)
                        return self.stats
                    except aio.AioRpcError as exc:
                        if exc.code() not in RETRYABLE:
                            raise
                        log.warning("stream ended (%s: %s); reconnecting in %.1f s", exc.code().name,
                                    exc.details(), delay)
                self._in_flight = 0
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            self._stop.set()
            await self._io_call(capture.release)
            self._io.shutdown(wait=False)
            log.info("camera %s: %s", self.config.camera_id, self.stats.line())

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(10)
            log.info("camera %s: %s", self.config.camera_id, self.stats.line())


def config_from_args(ns: argparse.Namespace) -> AgentConfig:
    if ns.fps <= 0 or ns.window < 1 or not 1 <= ns.jpeg_quality <= 100 or ns.max_side < 32:
        raise SystemExit("--fps must be > 0, --window >= 1, --jpeg-quality 1..100, --max-side >= 32")
    return AgentConfig(camera_id=ns.camera_id, source=ns.source, target=ns.target, key=ns.key, fps=ns.fps,
                       max_side=ns.max_side, jpeg_quality=ns.jpeg_quality, window=ns.window, fast=ns.fast,
                       loop=ns.loop, tls_ca=ns.tls_ca, max_frames=ns.max_frames)


async def run_agent(config: AgentConfig) -> Stats:
    return await CameraAgent(config).run()
