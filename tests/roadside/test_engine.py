"""The inference engine on its own: how frames of a camera are run side by side and analysed in order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from google.rpc import code_pb2

from roadside_sim.scene import Scene
from services.roadside import convert, frames
from services.roadside.analytics import FrameAnalysis
from services.roadside.detector import DEFAULT_CAMERA_FLOORS, BgrImage, Detection
from services.roadside.engine import CameraSession, FrameJob, FrameOutcome, InferenceEngine
from services.roadside.keycolour import KeyColourDetector
from services.roadside.model import CameraRecord

SCENE = Scene()
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


class GateDetector:
    """Holds every run until `release`, recording how many runs were in it at once."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.inner = KeyColourDetector()
        self.camera_floors = self.inner.camera_floors
        self.seconds = seconds
        self.fail = fail
        self.running = 0
        self.most_at_once = 0
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batch_sizes.append(len(bgr_images))
        try:
            time.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("the model broke")
            return self.inner.detect_batch(bgr_images)
        finally:
            with self._lock:
                self.running -= 1


class OrderedSession(CameraSession):
    """Records the order in which the tracker and analytics see the camera's frames."""

    def __init__(self, record: CameraRecord, queue_frames: int) -> None:
        super().__init__(record, queue_frames, DEFAULT_CAMERA_FLOORS)
        self.analysed: list[int] = []

    def process(self, job: FrameJob, detections: list[Detection], size: tuple[int, int]) -> FrameAnalysis:
        if job.frame_id == 1:
            time.sleep(0.15)  # the first frame's analytics is slow: the second must wait for it
        self.analysed.append(job.frame_id)
        return super().process(job, detections, size)


def record(camera_id: str) -> CameraRecord:
    return CameraRecord(convert.camera_spec(SCENE.camera(camera_id)), 1, T0, T0, "{}")


def raw_image() -> frames.Image:
    image = SCENE.render([], 0.0)
    return frames.RawImage(image.tobytes(), image.shape[1], image.shape[0])


async def run_frames(engine: InferenceEngine, session: CameraSession | None,
                     images: Sequence[frames.Image]) -> list[tuple[int, FrameOutcome]]:
    """Submits the frames at once and returns (frame id, outcome) in the order the results came back."""
    loop = asyncio.get_running_loop()
    results: list[tuple[int, FrameOutcome]] = []
    finished = loop.create_future()

    def done(job: FrameJob, outcome: FrameOutcome) -> None:
        results.append((job.frame_id, outcome))
        if len(results) == len(images) and not finished.done():
            finished.set_result(None)

    for i, image in enumerate(images, start=1):
        engine.submit(FrameJob(session.camera_id if session else "", i, T0 + timedelta(seconds=i * 0.2), image,
                               time.monotonic(), 5000, done, session=session))
    worker = asyncio.create_task(engine.run())
    try:
        await asyncio.wait_for(finished, 10)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        engine.close()
    return results


async def test_two_frames_of_one_camera_are_inferred_at_once() -> None:
    detector = GateDetector(seconds=0.2)
    engine = InferenceEngine(detector, max_batch=4, queue_frames=2, workers=2, concurrent_runs=2)
    session = engine.session(record("one"))

    results = await run_frames(engine, session, [raw_image(), raw_image()])

    assert detector.most_at_once == 2
    assert detector.batch_sizes == [1, 1]  # never two frames of one camera in one batch
    assert all(outcome.error is None for _, outcome in results)


async def test_frames_of_a_camera_are_analysed_and_answered_in_capture_order() -> None:
    engine = InferenceEngine(GateDetector(), max_batch=4, queue_frames=2, workers=2, concurrent_runs=2)
    session = OrderedSession(record("ordered"), 2)
    engine.sessions[session.camera_id] = session

    results = await run_frames(engine, session, [raw_image(), raw_image()])

    assert session.analysed == [1, 2]
    assert [frame_id for frame_id, _ in results] == [1, 2]


