"""The harder plate set (roadside_sim/plate_set.py) and what the plate reader does with some of its cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roadside_sim.plate_set import COLOURS, HELD_OUT_SEED, TUNE_SEED, PlateSample, plate_set
from services.roadside.plates import BLACK, WHITE, YELLOW, PlateReader, plate_colour


@pytest.fixture(scope="module")
def tune(samples_dir: Path) -> list[PlateSample]:
    return plate_set(TUNE_SEED, 40)


@pytest.fixture(scope="module")
def reader(plate_models: Path) -> PlateReader:
    return PlateReader()


def test_the_set_is_reproducible_and_its_splits_differ(tune: list[PlateSample]) -> None:
    again = plate_set(TUNE_SEED, 12)
    held_out = plate_set(HELD_OUT_SEED, 12)

    assert [s.jpeg for s in again] == [s.jpeg for s in tune[:12]]
    assert not {s.text for s in held_out} & {s.text for s in tune}


def test_the_set_spans_what_the_issue_asks(tune: list[PlateSample]) -> None:
    assert {s.style for s in tune} == set(COLOURS)
    assert all(59.0 <= s.width_px <= 251.0 for s in tune)
    assert max(abs(s.yaw_deg) for s in tune) > 30 and all(abs(s.yaw_deg) <= 35 for s in tune)
    assert all(30 <= s.jpeg_quality <= 90 for s in tune)
    assert any(s.night for s in tune) and any(s.blur_px for s in tune)
    for s in tune[:6]:
        image = s.image
        xs, ys = [c[0] for c in s.corners], [c[1] for c in s.corners]
        assert min(xs) >= 0 and max(xs) <= image.shape[1] and min(ys) >= 0 and max(ys) <= image.shape[0]


def test_a_black_plate_the_frame_pass_misses_is_found_inverted(tune: list[PlateSample], reader: PlateReader) -> None:
    sample = tune[17]  # 粤Z…港, 134 px: the detector scores it under 0.45 as it is

    assert sample.style == "black"
    assert reader._detect_once(sample.image, reader.config.min_detection_score) == []
    (best, *_) = reader.read(sample.image)
    assert (best.text, best.colour) == (sample.text, BLACK)


def test_a_black_plate_the_frame_pass_scores_under_0_1_gets_the_closer_look(
    tune: list[PlateSample], reader: PlateReader
) -> None:
    sample = tune[23]  # 粤Z…澳, 74 px: the frame pass scores it 0.096, under the old candidate bound of 0.1

    assert sample.style == "black"
    assert max(score for score, _, _ in reader._detect_once(sample.image, 0.01)) < 0.1
    (best, *_) = reader.read(sample.image)
    assert (best.text, best.colour) == (sample.text, BLACK)


@pytest.mark.slow
def test_a_plate_the_detector_stays_unsure_of_counts_by_its_reading(reader: PlateReader) -> None:
    # A black plate, 96 px: the closer look scores it under 0.45. (This was tune[16], a police plate at 62 px at
    # night; since the second-opinion recognisers, its three-model reading is under confirm_confidence.)
    sample = plate_set(TUNE_SEED, 372)[371]

    assert sample.style == "black"
    assert reader.detect(sample.image) == []
    (best, *_) = reader.read(sample.image)
    assert (best.text, best.colour) == (sample.text, BLACK)
    assert best.confidence >= reader.config.confirm_confidence


def test_a_two_row_plate_reads_as_one_text(tune: list[PlateSample], reader: PlateReader) -> None:
    sample = tune[38]  # yellow, two rows, turned 30 degrees

    assert sample.style == "yellow2"
    (best, *_) = reader.read(sample.image)
    assert (best.text, best.colour) == (sample.text, YELLOW)


def test_a_police_plate_is_white_with_its_suffix(tune: list[PlateSample], reader: PlateReader) -> None:
    sample = tune[4]

    assert sample.style == "white" and sample.text.endswith("警")
    (best, *_) = reader.read(sample.image)
    assert (best.text, best.colour) == (sample.text, WHITE)


def test_white_and_black_are_told_apart_by_day_and_by_night() -> None:
    from roadside_sim.plate_set import render

    for style, colour in (("white", WHITE), ("black", BLACK)):
        face = render("京A12345", style)
        night = (face.astype(np.float32) * 0.35).astype(np.uint8)
        assert plate_colour(face) == colour
        assert plate_colour(night) == colour
