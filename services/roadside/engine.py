"""The inference engine: per-camera frame queues, micro-batches, one detector session, analytics.

* One ``Detector`` (one onnxruntime session) per process; batches run in a small thread pool (the
  session releases the GIL), so the event loop keeps serving while a batch is inferred. Two batches
  are in flight by default (``workers``), and up to ``concurrent_runs`` of them are in the model at
  once: the detector runs each batch on one thread, so two runs fill the two cores, and the decoding,
  tracking and analytics of one worker fit around the other's run instead of stalling a two-thread
  run (on the 2-core machine: ~53 ms of CPU per frame against ~61..86 ms for two threads per run).
* Each camera has a bounded queue (``queue_frames``). When a frame arrives at a full queue, the oldest
  waiting frame is dropped and counted: a camera that sends faster than we infer gets fresh frames,
  not a growing delay. A frame that waited longer than its deadline is answered DEADLINE_EXCEEDED
  without being inferred, in its place among the camera's answers (after those of its earlier frames
  still in inference).
* Scheduling is round-robin over the cameras with waiting frames, at most one frame per camera per
  batch. Two frames of one camera may be inferred at once (in two batches), so a single camera uses
  both cores too; the tracker and analytics still see a camera's frames one at a time in capture
  order: each frame gets its camera's next turn when it is put in a batch and waits for it after
  inference. A batch only ever waits for frames of batches formed before it, so turns cannot deadlock.
  A batch takes what is waiting, up to ``max_batch``; it never waits to fill up, so batching adds no
  latency at low load. A camera that floods frames only overflows its own queue; a broken
  frame fails alone (its decode error is its own result); an exception in one camera's analytics
  fails that frame only.
* After inference, in the same worker thread: tracking and analytics of each frame, and for events
  a JPEG snapshot crop (and the vehicle's plate when the plate reader is loaded). Each frame's result
  goes back to the loop as soon as its analytics is done (not after the whole batch): results to their
  streams, events to the IDPS publisher, spot states to the parking publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from google.rpc import code_pb2, status_pb2
from prometheus_client import Counter, Histogram
from v2x.roadside.v1 import roadside_pb2 as pb

from services.roadside import convert, frames
from services.roadside.analytics import CameraAnalytics, FrameAnalysis
from services.roadside.detector import BgrImage, CameraFloors, Detection
from services.roadside.model import CameraRecord, Event
from services.roadside.plates import PlateReader, PlateReading
from services.roadside.tracker import Tracker

log = logging.getLogger("v2x.roadside.engine")

FRAMES = Counter("v2x_roadside_frames_total", "Frames by outcome", ["outcome"])
BATCH_SIZE = Histogram("v2x_roadside_batch_frames", "Frames per inference batch", buckets=(1, 2, 3, 4, 6, 8, 12, 16))
BATCH_SECONDS = Histogram("v2x_roadside_batch_seconds", "Decode + inference + analytics time per batch",
                          buckets=(0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56))
WAIT_SECONDS = Histogram("v2x_roadside_queue_wait_seconds", "Time a frame waited for inference",
                         buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
IDLE_SESSION_S = 600.0
EVENT_PLATE_TIMEOUT_S = 1.0
# A frame waits for its camera's earlier frames at most this long; they are in batches already being
# processed, so only a bug could make it longer, and a bug must not hang a worker for good.
TURN_TIMEOUT_S = 30.0


class BatchDetector(Protocol):
    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]: ...

    # The camera floors a camera leaves unset: its scores' scale is the model's own.
    @property
    def camera_floors(self) -> CameraFloors: ...


@dataclass
class FrameOutcome:
    """What became of one frame (in the worker thread, handed to the job's `done` on the loop)."""

    error: status_pb2.Status | None = None
    detections: list[Detection] = field(default_factory=list)
    analysis: FrameAnalysis | None = None
    events: list[pb.AnalyticsEvent] = field(default_factory=list)
    image: BgrImage | None = None  # kept for Detect (plates are read afterwards)
    inference_ms: float = 0.0
    service_ms: float = 0.0


@dataclass(eq=False)
class FrameJob:
    camera_id: str
    frame_id: int
    captured_at: datetime
    image: frames.Image
    received: float  # time.monotonic() at arrival
    deadline_ms: int
    done: Callable[[FrameJob, FrameOutcome], None]
    dropped: Callable[[FrameJob], None] = lambda job: None
    session: CameraSession | None = None
    keep_image: bool = False
    turn: int = 0  # the camera's analytics turn, given when the frame is put in a batch


class CameraSession:
    """A camera's live state in this process: its queue, tracker and analytics."""

    def __init__(self, record: CameraRecord, queue_frames: int, floors: CameraFloors) -> None:
        self.camera_id = record.spec.id
        self.record = record  # as configured (GetCamera); the analytics get it with the model's floors filled in
        self.floors = floors
        self.pending_record: CameraRecord | None = None
        self.analytics = CameraAnalytics(record.spec.with_floors(floors))
        self.tracker = Tracker()
        self.queue: deque[FrameJob] = deque()
        self.queue_frames = queue_frames
        self.in_flight = 0  # frames taken into batches and not yet answered
        self._turns_given = 0
        self._answered_turns = 0  # every turn below this one has its answer
        self._answered_later: set[int] = set()  # answered turns above it (two workers may answer out of turn)
        self._held: deque[tuple[int, FrameJob, FrameOutcome]] = deque()  # expired frames, behind earlier turns
        self._turn = 0  # the next turn allowed to track and analyse
        self._turn_changed = threading.Condition()
        self.owner: int | None = None  # the stream sending this camera's frames
        self.last_captured: datetime | None = None
        self.last_active = time.monotonic()
        self.frames = 0

    @property
    def version(self) -> int:
        return (self.pending_record or self.record).version

    def offer_record(self, record: CameraRecord) -> None:
        if record.version > self.version:
            self.pending_record = record

    def apply_pending(self) -> None:
        """In the worker, before a frame: a newer configuration takes effect."""
        record = self.pending_record
        if record is not None:
            self.pending_record = None
            self.record = record
            self.analytics.reconfigure(record.spec.with_floors(self.floors))

    def give_turn(self) -> int:
        """On the loop, when a frame is put in a batch: its place in the camera's analytics order."""
        turn = self._turns_given
        self._turns_given += 1
        return turn

    def hold_expired(self, job: FrameJob, outcome: FrameOutcome) -> bool:
        """On the loop: an expired frame's answer waits while earlier frames of the camera are still being inferred,
        so that the camera's answers stay in order; False when none is (answer it now)."""
        if self._answered_turns >= self._turns_given:
            return False
        self._held.append((self._turns_given, job, outcome))
        return True

    def answered(self, turn: int) -> list[tuple[FrameJob, FrameOutcome]]:
        """On the loop, once a frame's answer is out: the held answers of expired frames now due."""
        self._answered_later.add(turn)
        while self._answered_turns in self._answered_later:
            self._answered_later.remove(self._answered_turns)
            self._answered_turns += 1
        due: list[tuple[FrameJob, FrameOutcome]] = []
        while self._held and self._held[0][0] <= self._answered_turns:
            _, job, outcome = self._held.popleft()
            due.append((job, outcome))
        return due

    @contextlib.contextmanager
    def turn(self, turn: int) -> Iterator[None]:
        """In a worker: waits until the camera's earlier frames are analysed, and ends the turn on exit."""
        with self._turn_changed:
            if not self._turn_changed.wait_for(lambda: self._turn >= turn, TURN_TIMEOUT_S):
                log.error("an earlier frame never finished; analysing out of order",
                          extra={"camera_id": self.camera_id})
        try:
            yield
        finally:
            with self._turn_changed:
                self._turn = max(self._turn, turn + 1)
                self._turn_changed.notify_all()

    def process(self, job: FrameJob, detections: list[Detection], size: tuple[int, int]) -> FrameAnalysis:
        ns = int(job.captured_at.timestamp() * 1e9)
        tracked = self.analytics.track(self.tracker, detections, ns, size)
        return self.analytics.process(job.captured_at, job.frame_id, tracked, size, self.tracker.untracked)


class InferenceEngine:
    def __init__(self, detector: BatchDetector, *, max_batch: int = 4, queue_frames: int = 2,
                 default_deadline_ms: int = 2000, workers: int = 1, concurrent_runs: int = 1,
                 plates: PlateReader | None = None,
                 on_events: Callable[[list[pb.AnalyticsEvent]], None] | None = None,
                 on_spots: Callable[[CameraSession, FrameAnalysis], None] | None = None) -> None:
        self.detector = detector
        self.max_batch = max_batch
        self.queue_frames = queue_frames
        self.default_deadline_ms = default_deadline_ms
        self.workers = workers
        self.plates = plates
        self.on_events = on_events
        self.on_spots = on_spots
        self.sessions: dict[str, CameraSession] = {}
        self._adhoc: deque[FrameJob] = deque()
        self._order: deque[str] = deque()  # camera ids with waiting frames ("" = ad-hoc Detect frames)
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="roadside-infer")
        self._model_slots = threading.Semaphore(max(1, concurrent_runs))
        self.dropped = 0
        self.late = 0
        self.batches = 0
        self.batched_frames = 0

    # ----- sessions and submission (event loop) ------------------------------------------------------

    def session(self, record: CameraRecord) -> CameraSession:
        s = self.sessions.get(record.spec.id)
        if s is None:
            s = self.sessions[record.spec.id] = CameraSession(record, self.queue_frames, self.detector.camera_floors)
        else:
            s.offer_record(record)
        return s

    def deadline_ms(self, record: CameraRecord | None) -> int:
        if record is not None and record.spec.thresholds.frame_deadline_ms:
            return record.spec.thresholds.frame_deadline_ms
        return self.default_deadline_ms

    def submit(self, job: FrameJob) -> None:
        s = job.session
        if s is None:
            self._adhoc.append(job)
            key = ""
        else:
            s.last_active = time.monotonic()
            if len(s.queue) >= s.queue_frames:
                old = s.queue.popleft()
                self.dropped += 1
                FRAMES.labels("dropped").inc()
                old.dropped(old)
            s.queue.append(job)
            key = s.camera_id
        if key not in self._order:
            self._order.append(key)
        self._wake.set()

    def _queue(self, key: str) -> deque[FrameJob]:
        return self._adhoc if key == "" else self.sessions[key].queue

    def _take(self) -> list[FrameJob]:
        batch: list[FrameJob] = []
        now = time.monotonic()
        for _ in range(len(self._order)):
            if len(batch) >= self.max_batch:
                break
            key = self._order.popleft()
            session = self.sessions.get(key) if key else None
            if key and session is None:
                continue
            queue = self._queue(key)
            while queue:
                job = queue.popleft()
                waited_ms = (now - job.received) * 1000
                if waited_ms > job.deadline_ms:
                    self.late += 1
                    FRAMES.labels("late").inc()
                    expired = FrameOutcome(error=convert.deadline_status(waited_ms, job.deadline_ms))
                    if session is None or not session.hold_expired(job, expired):
                        self._answer(job, expired)
                    continue
                WAIT_SECONDS.observe(now - job.received)
                batch.append(job)
                if session is not None:
                    session.in_flight += 1
                    job.turn = session.give_turn()
                break
            if queue:
                self._order.append(key)
        return batch

    # ----- the workers ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs the workers until cancelled."""
        tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._pool, self._process, batch, loop)
            except RuntimeError:
                # The pool is shut down (the service is stopping). Batches go to the pool in the order
                # they were formed, so no running batch waits for a turn of these frames.
                log.warning("inference pool closed; %d frames not inferred", len(batch))
                for job in batch:
                    self._deliver(job, FrameOutcome(error=convert.internal_status()))
                continue
            BATCH_SECONDS.observe(time.perf_counter() - started)
            BATCH_SIZE.observe(len(batch))
            self.batches += 1
            self.batched_frames += len(batch)
            if self._order:
                self._wake.set()

    def _answer(self, job: FrameJob, outcome: FrameOutcome) -> None:
        """On the loop: a frame's answer to its caller. A caller that fails fails alone: raised from `_take`, it
        would end the worker coroutine, and with it the engine, for every camera."""
        outcome.service_ms = (time.monotonic() - job.received) * 1000
        try:
            job.done(job, outcome)
        except Exception:
            log.exception("delivering a frame result failed")

    def _deliver(self, job: FrameJob, outcome: FrameOutcome) -> None:
        """On the loop: one inferred frame's result to its caller (then the answers of frames of its camera that
        expired behind it), its events and spot states onwards."""
        s = job.session
        if s is not None:
            s.in_flight -= 1
        FRAMES.labels("error" if outcome.error is not None else "inferred").inc()
        self._answer(job, outcome)
        if s is not None:
            for expired_job, expired in s.answered(job.turn):
                self._answer(expired_job, expired)
        if outcome.events and self.on_events is not None:
            self.on_events(outcome.events)
        if s is not None and outcome.analysis is not None and self.on_spots is not None \
                and s.analytics.has_spot_zones:
            self.on_spots(s, outcome.analysis)

    def _process(self, batch: list[FrameJob], loop: asyncio.AbstractEventLoop) -> None:
        """In a worker thread: decode and infer the batch, then track and analyse frame by frame, each in
        its camera's turn, handing every result to the loop as soon as it is ready."""
        started = time.perf_counter()
        sent = 0
        try:
            outcomes, images = self._infer(batch)
            inferred_ms = (time.perf_counter() - started) * 1000
            for job, image, outcome in zip(batch, images, outcomes, strict=True):
                outcome.inference_ms = inferred_ms
                if job.session is None:
                    if image is not None and job.keep_image:
                        outcome.image = image
                else:
                    with job.session.turn(job.turn):
                        if image is not None and outcome.error is None:
                            self._analyse(job, job.session, image, outcome)
                sent += 1
                self._hand_back(loop, job, outcome)
        except Exception:
            log.exception("inference batch failed")
            for job in batch[sent:]:
                if job.session is not None:
                    with job.session.turn(job.turn):
                        pass  # later frames of the camera must not wait for this one
                self._hand_back(loop, job, FrameOutcome(error=convert.internal_status()))

    def _hand_back(self, loop: asyncio.AbstractEventLoop, job: FrameJob, outcome: FrameOutcome) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the service is stopping
            loop.call_soon_threadsafe(self._deliver, job, outcome)

    def _infer(self, batch: list[FrameJob]) -> tuple[list[FrameOutcome], list[BgrImage | None]]:
        """Decodes the frames (a bad one fails alone) and detects on the good ones in one model run."""
        outcomes = [FrameOutcome() for _ in batch]
        images: list[BgrImage | None] = []
        for job, outcome in zip(batch, outcomes, strict=True):
            try:
                images.append(frames.decode(job.image))
            except frames.FrameError as exc:
                outcome.error = convert.plain_status(code_pb2.INVALID_ARGUMENT, "BAD_FRAME", str(exc))
                images.append(None)
        valid = [(i, image) for i, image in enumerate(images) if image is not None]
        if valid:
            try:
                with self._model_slots:
                    detected = self.detector.detect_batch([image for _, image in valid])
            except Exception:
                log.exception("detection failed")
                for i, _ in valid:
                    outcomes[i].error = convert.internal_status()
            else:
                for (i, _), dets in zip(valid, detected, strict=True):
                    outcomes[i].detections = dets
        return outcomes, images

    def _analyse(self, job: FrameJob, s: CameraSession, image: BgrImage, outcome: FrameOutcome) -> None:
        """Tracking, analytics and event snapshots of one frame; an exception fails this frame only."""
        if job.keep_image:
            outcome.image = image
        try:
            s.apply_pending()
            s.frames += 1
            s.last_captured = job.captured_at
            analysis = s.process(job, outcome.detections, (image.shape[1], image.shape[0]))
            outcome.analysis = analysis
            outcome.events = [self._event_proto(e, image) for e in analysis.events]
        except Exception:
            log.exception("analytics failed", extra={"camera_id": job.camera_id, "frame_id": job.frame_id})
            outcome.error = convert.internal_status()
            outcome.analysis = None
            outcome.events = []

    def _event_proto(self, e: Event, image: BgrImage) -> pb.AnalyticsEvent:
        plate: PlateReading | None = None
        if e.box is not None:
            region = frames.crop(image, (e.box.x1, e.box.y1, e.box.x2, e.box.y2))
            if self.plates is not None:
                with contextlib.suppress(Exception):
                    readings = self.plates.read(region)
                    plate = readings[0] if readings and readings[0].text else None
        else:
            region = image
        try:
            snapshot = frames.encode_jpeg(region)
        except frames.FrameError:
            snapshot = b""
        return convert.event_proto(e, snapshot, plate)

    # ----- housekeeping ------------------------------------------------------------------------------

    def forget_idle(self) -> list[CameraSession]:
        """Drops sessions idle for IDLE_SESSION_S (their tracks are stale anyway); returns them."""
        now = time.monotonic()
        idle = [s for s in self.sessions.values()
                if now - s.last_active > IDLE_SESSION_S and not s.queue and not s.in_flight]
        for s in idle:
            del self.sessions[s.camera_id]
        return idle

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def mean_batch(self) -> float:
        return self.batched_frames / self.batches if self.batches else 0.0


def frame_error(code: int, reason: str, message: str) -> status_pb2.Status:
    return convert.plain_status(code, reason, message)
