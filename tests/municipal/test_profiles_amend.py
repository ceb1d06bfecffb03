"""Charging piles in lot static data and corrections/voids of entry/exit records, in each profile: valid ones
render per the mapping of PROFILES.md, invalid ones are refused with a reason naming the field."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.municipal.model import InvalidRecord, NotCarried, OutboxRecord, idempotency_key
from services.municipal.profiles import make_profile
from services.municipal.profiles.base import Profile
from services.municipal.profiles.datex2 import NAMESPACES
from services.municipal.settings import MunicipalDestination
from tests.municipal.helpers import SECRET, lot_static, passage, record


def profile(name: str = "municipal_json", **kw: Any) -> Profile:
    url = "https://city.example/municipal/v1/records" if kw.get("plate_policy") == "full" else "http://x/records"
    return make_profile(MunicipalDestination(name="city", url=url, profile=name, secret=SECRET, **kw))


def render(p: Profile, rec: OutboxRecord) -> Any:
    return p.render(rec, idempotency_key("city", rec.id), None).doc


def reasons(p: Profile, rec: OutboxRecord) -> list[str]:
    with pytest.raises(InvalidRecord) as err:
        p.render(rec, "k", None)
    return err.value.reasons


def piled(fast: Any = 4, slow: Any = 12, **kw: Any) -> dict[str, Any]:
    """lot_static of helpers (40 EV spaces) with pile counts."""
    return {**lot_static("L1", **kw), "fast_charging_piles": fast, "slow_charging_piles": slow}


def amended(record_type: str = "correction", **over: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=5)
    return {**passage("L1", "P1", "沪A12346"), "record_type": record_type, "original_passage_id": "P1", "revision": 1,
            "reason": "plate misread", "amended_at": at.isoformat(), **over}


def without(payload: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in fields}


# ----- charging piles -------------------------------------------------------------------------------------------


def test_municipal_lot_static_carries_fast_and_slow_piles() -> None:
    d = render(profile(), record("lot_static", "L1", piled(4, 12)))["data"]
    assert (d["fastChargingPiles"], d["slowChargingPiles"], d["evBerths"]) == (4, 12, 40)


def test_a_lot_static_record_written_before_piles_reads_zero_piles() -> None:
    d = render(profile(), record("lot_static", "L1", lot_static("L1")))["data"]
    assert (d["fastChargingPiles"], d["slowChargingPiles"]) == (0, 0)


def test_piles_may_fill_every_ev_space() -> None:
    d = render(profile(), record("lot_static", "L1", piled(10, 30)))["data"]
    assert d["fastChargingPiles"] + d["slowChargingPiles"] == d["evBerths"]


@pytest.mark.parametrize(("payload", "field", "says"), [
    (piled(-1, 0), "fast_charging_piles", "must be between 0 and 100000, not -1"),
    (piled(0, -2), "slow_charging_piles", "must be between 0 and 100000, not -2"),
    (piled("4", 0), "fast_charging_piles", "must be an integer"),
    (piled(0, 1.5), "slow_charging_piles", "must be an integer"),
    (piled(0, True), "slow_charging_piles", "must be an integer"),
    (piled(30, 11), "slow_charging_piles", "30 fast + 11 slow charging piles exceed the 40 EV spaces"),
    (piled(41, 0), "fast_charging_piles", "exceed the 40 EV spaces"),
], ids=["negative-fast", "negative-slow", "text", "fraction", "boolean", "more-than-ev", "fast-alone-more-than-ev"])
@pytest.mark.parametrize("name", ["municipal_json", "ngsi_ld", "datex2_xml"])
def test_bad_pile_counts_are_refused_in_every_profile_naming_the_field(name: str, payload: dict[str, Any],
                                                                       field: str, says: str) -> None:
    found = reasons(profile(name), record("lot_static", "L1", payload))
    assert any(r.startswith(f"{field}: ") and says in r for r in found), found


def test_ngsi_ld_tags_a_lot_with_piles_for_electrical_charging_and_counts_them_in_an_extension() -> None:
    p = profile("ngsi_ld")
    with_piles = render(p, record("lot_static", "L1", piled(4, 12)))
    without_piles = render(p, record("lot_static", "L1", piled(0, 0)))
    old = render(p, record("lot_static", "L1", lot_static("L1")))
    assert "forElectricalCharging" in with_piles["category"]["value"]
    assert with_piles["v2xChargingPiles"] == {"type": "Property", "value": {"fast": 4, "slow": 12}}
    assert "forElectricalCharging" not in without_piles["category"]["value"]
    assert without_piles["v2xChargingPiles"]["value"] == {"fast": 0, "slow": 0}
    assert "v2xChargingPiles" not in old and "forElectricalCharging" not in old["category"]["value"]


def test_datex2_renders_a_lot_with_piles_without_carrying_them() -> None:
    p = profile("datex2_xml")
    body = p.body([render(p, record("lot_static", "L1", piled(4, 12)))])
    root = ET.fromstring(body)
    assert root.findtext(".//prk:supply/prk:quantity", namespaces=NAMESPACES) == "346"
    assert b"Pile" not in body and b"pile" not in body


# ----- corrections and voids of entry/exit records --------------------------------------------------------------


def test_a_new_entry_exit_record_is_operate_type_1_without_an_original() -> None:
    d = render(profile(), record("passage", "L1", {**passage("L1", "P1"), "record_type": "normal"}))["data"]
    assert (d["operateType"], d["originalRecordId"], d["revision"], d["amendReason"], d["amendTime"]) == (
        1, None, 0, "", None)


def test_a_passage_record_written_before_record_types_is_new() -> None:
    d = render(profile(), record("passage", "L1", passage("L1", "P1")))["data"]
    assert d["operateType"] == 1 and d["originalRecordId"] is None


def test_a_correction_names_the_original_record_and_carries_the_corrected_fields() -> None:
    d = render(profile(), record("passage", "L1", amended(revision=2)))["data"]
    assert d["operateType"] == 2 and d["recordId"] == "P1" and d["originalRecordId"] == "P1"
    assert d["revision"] == 2 and d["amendReason"] == "plate misread" and d["amendTime"].endswith("+08:00")
    assert d["plateNo"] == "沪A***46"


def test_a_void_is_operate_type_3() -> None:
    d = render(profile(), record("passage", "L1", amended("void", reason="double read")))["data"]
    assert d["operateType"] == 3 and d["originalRecordId"] == "P1" and d["amendReason"] == "double read"


@pytest.mark.parametrize(("policy", "expected"), [
    ("full", "was 沪A12345"), ("masked", "was 沪A***45"), ("none", "was ***")])
def test_plates_in_a_reason_leave_as_the_destination_policy_allows(policy: str, expected: str) -> None:
    d = render(profile(plate_policy=policy), record("passage", "L1", amended(reason="was 沪A12345")))["data"]
    assert d["amendReason"] == expected


def test_a_hashed_destination_gets_the_plate_in_a_reason_hashed_as_plateNo() -> None:
    p = profile(plate_policy="hashed")
    entry = render(p, record("passage", "L1", passage("L1", "P0", "沪A12345")))["data"]["plateNo"]
    reason = render(p, record("passage", "L1", amended(reason="was 沪A12345")))["data"]["amendReason"]
    assert reason == f"was {entry}" and "12345" not in reason


@pytest.mark.parametrize(("payload", "field", "says"), [
    (amended("undo"), "record_type", "unknown value 'undo'"),
    (without(amended(), "original_passage_id"), "original_passage_id", "is missing"),
    (amended(original_passage_id="P2"), "original_passage_id", "is not the passage this record amends"),
    (amended(original_passage_id="bad id"), "original_passage_id", "must be 1..64 characters"),
    (without(amended(), "revision"), "revision", "is missing"),
    (amended(revision=0), "revision", "must be between 1 and 1000000, not 0"),
    (amended(revision="1"), "revision", "must be an integer"),
    (without(amended(), "reason"), "reason", "is missing"),
    (amended(reason=" "), "reason", "is empty"),
    (amended(reason="x" * 501), "reason", "at most 500"),
    (without(amended("void"), "amended_at"), "amended_at", "is missing"),
    (amended(amended_at="yesterday"), "amended_at", "must be an ISO-8601 time"),
    (amended(amended_at="2099-01-01T00:00:00+00:00"), "amended_at", "is in the future"),
    ({**passage("L1", "P1"), "record_type": "normal", "original_passage_id": "P0"}, "original_passage_id",
     "only a correction or void record refers to an original passage"),
], ids=["unknown-type", "no-original", "other-original", "bad-original", "no-revision", "revision-0",
        "revision-text", "no-reason", "blank-reason", "long-reason", "no-amended-at", "bad-amended-at",
        "future-amended-at", "normal-with-original"])
def test_bad_corrections_and_voids_are_refused_naming_the_field(payload: dict[str, Any], field: str,
                                                                says: str) -> None:
    found = reasons(profile(), record("passage", "L1", payload))
    assert any(r.startswith(f"{field}: ") and says in r for r in found), found


def test_a_correction_still_needs_what_every_entry_exit_record_needs() -> None:
    assert any(r.startswith("plate: ") for r in reasons(profile(), record("passage", "L1", amended(plate=""))))
    assert any(r.startswith("plate_colour: ") for r in reasons(
        profile(), record("passage", "L1", amended(plate_colour="PLATE_COLOUR_UNSPECIFIED"))))


@pytest.mark.parametrize("name", ["ngsi_ld", "datex2_xml"])
def test_profiles_without_entry_exit_records_do_not_carry_corrections_or_voids(name: str) -> None:
    for payload in (amended(), amended("void")):
        with pytest.raises(NotCarried):
            profile(name).render(record("passage", "L1", payload), "k")
