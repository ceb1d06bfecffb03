"""The parking rules on their own (services/parking/rules.py): the store applies them inside its transactions."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.principal import Principal, Role
from services.parking import rules
from services.parking.availability import LotState
from services.parking.model import LotSpec, LotSummary, PassageAmendment, PassageRecord, PassageSpec, PriceSpec, Report
from services.parking.vocab import (
    AckResult,
    DetectionType,
    OccupancyTrend,
    PassageAmendAction,
    PassageDirection,
    PassageState,
    SpaceClass,
    SpotStatus,
)

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
ACME = Principal(Role.OPERATOR, "ACME")


def _summary(detection: DetectionType = DetectionType.BALANCING, general: int = 10, ev: int = 0) -> LotSummary:
    return LotSummary("L1", "ACME", "Lot", 1, 31.4, 121.49, {SpaceClass.GENERAL: general, SpaceClass.EV: ev},
                      PriceSpec(), 600, detection, True)


def _state(sequence: int = 5, free: dict[int, int | None] | None = None, observed: datetime | None = T0) -> LotState:
    return LotState(sequence, observed, observed, free if free is not None else {SpaceClass.GENERAL: 4}, False, False,
                    OccupancyTrend.UNKNOWN, [])


def _report(sequence: int, observed: datetime = T0, counts: dict[int, int] | None = None,
            spots: dict[str, int] | None = None) -> Report:
    return Report("L1", sequence, observed, counts or {}, spots or {}, False, False)


def _passage(direction: PassageDirection, space_class: SpaceClass = SpaceClass.GENERAL) -> PassageSpec:
    return PassageSpec("L1", "P1", direction, "沪A12345", 1, "E1", T0, space_class)


def test_only_the_lots_operator_writes_it_and_admins_also_manage_its_spots() -> None:
    rules.require_owner(ACME, "ACME", "L1")
    with pytest.raises(PermissionDenied, match="another operator"):
        rules.require_owner(Principal(Role.OPERATOR, "OTHER"), "ACME", "L1")
    with pytest.raises(PermissionDenied):
        rules.require_owner(Principal(Role.ADMIN), "ACME", "L1")
    rules.require_owner_or_admin(Principal(Role.ADMIN), "ACME", "L1")


def test_a_lot_is_edited_by_its_operator_and_moved_to_another_only_by_an_admin() -> None:
    spec = LotSpec("L1", "ACME", "Lot", 1, 31.0, 121.0, {SpaceClass.GENERAL: 10}, DetectionType.BALANCING, 600)
    rules.may_update_lot(ACME, "ACME", spec)
    rules.may_update_lot(Principal(Role.ADMIN), "OTHER", spec)
    with pytest.raises(PermissionDenied):
        rules.may_update_lot(Principal(Role.OPERATOR, "OTHER"), "ACME", spec)
    moved = dataclasses.replace(spec, operator_id="OTHER")
    with pytest.raises(PermissionDenied, match="only an admin"):
        rules.may_update_lot(ACME, "ACME", moved)
    rules.may_update_lot(Principal(Role.ADMIN), "ACME", moved)


def test_plates_are_for_the_police_and_the_lots_own_operator() -> None:
    assert rules.sees_plates(Principal(Role.POLICE), "ACME") and rules.sees_plates(ACME, "ACME")
    assert not rules.sees_plates(Principal(Role.ADMIN), "ACME")
    assert not rules.sees_plates(Principal(Role.OPERATOR, "OTHER"), "ACME")


def test_a_readings_sequence_decides_duplicate_stale_or_apply() -> None:
    state = _state(sequence=5)
    assert rules.sequence_verdict(state, _report(5)) is AckResult.DUPLICATE
    assert rules.sequence_verdict(state, _report(4)) is AckResult.STALE
    assert rules.sequence_verdict(state, _report(6, T0 - timedelta(seconds=1))) is AckResult.STALE
    assert rules.sequence_verdict(state, _report(6, T0)) is None


def test_a_reading_counts_only_classes_the_lot_has_within_capacity() -> None:
    with pytest.raises(InvalidArgument, match="has no ev spaces"):
        rules.check_report(_report(6, counts={SpaceClass.EV: 1}), _summary(), {})
    with pytest.raises(InvalidArgument, match="exceed the general capacity 10"):
        rules.check_report(_report(6, counts={SpaceClass.GENERAL: 11}), _summary(), {})
    with pytest.raises(InvalidArgument, match="does not detect single spaces"):
        rules.check_report(_report(6, spots={"S1": SpotStatus.FREE}), _summary(), {"S1": [1, 1]})
    with pytest.raises(InvalidArgument, match="has no spot 'S9' \\(and 1 more\\)"):
        rules.check_report(_report(6, spots={"S9": 1, "S8": 1}), _summary(DetectionType.SINGLE_SPACE), {})


def test_classes_with_spots_count_their_free_spots() -> None:
    spots = {"S1": [SpaceClass.GENERAL, SpotStatus.FREE], "S2": [SpaceClass.GENERAL, SpotStatus.OCCUPIED]}
    free = rules.free_from_spots({SpaceClass.GENERAL: 9, SpaceClass.EV: 3}, spots)
    assert free == {SpaceClass.GENERAL: 1, SpaceClass.EV: 3}


def test_a_passage_moves_a_counted_lot_by_one_within_its_capacity() -> None:
    summary = _summary(general=10)
    assert rules.free_after_passage(_state(free={SpaceClass.GENERAL: 4}), summary,
                                    _passage(PassageDirection.ENTRY))[SpaceClass.GENERAL] == 3
    assert rules.free_after_passage(_state(free={SpaceClass.GENERAL: 10}), summary,
                                    _passage(PassageDirection.EXIT))[SpaceClass.GENERAL] == 10
    assert rules.free_after_passage(_state(free={SpaceClass.GENERAL: 0}), summary,
                                    _passage(PassageDirection.ENTRY))[SpaceClass.GENERAL] == 0
    # Before any count the lot is taken as empty.
    assert rules.free_after_passage(_state(free={}), summary,
                                    _passage(PassageDirection.ENTRY))[SpaceClass.GENERAL] == 9
    assert rules.moves_occupancy(summary) and not rules.moves_occupancy(_summary(DetectionType.SINGLE_SPACE))
    with pytest.raises(InvalidArgument, match="has no ev spaces"):
        rules.check_passage(_passage(PassageDirection.ENTRY, SpaceClass.EV), summary)


def test_an_amendment_corrects_or_voids_and_a_void_is_final() -> None:
    record = PassageRecord(_passage(PassageDirection.ENTRY), T0)
    fix = PassageAmendment("L1", "P1", PassageAmendAction.CORRECT, "typo", plate="沪A12346")
    after, state = rules.amended(record, fix) or (None, None)
    assert after is not None and after.plate == "沪A12346" and state is PassageState.CORRECTED
    assert rules.amended(record, PassageAmendment("L1", "P1", PassageAmendAction.CORRECT, "retry",
                                                  plate="沪A12345")) is None
    void = PassageAmendment("L1", "P1", PassageAmendAction.VOID, "test drive")
    assert rules.amended(record, void) == (record.spec, PassageState.VOIDED)
    voided = PassageRecord(record.spec, T0, PassageState.VOIDED, 1, T0)
    with pytest.raises(FailedPrecondition, match="a void is final"):
        rules.amended(voided, fix)
