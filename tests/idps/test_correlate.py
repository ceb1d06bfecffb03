"""The correlation rule on its own (what the store applies to each report of a batch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from v2x.idps.v1 import idps_pb2 as pb

from services.idps import aggregate, lifecycle
from services.idps.correlate import Windows, best
from services.idps.model import Incident, ReportInput
from tests.idps.helpers import offset

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
HERE = (31.3, 121.5)
WINDOWS = Windows(100.0, timedelta(seconds=120), timedelta(seconds=300))


def seen(point: tuple[float, float], *, seconds_ago: float = 0.0, event_type: int = pb.EVENT_TYPE_ACCIDENT,
         heading: float | None = None) -> ReportInput:
    return ReportInput(f"k{point}{seconds_ago}", "officer-1", pb.SOURCE_KIND_POLICE_OFFICER, event_type, point[0],
                       point[1], 0.6, NOW - timedelta(seconds=seconds_ago), "police:test", heading_deg=heading)


def incident(point: tuple[float, float], name: str = "I1", *, seconds_ago: float = 0.0,
             heading: float | None = None) -> Incident:
    return aggregate.open_incident(name, seen(point, seconds_ago=seconds_ago, heading=heading), NOW)


def test_the_nearest_matching_incident_is_chosen() -> None:
    near, far = incident(offset(HERE, 30, 0), "INEAR"), incident(offset(HERE, 80, 0), "IFAR")
    assert best([far, near], seen(HERE), NOW, WINDOWS) is near


def test_nothing_beyond_the_distance_or_the_time_window_matches() -> None:
    assert best([incident(offset(HERE, 101, 0))], seen(HERE), NOW, WINDOWS) is None
    assert best([incident(HERE, seconds_ago=400)], seen(HERE), NOW, WINDOWS) is None


def test_a_wide_distance_window_still_finds_an_incident_near_its_edge() -> None:
    wide = Windows(5000.0, WINDOWS.window, WINDOWS.reopen)
    edge = incident(offset(HERE, 5003, 0))  # `offset` counts 111,320 m a degree: ~4,997 m on the sphere
    assert best([edge], seen(HERE), NOW, wide) is edge


def test_the_other_direction_and_an_incompatible_type_do_not_match() -> None:
    north = incident(HERE, heading=0.0)
    assert best([north], seen(HERE, heading=180.0), NOW, WINDOWS) is None
    assert best([north], seen(HERE, event_type=pb.EVENT_TYPE_ROADWORKS), NOW, WINDOWS) is None


def test_a_cleared_incident_matches_within_the_reopen_window_only() -> None:
    cleared = incident(HERE)
    cleared.status, cleared.cleared_at = lifecycle.CLEARED, NOW - timedelta(seconds=200)
    assert best([cleared], seen(HERE), NOW, WINDOWS) is cleared
    cleared.cleared_at = NOW - timedelta(seconds=400)
    assert best([cleared], seen(HERE), NOW, WINDOWS) is None
