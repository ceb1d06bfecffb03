"""The parking service's rules, apart from how they are stored: who may change or read a lot's data, what a
reading's sequence means, how a passage moves a counted lot, what an amendment may do.

Pure functions of domain values (no SQL, no proto): `store.py` calls them inside its transactions with the rows it
locked, so each rule is written once and tested on its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument, PermissionDenied
from services.common.principal import Principal, Role
from services.parking.availability import CLASS_NAMES, LotState
from services.parking.model import LotSpec, LotSummary, PassageAmendment, PassageRecord, PassageSpec, PriceSpec, Report
from services.parking.vocab import (
    CLASSES,
    AckResult,
    DetectionType,
    PassageAmendAction,
    PassageDirection,
    PassageState,
    SpotStatus,
)

# ----- who may ----------------------------------------------------------------------------------------------


def require_owner(principal: Principal, operator_id: str, lot_id: str) -> None:
    """Only the lot's own operator writes its data (and reads its passages)."""
    if not principal.is_operator(operator_id):
        raise PermissionDenied(f"lot {lot_id} belongs to another operator")


def require_owner_or_admin(principal: Principal, operator_id: str, lot_id: str) -> None:
    if principal.role is not Role.ADMIN:
        require_owner(principal, operator_id, lot_id)


def may_update_lot(principal: Principal, operator_id: str, spec: LotSpec) -> None:
    """A lot's own operator edits it (`operator_id` is its operator now); only an admin moves it to another."""
    if principal.role is Role.ADMIN:
        return
    require_owner(principal, operator_id, spec.id)
    if spec.operator_id != operator_id:
        raise PermissionDenied("only an admin can move a lot to another operator")


def may_read_passages(principal: Principal, operator_id: str, lot_id: str) -> None:
    """Operators read their own lots' passages only; the policy lets admins and police read any."""
    if principal.role is Role.OPERATOR:
        require_owner(principal, operator_id, lot_id)


def sees_plates(principal: Principal, operator_id: str) -> bool:
    """Plates are shown to the police and to the lot's own operator only."""
    return principal.role is Role.POLICE or principal.is_operator(operator_id)


# ----- readings ---------------------------------------------------------------------------------------------


def check_report(r: Report, summary: LotSummary, spot_ids: Mapping[str, object]) -> None:
    """A reading may count only the classes the lot has, at most their capacity, and name only spots of a lot
    that detects single spaces."""
    cap = summary.capacity
    for c, reported in r.counts.items():
        if cap.get(c, 0) <= 0:  # the proto: "the class must have capacity on the lot"
            raise InvalidArgument(FieldViolation("counts", f"lot {r.lot_id} has no {CLASS_NAMES[c]} spaces"))
        if reported > cap[c]:
            raise InvalidArgument(FieldViolation(
                "counts", f"free {CLASS_NAMES[c]} spaces {reported} exceed the {CLASS_NAMES[c]} capacity {cap[c]}"))
    if r.spots:
        if summary.detection_type != DetectionType.SINGLE_SPACE:
            raise InvalidArgument(FieldViolation("spots", f"lot {r.lot_id} does not detect single spaces"))
        unknown = [s for s in r.spots if s not in spot_ids]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise InvalidArgument(FieldViolation("spots", f"lot {r.lot_id} has no spot {unknown[0]!r}{more}"))


def sequence_verdict(state: LotState, r: Report) -> AckResult | None:
    """DUPLICATE for the sequence already applied, STALE for an older sequence or an earlier observation, None for
    a reading to apply."""
    if r.sequence == state.sequence:
        return AckResult.DUPLICATE
    if r.sequence < state.sequence or (state.observed_at is not None and r.observed_at < state.observed_at):
        return AckResult.STALE
    return None


def free_from_spots(free: dict[int, int | None], spots: Mapping[str, Sequence[int]]) -> dict[int, int | None]:
    """For every class the lot has spots of, its free count is its free spots (`spots`: id -> [class, status])."""
    out = dict(free)
    for c in CLASSES:
        if any(s[0] == c for s in spots.values()):
            out[c] = sum(1 for s in spots.values() if s[0] == c and s[1] == SpotStatus.FREE)
    return out


# ----- passages ---------------------------------------------------------------------------------------------


def check_passage(p: PassageSpec, summary: LotSummary) -> None:
    if summary.capacity.get(p.space_class, 0) <= 0:
        raise InvalidArgument(FieldViolation(
            "space_class", f"lot {p.lot_id} has no {CLASS_NAMES[p.space_class]} spaces"))


def free_after_passage(state: LotState, summary: LotSummary, p: PassageSpec) -> dict[int, int | None]:
    """A counted lot's free spaces after a passage: one fewer for an entry, one more for an exit, within
    [0, capacity]. Before any count the lot is taken as empty; an absolute count corrects it."""
    cap = summary.capacity[p.space_class]
    base = state.free.get(p.space_class)
    base = cap if base is None else base
    delta = -1 if p.direction == PassageDirection.ENTRY else 1
    free = dict(state.free)
    for c in CLASSES:
        if free.get(c) is None and summary.capacity.get(c, 0) > 0:
            free[c] = summary.capacity[c]
    free[p.space_class] = min(cap, max(0, base + delta))
    return free


def parking_fee_fen(price: PriceSpec, duration_s: float) -> int:
    """The fee of a stay by the lot's published rule: free up to `free_minutes`; past that the first hour (begun) at
    `first_hour_fen` and each further hour begun at `per_hour_fen`; at most `daily_cap_fen` per 24 hours begun
    (0 = no cap)."""
    minutes = max(0, math.ceil(duration_s / 60))
    if minutes <= price.free_minutes:
        return 0
    days, rest = divmod(minutes, 1440)

    def within_a_day(m: int) -> int:
        if m <= 0:
            return 0
        fee = price.first_hour_fen + math.ceil(max(0, m - 60) / 60) * price.per_hour_fen
        return min(fee, price.daily_cap_fen) if price.daily_cap_fen else fee

    return days * within_a_day(1440) + within_a_day(rest)


def moves_occupancy(summary: LotSummary) -> bool:
    """Passages move occupancy on lots counted by entries and exits only."""
    return summary.detection_type == DetectionType.BALANCING


def amended(current: PassageRecord, a: PassageAmendment) -> tuple[PassageSpec, PassageState] | None:
    """The passage as an amendment leaves it and its new state; None when a correction changes nothing (a retry).
    A voided passage is final."""
    if current.state == PassageState.VOIDED:
        assert current.amended_at is not None
        raise FailedPrecondition(f"passage {a.passage_id} of lot {a.lot_id} was voided at "
                                 f"{current.amended_at.isoformat()}; a void is final")
    before = current.spec
    if a.action == PassageAmendAction.VOID:
        return before, PassageState.VOIDED
    after = dataclasses.replace(
        before, plate=before.plate if a.plate is None else a.plate,
        plate_colour=before.plate_colour if a.plate_colour is None else a.plate_colour,
        passed_at=before.passed_at if a.passed_at is None else a.passed_at,
        lane=before.lane if a.lane is None else a.lane)
    return None if after == before else (after, PassageState.CORRECTED)
