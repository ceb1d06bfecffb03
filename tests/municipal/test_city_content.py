"""The municipal JSON content city platforms ask for (Putian 2024, Guangzhou DB4401/T 133-2021): berths open to the
public, fee rules by period and duration band, an exit's entry, stay and fee, each destination's plate colour codes,
on-street berth coordinates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.config import ConfigError
from services.municipal import vocab
from services.municipal.model import idempotency_key
from services.municipal.profiles import make_profile
from services.municipal.profiles.base import Profile
from services.municipal.settings import PLATE_COLOURS, MunicipalDestination, MunicipalSettings
from tests.municipal.helpers import SECRET, lot_static, passage, record, spot_status


def municipal(**kw: Any) -> Profile:
    return make_profile(MunicipalDestination(name="city", url="http://x/records", profile="municipal_json",
                                             secret=SECRET, **kw))


def data(p: Profile, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    rec = record(kind, payload["lot_id"], payload, id_=5)
    doc: dict[str, Any] = p.render(rec, idempotency_key("city", 5)).doc
    return doc["data"]  # type: ignore[no-any-return]


def test_public_berths_default_to_every_space_and_follow_the_record() -> None:
    assert data(municipal(), "lot_static", lot_static("L1"))["publicBerths"] == 346
    assert data(municipal(), "lot_static", {**lot_static("L1"), "public_spaces": 300})["publicBerths"] == 300
    with pytest.raises(Exception, match="public_spaces: 400 public spaces exceed the lot's 346"):
        data(municipal(), "lot_static", {**lot_static("L1"), "public_spaces": 400})


def test_the_fee_rule_has_periods_with_duration_bands() -> None:
    rule = data(municipal(), "lot_static", lot_static("L1"))["feeRule"]
    assert rule["dailyCapFen"] == 6000 and rule["freeMinutes"] == 15
    (period,) = rule["periods"]
    assert (period["start"], period["end"]) == ("00:00", "24:00")
    assert period["bands"] == [
        {"fromMinute": 0, "toMinute": 15, "feeFen": 0, "unitMinutes": None},
        {"fromMinute": 15, "toMinute": 60, "feeFen": 1000, "unitMinutes": None},
        {"fromMinute": 60, "toMinute": None, "feeFen": 500, "unitMinutes": 60}]


def exit_(**kw: Any) -> dict[str, Any]:
    """An exit passed now; a timedelta given for a time is taken from the exit's own time (parameters are made
    at collection, which may be minutes before the test runs)."""
    now = datetime.now(UTC)
    kw = {k: (now + v).isoformat() if isinstance(v, timedelta) else v for k, v in kw.items()}
    return {**passage("L1", "P2"), "direction": "PASSAGE_DIRECTION_EXIT", "entry_passage_id": "P1",
            "entry_passed_at": (now - timedelta(hours=2)).isoformat(), "passed_at": now.isoformat(),
            "duration_s": 7200, "fee_fen": 1500, **kw}


def test_an_exit_carries_its_entry_the_stay_and_the_fee() -> None:
    d = data(municipal(), "passage", exit_())
    assert d["entryRecordId"] == "P1" and d["entryTime"].endswith("+08:00")
    assert (d["parkingDuration"], d["feeFen"]) == (7200, 1500)
    entry = data(municipal(), "passage", passage("L1", "P1"))
    assert (entry["entryRecordId"], entry["parkingDuration"], entry["feeFen"]) == (None, None, None)


@pytest.mark.parametrize(("change", "says"), [
    ({"direction": "PASSAGE_DIRECTION_ENTRY"}, "entry_passage_id: only an exit"),
    ({"fee_fen": -1}, "fee_fen: must be between 0"),
    ({"duration_s": None}, "duration_s: must be an integer"),
    ({"entry_passed_at": timedelta(minutes=5)}, "entry_passed_at: is after"),
])
def test_a_bad_stay_is_refused_naming_the_field(change: dict[str, Any], says: str) -> None:
    with pytest.raises(Exception, match=says):
        data(municipal(), "passage", exit_(**change))


def test_each_destination_numbers_plate_colours_its_own_way() -> None:
    yellow = {**passage("L1", "P1"), "plate_colour": "PLATE_COLOUR_YELLOW"}
    assert data(municipal(), "passage", yellow)["plateColor"] == vocab.MUNICIPAL_PLATE_COLOUR["PLATE_COLOUR_YELLOW"]
    toll = municipal(plate_colour_codes={"PLATE_COLOUR_YELLOW": 2, "PLATE_COLOUR_BLUE": 1})
    assert data(toll, "passage", yellow)["plateColor"] == 2
    assert data(toll, "passage", {**yellow, "plate_colour": "PLATE_COLOUR_GREEN"})["plateColor"] == 4  # default
    with pytest.raises(ConfigError, match="plate_colour_codes"):
        MunicipalSettings.from_env({"V2X_MUNICIPAL_DESTINATIONS": json.dumps([{
            "name": "c", "url": "http://x/r", "profile": "municipal_json", "secret": SECRET,
            "plate_colour_codes": {"PLATE_COLOUR_PINK": 7}}])})
    assert PLATE_COLOURS == vocab.PLATE_COLOURS


def test_an_on_street_berth_carries_its_coordinates_in_the_destinations_system() -> None:
    berth = {**spot_status("L1", "B1"), "lat": 31.2301, "lon": 121.4702}
    wgs = data(municipal(), "spot_status", berth)
    assert (wgs["coordinateSystem"], wgs["latitude"], wgs["longitude"]) == ("WGS84", 31.2301, 121.4702)
    gcj = data(municipal(coordinate_system="GCJ02"), "spot_status", berth)
    assert gcj["coordinateSystem"] == "GCJ02" and gcj["longitude"] != 121.4702
    assert "latitude" not in data(municipal(), "spot_status", spot_status("L1", "B2"))
    with pytest.raises(Exception, match="lat: must be between -90 and 90"):
        data(municipal(), "spot_status", {**berth, "lat": 91})
