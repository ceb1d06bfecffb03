"""The phase-averaged count MAPE of load/replay_analytics.py: the same counts and truth, the minutes' boundaries
moved."""

from __future__ import annotations

import pytest

from load.replay_analytics import phase_mapes


def test_a_count_late_by_a_second_and_a_half_costs_only_where_a_minute_begins_in_between() -> None:
    entered = [("cam", "L", 100.0), ("cam", "L", 130.0)]
    counted = {"cam": [("L", 100.0), ("L", 131.5)]}
    by_phase = phase_mapes(counted, entered, {"cam": ["L"]}, 0.0, 600.0, 60)
    # Minutes beginning 49 s later put 130 + 49 = 179 s in the minute from 120 s and 131.5 + 49 = 180.5 s in the next:
    # the minute from 120 s read 1 of its 2 vehicles, and the next one has none to divide by (not a row).
    assert by_phase[49] == pytest.approx(0.5)
    assert all(mape == 0.0 for k, mape in enumerate(by_phase) if k != 49)


def test_lanes_not_configured_and_partial_minutes_are_not_rows() -> None:
    entered = [("cam", "L", 30.0), ("cam", "L", 90.0), ("cam", "X", 90.0), ("cam", "L", 590.0)]
    counted = {"cam": [("L", 90.0)]}
    # Phase 0: the minute from 0 s is partial (the run began at 10 s), the one from 540 s too (it ended at 595 s), and
    # lane X is no lane of the camera's: only the minute from 60 s on lane L is scored, and it is right.
    assert phase_mapes(counted, entered, {"cam": ["L"]}, 10.0, 595.0, 1) == [0.0]
