"""The roadside service as deployed (the default detector, NanoDet-g, + plate reader), over gRPC."""

from __future__ import annotations

import random
from collections.abc import Callable

import cv2
import grpc
import pytest
from grpc import aio
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.plates import plate_scene, render_plate
from services.roadside.detector import BgrImage
from tests.conftest import Keys, status_code
from tests.roadside.conftest import Stub

LoadSample = Callable[[str], BgrImage]


def encoded(image: BgrImage, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return bytes(buf.tobytes())


async def test_detect_finds_the_pickup_on_the_dog_photo_once(
        onnx_stub: Stub, keys: Keys, load_sample: LoadSample) -> None:
    # NanoDet-g at its service size (416 x 320, its metadata's service_input_size) scores the pickup 0.53; at 480 x 352
    # it scored 0.25 and was missed (models/MODEL_CARD_nanodet_g.md).
    result = await onnx_stub.Detect(pb.Frame(frame_id=7, encoded=encoded(load_sample("dog.jpg"))),
                                    metadata=keys.md(keys.police))

    vehicles = [d for d in result.detections if d.object_class in (pb.OBJECT_CLASS_CAR, pb.OBJECT_CLASS_TRUCK)]
    assert len(vehicles) == 1  # one pickup, one box: car and truck are suppressed across classes
    assert result.frame_id == 7 and all(d.track_id == 0 for d in result.detections)
    confidences = [d.confidence for d in result.detections]
    assert confidences == sorted(confidences, reverse=True)
    pickup = vehicles[0]
    assert pickup.box.x_min > 384 and pickup.box.y_max < 200  # upper right, as in the photo


async def test_detect_answers_a_corrupt_jpeg_with_invalid_argument(onnx_stub: Stub, keys: Keys) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await onnx_stub.Detect(pb.Frame(encoded=b"\xff\xd8\xff\xe0garbage\xff\xd9"), metadata=keys.md(keys.admin))

    assert status_code(err.value) == grpc.StatusCode.INVALID_ARGUMENT


async def test_drivers_may_not_run_detection(onnx_stub: Stub, keys: Keys, load_sample: LoadSample) -> None:
    with pytest.raises(aio.AioRpcError) as err:
        await onnx_stub.Detect(pb.Frame(encoded=encoded(load_sample("dog.jpg"))), metadata=keys.md(keys.driver))

    assert status_code(err.value) == grpc.StatusCode.PERMISSION_DENIED


async def test_read_plate_reads_a_gate_camera_frame(onnx_stub: Stub, keys: Keys) -> None:
    scene, _ = plate_scene(render_plate("沪A12345", "blue"), random.Random(11))

    response = await onnx_stub.ReadPlate(pb.Frame(frame_id=3, encoded=encoded(scene, ".png")),
                                         metadata=keys.md(keys.op_a))

    (plate,) = response.plates
    assert plate.text == "沪A12345" and plate.colour == 1  # v2x.parking.v1.PLATE_COLOUR_BLUE
    assert len(plate.corners) == 4 and plate.confidence > 0.9
    assert response.frame_id == 3 and response.inference_latency_ms > 0


async def test_detect_also_reads_plates(onnx_stub: Stub, keys: Keys) -> None:
    scene, _ = plate_scene(render_plate("京N88888", "yellow"), random.Random(12))

    result = await onnx_stub.Detect(pb.Frame(encoded=encoded(scene, ".png")), metadata=keys.md(keys.admin))

    assert [(p.text, p.colour) for p in result.plates] == [("京N88888", 2)]
