"""The gRPC adapter of the roadside service: validate, hand frames to the engine, map the answers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.rpc import code_pb2
from grpc import aio
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1 import roadside_pb2_grpc

from services.common import paging
from services.common.cancellation import finish
from services.common.config import Settings
from services.common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.interceptors import abort_with_status
from services.common.principal import Principal, Role, current_principal
from services.common.timestamps import ts
from services.common.validation import ID_RE
from services.roadside import convert, frames
from services.roadside.engine import CameraSession, FrameJob, FrameOutcome, InferenceEngine
from services.roadside.model import CameraRecord, Congestion, LaneMinute, LineMinute, MinuteCounts
from services.roadside.plates import PlateReader, PlateReading
from services.roadside.store import CameraStore

log = logging.getLogger("v2x.roadside")
Context = aio.ServicerContext[Any, Any]
SINK_BUFFER = 256
CAMERA_CACHE_S = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


class CameraDirectory:
    """Camera configurations by id, cached for a few seconds (other processes may change them)."""

    def __init__(self, store: CameraStore, ttl_s: float = CAMERA_CACHE_S) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, CameraRecord | None]] = {}

    async def get(self, camera_id: str) -> CameraRecord | None:
        now = time.monotonic()
        hit = self._cache.get(camera_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await finish(self.store.get(camera_id))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[camera_id] = (now + self.ttl_s, record)
        return record

    def put(self, record: CameraRecord) -> None:
        self._cache[record.spec.id] = (time.monotonic() + self.ttl_s, record)


class PlateService:
    """The plate reader, loaded once per process in the background; its own single thread."""

    def __init__(self) -> None:
        self.reader: PlateReader | None = None
        self.error = "the plate reader is still loading"
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roadside-plates")

    async def load(self) -> None:
        try:
            self.reader = await asyncio.get_running_loop().run_in_executor(self.pool, PlateReader)
        except (FileNotFoundError, ImportError, OSError, ValueError) as exc:
            self.error = f"the plate reader is not installed ({exc}); run `make models` with the roadside extra"
            log.warning("plate reading unavailable: %s", exc)

    async def read(self, image: frames.Image) -> list[PlateReading]:
        reader = self.reader
        if reader is None:
            raise FailedPrecondition(self.error, reason="PLATE_READER_UNAVAILABLE")

        def work() -> list[PlateReading]:
            return reader.read(frames.decode(image))

        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, work)
        except frames.FrameError as exc:
            raise InvalidArgument(FieldViolation("frame.encoded", str(exc))) from None


@dataclass(eq=False)
class _Sink:
    """One StreamFrames call: where its results go, and its counters."""

    id: int
    out: asyncio.Queue[pb.FrameResult | None] = field(default_factory=lambda: asyncio.Queue(SINK_BUFFER))
    dropped: int = 0
    late: int = 0
    in_flight: int = 0
    reading: bool = True
    closed: bool = False
    lost: set[str] = field(default_factory=set)  # cameras a newer stream took over
    lost_results: int = 0

    def _finish_if_done(self) -> None:
        if not self.reading and self.in_flight == 0:
            self._put(None)

    def _put(self, item: pb.FrameResult | None) -> None:
        if self.closed:
            return
        try:
            self.out.put_nowait(item)
        except asyncio.QueueFull:
            if item is None:
                # Make room for the end marker: the reader of this stream stopped reading anyway.
                self.out.get_nowait()
                self.out.put_nowait(None)
            else:
                self.lost_results += 1

    def on_done(self, job: FrameJob, outcome: FrameOutcome) -> None:
        self.in_flight -= 1
        if outcome.error is not None and outcome.error.code == code_pb2.DEADLINE_EXCEEDED:
            self.late += 1
        self._put(_frame_result(job, outcome, self))
        self._finish_if_done()

    def on_dropped(self, job: FrameJob) -> None:
        self.in_flight -= 1
        self.dropped += 1
        self._finish_if_done()

    def end_of_input(self) -> None:
        self.reading = False
        self._finish_if_done()


def _frame_result(job: FrameJob, outcome: FrameOutcome, sink: _Sink | None) -> pb.FrameResult:
    r = pb.FrameResult(camera_id=job.camera_id, frame_id=job.frame_id, captured_at=ts(job.captured_at),
                       inference_latency_ms=round(outcome.inference_ms, 2),
                       service_latency_ms=round(outcome.service_ms, 2))
    if sink is not None:
        r.dropped_frames = sink.dropped
        r.late_frames = sink.late
    if outcome.error is not None:
        r.error.CopyFrom(outcome.error)
        return r
    analysis = outcome.analysis
    if analysis is not None:
        for o in sorted(analysis.objects, key=lambda o: -o.confidence):
            r.detections.append(convert.object_proto(o))
        for e in outcome.events:
            shown = pb.AnalyticsEvent()
            shown.CopyFrom(e)
            shown.ClearField("snapshot_jpeg")
            r.events.append(shown)
        r.lanes.extend(convert.lane_status_proto(s) for s in analysis.lanes)
    else:
        r.detections.extend(convert.detection_proto(d) for d in sorted(outcome.detections, key=lambda d: -d.score))
    return r


class RoadsideServicer(roadside_pb2_grpc.RoadsideServiceServicer):
    def __init__(self, store: CameraStore, engine: InferenceEngine, plates: PlateService,
                 settings: Settings) -> None:
        self.store = store
        self.directory = CameraDirectory(store)
        self.engine = engine
        self.plates = plates
        self.settings = settings
        self._sink_ids = itertools.count(1)
        self._sinks: dict[int, _Sink] = {}
        self._last_submitted: dict[str, datetime] = {}

    # ----- frames ----------------------------------------------------------------------------------

    def _frame_basics(self, frame: pb.Frame, now: datetime) -> tuple[datetime, frames.Image]:
        return convert.captured_at(frame, now, self.settings.max_future_skew_s), convert.frame_image(frame)

    async def Detect(self, request: pb.Frame, context: Context) -> pb.FrameResult:
        now = _now()
        if request.camera_id:
            convert.camera_id(request.camera_id, "frame.camera_id")
        captured, image = self._frame_basics(request, now)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FrameOutcome] = loop.create_future()

        def done(job: FrameJob, outcome: FrameOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        job = FrameJob(request.camera_id, request.frame_id, captured, image, time.monotonic(),
                       self.engine.default_deadline_ms, done, keep_image=self.plates.reader is not None)
        self.engine.submit(job)
        outcome = await future
        if outcome.error is not None:
            await abort_with_status(context, outcome.error)
        result = _frame_result(job, outcome, None)
        if outcome.image is not None and self.plates.reader is not None:
            reader = self.plates.reader
            image_array = outcome.image
            started = time.perf_counter()
            readings = await loop.run_in_executor(self.plates.pool, reader.read, image_array)
            result.plates.extend(convert.plate_proto(p) for p in readings)
            result.inference_latency_ms = round(result.inference_latency_ms + (time.perf_counter() - started) * 1000,
                                                2)
        return result

    async def ReadPlate(self, request: pb.Frame, context: Context) -> pb.ReadPlateResponse:
        started = time.perf_counter()
        min_confidence = 0.8
        if request.camera_id:
            convert.camera_id(request.camera_id, "frame.camera_id")
            record = await self.directory.get(request.camera_id)
            if record is not None:
                min_confidence = record.spec.thresholds.min_plate_confidence
        _, image = self._frame_basics(request, _now())
        readings = await self.plates.read(image)
        out = pb.ReadPlateResponse(camera_id=request.camera_id, frame_id=request.frame_id)
        for p in readings:
            plate = convert.plate_proto(p)
            if p.confidence < min_confidence:
                plate.text = ""  # found, but not read reliably enough
            out.plates.append(plate)
        out.inference_latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return out

    async def StreamFrames(self, request_iterator: AsyncIterator[pb.Frame],
                           context: Context) -> AsyncIterator[pb.FrameResult]:
        principal = current_principal()
        sink = _Sink(next(self._sink_ids))
        self._sinks[sink.id] = sink

        async def read() -> None:
            try:
                async for frame in request_iterator:
                    await self._accept(frame, principal, sink)
            finally:
                sink.end_of_input()

        reader = asyncio.create_task(read())
        try:
            while True:
                item = await sink.out.get()
                if item is None:
                    break
                yield item
            await reader  # surfaces a broken request stream
        finally:
            sink.closed = True
            self._sinks.pop(sink.id, None)
            reader.cancel()
            # The reader reads from the rpc: it must be gone before the rpc ends.
            await asyncio.gather(reader, return_exceptions=True)

    async def _accept(self, frame: pb.Frame, principal: Principal, sink: _Sink) -> None:
        received = time.monotonic()
        try:
            camera_id = convert.camera_id(frame.camera_id, "frame.camera_id")
            if principal.role is Role.CAMERA and principal.scope != camera_id:
                raise PermissionDenied(f"this key streams camera {principal.scope}, not {camera_id}",
                                       reason="CAMERA_MISMATCH")
            record = await self.directory.get(camera_id)
            if record is None:
                raise NotFound(f"camera {camera_id} is not configured (ConfigureCamera first)",
                               reason="UNKNOWN_CAMERA")
            captured, image = self._frame_basics(frame, _now())
            session = self.engine.session(record)
            self._claim(session, sink)
            last = self._last_submitted.get(camera_id)
            if last is not None and captured < last:
                raise InvalidArgument(FieldViolation(
                    "frame.captured_at", f"{captured.isoformat()} is before the camera's previous frame "
                                         f"({last.isoformat()})"))
            self._last_submitted[camera_id] = captured
        except DomainError as exc:
            result = pb.FrameResult(camera_id=frame.camera_id, frame_id=frame.frame_id,
                                    dropped_frames=sink.dropped, late_frames=sink.late,
                                    error=convert.error_status(exc))
            if frame.HasField("captured_at"):
                result.captured_at.CopyFrom(frame.captured_at)
            await sink.out.put(result)  # backpressure on this stream only
            return
        sink.in_flight += 1
        self.engine.submit(FrameJob(camera_id, frame.frame_id, captured, image, received,
                                    self.engine.deadline_ms(record), sink.on_done, sink.on_dropped, session))

    def _claim(self, session: CameraSession, sink: _Sink) -> None:
        if session.owner == sink.id:
            return
        if session.camera_id in sink.lost:
            raise Aborted(f"camera {session.camera_id} was taken over by a newer stream", reason="CAMERA_TAKEN_OVER")
        previous = self._sinks.get(session.owner) if session.owner is not None else None
        if previous is not None and not previous.closed:
            previous.lost.add(session.camera_id)
            log.info("camera taken over by a newer stream", extra={"camera_id": session.camera_id})
        session.owner = sink.id

    # ----- cameras ---------------------------------------------------------------------------------

    async def ConfigureCamera(self, request: pb.ConfigureCameraRequest, context: Context) -> pb.Camera:
        spec = convert.camera_spec(request.camera)
        if request.expected_version < 0:
            raise InvalidArgument(FieldViolation("expected_version", "must be >= 0"))
        record = await self.store.configure(spec, convert.stored_config(request.camera), request.expected_version)
        self.directory.put(record)
        session = self.engine.sessions.get(spec.id)
        if session is not None:
            session.offer_record(record)
        return convert.camera_proto(record)

    async def GetCamera(self, request: pb.GetCameraRequest, context: Context) -> pb.Camera:
        camera_id = convert.camera_id(request.camera_id)
        principal = current_principal()
        if principal.role is Role.CAMERA and principal.scope != camera_id:
            raise PermissionDenied(f"this key may read camera {principal.scope} only")
        record = await self.store.get(camera_id)
        if record is None:
            raise NotFound(f"camera {camera_id} does not exist")
        return convert.camera_proto(record)

    async def ListCameras(self, request: pb.ListCamerasRequest, context: Context) -> pb.ListCamerasResponse:
        page = paging.page(request.page, ID_RE)
        rows = await self.store.list_cameras(page.cursor, page.size + 1)
        out = pb.ListCamerasResponse(cameras=[convert.camera_proto(r) for r in rows[:page.size]])
        if len(rows) > page.size:
            out.page.next_page_token = paging.token(rows[page.size - 1].spec.id)
        return out

    async def GetCounts(self, request: pb.GetCountsRequest, context: Context) -> pb.GetCountsResponse:
        start, end = convert.counts_range(request)
        record = await self.store.get(request.camera_id)
        if record is None:
            raise NotFound(f"camera {request.camera_id} does not exist")
        await self.flush_counts(request.camera_id)
        stored = {m.minute_start: m for m in await self.store.counts(request.camera_id, start, end)}
        out = pb.GetCountsResponse(camera_id=request.camera_id)
        minute = start
        empty_lanes = tuple(_empty_lane(lane.id) for lane in record.spec.lanes)
        empty_lines = tuple(_empty_line(line.id) for line in record.spec.lines)
        while minute < end:
            m = stored.get(minute) or MinuteCounts(minute, 0, empty_lanes, empty_lines)
            out.minutes.append(convert.minute_proto(m))
            minute += timedelta(minutes=1)
        return out

    async def flush_counts(self, camera_id: str | None = None) -> None:
        """Writes the per-minute counts that changed since the last flush (all cameras, or one)."""
        sessions = [self.engine.sessions[camera_id]] if camera_id in self.engine.sessions else (
            [] if camera_id else list(self.engine.sessions.values()))
        for s in sessions:
            minutes = s.analytics.minutes(dirty_only=True, clear_dirty=True)
            try:
                await self.store.save_counts(s.camera_id, minutes)
            except Exception:
                s.analytics.mark_dirty([m.minute_start for m in minutes])
                raise

    async def count_flusher(self, every_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.flush_counts()
                for s in self.engine.forget_idle():
                    await self.store.save_counts(s.camera_id, s.analytics.minutes(dirty_only=True))
                    self._last_submitted.pop(s.camera_id, None)
            except Exception:
                log.warning("could not save traffic counts; retrying", exc_info=True)


def _empty_lane(lane_id: str) -> LaneMinute:
    return LaneMinute(lane_id, 0, 0, 0.0, None, Congestion.UNKNOWN)


def _empty_line(line_id: str) -> LineMinute:
    return LineMinute(line_id, 0, 0)
