"""`v2x sim score`'s matching of injected events to the incidents IDPS opened (roadside_sim/score.py, match_events),
the one rule of the live scorer and the offline replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from roadside_sim.score import SeenIncident, match_events

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
CAMERA = (31.4, 121.49)
HERE = (31.4001, 121.4901)  # about 15 m from the camera
ELSEWHERE = (31.4008, 121.4901)  # about 90 m from HERE, still in view of the camera


def _event(kind: int, at: tuple[float, float], start: datetime, seconds: float) -> dict[str, object]:
    return {"type": kind, "camera": "cam-1", "start": start.isoformat(),
            "end": (start + timedelta(seconds=seconds)).isoformat(), "lat": at[0], "lon": at[1]}


def test_a_crash_incident_first_opened_for_a_standing_car_is_no_false_stopped_vehicle() -> None:
    # IDPS opened the incident for one of the crash's standing cars (903); the crash's report joined it 0.7 s later and
    # made it a 1001. It is the crash's incident: neither type counts it as false. A 903 elsewhere, matching nothing,
    # is false.
    truths = [_event(1001, HERE, T0, 60), _event(903, ELSEWHERE, T0 + timedelta(minutes=3), 60)]
    seen = [SeenIncident("I5", 903, T0 + timedelta(seconds=1), *HERE),
            SeenIncident("I5", 1001, T0 + timedelta(seconds=1.7), *HERE),
            SeenIncident("I6", 903, T0 + timedelta(minutes=3, seconds=2), *ELSEWHERE),
            SeenIncident("I7", 903, T0 + timedelta(minutes=6), *ELSEWHERE)]
    per_type, _, matched = match_events(truths, seen, [CAMERA], T0 + timedelta(minutes=10))
    assert per_type["1001"]["recall"] == 1.0 and per_type["1001"]["precision"] == 1.0
    assert per_type["903"]["recall"] == 1.0
    assert per_type["903"]["incidents"] == 3 and per_type["903"]["false_incidents"] == 1
    assert matched == {"I5", "I6"}
