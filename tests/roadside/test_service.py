"""The roadside service over gRPC, with the simulator's key-colour detector in place of the model."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import cast

import cv2
import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc import aio
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub
from v2x.roadside.v1 import roadside_pb2 as pb
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from roadside_sim.scene import NB_CENTRE_E, Scene, SimVehicle, drive
from roadside_sim.truth import VehicleClass as SimClass
from services.common.runtime import Resources, start_service
from services.common.timestamps import ts
from services.roadside.app import make_builder
from services.roadside.detector import BgrImage, Detection
from services.roadside.events import STREAM
from services.roadside.keycolour import KeyColourDetector
from services.roadside.settings import RoadsideSettings
from tests.conftest import Keys, status_code
from tests.parking.helpers import lot
from tests.roadside.conftest import Stub, stream
from tests.roadside.helpers import sim_frame, sim_frames
from tests.waiting import assert_eventually

SCENE = Scene()


def recent_start(seconds: float) -> datetime:
    """A capture start time such that a scenario of `seconds` ends a little before now."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds + 5)


async def configure(stub: Stub, keys: Keys, camera: pb.Camera) -> pb.Camera:
    return await stub.ConfigureCamera(pb.ConfigureCameraRequest(camera=camera), metadata=keys.md(keys.admin))


def stopper() -> SimVehicle:
    return drive(1, 0, 12, 50, 36).hold(40).then(3, NB_CENTRE_E, 66)


def jpeg_frame(camera_id: str, frame_id: int, image: BgrImage) -> pb.Frame:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return pb.Frame(camera_id=camera_id, frame_id=frame_id, encoded=buf.tobytes())


# ----- cameras ---------------------------------------------------------------------------------------


async def test_a_configured_camera_can_be_read_back_and_listed(sim_stub: Stub, keys: Keys, unique: str) -> None:
    created = await configure(sim_stub, keys, SCENE.camera(f"cam-{unique}"))

    got = await sim_stub.GetCamera(pb.GetCameraRequest(camera_id=f"cam-{unique}"), metadata=keys.md(keys.police))
    listed = await sim_stub.ListCameras(pb.ListCamerasRequest(page=cpb.PageRequest(page_size=1000)),
                                        metadata=keys.md(keys.admin))

    assert created.version == 1 and got.version == 1
    assert [lane.id for lane in got.lanes] == ["NB", "SB"]
    assert len(got.homography.points) == 4 and got.counting_lines[0].id == "L1"
    assert f"cam-{unique}" in [c.id for c in listed.cameras]


