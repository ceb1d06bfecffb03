"""The camera floors a camera leaves unset (min_detection_confidence, min_event_confidence) come from the detector
model: its metadata's ``camera_thresholds``, else YOLOv3-tiny's 0.35 / 0.5. A floor the camera sets stays its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from v2x.roadside.v1 import roadside_pb2 as pb

from roadside_sim.scene import Scene
from services.roadside import convert, frames
from services.roadside.app import _default_detector
from services.roadside.detector import (
    DEFAULT_CAMERA_FLOORS,
    BgrImage,
    CameraFloors,
    Detection,
    Detector,
    DetectorConfig,
    DetectorError,
    VehicleClass,
    camera_floors,
)
from services.roadside.engine import FrameJob, InferenceEngine
from services.roadside.model import CameraRecord, UnresolvedFloor
from tests.conftest import Keys
from tests.roadside.conftest import NANODET_PATH, Stub
from tests.roadside.helpers import T0

SCENE = Scene()
NANODET_FLOORS = CameraFloors(min_detection_confidence=0.3, min_event_confidence=0.3)


class FixedDetector:
    """Returns the same detections for every frame, with given camera floors (a model's metadata's)."""

    def __init__(self, floors: CameraFloors, detections: Sequence[Detection]) -> None:
        self.camera_floors = floors
        self.detections = list(detections)

    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]:
        return [list(self.detections) for _ in bgr_images]


def car(score: float, k: int) -> Detection:
    return Detection(VehicleClass.CAR, score, 300 + 10 * k, 200, 420 + 10 * k, 280, "car")


def tracked_cars(floors: CameraFloors, score: float, camera: pb.Camera | None = None) -> int:
    """How many tracked objects the camera's analytics keep of a car scoring `score` over three frames."""
    camera = camera or SCENE.camera("cam")
    engine = InferenceEngine(FixedDetector(floors, []))
    session = engine.session(CameraRecord(convert.camera_spec(camera), 1, T0, T0, "{}"))
    for k in range(3):
        job = FrameJob("cam", k, T0 + timedelta(seconds=k / 3), frames.RawImage(b"", 0, 0), 0.0, 8000,
                       lambda job, outcome: None)
        analysis = session.process(job, [car(score, k)], SCENE.size)
    return sum(1 for o in analysis.objects if o.track_id > 0)


# ----- the metadata ------------------------------------------------------------------------------------


def test_a_model_without_camera_thresholds_gets_yolov3_tinys_floors() -> None:
    assert camera_floors({}) == DEFAULT_CAMERA_FLOORS == CameraFloors(0.35, 0.5)


def test_the_metadata_states_a_models_own_floors_one_by_one() -> None:
    assert camera_floors({"camera_thresholds": {"min_event_confidence": 0.3}}) == CameraFloors(0.35, 0.3)


@pytest.mark.parametrize("given", [{"min_detection_confidence": 0.0}, {"min_event_confidence": 1.5},
                                   {"min_event_confidence": "0.3"}, {"min_plate_confidence": 0.5}])
def test_bad_camera_thresholds_are_refused(given: dict[str, object]) -> None:
    with pytest.raises(DetectorError, match="camera_thresholds"):
        camera_floors({"camera_thresholds": given})


def test_nanodet_g_states_floors_for_its_scores_and_yolov3_tiny_keeps_the_services(model_path: Path) -> None:
    nanodet = Detector(DetectorConfig(model_path=NANODET_PATH))
    yolo = Detector(DetectorConfig(model_path=model_path))

    assert nanodet.camera_floors == NANODET_FLOORS
    assert yolo.camera_floors == DEFAULT_CAMERA_FLOORS


def test_the_service_runs_nanodet_g_as_documented_on_auto_with_its_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a CPU with VNNI (this one: AMD EPYC, avx512_vnni) "auto" chose nanodet-g-int8.onnx, which is never built,
    # and the service did not start.
    monkeypatch.setenv("V2X_DETECTOR_MODEL", str(NANODET_PATH))

    detector = _default_detector("onnx", 1, "auto")

    assert isinstance(detector, Detector) and detector.config.model_path == NANODET_PATH
    assert detector.camera_floors == NANODET_FLOORS


# ----- where the engine opens a camera's session -------------------------------------------------------------


def test_a_camera_without_floors_keeps_a_detection_over_the_models_floor() -> None:
    # NanoDet-g's vehicles score 0.3-0.45: under YOLOv3-tiny's 0.35 the analytics dropped them.
    assert tracked_cars(NANODET_FLOORS, 0.32) == 1
    assert tracked_cars(DEFAULT_CAMERA_FLOORS, 0.32) == 0


def test_a_floor_the_camera_sets_wins_over_the_models() -> None:
    camera = SCENE.camera("cam")
    camera.thresholds.min_detection_confidence = 0.4

    assert tracked_cars(NANODET_FLOORS, 0.38, camera) == 0
    assert tracked_cars(NANODET_FLOORS, 0.42, camera) == 1


def test_the_models_floors_fill_only_what_the_camera_left_unset() -> None:
    camera = SCENE.camera("cam")
    camera.thresholds.min_event_confidence = 0.625  # exact in float32, as the proto keeps it
    spec = convert.camera_spec(camera)

    resolved = spec.with_floors(NANODET_FLOORS).thresholds

    assert (resolved.detection_floor, resolved.event_floor) == (0.3, 0.625)
    assert (spec.thresholds.min_detection_confidence, spec.thresholds.min_event_confidence) == (None, 0.625)
    with pytest.raises(UnresolvedFloor):
        _ = spec.thresholds.detection_floor


def test_a_reconfigured_camera_gets_the_models_floors_again() -> None:
    engine = InferenceEngine(FixedDetector(NANODET_FLOORS, []))
    camera = SCENE.camera("cam")
    session = engine.session(CameraRecord(convert.camera_spec(camera), 1, T0, T0, "{}"))
    camera.thresholds.min_event_confidence = 0.7
    engine.session(CameraRecord(convert.camera_spec(camera), 2, T0, T0, "{}"))

    session.apply_pending()

    assert session.record.spec.thresholds.min_detection_confidence is None  # as configured
    job = FrameJob("cam", 0, T0, frames.RawImage(b"", 0, 0), 0.0, 8000, lambda job, outcome: None)
    assert [o.track_id > 0 for o in session.process(job, [car(0.32, 0)], SCENE.size).objects] == [True]


# ----- through the service -----------------------------------------------------------------------------------


async def test_get_camera_returns_the_floors_as_configured_zero_for_unset(
        sim_stub: Stub, keys: Keys, unique: str) -> None:
    camera = SCENE.camera(f"cam-{unique}")
    camera.thresholds.min_event_confidence = 0.45
    await sim_stub.ConfigureCamera(pb.ConfigureCameraRequest(camera=camera), metadata=keys.md(keys.admin))

    got = await sim_stub.GetCamera(pb.GetCameraRequest(camera_id=f"cam-{unique}"), metadata=keys.md(keys.admin))

    assert got.thresholds.min_detection_confidence == 0.0
    assert got.thresholds.min_event_confidence == pytest.approx(0.45)
