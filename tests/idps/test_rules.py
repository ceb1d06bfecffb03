"""Lifecycle transitions, severity from lane impacts, confidence from sources, lock cells."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.geo import haversine_m
from services.idps import lifecycle as lc
from services.idps.geo import heading_difference, lock_keys

ALLOWED = [(a, b) for a, targets in lc.TRANSITIONS.items() for b in targets]
FORBIDDEN = [(a, b) for a in lc.ALL_STATUSES for b in lc.ALL_STATUSES
             if b not in lc.TRANSITIONS[a] and not (a == lc.CLEARED and b in lc.REOPEN_TARGETS)]


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transitions(current: int, target: int) -> None:
    assert lc.transition_error(current, target, 0.0, 300) is None


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_every_other_transition_is_refused(current: int, target: int) -> None:
    assert lc.transition_error(current, target, 0.0, 300)


def test_the_happy_path_is_reported_confirmed_dispatched_on_scene_cleared_closed() -> None:
    path = [lc.REPORTED, lc.CONFIRMED, lc.DISPATCHED, lc.ON_SCENE, lc.CLEARED, lc.CLOSED]
    for a, b in itertools.pairwise(path):
        assert lc.transition_error(a, b, 0.0, 300) is None


def test_nothing_leaves_closed_or_false_alarm() -> None:
    for terminal in lc.TERMINAL:
        assert all(lc.transition_error(terminal, s, 0.0, 300) for s in lc.ALL_STATUSES)


def test_a_cleared_incident_reopens_within_the_window_only() -> None:
    assert lc.transition_error(lc.CLEARED, lc.ON_SCENE, 299.0, 300) is None
    assert "can no longer be reopened" in (lc.transition_error(lc.CLEARED, lc.ON_SCENE, 301.0, 300) or "")


@pytest.mark.parametrize(("lanes", "severity"), [
    ([], lc.MINOR),
    ([("L1", lc.AFFECTED), ("L2", lc.FREE)], lc.MINOR),
    ([("L1", lc.BLOCKED), ("L2", lc.FREE)], lc.NORMAL),
    ([("L1", lc.BLOCKED), ("L2", lc.AFFECTED)], lc.NORMAL),
    ([("L1", lc.BLOCKED), ("L2", lc.BLOCKED)], lc.MAJOR),
    ([("L1", lc.BLOCKED)], lc.MAJOR),
])
def test_severity_is_derived_from_lane_impacts(lanes: list[tuple[str, int]], severity: int) -> None:
    assert lc.derive_severity(lanes) == severity


def test_confidence_rises_with_independent_sources_but_not_with_repeats() -> None:
    one = lc.combined_confidence({"1/cam-1": 0.6})
    two = lc.combined_confidence({"1/cam-1": 0.6, "1/cam-2": 0.6})
    three = lc.combined_confidence({"1/cam-1": 0.6, "1/cam-2": 0.6, "2/officer": 0.5})
    assert one == pytest.approx(0.6) and two == pytest.approx(0.84) and three == pytest.approx(0.92)
    assert one < two < three < 1.0


def test_heading_difference_wraps_around_north() -> None:
    assert heading_difference(350, 10) == 20 and heading_difference(90, 270) == 180


@settings(max_examples=300, deadline=None)
@given(lat=st.floats(-80, 80), lon=st.floats(-179, 179), bearing=st.floats(0, 2 * math.pi),
       fraction=st.floats(0, 1), distance=st.sampled_from([50.0, 100.0, 250.0]))
def test_two_points_close_enough_to_correlate_share_a_lock(lat: float, lon: float, bearing: float, fraction: float,
                                                           distance: float) -> None:
    d = distance * fraction * 0.999
    lat2 = lat + d * math.cos(bearing) / 111_320
    lon2 = lon + d * math.sin(bearing) / (111_320 * math.cos(math.radians(lat)))
    if haversine_m(lat, lon, lat2, lon2) > distance:
        return
    assert set(lock_keys(lat, lon, distance)) & set(lock_keys(lat2, lon2, distance))


def test_lock_keys_are_sorted_and_distinct_for_far_points() -> None:
    keys = lock_keys(31.2, 121.4, 100)
    assert keys == sorted(keys) and len(keys) == 9
    assert not set(keys) & set(lock_keys(31.21, 121.4, 100))
