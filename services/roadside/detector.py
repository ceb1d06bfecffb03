"""Roadside vehicle detector: an ONNX YOLO model run with onnxruntime on the CPU.

``Detector`` loads a model and the metadata json written beside it by ``models/build_yolov3_tiny.py``
(input size, colour order, heads with anchors/masks/strides, class names, sha256 of the ONNX file),
letterboxes BGR frames, runs the session (single frames or micro-batches when the model's batch
dimension is dynamic) and returns ``Detection``s in source-image pixels for the road-user classes
only: car, bus, truck, motorcycle, bicycle, person. COCO's other classes are dropped.

Session settings (``make_session_options``): graph optimisation ``ORT_ENABLE_ALL``, sequential
execution, ``inter_op_num_threads=1``, ``intra_op_num_threads=config.intra_op_threads`` (default 1),
intra-op thread spinning off, CPU execution provider only. One thread per ``session.run`` and several runs
at once (``concurrent_runs``, one per core; the engine's workers) beat two threads per run, one run at a
time, on the 2-core machine: a run on one thread costs ~53 ms of CPU per frame, one on two threads
~61 ms without spinning and ~86 ms with it (the spinning thread burns the core that decoding, tracking
and gRPC need), and the two threads of one run wait for each other whenever either is preempted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from services.roadside.yolo_decode import (
    Candidates,
    DarknetHead,
    FloatArray,
    GflHead,
    IntArray,
    Letterbox,
    OutputLayout,
    decode_darknet_head,
    decode_gfl_level,
    decode_yolov5,
    decode_yolov8,
    infer_flat_layout,
    nms_grouped,
    unletterbox,
)

BgrImage = NDArray[np.uint8]


class VehicleClass(StrEnum):
    """Road users the detector reports."""

    CAR = "car"
    BUS = "bus"
    TRUCK = "truck"
    MOTORCYCLE = "motorcycle"
    BICYCLE = "bicycle"
    PERSON = "person"


# The one mapping from model class names to ours. Darknet's coco.names says "motorbike", the
# Ultralytics exports "motorcycle". Every other class is dropped.
MODEL_CLASS_TO_VEHICLE: Mapping[str, VehicleClass] = MappingProxyType(
    {
        "car": VehicleClass.CAR,
        "bus": VehicleClass.BUS,
        "truck": VehicleClass.TRUCK,
        "motorbike": VehicleClass.MOTORCYCLE,
        "motorcycle": VehicleClass.MOTORCYCLE,
        "bicycle": VehicleClass.BICYCLE,
        "person": VehicleClass.PERSON,
    }
)

# The classes one physical vehicle gets confused between; NMS suppresses across them (DetectorConfig).
MERGED_VEHICLE_CLASSES = frozenset({VehicleClass.CAR, VehicleClass.BUS, VehicleClass.TRUCK, VehicleClass.MOTORCYCLE})

# Score = objectness * class probability. On the Darknet sample photos every real vehicle scores >= 0.54; at the
# service's 480 x 352 input (SERVICE_INPUT_SIZE) the dog photo's litter bin scored 0.31 as a car, and of a 180-s
# scored simulator run's detections (8:00, 4 cameras) 0.30..0.35 held 14 of 7,365 matched ones and 1 of 17
# unmatched: vehicles start at 0.35. Pedestrians feed "pedestrian on road" events, so they need that much too.
DEFAULT_SCORE_THRESHOLDS: Mapping[VehicleClass, float] = MappingProxyType(
    {
        VehicleClass.CAR: 0.35,
        VehicleClass.BUS: 0.35,
        VehicleClass.TRUCK: 0.35,
        VehicleClass.MOTORCYCLE: 0.35,
        VehicleClass.BICYCLE: 0.3,
        VehicleClass.PERSON: 0.35,
    }
)

# NanoDet-g (models/MODEL_CARD_nanodet_g.md): on the simulator's held-out frames recall 0.93 against YOLOv3-tiny's 0.82
# at 0.8x its CPU, and in scored runs it finds the cars of a jam's queue that YOLOv3-tiny misses (1-2 of ~12), so that
# make run's jam reaches the police. YOLOv3-tiny (models/build/yolov3-tiny.onnx, and its int8 version) stays
# selectable with V2X_DETECTOR_MODEL.
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[2] / "models" / "build" / "nanodet-g.onnx"

# The service's input size: the cameras' 4:3 frames at the pixel cost of YOLOv3-tiny's 416 x 416 square (480 x 352
# is 0.98 of its pixels), whose letterbox spent a quarter of them on padding. Measured on the simulator's frames
# (SUMO traffic at 8:00 with every scenario, 4 cameras, 724 frames, int8): recall at IoU 0.5 0.38 -> 0.56, cars
# parked at the kerb 0.28 -> 0.54, precision 0.996 (with parked cars on the pavement, as the simulator had them
# before: 0.53 -> 0.69, precision 0.997 -> 0.998).
SERVICE_INPUT_SIZE = (480, 352)


def service_input_size(model_path: Path) -> tuple[int, int]:
    """The size the service letterboxes frames to for a model: its metadata's ``service_input_size`` when it states
    one (a size measured for that model on the cameras' frames), else SERVICE_INPUT_SIZE. Unreadable metadata gives
    SERVICE_INPUT_SIZE here; loading the model reports it."""
    try:
        metadata = json.loads(model_path.with_suffix(".json").read_text(encoding="utf-8"))
        w, h = metadata["service_input_size"]
        return int(w), int(h)
    except (OSError, ValueError, KeyError, TypeError):
        return SERVICE_INPUT_SIZE


class DetectorError(RuntimeError):
    """The model or its metadata cannot be used."""


def parse_input_size(text: str) -> tuple[int, int]:
    """``"480x352"`` -> (480, 352)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DetectorError(f"input size {text!r} is not WIDTHxHEIGHT, e.g. 480x352") from None
    if w <= 0 or h <= 0:
        raise DetectorError(f"input size {text!r} must be positive")
    return w, h


# CPU features with an 8-bit dot product (x86 VNNI or AMX, ARM's dot product): onnxruntime's int8 convolutions beat
# fp32 only with one of these. With AVX2 alone the int8 model cost what fp32 costs (AMD EPYC, 2026-12-07: 63.6 vs
# 61.2 ms of CPU per 480x352 frame; through the service 0.98-1.28x fp32's frames/s), so there "auto" keeps fp32, as
# issue 19 asks of an int8 model that misses 1.8x.
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of a /proc/cpuinfo text (x86 ``flags``, ARM ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def resolve_precision(precision: str, model_path: Path, cpuinfo: str | None = None) -> tuple[str, str]:
    """The precision to run and why. ``auto`` becomes ``int8`` only where both hold: the CPU has an 8-bit dot product
    (elsewhere int8 costs what fp32 costs) and the model's int8 version (``model_for_precision``, with its ``.json``)
    is beside it; NanoDet-g has none, and loading a missing file would stop the service. Otherwise ``fp32``, also
    where /proc/cpuinfo cannot be read. ``fp32`` and ``int8`` stay as they are."""
    if precision != "auto":
        return precision, "as configured"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    dot_product = sorted(cpu_flags(cpuinfo) & INT8_DOT_PRODUCT_FLAGS)
    if not dot_product:
        return "fp32", "this CPU has no 8-bit dot product (VNNI, AMX or dotprod), where int8 is no faster"
    missing = int8_missing(model_path)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return "fp32", f"the CPU has {dot_product[0]} but {' and '.join(missing)} {verb} not beside {model_path.name}"
    int8_name = model_for_precision(model_path, "int8").name
    return "int8", f"the CPU has {dot_product[0]} and {int8_name} is beside the model"


def measurable_precisions(model_path: Path) -> tuple[str, ...]:
    """The precisions a benchmark of the model measures by default: fp32, and int8 when the model has an int8
    version (NanoDet-g has none)."""
    return ("fp32",) if int8_missing(model_path) else ("fp32", "int8")


def int8_missing(model_path: Path) -> list[str]:
    """The files of the model's int8 version (``model_for_precision``) not beside it: [] when it has one."""
    int8_model = model_for_precision(model_path, "int8")
    return [p.name for p in (int8_model, int8_model.with_suffix(".json")) if not p.is_file()]


def model_for_precision(model_path: Path, precision: str) -> Path:
    """The model file of a precision: ``fp32`` the model itself, ``int8`` the ``<stem>-int8.onnx`` beside it that
    ``models/quantize_detector.py`` writes (with its own ``.json``)."""
    if precision == "fp32":
        return model_path
    if precision == "int8":
        return model_path.with_name(f"{model_path.stem}-int8{model_path.suffix}")
    raise DetectorError(f"unknown detector precision {precision!r}: fp32 or int8")


@dataclass(frozen=True, slots=True)
class Detection:
    """One road user in source-image pixels (``x1 <= x2``, ``y1 <= y2``, clipped to the image)."""

    vehicle_class: VehicleClass
    score: float
    x1: float
    y1: float
    x2: float
    y2: float
    model_class: str  # the model's own class name, e.g. "motorbike"
    # The best other vehicle class whose box on the same object was suppressed (a pickup as car 0.64 with truck
    # 0.54 behind it); None when no other class scored on that object.
    alt_class: VehicleClass | None = None
    alt_score: float = 0.0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    model_path: Path = DEFAULT_MODEL_PATH
    metadata_path: Path | None = None  # default: model_path with a .json suffix
    intra_op_threads: int = 1  # per session.run; 0 lets onnxruntime pick (one per physical core)
    spinning: bool = False  # intra-op threads spin while waiting for work (only with intra_op_threads != 1)
    score_thresholds: Mapping[VehicleClass, float] = field(default_factory=lambda: DEFAULT_SCORE_THRESHOLDS)
    nms_iou: float = 0.45
    # Suppress across car, bus, truck and motorcycle (one box per vehicle, the best class kept, the runner-up as
    # Detection.alt_class); False: per-class NMS only, as Darknet does.
    merge_vehicle_classes: bool = True
    max_detections: int = 100
    max_batch: int = 8  # frames per session run in detect_batch
    verify_sha256: bool = True  # check the ONNX file against the metadata's onnx_sha256
    # The size (w, h) frames are letterboxed to; None: the metadata's (YOLOv3-tiny's cfg: 416 x 416). A model whose
    # height and width are symbolic (models/darknet_to_onnx.py) runs at any multiple of its largest stride.
    input_size: tuple[int, int] | None = None

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> DetectorConfig:
        """``V2X_DETECTOR_MODEL`` (path to the .onnx), ``V2X_DETECTOR_THREADS`` and ``V2X_DETECTOR_INPUT_SIZE``
        (``WxH``, default ``service_input_size`` of the model; ``model``: the metadata's input size)."""
        defaults = DetectorConfig()
        model_path = Path(environ.get("V2X_DETECTOR_MODEL", str(defaults.model_path)))
        size = environ.get("V2X_DETECTOR_INPUT_SIZE", "").strip()
        return DetectorConfig(
            model_path=model_path,
            intra_op_threads=int(environ.get("V2X_DETECTOR_THREADS", str(defaults.intra_op_threads))),
            input_size=None if size == "model" else parse_input_size(size) if size else service_input_size(model_path),
        )

    @property
    def resolved_metadata_path(self) -> Path:
        return self.metadata_path or self.model_path.with_suffix(".json")

    @property
    def concurrent_runs(self) -> int:
        """How many ``session.run`` calls may go at once without oversubscribing the cores."""
        cores = os.cpu_count() or 1
        return max(1, cores // (self.intra_op_threads or cores))


def make_session_options(intra_op_threads: int, spinning: bool = False) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _ModelSpec:
    layout: OutputLayout | None  # None: tell YOLOv5 from YOLOv8 by the output shape
    input_name: str
    input_size: tuple[int, int]  # (w, h)
    rgb: bool
    scale: float
    pad_value: float
    class_names: tuple[str, ...]
    heads: tuple[DarknetHead, ...]
    gfl_heads: tuple[GflHead, ...] = ()
    reg_max: int = 0

    @property
    def max_stride(self) -> int:
        return max([h.stride for h in self.heads] + [h.stride for h in self.gfl_heads], default=32)

    @property
    def output_names(self) -> list[str]:
        if self.layout is OutputLayout.DARKNET:
            return [h.output for h in self.heads]
        if self.layout is OutputLayout.GFL:
            return [name for h in self.gfl_heads for name in (h.scores_output, h.distributions_output)]
        return []


def _read_spec(metadata: Mapping[str, Any], session: ort.InferenceSession) -> _ModelSpec:
    model_input = session.get_inputs()[0]
    meta_input: Mapping[str, Any] = metadata.get("input", {})
    shape = model_input.shape
    width = int(meta_input.get("width", shape[3]))
    height = int(meta_input.get("height", shape[2]))
    class_names = tuple(str(n) for n in metadata["class_names"])
    fmt = str(metadata.get("format", "auto"))
    layout = None if fmt == "auto" else OutputLayout(fmt)
    heads = (
        tuple(
            DarknetHead(
                output=str(h["output"]),
                anchors=tuple((float(a[0]), float(a[1])) for a in h["anchors"]),
                stride=int(h["stride"]),
            )
            for h in metadata.get("heads", [])
        )
        if layout is OutputLayout.DARKNET
        else ()
    )
    gfl_heads = (
        tuple(
            GflHead(str(h["scores"]), str(h["distributions"]), int(h["stride"])) for h in metadata.get("heads", [])
        )
        if layout is OutputLayout.GFL
        else ()
    )
    if layout in (OutputLayout.DARKNET, OutputLayout.GFL):
        outputs = {o.name for o in session.get_outputs()}
        wanted = [h.output for h in heads] + [n for h in gfl_heads for n in (h.scores_output, h.distributions_output)]
        missing = [name for name in wanted if name not in outputs]
        if not wanted or missing:
            raise DetectorError(f"{layout.value} metadata lists no heads or unknown outputs {missing}")
    if layout is OutputLayout.GFL and int(metadata.get("reg_max", 0)) <= 0:
        raise DetectorError("nanodet_gfl metadata needs reg_max (the distance bins per side, minus one)")
    return _ModelSpec(
        layout=layout,
        input_name=str(meta_input.get("name", model_input.name)),
        input_size=(width, height),
        rgb=str(meta_input.get("channel_order", "RGB")).upper() == "RGB",
        scale=float(meta_input.get("scale", 1 / 255)),
        pad_value=float(meta_input.get("pad_value", 114 / 255)),
        class_names=class_names,
        heads=heads,
        gfl_heads=gfl_heads,
        reg_max=int(metadata.get("reg_max", 0)),
    )


def _resized(spec: _ModelSpec, size: tuple[int, int], session: ort.InferenceSession) -> _ModelSpec:
    """The spec at another input size: only for a model whose height and width are symbolic, and a multiple of its
    largest stride (the grid must divide the input)."""
    shape = session.get_inputs()[0].shape
    if isinstance(shape[2], int) or isinstance(shape[3], int):
        raise DetectorError(
            f"the model's input is fixed at {shape[3]}x{shape[2]}, so it cannot run at {size[0]}x{size[1]}: "
            "rebuild it with `make models` (height and width symbolic) or set V2X_DETECTOR_INPUT_SIZE=model"
        )
    stride = spec.max_stride
    if size[0] % stride or size[1] % stride:
        raise DetectorError(f"input size {size[0]}x{size[1]} is not a multiple of the model's stride {stride}")
    return replace(spec, input_size=size)


def _class_map(metadata: Mapping[str, Any]) -> Mapping[str, VehicleClass]:
    """MODEL_CLASS_TO_VEHICLE, extended or overridden by the metadata's ``class_map`` (model class name -> one of
    car, bus, truck, motorcycle, bicycle, person; null drops a class): how another model's names map to ours."""
    extra: Mapping[str, str | None] = metadata.get("class_map") or {}
    out = dict(MODEL_CLASS_TO_VEHICLE)
    for name, target in extra.items():
        if target is None:
            out.pop(name, None)
            continue
        try:
            out[str(name)] = VehicleClass(target)
        except ValueError:
            raise DetectorError(
                f"class_map maps {name!r} to {target!r}; use one of {', '.join(c.value for c in VehicleClass)}"
            ) from None
    return MappingProxyType(out)


def _thresholds(
    metadata: Mapping[str, Any], configured: Mapping[VehicleClass, float]
) -> Mapping[VehicleClass, float]:
    """Score thresholds: the configured ones when they were set; else the defaults, overridden per class by the
    metadata's ``score_thresholds`` (vehicle class -> score), which a model's card calibrates for that model."""
    if configured is not DEFAULT_SCORE_THRESHOLDS:
        return configured
    given: Mapping[str, float] = metadata.get("score_thresholds") or {}
    out = dict(DEFAULT_SCORE_THRESHOLDS)
    for name, value in given.items():
        try:
            vehicle_class = VehicleClass(name)
        except ValueError:
            raise DetectorError(f"score_thresholds names {name!r}, not a vehicle class") from None
        if not 0.0 < float(value) <= 1.0:
            raise DetectorError(f"score_thresholds[{name!r}] = {value} is not in (0, 1]")
        out[vehicle_class] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class CameraFloors:
    """A model's defaults for the camera floors a camera's configuration leaves unset (0): analytics ignores
    detections scoring under ``min_detection_confidence`` and drops events under ``min_event_confidence`` (an
    event's confidence comes from its track's scores). They belong to the model because score scales differ:
    YOLOv3-tiny's vehicles score 0.54 and up on the sample photos, NanoDet-g's (GFL quality scores) 0.3-0.45 on the
    simulator's. A model's metadata states its own as ``camera_thresholds``; these are YOLOv3-tiny's."""

    min_detection_confidence: float = 0.35
    min_event_confidence: float = 0.5


DEFAULT_CAMERA_FLOORS = CameraFloors()


def camera_floors(metadata: Mapping[str, Any]) -> CameraFloors:
    """The metadata's ``camera_thresholds`` over DEFAULT_CAMERA_FLOORS, each a score in (0, 1]."""
    given: Mapping[str, Any] = metadata.get("camera_thresholds") or {}
    names = CameraFloors.__dataclass_fields__.keys()
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise DetectorError(f"camera_thresholds names {unknown}; it takes {', '.join(names)}")
    values: dict[str, float] = {}
    for name, value in given.items():
        if not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
            raise DetectorError(f"camera_thresholds[{name!r}] = {value!r} is not a score in (0, 1]")
        values[name] = float(value)
    return replace(DEFAULT_CAMERA_FLOORS, **values)


class Detector:
    """Runs a YOLO ONNX model on BGR frames. Not thread-safe to reconfigure; ``detect`` may be shared."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        model_path = self.config.model_path
        metadata_path = self.config.resolved_metadata_path
        if not model_path.is_file() or not metadata_path.is_file():
            raise DetectorError(
                f"model {model_path} or metadata {metadata_path} missing; build it with `make models`"
            )
        metadata: dict[str, Any] = json.loads(metadata_path.read_text())
        expected_sha = metadata.get("onnx_sha256")
        if self.config.verify_sha256 and expected_sha and _sha256_file(model_path) != expected_sha:
            raise DetectorError(f"{model_path} does not match onnx_sha256 in {metadata_path}; rebuild it")
        self.session_options = make_session_options(self.config.intra_op_threads, self.config.spinning)
        self.session = ort.InferenceSession(
            str(model_path), sess_options=self.session_options, providers=["CPUExecutionProvider"]
        )
        self.spec = _read_spec(metadata, self.session)
        if self.config.input_size is not None and self.config.input_size != self.spec.input_size:
            self.spec = _resized(self.spec, self.config.input_size, self.session)
        self.class_map = _class_map(metadata)
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.dynamic_batch = not isinstance(batch_dim, int) or batch_dim <= 0
        self._thresholds = self._class_thresholds(_thresholds(metadata, self.config.score_thresholds))
        self.camera_floors: CameraFloors = camera_floors(metadata)
        self._class_groups = self._nms_groups(self.config.merge_vehicle_classes)
        self._output_names = self.spec.output_names or [self.session.get_outputs()[0].name]

    def _class_thresholds(self, per_vehicle_class: Mapping[VehicleClass, float]) -> FloatArray:
        thresholds = np.full(len(self.spec.class_names), np.inf, dtype=np.float32)
        for index, name in enumerate(self.spec.class_names):
            vehicle_class = self.class_map.get(name)
            if vehicle_class is not None and vehicle_class in per_vehicle_class:
                thresholds[index] = per_vehicle_class[vehicle_class]
        if not np.isfinite(thresholds).any():
            raise DetectorError("none of the model's classes maps to a vehicle class")
        return thresholds

    def _nms_groups(self, merge: bool) -> IntArray:
        """Per model class its NMS group: its own index, or one shared group for the merged vehicle classes."""
        groups = np.arange(len(self.spec.class_names), dtype=np.int64)
        if merge:
            for index, name in enumerate(self.spec.class_names):
                if self.class_map.get(name) in MERGED_VEHICLE_CLASSES:
                    groups[index] = len(self.spec.class_names)
        return groups

    @property
    def input_size(self) -> tuple[int, int]:
        return self.spec.input_size

    @property
    def concurrent_runs(self) -> int:
        return self.config.concurrent_runs

    def preprocess(self, bgr_image: BgrImage) -> tuple[FloatArray, Letterbox]:
        """Letterbox to the model size, BGR→RGB if the model wants it, scale; returns ``[3, H, W]``."""
        target_w, target_h = self.spec.input_size
        tensor: FloatArray = np.empty((3, target_h, target_w), dtype=np.float32)
        return tensor, self.preprocess_into(bgr_image, tensor)

    def preprocess_into(self, bgr_image: BgrImage, out: FloatArray) -> Letterbox:
        """``preprocess`` written into ``out`` (``[3, H, W]``, e.g. one image of a batch): no further copy."""
        if bgr_image.ndim != 3 or bgr_image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr_image.shape}")
        height, width = bgr_image.shape[:2]
        target_w, target_h = self.spec.input_size
        box = Letterbox.fit((width, height), (target_w, target_h))
        new_w, new_h = box.resized_size
        left, top = int(box.pad[0]), int(box.pad[1])
        resized = cv2.resize(bgr_image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        channels = resized.transpose(2, 0, 1)
        if self.spec.rgb:
            channels = channels[::-1]
        pad = self.spec.pad_value
        out[:, :top] = pad
        out[:, top + new_h :] = pad
        out[:, top : top + new_h, :left] = pad
        out[:, top : top + new_h, left + new_w :] = pad
        # One pass from the uint8 pixels straight into the tensor: half the time of transpose-multiply-copy.
        np.multiply(channels, np.float32(self.spec.scale), out=out[:, top : top + new_h, left : left + new_w])
        return box

    def detect(self, bgr_image: BgrImage) -> list[Detection]:
        return self.detect_batch([bgr_image])[0]

    def detect_batch(self, bgr_images: Sequence[BgrImage]) -> list[list[Detection]]:
        """Detect on several frames, ``max_batch`` per session run (one by one for a fixed-batch model)."""
        return [self.select(candidates, box) for candidates, box in self.candidates_batch(bgr_images)]

    def candidates_batch(self, bgr_images: Sequence[BgrImage]) -> list[tuple[Candidates, Letterbox]]:
        """The decoded boxes of each frame at this detector's score thresholds, before NMS, in model-input pixels,
        with the frame's letterbox: ``select`` turns them into detections. Kept apart so that an offline replay
        (load/replay_analytics.py) can run the model once at a low floor and try NMS and floors on its output."""
        step = self.config.max_batch if self.dynamic_batch else 1
        target_w, target_h = self.spec.input_size
        results: list[tuple[Candidates, Letterbox]] = []
        for start in range(0, len(bgr_images), step):
            chunk = bgr_images[start : start + step]
            batch: FloatArray = np.empty((len(chunk), 3, target_h, target_w), dtype=np.float32)
            boxes = [self.preprocess_into(image, batch[i]) for i, image in enumerate(chunk)]
            outputs = self.session.run(self._output_names, {self.spec.input_name: batch})
            for index, box in enumerate(boxes):
                per_image = [np.asarray(out[index], dtype=np.float32) for out in outputs]
                results.append((self._decode(per_image), box))
        return results

    def _decode(self, outputs: Sequence[FloatArray]) -> Candidates:
        if self.spec.layout is OutputLayout.DARKNET:
            return Candidates.concat(
                [
                    decode_darknet_head(raw, head, self.spec.input_size, self._thresholds)
                    for raw, head in zip(outputs, self.spec.heads, strict=True)
                ]
            )
        if self.spec.layout is OutputLayout.GFL:
            return Candidates.concat(
                [
                    decode_gfl_level(
                        outputs[2 * i], outputs[2 * i + 1], head.stride, self.spec.input_size, self.spec.reg_max,
                        self._thresholds,
                    )
                    for i, head in enumerate(self.spec.gfl_heads)
                ]
            )
        raw = outputs[0]
        layout = self.spec.layout or infer_flat_layout(raw.shape, len(self.spec.class_names))
        if layout is OutputLayout.YOLOV8:
            return decode_yolov8(raw, self._thresholds)
        return decode_yolov5(raw, self._thresholds)

    def select(self, candidates: Candidates, box: Letterbox) -> list[Detection]:
        """Detections in source-image pixels from decoded candidates: those at this detector's score thresholds
        (decoding already applied them, unless the candidates came from a detector with lower ones), then NMS."""
        candidates = candidates.take(candidates.scores >= self._thresholds[candidates.class_ids])
        result = nms_grouped(candidates, self.config.nms_iou, self._class_groups, self.config.max_detections)
        kept = result.candidates
        boxes = unletterbox(kept.boxes, box)
        detections: list[Detection] = []
        for (x1, y1, x2, y2), score, class_id, alt_id, alt_score in zip(
            boxes.tolist(),
            kept.scores.tolist(),
            kept.class_ids.tolist(),
            result.alt_class_ids.tolist(),
            result.alt_scores.tolist(),
            strict=True,
        ):
            if x2 <= x1 or y2 <= y1:
                continue  # entirely in the letterbox padding
            name = self.spec.class_names[class_id]
            alt_class = self.class_map[self.spec.class_names[alt_id]] if alt_id >= 0 else None
            detections.append(
                Detection(
                    self.class_map[name],
                    float(score),
                    x1,
                    y1,
                    x2,
                    y2,
                    model_class=name,
                    alt_class=alt_class,
                    alt_score=float(alt_score) if alt_class is not None else 0.0,
                )
            )
        return detections