async def test_runs_beyond_concurrent_runs_wait_for_the_model() -> None:
    detector = GateDetector(seconds=0.1)
    engine = InferenceEngine(detector, max_batch=1, queue_frames=2, workers=2, concurrent_runs=1)
    session = engine.session(record("serial"))

    await run_frames(engine, session, [raw_image(), raw_image()])

    assert detector.most_at_once == 1


async def test_a_failing_model_fails_its_frames_and_later_frames_still_get_their_turn() -> None:
    engine = InferenceEngine(GateDetector(fail=True), max_batch=4, queue_frames=3, workers=2, concurrent_runs=2)
    session = engine.session(record("broken"))

    results = await run_frames(engine, session, [raw_image(), raw_image(), raw_image()])

    assert sorted(frame_id for frame_id, _ in results) == [1, 2, 3]
    assert all(outcome.error is not None and outcome.error.code == code_pb2.INTERNAL for _, outcome in results)
    assert session.in_flight == 0


async def test_a_bad_frame_fails_alone_and_does_not_hold_up_the_next() -> None:
    engine = InferenceEngine(GateDetector(), max_batch=4, queue_frames=2, workers=2, concurrent_runs=2)
    session = engine.session(record("bad"))
    corrupt = frames.EncodedImage(b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9", "jpeg", 64, 64)

    results = dict(await run_frames(engine, session, [corrupt, raw_image()]))

    assert results[1].error is not None and results[1].error.code == code_pb2.INVALID_ARGUMENT
    assert results[2].error is None and results[2].analysis is not None


def job_of(session: CameraSession, frame_id: int, done: Callable[[FrameJob, FrameOutcome], None],
           deadline_ms: int = 5000) -> FrameJob:
    return FrameJob(session.camera_id, frame_id, T0 + timedelta(seconds=frame_id * 0.2), raw_image(), time.monotonic(),
                    deadline_ms, done, session=session)


def test_an_expired_frame_is_answered_after_the_frames_taken_before_it_even_when_they_finish_out_of_turn() -> None:
    session = CameraSession(record("held"), 2, DEFAULT_CAMERA_FLOORS)
    first, second = session.give_turn(), session.give_turn()
    third = job_of(session, 3, lambda job, outcome: None)

    assert session.hold_expired(third, FrameOutcome())
    assert session.answered(second) == []  # the second frame's worker was faster: the first is still out
    assert [job.frame_id for job, _ in session.answered(first)] == [3]
    assert not session.hold_expired(third, FrameOutcome())  # nothing in inference: answered at once


async def test_a_caller_that_fails_on_an_expired_frames_answer_does_not_stop_the_engine() -> None:
    engine = InferenceEngine(GateDetector(seconds=0.2), max_batch=1, queue_frames=3, workers=1, concurrent_runs=1)
    session = engine.session(record("failing-caller"))
    answered: list[tuple[int, int]] = []
    fourth: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(job: FrameJob, outcome: FrameOutcome) -> None:
        answered.append((job.frame_id, outcome.error.code if outcome.error is not None else code_pb2.OK))
        if job.frame_id == 4:
            fourth.set_result(None)
        elif outcome.error is not None:
            raise RuntimeError("the caller is gone")

    for i in (1, 2, 3):  # 2 and 3 wait out their 50 ms behind the first's 200 ms inference
        engine.submit(job_of(session, i, done, 5000 if i == 1 else 50))
    worker = asyncio.create_task(engine.run())
    try:
        await asyncio.sleep(0.4)
        engine.submit(job_of(session, 4, done))
        await asyncio.wait_for(fourth, 5)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        engine.close()

    assert answered == [(1, code_pb2.OK), (2, code_pb2.DEADLINE_EXCEEDED), (3, code_pb2.DEADLINE_EXCEEDED),
                        (4, code_pb2.OK)]
