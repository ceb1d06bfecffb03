"""The rules of an incident's life: allowed transitions, severity from lane impacts, confidence from
independent sources. Pure functions; the store applies them inside its transactions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from v2x.idps.v1 import idps_pb2 as pb

from services.idps.vocab import IncidentStatus, LaneState, Severity

REPORTED: int = IncidentStatus.REPORTED
CONFIRMED: int = IncidentStatus.CONFIRMED
DISPATCHED: int = IncidentStatus.DISPATCHED
ON_SCENE: int = IncidentStatus.ON_SCENE
CLEARED: int = IncidentStatus.CLEARED
CLOSED: int = IncidentStatus.CLOSED
FALSE_ALARM: int = IncidentStatus.FALSE_ALARM

OPEN: frozenset[int] = frozenset({REPORTED, CONFIRMED, DISPATCHED, ON_SCENE})
TERMINAL: frozenset[int] = frozenset({CLOSED, FALSE_ALARM})
ALL_STATUSES: frozenset[int] = OPEN | {CLEARED} | TERMINAL

# Forward moves the police may make. A dispatched or confirmed incident may be cleared without the
# steps in between (resolved before anyone arrived); anything not yet closed may be a false alarm.
TRANSITIONS: Mapping[int, frozenset[int]] = {
    REPORTED: frozenset({CONFIRMED, FALSE_ALARM}),
    CONFIRMED: frozenset({DISPATCHED, CLEARED, FALSE_ALARM}),
    DISPATCHED: frozenset({ON_SCENE, CLEARED, FALSE_ALARM}),
    ON_SCENE: frozenset({CLEARED, FALSE_ALARM}),
    CLEARED: frozenset({CLOSED}),
    CLOSED: frozenset(),
    FALSE_ALARM: frozenset(),
}
# Reopening a cleared incident, allowed within the reopen window only.
REOPEN_TARGETS: frozenset[int] = frozenset({CONFIRMED, DISPATCHED, ON_SCENE})
# The status a cleared incident goes back to when a new report reactivates it.
REACTIVATED_STATUS: int = CONFIRMED

MINOR: int = Severity.MINOR
NORMAL: int = Severity.NORMAL
MAJOR: int = Severity.MAJOR

FREE: int = LaneState.FREE
BLOCKED: int = LaneState.BLOCKED
AFFECTED: int = LaneState.AFFECTED


def transition_error(current: int, target: int, cleared_age_s: float | None, reopen_window_s: float) -> str | None:
    """Why `current -> target` is not allowed now, or None when it is."""
    if target == current:
        return f"the incident is already {_name(current)}"
    if current == CLEARED and target in REOPEN_TARGETS:
        if cleared_age_s is not None and cleared_age_s <= reopen_window_s:
            return None
        return f"the incident was cleared more than {reopen_window_s:g} s ago and can no longer be reopened"
    if target not in TRANSITIONS.get(current, frozenset()):
        allowed = ", ".join(_name(s) for s in sorted(TRANSITIONS.get(current, frozenset()))) or "none (terminal)"
        return f"{_name(current)} -> {_name(target)} is not allowed (from {_name(current)}: {allowed})"
    return None


def derive_severity(lane_impacts: Iterable[tuple[str, int]]) -> int:
    """MINOR when no lane is blocked, MAJOR when every listed lane is blocked, else NORMAL.

    The lanes listed are taken as all lanes of the affected direction: list the free ones too."""
    states = [state for _, state in lane_impacts]
    blocked = sum(1 for s in states if s == BLOCKED)
    if blocked == 0:
        return MINOR
    return MAJOR if blocked == len(states) else NORMAL


def combined_confidence(per_source: Mapping[str, float]) -> float:
    """Noisy-OR over independent sources: 1 - prod(1 - c). A source counts once (its best report), so a
    camera repeating itself does not raise the confidence; another camera or an officer does."""
    miss = 1.0
    for c in per_source.values():
        miss *= 1.0 - min(max(c, 0.0), 1.0)
    return round(1.0 - miss, 6)


def source_key(source_kind: int, source_id: str) -> str:
    """The identity of an independent source."""
    return f"{source_kind}/{source_id}"


def _name(status: int) -> str:
    return pb.IncidentStatus.Name(status).removeprefix("INCIDENT_STATUS_")  # type: ignore[arg-type]


def status_name(status: int) -> str:
    return _name(status)


def severity_name(severity: int) -> str:
    return pb.Severity.Name(severity).removeprefix("SEVERITY_")  # type: ignore[arg-type]


def lane_state_name(state: int) -> str:
    return pb.LaneState.Name(state).removeprefix("LANE_STATE_")  # type: ignore[arg-type]


def type_name(event_type: int) -> str:
    return pb.EventType.Name(event_type).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]
