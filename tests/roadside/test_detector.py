"""The vehicle detector on real photos, on synthetic models of other YOLO layouts, and its pieces."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.roadside.detector import (
    DEFAULT_SCORE_THRESHOLDS,
    MODEL_CLASS_TO_VEHICLE,
    SERVICE_INPUT_SIZE,
    BgrImage,
    Detection,
    Detector,
    DetectorConfig,
    DetectorError,
    VehicleClass,
    parse_input_size,
)

LoadSample = Callable[[str], BgrImage]

# Boxes a person draws around the road users in Darknet's dog.jpg (768x576): the white pickup parked
# across the street (upper right) and the red road bike leaning on the porch rail (middle).
DOG_PICKUP = (465.0, 72.0, 690.0, 172.0)
DOG_BICYCLE = (125.0, 135.0, 565.0, 420.0)
# person.jpg (640x424): the man in the blue jacket between the dog and the horse.
PERSON_MAN = (188.0, 95.0, 277.0, 378.0)
# kite.jpg (1352x900): the two children in hoods walking at the water's edge, lower left. Small enough that
# only the stride-16 head finds them, so their box sizes show whether that head's anchors are right.
KITE_CHILDREN = ((105.0, 615.0, 160.0, 755.0), (212.0, 695.0, 277.0, 855.0))


def iou(d: Detection, box: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(d.x2, box[2]) - max(d.x1, box[0]))
    iy = max(0.0, min(d.y2, box[3]) - max(d.y1, box[1]))
    inter = ix * iy
    return inter / (d.width * d.height + (box[2] - box[0]) * (box[3] - box[1]) - inter)


def of_class(detections: list[Detection], *classes: VehicleClass) -> list[Detection]:
    return [d for d in detections if d.vehicle_class in classes]


# --- real photos ---------------------------------------------------------------------------------


def test_dog_photo_finds_the_pickup_as_car_or_truck(detector: Detector, load_sample: LoadSample) -> None:
    vehicles = of_class(detector.detect(load_sample("dog.jpg")), VehicleClass.CAR, VehicleClass.TRUCK)

    assert vehicles, "no car or truck found"
    assert max(iou(d, DOG_PICKUP) for d in vehicles) >= 0.7


def test_every_car_or_truck_box_on_the_dog_photo_is_the_pickup(detector: Detector, load_sample: LoadSample) -> None:
    # With the stride-16 head decoded on the cfg's anchor mask 0,1,2 instead of the trained 1,2,3 the pickup came
    # out twice: car 0.64 around it and a "truck" box at 0.45x its size nested inside (IoU 0.25).
    vehicles = of_class(detector.detect(load_sample("dog.jpg")), VehicleClass.CAR, VehicleClass.TRUCK)

    assert vehicles
    assert all(iou(d, DOG_PICKUP) >= 0.5 for d in vehicles), vehicles


def test_dog_photo_shows_one_vehicle_with_the_runner_up_class_kept(detector: Detector, load_sample: LoadSample) -> None:
    merged = of_class(detector.detect(load_sample("dog.jpg")), VehicleClass.CAR, VehicleClass.TRUCK, VehicleClass.BUS)
    per_class = Detector(DetectorConfig(model_path=detector.config.model_path, merge_vehicle_classes=False))
    unmerged = of_class(per_class.detect(load_sample("dog.jpg")), VehicleClass.CAR, VehicleClass.TRUCK)

    assert len(unmerged) == 2  # the pickup as car and as truck: what per-class NMS lets through
    assert len(merged) == 1
    (pickup,) = merged
    assert pickup.score == max(d.score for d in unmerged)
    assert {pickup.vehicle_class, pickup.alt_class} == {VehicleClass.CAR, VehicleClass.TRUCK}
    assert pickup.alt_score == min(d.score for d in unmerged)


def test_small_people_get_boxes_of_their_size(detector: Detector, load_sample: LoadSample) -> None:
    people = of_class(detector.detect(load_sample("kite.jpg")), VehicleClass.PERSON)

    for child in KITE_CHILDREN:
        assert max((iou(d, child) for d in people), default=0.0) >= 0.6, (child, people)


def test_dog_photo_vehicles_are_all_in_the_upper_right(detector: Detector, load_sample: LoadSample) -> None:
    image = load_sample("dog.jpg")
    height, width = image.shape[:2]

    for d in of_class(detector.detect(image), VehicleClass.CAR, VehicleClass.TRUCK):
        cx, cy = d.center
        assert cx > width / 2 and cy < height / 3, d


def test_dog_photo_finds_the_bicycle_in_the_middle(detector: Detector, load_sample: LoadSample) -> None:
    bicycles = of_class(detector.detect(load_sample("dog.jpg")), VehicleClass.BICYCLE)

    assert len(bicycles) == 1
    assert iou(bicycles[0], DOG_BICYCLE) >= 0.5
    assert bicycles[0].score >= 0.5


def test_dog_photo_reports_no_person_and_drops_the_dog(detector: Detector, load_sample: LoadSample) -> None:
    detections = detector.detect(load_sample("dog.jpg"))

    assert not of_class(detections, VehicleClass.PERSON)
    assert all(d.model_class != "dog" for d in detections)


def test_person_photo_finds_the_man(detector: Detector, load_sample: LoadSample) -> None:
    people = of_class(detector.detect(load_sample("person.jpg")), VehicleClass.PERSON)

    assert len(people) == 1
    assert iou(people[0], PERSON_MAN) >= 0.8
    assert people[0].score >= 0.9


@pytest.mark.parametrize("name", ["horses.jpg", "giraffe.jpg", "eagle.jpg"])
def test_photos_without_road_users_give_no_detections(
    detector: Detector, load_sample: LoadSample, name: str
) -> None:
    assert detector.detect(load_sample(name)) == []


def test_boxes_are_clipped_to_the_source_image(detector: Detector, load_sample: LoadSample) -> None:
    for name in ("dog.jpg", "person.jpg", "kite.jpg"):
        image = load_sample(name)
        height, width = image.shape[:2]
        for d in detector.detect(image):
            assert 0 <= d.x1 < d.x2 <= width and 0 <= d.y1 < d.y2 <= height, (name, d)


def test_detect_batch_equals_detect_frame_by_frame(detector: Detector, load_sample: LoadSample) -> None:
    images = [load_sample("dog.jpg"), load_sample("person.jpg"), load_sample("kite.jpg")]

    batched = detector.detect_batch(images)

    assert detector.dynamic_batch
    assert len(batched) == len(images)
    for image, together in zip(images, batched, strict=True):
        alone = detector.detect(image)
        assert [d.vehicle_class for d in together] == [d.vehicle_class for d in alone]
        for a, b in zip(together, alone, strict=True):
            assert (a.x1, a.y1, a.x2, a.y2, a.score) == pytest.approx(
                (b.x1, b.y1, b.x2, b.y2, b.score), abs=1e-3
            )


def test_a_raised_class_threshold_removes_only_that_class(model_path: Path, load_sample: LoadSample) -> None:
    strict_bicycles = {**DEFAULT_SCORE_THRESHOLDS, VehicleClass.BICYCLE: 0.99}
    detector = Detector(DetectorConfig(model_path=model_path, score_thresholds=strict_bicycles))

    detections = detector.detect(load_sample("dog.jpg"))

    assert not of_class(detections, VehicleClass.BICYCLE)
    assert of_class(detections, VehicleClass.CAR, VehicleClass.TRUCK)


def test_candidates_decoded_at_a_low_floor_select_what_the_detector_finds_at_its_own(
    detector: Detector, model_path: Path, load_sample: LoadSample
) -> None:
    # The offline replay (load/replay_analytics.py --boxes detector) runs the model once at a low floor and selects
    # at the floors it tries: select must apply its detector's own thresholds, or the replay's figures are wrong.
    low = Detector(DetectorConfig(model_path=model_path, score_thresholds={c: 0.05 for c in VehicleClass}))
    image = load_sample("dog.jpg")

    candidates, box = low.candidates_batch([image])[0]

    own = detector.detect(image)
    selected = detector.select(candidates, box)
    assert len(low.select(candidates, box)) > len(own)
    assert [(d.vehicle_class, round(d.score, 4), round(d.x1, 1)) for d in selected] == [
        (d.vehicle_class, round(d.score, 4), round(d.x1, 1)) for d in own
    ]


# --- the converted model ---------------------------------------------------------------------------


def test_converted_model_outputs_the_two_darknet_heads(model_path: Path) -> None:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()

    outputs = session.run(None, {model_input.name: np.zeros((1, 3, 416, 416), np.float32)})

    assert model_input.name == "images"
    assert [o.shape for o in outputs] == [(1, 255, 13, 13), (1, 255, 26, 26)]


def test_converted_model_has_a_dynamic_batch_dimension(model_path: Path) -> None:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    outputs = session.run(None, {"images": np.zeros((3, 3, 416, 416), np.float32)})

    assert [o.shape[0] for o in outputs] == [3, 3]


def test_metadata_describes_the_heads_and_pins_the_onnx_file(model_path: Path) -> None:
    meta = json.loads(model_path.with_suffix(".json").read_text())

    assert [(h["output"], h["stride"], h["mask"]) for h in meta["heads"]] == [
        ("head_stride32", 32, [3, 4, 5]),
        ("head_stride16", 16, [1, 2, 3]),  # what the weights were trained with, not the cfg's 0,1,2
    ]
    assert meta["heads"][1]["anchors"] == [[23, 27], [37, 58], [81, 82]]
    assert meta["heads"][0]["anchors"] == [[81, 82], [135, 169], [344, 319]]
    assert (meta["input"]["width"], meta["input"]["height"]) == (416, 416)
    assert len(meta["class_names"]) == 80
    assert meta["onnx_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()


def test_a_model_that_does_not_match_its_metadata_is_refused(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "yolov3-tiny.onnx"
    copy.write_bytes(model_path.read_bytes()[:-1] + b"\0")
    (tmp_path / "yolov3-tiny.json").write_text(model_path.with_suffix(".json").read_text())

    with pytest.raises(DetectorError, match="onnx_sha256"):
        Detector(DetectorConfig(model_path=copy))


# --- preprocessing and class mapping -------------------------------------------------------------


def test_preprocess_letterboxes_converts_to_rgb_and_scales(detector: Detector) -> None:
    blue = np.zeros((100, 200, 3), np.uint8)
    blue[:, :, 0] = 255  # BGR

    tensor, box = detector.preprocess(blue)

    assert tensor.shape == (3, 416, 416) and tensor.dtype == np.float32
    assert box.pad == (0, 104)
    np.testing.assert_allclose(tensor[:, 208, 208], [0.0, 0.0, 1.0])  # RGB: blue last
    np.testing.assert_allclose(tensor[:, 10, 208], [0.5, 0.5, 0.5])  # padding: Darknet's grey


def test_preprocess_matches_a_plain_letterbox_and_writes_into_a_batch_slice(
        detector: Detector, load_sample: LoadSample) -> None:
    image = load_sample("dog.jpg")  # 768x576 into 416x416: content 416x312, 52 rows of padding above
    resized = cv2.resize(image, (416, 312), interpolation=cv2.INTER_LINEAR)
    expected = np.full((3, 416, 416), 0.5, np.float32)
    expected[:, 52:364, :] = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    batch = np.full((2, 3, 416, 416), np.nan, np.float32)

    box = detector.preprocess_into(image, batch[1])

    assert box.pad == (0, 52)
    np.testing.assert_allclose(batch[1], expected, atol=1e-6)
    assert np.isnan(batch[0]).all()  # the other frame of the batch is left alone
    np.testing.assert_array_equal(detector.preprocess(image)[0], batch[1])


def test_the_model_runs_at_a_camera_shaped_input_size(model_path: Path, load_sample: LoadSample) -> None:
    # Height and width are symbolic in the built model: 4:3 frames at 480x352 rather than letterboxed into 416x416.
    detector = Detector(DetectorConfig(model_path=model_path, input_size=(480, 352)))
    image = load_sample("dog.jpg")  # 768x576: scale 352/576, content 469x352, 5 columns of padding each side

    tensor, box = detector.preprocess(image)
    cars = [d for d in detector.detect(image) if d.vehicle_class is VehicleClass.CAR]

    assert detector.input_size == (480, 352) and tensor.shape == (3, 352, 480)
    assert box.resized_size == (469, 352) and box.pad[1] == 0
    assert len(cars) == 1 and iou(cars[0], DOG_PICKUP) >= 0.5  # the scoring IoU (0.67 here)


def test_an_input_size_the_model_cannot_take_is_refused(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="not a multiple of the model's stride 32"):
        Detector(DetectorConfig(model_path=model_path, input_size=(500, 352)))
    fixed = dropped_in_model(tmp_path, class_map={"automobile": "car"})  # images[batch, 3, 32, 64]
    with pytest.raises(DetectorError, match="fixed at 64x32"):
        Detector(DetectorConfig(model_path=fixed, input_size=(128, 64)))


def test_the_services_input_size_comes_from_the_environment_else_from_the_model(model_path: Path,
                                                                               tmp_path: Path) -> None:
    # The default model (NanoDet-g) states its own service size; YOLOv3-tiny states none and gets the service's.
    assert DetectorConfig.from_env({}).input_size == (416, 320)
    yolo = DetectorConfig.from_env({"V2X_DETECTOR_MODEL": str(model_path)})
    assert yolo.input_size == SERVICE_INPUT_SIZE == (480, 352)
    sized = tmp_path / "sized.onnx"
    sized.with_suffix(".json").write_text(json.dumps({"service_input_size": [640, 480]}))
    assert DetectorConfig.from_env({"V2X_DETECTOR_MODEL": str(sized)}).input_size == (640, 480)
    assert DetectorConfig.from_env({"V2X_DETECTOR_MODEL": str(tmp_path / "none.onnx")}).input_size == (480, 352)
    assert DetectorConfig.from_env({"V2X_DETECTOR_INPUT_SIZE": "640x480"}).input_size == (640, 480)
    assert DetectorConfig.from_env({"V2X_DETECTOR_INPUT_SIZE": "model"}).input_size is None
    assert DetectorConfig().input_size is None  # a Detector built in code keeps the metadata's size
    with pytest.raises(DetectorError, match="WIDTHxHEIGHT"):
        parse_input_size("480 by 352")


def test_the_session_runs_on_one_thread_without_spinning_and_one_run_per_core(model_path: Path) -> None:
    detector = Detector(DetectorConfig(model_path=model_path))
    options = detector.session.get_session_options()

    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert detector.concurrent_runs == max(1, os.cpu_count() or 1)
    assert Detector(DetectorConfig(model_path=model_path, intra_op_threads=2)).concurrent_runs == max(
        1, (os.cpu_count() or 1) // 2)


def test_every_vehicle_class_comes_from_a_coco_class(model_path: Path) -> None:
    coco = json.loads(model_path.with_suffix(".json").read_text())["class_names"]
    mapped = {name: MODEL_CLASS_TO_VEHICLE[name] for name in coco if name in MODEL_CLASS_TO_VEHICLE}

    assert set(mapped.values()) == set(VehicleClass)
    assert mapped["motorbike"] is VehicleClass.MOTORCYCLE
    assert "dog" not in MODEL_CLASS_TO_VEHICLE and "train" not in MODEL_CLASS_TO_VEHICLE


def test_every_vehicle_class_has_a_default_threshold() -> None:
    assert set(DEFAULT_SCORE_THRESHOLDS) == set(VehicleClass)
    assert all(0 < t < 1 for t in DEFAULT_SCORE_THRESHOLDS.values())


# --- other YOLO export layouts, through the whole detector ----------------------------------------

SYNTH_CLASSES = ["person", "car", "dog"]
SYNTH_INPUT = (64, 32)  # (w, h)


def constant_output_model(path: Path, output: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    """An ONNX model ``images[batch,3,32,64] -> output`` repeated along a dynamic batch dimension."""
    width, height = SYNTH_INPUT
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["per_image"]),
        helper.make_node("Mul", ["per_image", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "constant"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "synthetic",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", *output.shape])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
            numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
            numpy_helper.from_array(output[None].astype(np.float32), "constant"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "format": "auto",
                "input": {"name": "images", "width": width, "height": height, "channel_order": "RGB"},
                "class_names": SYNTH_CLASSES,
            }
        )
    )


def yolov8_output() -> np.ndarray[Any, np.dtype[np.float32]]:
    out = np.zeros((4 + 3, 6), np.float32)  # [4 + C, N]
    out[:, 1] = [32, 16, 16, 8, 0.0, 0.9, 0.1]  # a car at model pixels (24, 12)-(40, 20)
    out[:, 4] = [10, 10, 8, 8, 0.0, 0.0, 0.95]  # a dog: not a road user
    return out


def yolov5_output() -> np.ndarray[Any, np.dtype[np.float32]]:
    out = np.zeros((6, 5 + 3), np.float32)  # [N, 5 + C]
    out[2] = [32, 16, 16, 8, 0.9, 0.0, 1.0, 0.0]  # the same car, objectness 0.9
    out[3] = [10, 10, 8, 8, 0.9, 0.0, 0.0, 1.0]  # a dog
    return out


@pytest.mark.parametrize("make_output", [yolov8_output, yolov5_output], ids=["yolov8", "yolov5"])
def test_single_output_layouts_decode_to_source_pixels(
    tmp_path: Path, make_output: Callable[[], np.ndarray[Any, np.dtype[np.float32]]]
) -> None:
    constant_output_model(tmp_path / "synthetic.onnx", make_output())
    detector = Detector(DetectorConfig(model_path=tmp_path / "synthetic.onnx"))
    # 100x100 into 64x32: scale 0.32, content 32x32 padded 16 on the left.
    square = np.full((100, 100, 3), 90, np.uint8)

    results = detector.detect_batch([square, square])

    assert len(results) == 2
    for detections in results:
        assert [d.vehicle_class for d in detections] == [VehicleClass.CAR]
        car = detections[0]
        assert (car.x1, car.y1, car.x2, car.y2) == pytest.approx((25.0, 37.5, 75.0, 62.5), abs=1e-3)
        assert car.score == pytest.approx(0.9)


def test_config_reads_model_path_and_threads_from_the_environment() -> None:
    config = DetectorConfig.from_env({"V2X_DETECTOR_MODEL": "/srv/m.onnx", "V2X_DETECTOR_THREADS": "2"})

    assert config.model_path == Path("/srv/m.onnx")
    assert config.resolved_metadata_path == Path("/srv/m.json")
    assert config.intra_op_threads == 2
    assert DetectorConfig.from_env({}).intra_op_threads == 1  # one thread per run, runs side by side


# --- dropping in another model (docs/DETECTOR_MODELS.md) ---------------------------------------------------------


def dropped_in_model(tmp_path: Path, **metadata: Any) -> Path:
    """A YOLOv8-layout model with its own class names, as an operator would bring it, with its metadata json."""
    out = np.zeros((4 + 3, 5), np.float32)  # classes: pedestrian, automobile, lorry
    out[:, 0] = [32, 16, 16, 8, 0.0, 0.62, 0.0]  # an automobile at model pixels (24, 12)-(40, 20)
    out[:, 1] = [32, 16, 16, 8, 0.0, 0.0, 0.55]  # the same vehicle as a lorry
    out[:, 2] = [10, 10, 8, 8, 0.0, 0.45, 0.0]  # a weak automobile elsewhere
    path = tmp_path / "operator-model.onnx"
    constant_output_model(path, out)
    meta = {
        "format": "yolov8",
        "input": {"name": "images", "width": SYNTH_INPUT[0], "height": SYNTH_INPUT[1], "channel_order": "RGB"},
        "class_names": ["pedestrian", "automobile", "lorry"],
        **metadata,
    }
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_a_dropped_in_model_maps_its_classes_and_brings_its_thresholds(tmp_path: Path) -> None:
    path = dropped_in_model(
        tmp_path,
        class_map={"pedestrian": "person", "automobile": "car", "lorry": "truck"},
        score_thresholds={"car": 0.5},
    )
    detector = Detector(DetectorConfig(model_path=path))

    detections = detector.detect(np.full((100, 100, 3), 90, np.uint8))

    # One vehicle (car, truck behind it); the 0.45 automobile is under the model's own car threshold of 0.5.
    assert [(d.vehicle_class, d.model_class, d.alt_class) for d in detections] == [
        (VehicleClass.CAR, "automobile", VehicleClass.TRUCK)
    ]
    assert detector.input_size == SYNTH_INPUT


def test_a_dropped_in_model_without_a_class_map_finds_nothing_it_cannot_name(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="none of the model's classes"):
        Detector(DetectorConfig(model_path=dropped_in_model(tmp_path)))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"class_map": {"automobile": "spaceship"}}, "class_map maps 'automobile'"),
        ({"class_map": {"automobile": "car"}, "score_thresholds": {"car": 1.5}}, r"not in \(0, 1\]"),
        ({"class_map": {"automobile": "car"}, "score_thresholds": {"tram": 0.5}}, "not a vehicle class"),
    ],
)
def test_a_dropped_in_models_bad_metadata_is_refused_clearly(
    tmp_path: Path, metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(DetectorError, match=message):
        Detector(DetectorConfig(model_path=dropped_in_model(tmp_path, **metadata)))