async def test_reconfiguring_with_a_stale_version_is_aborted(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera = SCENE.camera(f"cam-{unique}")
    await configure(sim_stub, keys, camera)
    second = await sim_stub.ConfigureCamera(pb.ConfigureCameraRequest(camera=camera, expected_version=1),
                                            metadata=keys.md(keys.admin))

    with pytest.raises(aio.AioRpcError) as err:
        await sim_stub.ConfigureCamera(pb.ConfigureCameraRequest(camera=camera, expected_version=1),
                                       metadata=keys.md(keys.admin))

    assert second.version == 2
    assert status_code(err.value) == grpc.StatusCode.ABORTED


async def test_a_bad_configuration_names_every_bad_field(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera = SCENE.camera(f"cam-{unique}")
    camera.lanes[0].polygon.points[0].x = 9000  # outside the image
    camera.zones[0].kind = pb.ZONE_KIND_UNSPECIFIED
    camera.counting_lines[0].lane_id = "nope"
    del camera.homography.points[3]

    with pytest.raises(aio.AioRpcError) as err:
        await configure(sim_stub, keys, camera)

    assert status_code(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    for field in ("lanes[0].polygon.points[0]", "zones[0].kind", "counting_lines[0].lane_id", "homography.points"):
        assert field in details


async def test_only_an_admin_may_configure_cameras(sim_stub: Stub, keys: Keys, unique: str) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await sim_stub.ConfigureCamera(pb.ConfigureCameraRequest(camera=SCENE.camera(f"cam-{unique}")),
                                       metadata=keys.md(keys.police))

    assert status_code(err.value) == grpc.StatusCode.PERMISSION_DENIED


# ----- bad frames --------------------------------------------------------------------------------------


async def test_bad_frames_are_answered_with_a_clear_status_while_the_stream_goes_on(
        sim_stub: Stub, keys: Keys) -> None:
    await configure(sim_stub, keys, SCENE.camera("cam-1"))  # the camera of keys.camera
    await configure(sim_stub, keys, SCENE.camera("cam-other"))
    good = SCENE.render([stopper()], 5)
    _ok, encoded = cv2.imencode(".jpg", good)
    big = bytearray(encoded.tobytes())
    sof = big.index(b"\xff\xc0")
    big[sof + 5 : sof + 9] = struct.pack(">HH", 8000, 8000)
    corrupt = bytearray(encoded.tobytes())
    scan = corrupt.index(b"\xff\xda")
    corrupt[scan + 2 : -2] = b"\xff" * (len(corrupt) - scan - 4)
    frames = [
        jpeg_frame("cam-1", 1, good),
        pb.Frame(camera_id="cam-1", frame_id=2, encoded=bytes(corrupt)),
        pb.Frame(camera_id="cam-1", frame_id=3, raw_bgr=pb.RawBgrImage(data=b"", width=0, height=0)),
        pb.Frame(camera_id="cam-1", frame_id=4, encoded=bytes(big)),
        pb.Frame(camera_id="cam-1", frame_id=5, raw_bgr=pb.RawBgrImage(data=b"\x00" * 100, width=640, height=480)),
        pb.Frame(camera_id="cam-other", frame_id=7, encoded=encoded.tobytes()),
        pb.Frame(camera_id="cam-1", frame_id=8),
        jpeg_frame("cam-1", 9, good),
    ]

    results = {r.frame_id: r for r in await stream(sim_stub, frames, keys.camera)}
    unknown = [jpeg_frame("cam-unknown", 6, good), jpeg_frame("cam-other", 10, good)]
    results.update({r.frame_id: r for r in await stream(sim_stub, unknown, keys.admin)})

    assert set(results) == set(range(1, 11))
    codes = {i: r.error.code for i, r in results.items()}
    assert codes == {1: code_pb2.OK, 2: code_pb2.INVALID_ARGUMENT, 3: code_pb2.INVALID_ARGUMENT,
                     4: code_pb2.INVALID_ARGUMENT, 5: code_pb2.INVALID_ARGUMENT, 6: code_pb2.NOT_FOUND,
                     7: code_pb2.PERMISSION_DENIED, 8: code_pb2.INVALID_ARGUMENT, 9: code_pb2.OK, 10: code_pb2.OK}
    assert "cannot be decoded" in results[2].error.message
    assert "0x0" in results[3].error.message
    assert "8000x8000" in results[4].error.message
    assert "needs 921600" in results[5].error.message
    assert "not configured" in results[6].error.message
    assert "cam-1, not cam-other" in results[7].error.message
    assert [d.object_class for d in results[9].detections] == [pb.OBJECT_CLASS_CAR]


async def test_frames_going_back_in_time_are_refused(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    t0 = recent_start(10)
    frames = [sim_frame(SCENE, [], camera_id, 1, 5, t0), sim_frame(SCENE, [], camera_id, 2, 4, t0),
              sim_frame(SCENE, [], camera_id, 3, 6, t0)]

    results = {r.frame_id: r for r in await stream(sim_stub, frames, keys.admin)}

    assert results[2].error.code == code_pb2.INVALID_ARGUMENT and "before" in results[2].error.message
    assert not results[1].HasField("error") and not results[3].HasField("error")


# ----- analytics through the service ---------------------------------------------------------------------


async def _events(resources: Resources, camera_id: str) -> list[pb.AnalyticsEvent]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await resources.redis.xrange(STREAM))
    return [pb.AnalyticsEvent.FromString(fields[b"event"]) for _, fields in entries
            if fields.get(b"camera") == camera_id.encode()]


@pytest.mark.slow
async def test_a_stop_in_the_zone_reaches_idps_as_exactly_one_903_with_a_snapshot(
        sim_stub: Stub, keys: Keys, resources: Resources, unique: str) -> None:
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    frames = sim_frames(SCENE, [stopper()], camera_id, 45, recent_start(45), fps=4)

    results = await stream(sim_stub, frames, keys.admin, window=2)
    published: list[pb.AnalyticsEvent] = []

    async def on_the_stream() -> bool:
        nonlocal published
        published = await _events(resources, camera_id)
        return bool(published)

    await assert_eventually(on_the_stream, "the event on the Redis stream")

    raised = [e for r in results for e in r.events]
    assert [e.type for e in raised] == [pb.ANALYTICS_EVENT_TYPE_STOPPED_VEHICLE]
    assert all(not r.HasField("error") and r.dropped_frames == 0 for r in results)
    (event,) = published
    assert event.event_id == raised[0].event_id and event.zone_id == "box" and event.lane_id == "NB"
    assert event.snapshot_jpeg.startswith(b"\xff\xd8") and not raised[0].snapshot_jpeg
    assert abs(event.position.lat - 31.2308) < 0.0005 and event.stationary_s >= 30
    tracked = [d for r in results for d in r.detections]
    assert {d.track_id for d in tracked} == {raised[0].track_id}
    assert all(d.HasField("ground_position") for d in tracked)
    assert sum(d.lane_id == "NB" for d in tracked) > 0.9 * len(tracked)  # the first frames are short of the lane


@pytest.mark.slow
async def test_counts_per_minute_match_the_vehicles_that_crossed(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    start = recent_start(20).replace(second=0) - timedelta(minutes=1)
    cars = [drive(i, 2.0 * i, 12, 66, 40) for i in range(5)]
    frames = sim_frames(SCENE, cars, camera_id, 16, start, fps=5)

    results = await stream(sim_stub, frames, keys.admin, window=2)
    counts = await sim_stub.GetCounts(pb.GetCountsRequest(camera_id=camera_id, start_time=ts(start),
                                                          end_time=ts(start + timedelta(minutes=3))),
                                      metadata=keys.md(keys.driver))

    assert len(results) == len(frames)
    assert [m.frames for m in counts.minutes] == [len(frames), 0, 0]
    first = counts.minutes[0]
    assert [(line.line_id, line.positive, line.negative) for line in first.lines] == [("L1", 5, 0)]
    lanes = {lane.lane_id: lane for lane in first.lanes}
    assert (lanes["NB"].vehicles, lanes["NB"].wrong_way_vehicles, lanes["SB"].vehicles) == (5, 0, 0)
    assert lanes["NB"].mean_speed_mps == pytest.approx(40 / 3.6, rel=0.1)
    assert counts.minutes[1].lanes[0].congestion == pb.CONGESTION_LEVEL_UNKNOWN


@pytest.mark.slow
async def test_spot_zones_become_on_street_spot_states_at_parking(
        sim_stub: Stub, keys: Keys, parking_channel: aio.Channel, unique: str) -> None:
    parking = ParkingServiceStub(parking_channel)
    lot_id = f"RS-{unique}"
    await parking.RegisterLot(ppb.RegisterLotRequest(lot=lot(lot_id, "OPA", kind=ppb.LOT_KIND_ON_STREET_SEGMENT,
                                                             detection=ppb.DETECTION_TYPE_SINGLE_SPACE, general=2,
                                                             ev=0, disabled=0)),
                              metadata=keys.md(keys.admin))
    await parking.UpsertSpots(ppb.UpsertSpotsRequest(lot_id=lot_id, spots=[
        ppb.Spot(id="S1", space_class=ppb.SPACE_CLASS_GENERAL),
        ppb.Spot(id="S2", space_class=ppb.SPACE_CLASS_GENERAL)]), metadata=keys.md(keys.op_a))
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id, lot_id=lot_id))
    parked = SimVehicle(1, SimClass.CAR, [(0.0, NB_CENTRE_E, 12.0), (2.0, 4.75, 17.0)]).hold(30)
    frames = sim_frames(SCENE, [parked], camera_id, 20, recent_start(20), fps=4)

    await stream(sim_stub, frames, keys.admin, window=2)
    states: dict[str, int] = {}

    async def s1_occupied() -> bool:
        nonlocal states
        spots = await parking.ListSpots(ppb.ListSpotsRequest(lot_id=lot_id), metadata=keys.md(keys.op_a))
        states = {s.id: s.status for s in spots.spots}
        return states.get("S1") == ppb.SPOT_STATUS_OCCUPIED

    await assert_eventually(s1_occupied, "S1 occupied at parking")

    assert states == {"S1": ppb.SPOT_STATUS_OCCUPIED, "S2": ppb.SPOT_STATUS_FREE}
    view = await parking.GetLot(ppb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert view.availability.sequence > 1_700_000_000_000  # observation time in milliseconds


async def test_raw_bgr_frames_are_tracked_like_encoded_ones(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    frames = sim_frames(SCENE, [drive(1, 0, 12, 66, 40)], camera_id, 3, recent_start(3), fps=5, fmt="raw")

    results = await stream(sim_stub, frames, keys.admin)

    ids = {d.track_id for r in results for d in r.detections}
    assert len(ids) == 1 and 0 not in ids
    assert any(d.HasField("speed_mps") for r in results for d in r.detections)


async def test_a_newer_stream_takes_the_camera_over(sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera_id = f"cam-{unique}"
    await configure(sim_stub, keys, SCENE.camera(camera_id))
    t0 = recent_start(10)
    old_frames: asyncio.Queue[pb.Frame | None] = asyncio.Queue()

    async def old_source() -> AsyncIterator[pb.Frame]:
        while (f := await old_frames.get()) is not None:
            yield f

    old = sim_stub.StreamFrames(old_source(), metadata=keys.md(keys.admin))
    await old_frames.put(sim_frame(SCENE, [], camera_id, 1, 0, t0))
    first = await old.read()
    new_results = await stream(sim_stub, [sim_frame(SCENE, [], camera_id, 2, 1, t0)], keys.admin)
    await old_frames.put(sim_frame(SCENE, [], camera_id, 3, 2, t0))
    after = await old.read()
    await old_frames.put(None)

    assert isinstance(first, pb.FrameResult) and not first.HasField("error")
    assert not new_results[0].HasField("error")
    assert isinstance(after, pb.FrameResult) and after.error.code == code_pb2.ABORTED


# ----- queues, deadlines, isolation (a slow detector) -----------------------------------------------------


class SlowDetector:
    """The key-colour detector behind a fixed inference time per batch."""

    def __init__(self, seconds: float) -> None:
        self.inner = KeyColourDetector()
        self.camera_floors = self.inner.camera_floors
        self.seconds = seconds
        self.batch_sizes: list[int] = []

    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]:
        time.sleep(self.seconds)
        self.batch_sizes.append(len(bgr_images))
        return self.inner.detect_batch(bgr_images)


@pytest.mark.slow
async def test_a_flooding_camera_drops_its_oldest_frames_and_does_not_stall_another(
        resources: Resources, keys: Keys, unique: str) -> None:
    detector = SlowDetector(0.05)
    roadside = RoadsideSettings(queue_frames=2, max_batch=4, infer_workers=1)
    running = await start_service(make_builder(detector, plates=False, roadside=roadside), resources,
                                  port=0, host="127.0.0.1")
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
            stub: Stub = RoadsideServiceStub(channel)
            flood, calm = f"flood-{unique}", f"calm-{unique}"
            await configure(stub, keys, SCENE.camera(flood))
            await configure(stub, keys, SCENE.camera(calm))
            t0 = recent_start(30)
            flood_frames = [sim_frame(SCENE, [], flood, i, i * 0.04, t0, fmt="raw") for i in range(1, 121)]

            async def calm_camera() -> list[tuple[float, pb.FrameResult]]:
                out = []
                for i in range(1, 9):
                    sent = time.monotonic()
                    (r,) = await stream(stub, [sim_frame(SCENE, [], calm, i, i * 0.5, t0, fmt="raw")], keys.admin)
                    out.append((time.monotonic() - sent, r))
                    await asyncio.sleep(0.1)
                return out

            # Six in flight against a queue of two: the camera overruns its queue (drops) for the whole time
            # the calm camera sends, so their frames meet in batches however fast the machine is.
            flood_task = asyncio.create_task(stream(stub, flood_frames, keys.admin, window=6))
            calm_results = await calm_camera()
            flood_results = await flood_task
    finally:
        await running.stop(0.5)

    assert flood_results[-1].dropped_frames > 0
    assert len(flood_results) + flood_results[-1].dropped_frames == len(flood_frames)
    assert all(not r.HasField("error") for _, r in calm_results)
    assert max(latency for latency, _ in calm_results) < 1.0  # a few batches, not the flood's backlog
    assert max(detector.batch_sizes) == 2  # one worker: frames of both cameras share a batch


@asynccontextmanager
async def slow_roadside(resources: Resources, seconds: float, roadside: RoadsideSettings) -> AsyncIterator[Stub]:
    """A roadside service of its own behind a detector that takes `seconds` a frame, and a stub to it."""
    running = await start_service(make_builder(SlowDetector(seconds), plates=False, roadside=roadside), resources,
                                  port=0, host="127.0.0.1")
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.server.port}") as channel:
            yield RoadsideServiceStub(channel)
    finally:
        await running.stop(0.5)


async def test_frames_waiting_past_their_deadline_are_answered_deadline_exceeded(
        resources: Resources, keys: Keys, unique: str) -> None:
    async with slow_roadside(resources, 0.1, RoadsideSettings(queue_frames=50, max_batch=1)) as stub:
        camera = SCENE.camera(f"late-{unique}")
        camera.thresholds.frame_deadline_ms = 250
        await configure(stub, keys, camera)
        t0 = recent_start(10)
        frames = [sim_frame(SCENE, [], camera.id, i, i * 0.1, t0, fmt="raw") for i in range(1, 11)]
        results = await stream(stub, frames, keys.admin, window=10)

    late = [r for r in results if r.error.code == code_pb2.DEADLINE_EXCEEDED]
    assert len(results) == 10 and late
    assert results[-1].late_frames == len(late)
    assert "deadline is 250 ms" in late[0].error.message
    assert [r.frame_id for r in results if not r.HasField("error")][:2] == [1, 2]


def handled_streams(code: str) -> float:
    """StreamFrames calls this process has finished with `code` (the rpc pipeline's own counter)."""
    labels = {"service": "v2x.roadside.v1.RoadsideService", "method": "StreamFrames", "code": code}
    return REGISTRY.get_sample_value("v2x_rpc_handled_total", labels) or 0.0


async def test_a_stream_whose_frames_expire_goes_on_answering_and_ends_when_the_camera_half_closes(
        resources: Resources, keys: Keys, unique: str) -> None:
    # The service's defaults (a queue of two, two inference workers) behind a detector slower than the camera's
    # frame deadline: frames sent at 10 fps wait longer than 100 ms, so some expire; the stream must go on.
    sent = 24
    async with slow_roadside(resources, 0.3, RoadsideSettings()) as stub:
        camera = SCENE.camera(f"expiring-{unique}")
        camera.thresholds.frame_deadline_ms = 100
        await configure(stub, keys, camera)
        t0 = recent_start(10)
        frames = [sim_frame(SCENE, [], camera.id, i, i * 0.1, t0, fmt="raw") for i in range(1, sent + 1)]

        async def camera_feed() -> AsyncIterator[pb.Frame]:
            for f in frames:
                yield f
                await asyncio.sleep(0.1)
            # Returning half-closes the stream: the service answers what it holds, then ends the call.

        results = [r async for r in stub.StreamFrames(camera_feed(), metadata=keys.md(keys.admin))]

    late = [r for r in results if r.error.code == code_pb2.DEADLINE_EXCEEDED]
    assert late, "no frame expired: the test did not test anything"
    inferred_later = [r.frame_id for r in results[results.index(late[0]) + 1:] if not r.HasField("error")]
    assert inferred_later, [(r.frame_id, r.error.code) for r in results]
    answered = [r.frame_id for r in results]
    assert sent in answered and len(set(answered)) == len(answered)  # the last frame too; none twice
    assert answered == sorted(answered)  # in order, expired frames in their place
    assert len(results) + results[-1].dropped_frames == sent  # every frame answered once or counted as dropped
    assert results[-1].late_frames == len(late)


async def test_a_camera_that_walks_away_with_frames_waiting_ends_its_stream_and_can_stream_again(
        resources: Resources, keys: Keys, unique: str) -> None:
    cancelled_before = handled_streams("CANCELLED")
    # A queue deep enough for frames to wait out their deadline: with the default 2 the flood only drops the oldest,
    # the two waiting are always fresh, and an expired frame came (or not: the test hung twice) when the flood ended.
    async with slow_roadside(resources, 0.3, RoadsideSettings(queue_frames=50)) as stub:
        camera = SCENE.camera(f"walkaway-{unique}")
        camera.thresholds.frame_deadline_ms = 100
        await configure(stub, keys, camera)
        t0 = recent_start(20)
        stop_sending = asyncio.Event()

        async def flood() -> AsyncIterator[pb.Frame]:
            for i in range(1, 1000):
                if stop_sending.is_set():
                    break
                yield sim_frame(SCENE, [], camera.id, i, i * 0.01, t0, fmt="raw")
                await asyncio.sleep(0.03)
            await asyncio.Event().wait()  # a camera that never half-closes: only its cancellation ends the call

        call = stub.StreamFrames(flood(), metadata=keys.md(keys.admin))
        async for r in call:
            if r.error.code == code_pb2.DEADLINE_EXCEEDED:
                break  # walk away right after an expired frame, with later frames still queued and in inference
        stop_sending.set()
        call.cancel()

        await assert_eventually(lambda: handled_streams("CANCELLED") > cancelled_before,
                                "the service ended the cancelled stream", within_s=10)
        # The camera comes back on a new stream (its frames' capture times go on from where they were).
        again = [sim_frame(SCENE, [], camera.id, 2000 + i, 20 + i * 0.1, t0, fmt="raw") for i in range(1, 4)]
        results = await stream(stub, again, keys.admin, window=1)

    # The first may still wait behind the old stream's frames in inference (and expire); the last is inferred.
    assert [r.frame_id for r in results] == [2001, 2002, 2003]
    assert not results[-1].HasField("error"), [r.error.message for r in results]


async def test_a_frame_refused_by_the_engine_answers_with_typed_details_and_the_request_id(
        sim_stub: Stub, keys: Keys) -> None:
    # Bytes that pass the request checks but do not decode: the engine refuses the frame, Detect answers its status.
    frame = pb.Frame(frame_id=1, encoded=b"\xff\xd8\xff not really a JPEG")
    frame.captured_at.GetCurrentTime()
    with pytest.raises(aio.AioRpcError) as err:
        await sim_stub.Detect(frame, metadata=(*keys.md(keys.admin), ("x-request-id", "detect-bad-frame-1")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers.get("x-request-id") == "detect-bad-frame-1"
    status = rpc_status.from_call(err.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details) and info.reason
