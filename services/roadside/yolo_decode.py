"""Decode raw YOLO outputs into boxes, suppress duplicates and map boxes back to the source image.

Pure numpy, no model runtime. Supported output layouts:

* Darknet YOLO heads ``[A * (5 + C), H, W]`` per image (raw logits): ``sigmoid`` for x/y/objectness/
  classes, ``exp(tw) * anchor`` for the size, grid cell offsets scaled to the input size.
* YOLOv8-style ``[4 + C, N]``: ``cx, cy, w, h`` in input pixels followed by class scores (already
  probabilities, no objectness).
* YOLOv5-style ``[N, 5 + C]``: ``cx, cy, w, h, objectness`` followed by class scores (probabilities).
* NanoDet's GFL head, per level: class scores ``[N, C]`` (probabilities) and box-side distance distributions
  ``[N, 4 * (reg_max + 1)]`` (logits) for the ``N`` points of the level's grid, row by row. Each side's distance is
  the expectation of its softmax over ``0..reg_max`` strides, measured from the cell's centre.

Every decoder keeps, per candidate box, its best class only, and drops it unless the score reaches that
class's threshold (``thresholds[class_id]``; ``inf`` drops a class entirely). Boxes are ``x1, y1, x2,
y2`` in model-input pixels until ``unletterbox`` maps them to the source image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

# exp(tw) overflows float32 past ~88; real boxes never need more than a few.
_MAX_LOG_SCALE = 10.0


class OutputLayout(StrEnum):
    DARKNET = "darknet_yolo"  # [A*(5+C), H, W] per head
    YOLOV8 = "yolov8"  # [4+C, N]
    YOLOV5 = "yolov5"  # [N, 5+C]
    GFL = "nanodet_gfl"  # per level [N, C] scores + [N, 4*(reg_max+1)] distance distributions


@dataclass(frozen=True, slots=True)
class Candidates:
    """Scored boxes for one image: ``boxes`` (K, 4) x1y1x2y2, ``scores`` (K,), ``class_ids`` (K,)."""

    boxes: FloatArray
    scores: FloatArray
    class_ids: IntArray

    @staticmethod
    def empty() -> Candidates:
        return Candidates(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: NDArray[np.bool_] | IntArray) -> Candidates:
        return Candidates(self.boxes[index], self.scores[index], self.class_ids[index])

    @staticmethod
    def concat(parts: Sequence[Candidates]) -> Candidates:
        if not parts:
            return Candidates.empty()
        return Candidates(
            np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.class_ids for p in parts]).astype(np.int64, copy=False),
        )


@dataclass(frozen=True, slots=True)
class DarknetHead:
    """Decoding parameters of one Darknet head: its masked anchors (w, h) in input pixels."""

    output: str
    anchors: tuple[tuple[float, float], ...]
    stride: int


@dataclass(frozen=True, slots=True)
class GflHead:
    """One level of a GFL (NanoDet) head: the outputs holding its class scores and its distance distributions."""

    scores_output: str
    distributions_output: str
    stride: int


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source image of ``source_size`` (w, h) was scaled by ``scale`` and padded by ``pad``."""

    source_size: tuple[int, int]
    scale: float
    pad: tuple[float, float]  # (left, top) in model-input pixels

    @staticmethod
    def fit(source_size: tuple[int, int], target_size: tuple[int, int]) -> Letterbox:
        """Aspect-preserving fit of ``source_size`` into ``target_size``, centred (Darknet's letterbox)."""
        sw, sh = source_size
        tw, th = target_size
        if sw <= 0 or sh <= 0:
            raise ValueError(f"empty image {source_size}")
        scale = min(tw / sw, th / sh)
        new_w, new_h = round(sw * scale), round(sh * scale)
        return Letterbox(source_size, scale, ((tw - new_w) // 2, (th - new_h) // 2))

    @property
    def resized_size(self) -> tuple[int, int]:
        return round(self.source_size[0] * self.scale), round(self.source_size[1] * self.scale)


def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic function without overflow warnings for large negative logits."""
    out: FloatArray = (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)
    return out


def _xywh_to_xyxy(cx: FloatArray, cy: FloatArray, w: FloatArray, h: FloatArray) -> FloatArray:
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).astype(np.float32)


def _best_class(boxes: FloatArray, class_scores: FloatArray, thresholds: FloatArray) -> Candidates:
    """Keep each box's best class if it reaches that class's threshold. ``class_scores`` is (K, C)."""
    if class_scores.shape[1] != thresholds.shape[0]:
        raise ValueError(f"{class_scores.shape[1]} class scores but {thresholds.shape[0]} thresholds")
    class_ids = np.argmax(class_scores, axis=1).astype(np.int64)
    scores = np.take_along_axis(class_scores, class_ids[:, None], axis=1)[:, 0].astype(np.float32)
    keep = scores >= thresholds[class_ids]
    return Candidates(boxes[keep], scores[keep], class_ids[keep])


def decode_darknet_head(
    raw: FloatArray,
    head: DarknetHead,
    input_size: tuple[int, int],
    thresholds: FloatArray,
) -> Candidates:
    """Decode one image's raw head tensor ``[A * (5 + C), H, W]`` (logits) into candidates."""
    num_anchors = len(head.anchors)
    channels, grid_h, grid_w = raw.shape
    num_classes = thresholds.shape[0]
    if channels != num_anchors * (5 + num_classes):
        raise ValueError(f"head {head.output}: {channels} channels != {num_anchors} * (5 + {num_classes})")
    t = raw.reshape(num_anchors, 5 + num_classes, grid_h, grid_w)
    objectness = sigmoid(t[:, 4])  # (A, H, W)
    # score = obj * cls <= obj, so cells below the smallest threshold can be skipped before the rest.
    a_idx, gy, gx = np.nonzero(objectness >= float(np.min(thresholds)))
    if a_idx.size == 0:
        return Candidates.empty()
    cells = t[a_idx, :, gy, gx]  # (K, 5 + C)
    in_w, in_h = input_size
    anchors = np.asarray(head.anchors, dtype=np.float32)[a_idx]  # (K, 2)
    cx = (gx + sigmoid(cells[:, 0])) * (in_w / grid_w)
    cy = (gy + sigmoid(cells[:, 1])) * (in_h / grid_h)
    w = np.exp(np.minimum(cells[:, 2], _MAX_LOG_SCALE)) * anchors[:, 0]
    h = np.exp(np.minimum(cells[:, 3], _MAX_LOG_SCALE)) * anchors[:, 1]
    boxes = _xywh_to_xyxy(cx.astype(np.float32), cy.astype(np.float32), w, h)
    class_scores = objectness[a_idx, gy, gx][:, None] * sigmoid(cells[:, 5:])
    return _best_class(boxes, class_scores, thresholds)


def decode_yolov8(raw: FloatArray, thresholds: FloatArray) -> Candidates:
    """Decode one image's ``[4 + C, N]`` output (boxes in input pixels, class probabilities)."""
    if raw.shape[0] != 4 + thresholds.shape[0]:
        raise ValueError(f"yolov8 layout: {raw.shape[0]} rows != 4 + {thresholds.shape[0]} classes")
    boxes = _xywh_to_xyxy(raw[0], raw[1], raw[2], raw[3])
    return _best_class(boxes, np.ascontiguousarray(raw[4:].T), thresholds)


def decode_yolov5(raw: FloatArray, thresholds: FloatArray) -> Candidates:
    """Decode one image's ``[N, 5 + C]`` output (boxes in input pixels, objectness, class probabilities)."""
    if raw.shape[1] != 5 + thresholds.shape[0]:
        raise ValueError(f"yolov5 layout: {raw.shape[1]} columns != 5 + {thresholds.shape[0]} classes")
    raw = raw[raw[:, 4] >= float(np.min(thresholds))]
    boxes = _xywh_to_xyxy(raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3])
    return _best_class(boxes, raw[:, 4:5] * raw[:, 5:], thresholds)


def decode_gfl_level(
    scores: FloatArray,
    distributions: FloatArray,
    stride: int,
    input_size: tuple[int, int],
    reg_max: int,
    thresholds: FloatArray,
) -> Candidates:
    """Decode one image's level of a GFL head: ``scores`` ``[N, C]``, ``distributions`` ``[N, 4 * (reg_max + 1)]``
    for the ``N = (H / stride) * (W / stride)`` grid points, row-major. The point of cell (gx, gy) is its centre,
    ``((gx + 0.5) * stride, (gy + 0.5) * stride)``; the box's left, top, right and bottom sides lie at the expected
    distance (in strides) of each side's softmax distribution from it."""
    in_w, in_h = input_size
    grid_w, grid_h = in_w // stride, in_h // stride
    bins = reg_max + 1
    if scores.shape[0] != grid_w * grid_h or distributions.shape != (scores.shape[0], 4 * bins):
        raise ValueError(
            f"GFL level stride {stride}: scores {scores.shape} and distributions {distributions.shape} do not fit "
            f"a {grid_w}x{grid_h} grid with reg_max {reg_max}"
        )
    if scores.shape[1] != thresholds.shape[0]:
        raise ValueError(f"{scores.shape[1]} class scores but {thresholds.shape[0]} thresholds")
    (idx,) = np.nonzero(np.max(scores, axis=1) >= float(np.min(thresholds)))
    if idx.size == 0:
        return Candidates.empty()
    gy, gx = np.divmod(idx, grid_w)
    logits = distributions[idx].reshape(-1, 4, bins).astype(np.float32)
    logits = logits - np.max(logits, axis=2, keepdims=True)
    weights = np.exp(logits)
    expected = (weights @ np.arange(bins, dtype=np.float32)) / np.sum(weights, axis=2)  # (K, 4) in strides
    sides = expected * np.float32(stride)
    cx = ((gx + 0.5) * stride).astype(np.float32)
    cy = ((gy + 0.5) * stride).astype(np.float32)
    boxes = np.stack([cx - sides[:, 0], cy - sides[:, 1], cx + sides[:, 2], cy + sides[:, 3]], axis=-1)
    return _best_class(boxes.astype(np.float32), scores[idx].astype(np.float32, copy=False), thresholds)


def infer_flat_layout(shape: tuple[int, ...], num_classes: int) -> OutputLayout:
    """Tell ``[4 + C, N]`` (YOLOv8) from ``[N, 5 + C]`` (YOLOv5) for one image's 2-D output."""
    rows, cols = shape
    if rows == 4 + num_classes and cols != 4 + num_classes:
        return OutputLayout.YOLOV8
    if cols == 5 + num_classes and rows != 5 + num_classes:
        return OutputLayout.YOLOV5
    raise ValueError(f"cannot tell the layout of an output {shape} with {num_classes} classes")


@dataclass(frozen=True, slots=True)
class Kept:
    """What NMS kept (sorted by descending score) and, per kept box, the best other class among the boxes it
    suppressed (``alt_class_ids`` -1 and ``alt_scores`` 0 where there was none)."""

    candidates: Candidates
    alt_class_ids: IntArray
    alt_scores: FloatArray


def nms_grouped(
    candidates: Candidates,
    iou_threshold: float,
    class_groups: IntArray | None = None,
    max_detections: int = 300,
) -> Kept:
    """Greedy non-maximum suppression within groups of classes; ``class_groups[class_id]`` is a class's group
    (default: every class its own group, i.e. per-class NMS). A box suppresses overlapping boxes of any class of
    its group, keeps its own (best-scoring) class and records the best suppressed other class as the alternative.
    """
    n = len(candidates)
    if n == 0:
        return Kept(candidates, np.zeros((0,), np.int64), np.zeros((0,), np.float32))
    groups = candidates.class_ids if class_groups is None else class_groups[candidates.class_ids]
    # Offsetting each group into its own coordinate range makes one pass act per group.
    span = float(np.max(candidates.boxes)) - float(np.min(candidates.boxes)) + 1.0
    boxes = candidates.boxes.astype(np.float64) + (groups * span)[:, None]
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-candidates.scores, kind="stable")
    keep: list[int] = []
    alt_ids: list[int] = []
    alt_scores: list[float] = []
    while order.size and len(keep) < max_detections:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        suppressed = rest[iou > iou_threshold]
        # `order` is by descending score, so the first suppressed box of another class is the best one.
        other = suppressed[candidates.class_ids[suppressed] != candidates.class_ids[i]]
        alt_ids.append(int(candidates.class_ids[other[0]]) if other.size else -1)
        alt_scores.append(float(candidates.scores[other[0]]) if other.size else 0.0)
        order = rest[iou <= iou_threshold]
    return Kept(
        candidates.take(np.asarray(keep, dtype=np.int64)),
        np.asarray(alt_ids, dtype=np.int64),
        np.asarray(alt_scores, dtype=np.float32),
    )


def nms_per_class(candidates: Candidates, iou_threshold: float, max_detections: int = 300) -> Candidates:
    """Greedy non-maximum suppression within each class; result sorted by descending score."""
    return nms_grouped(candidates, iou_threshold, None, max_detections).candidates


def unletterbox(boxes: FloatArray, letterbox: Letterbox) -> FloatArray:
    """Map x1y1x2y2 boxes from model-input pixels to source-image pixels, clipped to the image."""
    out = boxes.astype(np.float32, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - letterbox.pad[0]) / letterbox.scale
    out[:, [1, 3]] = (out[:, [1, 3]] - letterbox.pad[1]) / letterbox.scale
    w, h = letterbox.source_size
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out
