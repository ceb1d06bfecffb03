"""The event vocabulary and every mapping table, entry by entry."""

from __future__ import annotations

import pytest
from v2x.idps.v1 import idps_pb2 as pb

from services.idps import taxonomy as t

RSI_FROM_DOMAIN_MD = {301, 302, 304, 305, 308, 311, 399, 202, 205, 401, 405, 406, 408, 409, 707,
                      901, 902, 903, 904, 905, 906}
DENM_FROM_DOMAIN_MD = {1, 2, 3, 5, 6, 9, 10, 11, 12, 14, 15, 17, 18, 19, 26, 27, 91, 92, 94, 95, 97, 98, 99}

TO_DENM_EXPECTED = {
    t.FIRE: 99, t.FACILITY_DAMAGED: 0, t.RAIN: 19, t.HAIL: 19, t.SNOW: 19, t.WIND: 17, t.FOG: 18, t.HAZE: 18,
    t.SANDSTORM: 18, t.THROWN_OBJECT: 10, t.PEDESTRIAN_ON_ROAD: 12, t.ANIMAL: 11, t.SLIPPERY: 6, t.ICY: 6,
    t.TRAFFIC_JAM: 1, t.OVERSPEED: 0, t.SLOW_VEHICLE: 26, t.STOPPED_VEHICLE: 94, t.WRONG_WAY: 14,
    t.EMERGENCY_VEHICLE: 95, t.TRUCK: 0, t.ACCIDENT: 2, t.ILLEGAL_PARKING: 0, t.ROADWORKS: 3, t.UNMAPPED: 0,
}
FROM_DENM_EXPECTED = {
    1: t.TRAFFIC_JAM, 2: t.ACCIDENT, 3: t.ROADWORKS, 5: t.UNMAPPED, 6: t.SLIPPERY, 9: t.UNMAPPED,
    10: t.THROWN_OBJECT, 11: t.ANIMAL, 12: t.PEDESTRIAN_ON_ROAD, 14: t.WRONG_WAY, 15: t.UNMAPPED, 17: t.WIND,
    18: t.FOG, 19: t.RAIN, 26: t.SLOW_VEHICLE, 27: t.TRAFFIC_JAM, 91: t.STOPPED_VEHICLE, 92: t.ACCIDENT,
    94: t.STOPPED_VEHICLE, 95: t.EMERGENCY_VEHICLE, 97: t.UNMAPPED, 98: t.UNMAPPED, 99: t.UNMAPPED,
}


def test_the_rsi_codes_are_those_of_domain_md_with_their_numbers() -> None:
    assert t.RSI_CODES == RSI_FROM_DOMAIN_MD


def test_the_suite_codes_are_documented_numbers_outside_the_rsi_range() -> None:
    assert (t.ACCIDENT, t.ILLEGAL_PARKING, t.ROADWORKS, t.UNMAPPED) == (1001, 1002, 1003, 1999)
    assert all(code >= 1000 for code in t.SUITE_CODES)


def test_the_proto_enum_holds_exactly_the_canonical_types() -> None:
    assert {v.number for v in pb.EventType.DESCRIPTOR.values if v.number} == t.ALL_TYPES


def test_every_canonical_type_has_a_denm_entry() -> None:
    assert set(t.TO_DENM) == t.ALL_TYPES


@pytest.mark.parametrize(("event_type", "cause"), sorted(TO_DENM_EXPECTED.items()))
def test_to_denm_table(event_type: int, cause: int) -> None:
    assert t.to_denm(event_type) == cause
    assert cause == t.DENM_UNMAPPED or cause in t.DENM_CAUSES


def test_every_denm_cause_of_domain_md_has_an_entry() -> None:
    assert set(t.FROM_DENM) == DENM_FROM_DOMAIN_MD == t.DENM_CAUSES


@pytest.mark.parametrize(("cause", "event_type"), sorted(FROM_DENM_EXPECTED.items()))
def test_from_denm_table(cause: int, event_type: int) -> None:
    assert t.from_denm(cause) == event_type


@pytest.mark.parametrize("code", [0, 4, 7, 100, 255, -1])
def test_unknown_codes_map_to_the_explicit_unmapped_bucket(code: int) -> None:
    assert t.from_denm(code) == t.UNMAPPED
    assert t.to_denm(code * 1000 + 7) == t.DENM_UNMAPPED


def test_types_with_their_own_denm_cause_map_back_to_themselves() -> None:
    for event_type, cause in t.TO_DENM.items():
        if cause and list(t.TO_DENM.values()).count(cause) == 1 and cause != t.DENM_DANGEROUS_SITUATION:
            assert t.from_denm(cause) == event_type, event_type


def test_rsi_source_table_both_ways() -> None:
    assert set(t.TO_RSI_SOURCE) == {v.number for v in pb.SourceKind.DESCRIPTOR.values if v.number}
    for rsi, kind in t.FROM_RSI_SOURCE.items():
        assert t.TO_RSI_SOURCE[kind] == rsi
    assert t.from_rsi_source(42) == pb.SOURCE_KIND_UNKNOWN


def test_compatibility_is_symmetric_and_reflexive() -> None:
    for a in t.ALL_TYPES:
        assert t.compatible(a, a)
        for b in t.ALL_TYPES:
            assert t.compatible(a, b) == t.compatible(b, a)


def test_a_camera_stopped_vehicle_and_a_police_accident_are_one_happening_and_the_accident_wins() -> None:
    assert t.compatible(t.STOPPED_VEHICLE, t.ACCIDENT)
    assert t.merged_type(t.STOPPED_VEHICLE, t.ACCIDENT) == t.ACCIDENT
    assert t.merged_type(t.ACCIDENT, t.STOPPED_VEHICLE) == t.ACCIDENT
    assert not t.compatible(t.ACCIDENT, t.ROADWORKS)
    assert not t.compatible(t.OVERSPEED, t.WRONG_WAY)
