"""YOLO output decoding, non-maximum suppression and letterbox geometry, on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.roadside.yolo_decode import (
    Candidates,
    DarknetHead,
    FloatArray,
    Letterbox,
    OutputLayout,
    decode_darknet_head,
    decode_yolov5,
    decode_yolov8,
    infer_flat_layout,
    nms_grouped,
    nms_per_class,
    unletterbox,
)

NUM_CLASSES = 3  # person, car, dog in these tests
ALL_CLASSES = np.full(NUM_CLASSES, 0.25, dtype=np.float32)
LOW = -20.0  # a logit whose sigmoid is ~0


def thresholds(person: float = 0.25, car: float = 0.25, dog: float = math.inf) -> FloatArray:
    return np.array([person, car, dog], dtype=np.float32)


def test_darknet_head_decodes_cell_offset_anchor_size_and_score() -> None:
    head = DarknetHead(output="head", anchors=((10.0, 14.0), (23.0, 27.0), (37.0, 58.0)), stride=32)
    raw = np.full((3 * (5 + NUM_CLASSES), 13, 13), LOW, dtype=np.float32)
    cell = raw.reshape(3, 5 + NUM_CLASSES, 13, 13)[:, :, 4, 6]  # anchors x channels at row 4, col 6
    cell[1, 0:4] = [0.0, 0.0, math.log(2.0), 0.0]  # x, y offsets 0.5; width 2 * anchor; height 1 * anchor
    cell[1, 4] = 20.0  # objectness ~1
    cell[1, 5 + 1] = 20.0  # class 1 (car) ~1

    found = decode_darknet_head(raw, head, (416, 416), ALL_CLASSES)

    assert len(found) == 1
    cx, cy, w, h = (6 + 0.5) * 32, (4 + 0.5) * 32, 2 * 23.0, 27.0
    np.testing.assert_allclose(found.boxes[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)
    assert found.class_ids.tolist() == [1]
    assert found.scores[0] == pytest.approx(1.0, abs=1e-6)


def test_darknet_head_score_is_objectness_times_class_probability() -> None:
    head = DarknetHead(output="head", anchors=((10.0, 14.0),), stride=32)
    raw = np.full((5 + NUM_CLASSES, 2, 2), LOW, dtype=np.float32)
    raw[4, 0, 0] = 0.0  # objectness 0.5
    raw[5 + 0, 0, 0] = 20.0  # person ~1 -> score 0.5

    assert decode_darknet_head(raw, head, (64, 64), thresholds(person=0.5)).scores.tolist() == [
        pytest.approx(0.5)
    ]
    assert len(decode_darknet_head(raw, head, (64, 64), thresholds(person=0.51))) == 0


def test_yolov8_layout_decodes_centre_size_and_best_class() -> None:
    raw = np.zeros((4 + NUM_CLASSES, 5), dtype=np.float32)
    raw[:, 2] = [100, 50, 40, 20, 0.1, 0.9, 0.2]  # cx, cy, w, h, person, car, dog

    found = decode_yolov8(raw, thresholds())

    np.testing.assert_allclose(found.boxes, [[80, 40, 120, 60]])
    assert found.class_ids.tolist() == [1]
    assert found.scores.tolist() == [pytest.approx(0.9)]


def test_yolov5_layout_multiplies_objectness_into_class_scores() -> None:
    raw = np.zeros((5, 5 + NUM_CLASSES), dtype=np.float32)
    raw[3] = [100, 50, 40, 20, 0.5, 0.8, 0.1, 0.0]  # cx, cy, w, h, objectness, person, car, dog

    found = decode_yolov5(raw, thresholds())

    np.testing.assert_allclose(found.boxes, [[80, 40, 120, 60]])
    assert found.class_ids.tolist() == [0]
    assert found.scores.tolist() == [pytest.approx(0.4)]


def test_a_box_whose_best_class_is_not_wanted_is_dropped() -> None:
    raw = np.zeros((4 + NUM_CLASSES, 1), dtype=np.float32)
    raw[:, 0] = [100, 50, 40, 20, 0.0, 0.4, 0.9]  # dog is the best class; dog threshold is inf

    assert len(decode_yolov8(raw, thresholds())) == 0


def test_flat_layout_is_told_apart_by_shape() -> None:
    assert infer_flat_layout((4 + 80, 8400), 80) is OutputLayout.YOLOV8
    assert infer_flat_layout((25200, 5 + 80), 80) is OutputLayout.YOLOV5
    with pytest.raises(ValueError, match="cannot tell"):
        infer_flat_layout((10, 10), 80)


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class() -> None:
    candidates = Candidates(
        boxes=np.array([[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 260, 260]], dtype=np.float32),
        scores=np.array([0.6, 0.9, 0.5], dtype=np.float32),
        class_ids=np.array([1, 1, 1], dtype=np.int64),
    )

    kept = nms_per_class(candidates, iou_threshold=0.45)

    assert kept.scores.tolist() == [pytest.approx(0.9), pytest.approx(0.5)]
    np.testing.assert_allclose(kept.boxes[0], [5, 5, 105, 105])


def test_nms_does_not_suppress_across_classes() -> None:
    candidates = Candidates(
        boxes=np.array([[0, 0, 100, 100], [5, 5, 105, 105]], dtype=np.float32),
        scores=np.array([0.6, 0.9], dtype=np.float32),
        class_ids=np.array([0, 1], dtype=np.int64),
    )

    assert sorted(nms_per_class(candidates, iou_threshold=0.45).class_ids.tolist()) == [0, 1]


def test_grouped_nms_keeps_one_box_per_object_across_a_group_with_the_runner_up_class() -> None:
    # classes 0 car, 1 truck, 2 person; car and truck share group 5, person is its own group
    groups = np.array([5, 5, 2], dtype=np.int64)
    candidates = Candidates(
        boxes=np.array(
            [[0, 0, 100, 50], [4, 2, 98, 50], [2, 0, 100, 52], [10, 0, 40, 50], [300, 0, 400, 50]], dtype=np.float32
        ),
        scores=np.array([0.64, 0.54, 0.40, 0.9, 0.5], dtype=np.float32),
        class_ids=np.array([0, 1, 1, 2, 1], dtype=np.int64),
    )

    kept = nms_grouped(candidates, 0.45, groups)

    assert kept.candidates.class_ids.tolist() == [2, 0, 1]  # the person, the car (truck suppressed), a lone truck
    assert kept.alt_class_ids.tolist() == [-1, 1, -1]
    assert kept.alt_scores.tolist() == [0.0, pytest.approx(0.54), 0.0]  # the best suppressed truck, not the 0.40


def test_grouped_nms_without_groups_is_per_class() -> None:
    candidates = Candidates(
        boxes=np.array([[0, 0, 100, 100], [5, 5, 105, 105], [0, 0, 101, 101]], dtype=np.float32),
        scores=np.array([0.6, 0.9, 0.5], dtype=np.float32),
        class_ids=np.array([0, 1, 1], dtype=np.int64),
    )

    kept = nms_grouped(candidates, 0.45)

    assert sorted(kept.candidates.class_ids.tolist()) == [0, 1]
    assert kept.alt_class_ids.tolist() == [-1, -1]


def test_nms_keeps_boxes_that_overlap_less_than_the_threshold() -> None:
    candidates = Candidates(
        boxes=np.array([[0, 0, 100, 100], [60, 0, 160, 100]], dtype=np.float32),  # IoU 40/160 = 0.25
        scores=np.array([0.6, 0.9], dtype=np.float32),
        class_ids=np.array([1, 1], dtype=np.int64),
    )

    assert len(nms_per_class(candidates, iou_threshold=0.45)) == 2
    assert len(nms_per_class(candidates, iou_threshold=0.2)) == 1


def test_letterbox_of_a_wide_image_pads_top_and_bottom() -> None:
    box = Letterbox.fit((800, 400), (416, 416))

    assert box.scale == pytest.approx(0.52)
    assert box.resized_size == (416, 208)
    assert box.pad == (0, 104)


def test_unletterbox_maps_model_pixels_back_to_a_tall_source_image() -> None:
    box = Letterbox.fit((300, 600), (416, 416))  # scale 416/600, 208x416, padded 104 left and right
    source_box = np.array([[30.0, 60.0, 150.0, 300.0]], dtype=np.float32)
    in_model = source_box * box.scale + np.array([box.pad[0], box.pad[1]] * 2, dtype=np.float32)

    np.testing.assert_allclose(unletterbox(in_model, box), source_box, atol=1e-3)


def test_unletterbox_clips_boxes_reaching_into_the_padding() -> None:
    box = Letterbox.fit((800, 400), (416, 416))  # content rows 104..312 in the model input

    mapped = unletterbox(np.array([[-10.0, 50.0, 500.0, 350.0]], dtype=np.float32), box)

    np.testing.assert_allclose(mapped, [[0.0, 0.0, 800.0, 400.0]])
