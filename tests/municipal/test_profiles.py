"""Profiles: each kind of record in each wire format, validated before it may leave."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from v2x.charging.v1 import charging_pb2
from v2x.parking.v1 import parking_pb2

from services.common.config import ConfigError
from services.municipal import plates, vocab
from services.municipal.coords import gcj02_to_wgs84, wgs84_to_gcj02
from services.municipal.model import InvalidRecord, NotCarried, OutboxRecord, idempotency_key
from services.municipal.profiles import RenderContext, make_profile
from services.municipal.profiles.base import Profile
from services.municipal.profiles.datex2 import NAMESPACES
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from tests.municipal.helpers import (
    SECRET,
    charger_static,
    charger_status,
    lot_dynamic,
    lot_static,
    passage,
    record,
    spot_status,
)


def profile(name: str = "municipal_json", **kw: Any) -> Profile:
    url = "https://city.example/municipal/v1/records" if kw.get("plate_policy") == "full" else "http://x/records"
    return make_profile(MunicipalDestination(name="city", url=url, profile=name, secret=SECRET, **kw))


def render(p: Profile, rec: OutboxRecord, ctx: RenderContext | None = None) -> Any:
    return p.render(rec, idempotency_key("city", rec.id), ctx).doc


def reasons(p: Profile, rec: OutboxRecord) -> list[str]:
    with pytest.raises(InvalidRecord) as err:
        p.render(rec, "k", None)
    return err.value.reasons


# ----- municipal JSON -----------------------------------------------------------------------------------------


def test_municipal_lot_dynamic_maps_counts_status_and_local_time() -> None:
    doc = render(profile(), record("lot_dynamic", "L1", lot_dynamic("L1", 7, 120), id_=42))
    assert doc["idempotencyKey"] == idempotency_key("city", 42) and doc["sequence"] == 42
    assert doc["recordType"] == "lot_dynamic" and doc["aggregateId"] == "L1"
    d = doc["data"]
    assert d["parkCode"] == "L1" and d["totalBerths"] == 346 and d["freeBerths"] == 132 and d["parkStatus"] == 1
    assert {c["berthClass"]: (c["total"], c["free"]) for c in d["berthClasses"]} == {
        1: (300, 120), 2: (40, 10), 3: (6, 2)}
    assert d["observedTime"].endswith("+08:00") and d["sequence"] == 7


def test_municipal_lot_static_states_its_coordinate_system_and_converts_to_gcj02_when_asked() -> None:
    rec = record("lot_static", "L1", lot_static("L1"))
    wgs = render(profile(), rec)["data"]
    gcj = render(profile(coordinate_system="GCJ02"), rec)["data"]
    assert wgs["coordinateSystem"] == "WGS84" and (wgs["latitude"], wgs["longitude"]) == (31.4, 121.49)
    assert gcj["coordinateSystem"] == "GCJ02"
    # GCJ-02 is offset by a few hundred metres in Shanghai.
    assert 0.001 < abs(gcj["longitude"] - 121.49) < 0.01 and 0.001 < abs(gcj["latitude"] - 31.4) < 0.01
    assert wgs["regionCode"] == "310113" and wgs["parkType"] == 1 and wgs["totalBerths"] == 346
    assert wgs["openingHours"][0] == {"weekday": 1, "open": "07:00", "close": "23:00"}
    assert [e["type"] for e in wgs["entrances"]] == [1, 2]


def test_gcj02_matches_the_published_reference_point_and_inverts() -> None:
    lat, lon = wgs84_to_gcj02(39.915, 116.404)
    assert (round(lat, 9), round(lon, 9)) == (round(39.91640428150164, 9), round(116.41024449916938, 9))
    assert wgs84_to_gcj02(48.85, 2.35) == (48.85, 2.35)  # outside China the systems coincide


@given(st.floats(20, 45), st.floats(100, 125))
def test_gcj02_round_trip_is_within_a_centimetre(lat: float, lon: float) -> None:
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))
    assert abs(back[0] - lat) < 1e-7 and abs(back[1] - lon) < 1e-7


@pytest.mark.parametrize(("policy", "expected"), [("masked", "沪A***45"), ("none", None)])
def test_plates_leave_only_as_the_destination_policy_allows(policy: str, expected: str | None) -> None:
    d = render(profile(plate_policy=policy), record("passage", "L1", passage("L1", "P1", "沪A12345")))["data"]
    assert d["plateNo"] == expected and d["plateNoPolicy"] == policy and d["plateColor"] == 0


def test_hashed_plates_match_entry_with_exit_without_revealing_the_plate() -> None:
    p = profile(plate_policy="hashed")
    a = render(p, record("passage", "L1", passage("L1", "P1", "沪A12345")))["data"]["plateNo"]
    b = render(p, record("passage", "L1", passage("L1", "P2", "沪A·12345")))["data"]["plateNo"]
    assert a == b and len(a) == 32 and "12345" not in a


def test_full_plates_must_be_mainland_plates_and_need_https() -> None:
    p = profile(plate_policy="full")
    assert render(p, record("passage", "L1", passage("L1", "P1", "粤B12345D")))["data"]["plateNo"] == "粤B12345D"
    assert any(r.startswith("plate:") for r in reasons(p, record("passage", "L1", passage("L1", "P1", "ABC123"))))
    with pytest.raises(ConfigError, match="https"):
        MunicipalSettings.from_env({"V2X_MUNICIPAL_DESTINATIONS": json.dumps([{
            "name": "c", "url": "http://x/r", "profile": "municipal_json", "secret": SECRET, "plate_policy": "full"}])})


@pytest.mark.parametrize(("payload", "field"), [
    ({**lot_dynamic("L1", 1), "free": {"general": 301}}, "free.general"),
    ({**lot_dynamic("L1", 1), "free": {"general": -1}}, "free.general"),
    ({**lot_dynamic("L1", 1), "free": {"reserved": 3}}, "free.reserved"),
    ({**lot_dynamic("L1", 1), "status": "SITE_STATUS_BUSY"}, "status"),
    ({**lot_dynamic("L1", 1), "observed_at": "yesterday"}, "observed_at"),
    ({**lot_dynamic("L1", 1), "observed_at": "2099-01-01T00:00:00+00:00"}, "observed_at"),
    ({**lot_dynamic("L2", 1)}, "aggregate_id"),
])
def test_invalid_lot_dynamic_records_are_refused_naming_the_field(payload: dict[str, Any], field: str) -> None:
    assert any(r.startswith(f"{field}:") for r in reasons(profile(), record("lot_dynamic", "L1", payload)))


def test_the_municipal_profile_needs_a_region_code_and_a_plate_colour() -> None:
    assert any(r.startswith("region_code:") for r in reasons(
        profile(), record("lot_static", "L1", lot_static("L1", region=""))))
    assert any(r.startswith("plate_colour:") for r in reasons(
        profile(), record("passage", "L1", passage("L1", "P1", colour="PLATE_COLOUR_UNSPECIFIED"))))


def test_every_bad_field_is_reported_at_once() -> None:
    bad = {**lot_static("L1"), "name": "", "lat": 91.0, "total_spaces": 5, "lot_kind": "LOT_KIND_CASTLE"}
    fields = {r.split(":")[0] for r in reasons(profile(), record("lot_static", "L1", bad))}
    assert {"name", "lat", "total_spaces", "lot_kind"} <= fields


def test_municipal_spot_and_charger_status_use_the_platform_codes() -> None:
    spot = render(profile(), record("spot_status", "L1", spot_status("L1", "S7", "SPOT_STATUS_FREE")))["data"]
    assert spot == {"parkCode": "L1", "berthCode": "S7", "berthClass": 1, "berthStatus": 0,
                    "observedTime": spot["observedTime"]}
    charger = render(profile(), record("charger_status", "ST1", charger_status("ST1", "C1")))["data"]
    assert charger["connectorStatus"] == 3 and charger["errorCode"] == "NO_ERROR"
    offline = render(profile(), record("charger_status", "ST1", charger_status(
        "ST1", "C1", "CONNECTOR_STATUS_UNKNOWN")))["data"]
    assert offline["connectorStatus"] == 0  # a silent charger reads offline, never its last status


def test_municipal_station_record_lists_its_connectors_with_plug_codes_and_power() -> None:
    data = render(profile(coordinate_system="GCJ02"),
                  record("charger_static", "ST1", charger_static("ST1", lot_id="L1")))["data"]
    assert (data["stationCode"], data["parkCode"], data["operatorCode"]) == ("ST1", "L1", "STATEGRID")
    assert data["coordinateSystem"] == "GCJ02" and data["latitude"] != 31.4  # converted like the lots
    assert [(k["connectorCode"], k["equipmentCode"], k["connectorType"], k["connectorStandard"], k["power"])
            for k in data["connectors"]] == [("1", "E1", 4, "GBT_DC", 120.0), ("2", "E1", 4, "CCS2", 120.0),
                                             ("3", "E2", 3, "TYPE2", 7.0)]
    assert data["connectors"][2]["berthCode"] == "S1" and data["connectors"][0]["berthCode"] is None


def test_a_station_record_is_checked_field_by_field() -> None:
    bad = {**charger_static("ST1"), "name": "", "lat": 91.0, "connectors": [
        {**charger_static("ST1")["connectors"][0], "standard": "CONNECTOR_STANDARD_TESLA", "max_power_kw": 0},
        {**charger_static("ST1")["connectors"][0], "connector_id": "1", "max_power_kw": "7"}]}
    assert set(reasons(profile(), record("charger_static", "ST1", bad))) == {
        "name: is empty", "lat: must be between -90 and 90, not 91.0",
        "connectors[0].standard: unknown value 'CONNECTOR_STANDARD_TESLA'",
        "connectors[0].max_power_kw: must be more than 0", "connectors[1].connector_id: '1' comes twice",
        "connectors[1].max_power_kw: must be a number"}
    assert reasons(profile(), record("charger_static", "OTHER", charger_static("ST1"))) == [
        "aggregate_id: 'OTHER' is not the record's subject 'ST1'"]


def test_a_destination_can_narrow_the_kinds_it_receives() -> None:
    p = profile(kinds=("lot_dynamic",))
    with pytest.raises(NotCarried):
        p.render(record("lot_static", "L1", lot_static("L1")), "k")


def test_municipal_body_is_one_json_document_with_every_record_in_order() -> None:
    p = profile()
    docs = [render(p, record("lot_dynamic", "L1", lot_dynamic("L1", i), id_=i)) for i in (1, 2, 3)]
    body = json.loads(p.body(docs))
    assert [r["sequence"] for r in body["records"]] == [1, 2, 3] and body["destination"] == "city"


# ----- DATEX II --------------------------------------------------------------------------------------------------


def _datex(docs: list[Any]) -> ET.Element:
    return ET.fromstring(profile("datex2_xml").body(docs))


def test_datex2_place_status_is_one_payload_with_occupancy_status_and_delivery_facts() -> None:
    p = profile("datex2_xml")
    root = _datex([render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 3, 0, status="SITE_STATUS_FULL"),
                                    id_=9))])
    assert root.tag == f"{{{NAMESPACES['d2']}}}payload"
    assert root.get(f"{{{NAMESPACES['xsi']}}}type") == "prk:ParkingStatusPublication"
    status = root.find("prk:parkingStatusInformation", NAMESPACES)
    assert status is not None and status.get(f"{{{NAMESPACES['xsi']}}}type") == "prk:PlaceStatus"
    assert status.findtext("prk:status", namespaces=NAMESPACES) == "full"
    assert status.findtext("fac:openingStatus", namespaces=NAMESPACES) == "open"
    assert status.findtext("prk:occupancy/prk:numberOfVacantSpaces", namespaces=NAMESPACES) == "12"
    assert status.findtext("prk:occupancy/prk:numberOfSpacesOverride", namespaces=NAMESPACES) == "346"
    delivery = status.find(".//v2x:delivery", NAMESPACES)
    assert delivery is not None and delivery.get("idempotencyKey") == idempotency_key("city", 9)


def test_datex2_says_closed_and_full_at_entrance_the_standards_way() -> None:
    p = profile("datex2_xml")
    closed = _datex([render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 3, status="SITE_STATUS_CLOSED")))])
    assert closed.findtext(".//fac:openingStatus", namespaces=NAMESPACES) == "closed"
    assert closed.find(".//prk:status", NAMESPACES) is None  # ParkingPlaceStatusEnum has no closed
    at_entrance = _datex([render(p, record("lot_dynamic", "L1",
                                           lot_dynamic("L1", 3, status="SITE_STATUS_FULL_AT_ENTRANCE")))])
    assert at_entrance.findtext(".//prk:status", namespaces=NAMESPACES) == "fullAtEntrance"
    spots = _datex([render(p, record("spot_status", "L1", spot_status("L1", s, st)))
                    for s, st in (("S1", "SPOT_STATUS_FREE"), ("S2", "SPOT_STATUS_CLOSED"))])
    free, shut = spots.findall("prk:parkingStatusInformation", NAMESPACES)
    assert free.findtext("prk:occupied", namespaces=NAMESPACES) == "false"
    assert shut.find("prk:occupied", NAMESPACES) is None
    assert shut.findtext("fac:openingStatus", namespaces=NAMESPACES) == "closed"


def test_datex2_table_carries_name_location_supply_hours_rates_and_escapes_text() -> None:
    p = profile("datex2_xml")
    root = _datex([render(p, record("lot_static", "L1", lot_static("L1", name="A & B <停车场>")))])
    assert root.get(f"{{{NAMESPACES['xsi']}}}type") == "prk:ParkingTablePublication"
    place = root.find("prk:parkingTable/prk:hierarchyElementGeneral", NAMESPACES)
    assert place is not None and place.get("id") == "L1"
    assert place.findtext("fac:name//com:value", namespaces=NAMESPACES) == "A & B <停车场>"
    assert place.findtext(".//loc:latitude", namespaces=NAMESPACES) == "31.4"
    assert place.findtext("prk:supply/prk:quantity", namespaces=NAMESPACES) == "346"
    assert place.findtext(".//prk:occupancyDetection", namespaces=NAMESPACES) == "balancing"
    assert place.findtext(".//com:startTimeOfPeriod", namespaces=NAMESPACES) == "07:00:00"
    assert len(place.findall(".//com:applicableDay", NAMESPACES)) == 7
    values = [v.text for v in place.findall("fac:rates//fac:value", NAMESPACES)]
    assert values == ["0.00", "10.00", "5.00"]  # 15 free minutes, the first hour, each further hour


def test_datex2_charger_status_is_an_energy_infrastructure_status() -> None:
    p = profile("datex2_xml")
    root = _datex([render(p, record("charger_status", "ST1", charger_status("ST1", "C1")))])
    assert root.get(f"{{{NAMESPACES['xsi']}}}type") == "egi:EnergyInfrastructureStatusPublication"
    point = root.find(".//egi:refillPointStatus", NAMESPACES)
    assert point is not None and point.findtext("egi:status", namespaces=NAMESPACES) == "charging"
    ref = point.find("fac:reference", NAMESPACES)
    assert ref is not None and ref.get("id") == "ST1:C1"


def test_datex2_station_is_an_energy_infrastructure_table_site_with_a_refill_point_per_connector() -> None:
    p = profile("datex2_xml")
    root = _datex([render(p, record("charger_static", "ST1", charger_static("ST1", lot_id="L1"), id_=7))])
    assert root.get(f"{{{NAMESPACES['xsi']}}}type") == "egi:EnergyInfrastructureTablePublication"
    table = root.find("egi:energyInfrastructureTable", NAMESPACES)
    assert table is not None and table.get("version") == "7"
    site = table.find("egi:energyInfrastructureSite", NAMESPACES)
    assert site is not None and (site.get("id"), site.get("version")) == ("ST1", "7")
    assert site.findtext("fac:name//com:value", namespaces=NAMESPACES) == "宝山充电站 & <1>"
    operator = site.find("fac:operator/fac:organisationReference", NAMESPACES)
    assert operator is not None and operator.get("id") == "STATEGRID"
    parking = site.find("fac:associatedFacility/fac:facilityReference", NAMESPACES)
    assert parking is not None and parking.get("id") == "L1"  # the lot the station is in
    delivery = site.find(".//v2x:delivery", NAMESPACES)
    assert delivery is not None and delivery.get("recordType") == "charger_static"
    station = site.find("egi:energyInfrastructureStation", NAMESPACES)
    assert station is not None and station.get("id") == "ST1"
    assert station.findtext("egi:numberOfRefillPoints", namespaces=NAMESPACES) == "3"
    points = station.findall("egi:refillPoint", NAMESPACES)
    assert [pt.get("id") for pt in points] == ["ST1:1", "ST1:2", "ST1:3"]
    assert [(pt.findtext("egi:connector/egi:connectorType", namespaces=NAMESPACES),
             pt.findtext("egi:connector/egi:otherConnector", namespaces=NAMESPACES),
             pt.findtext("egi:connector/egi:maxPowerAtSocket", namespaces=NAMESPACES)) for pt in points] == [
        ("other", "GB/T 20234.3 DC", "120000.0"), ("iec62196T2COMBO", None, "120000.0"), ("iec62196T2", None, "7000.0")]
    assert [pt.findtext("fac:externalIdentifier", namespaces=NAMESPACES) for pt in points] == ["E1", "E1", "E2"]
    space = points[2].find("egi:vehicleSpace", NAMESPACES)
    assert space is not None and space.get("id") == "L1:S1"


def test_datex2_charger_status_refers_to_the_site_and_points_the_table_declares() -> None:
    p = profile("datex2_xml")
    table = _datex([render(p, record("charger_static", "ST1", charger_static("ST1", lot_id="L1")))])
    in_lot = {**charger_status("ST1", "3"), "parking_lot_id": "L1"}
    status = _datex([render(p, record("charger_status", "ST1", in_lot))])
    declared = {(el.tag.rsplit("}", 1)[1], el.get("id")) for el in table.iter() if el.get("id")}
    referred = {el.get("id") for el in status.iter(f"{{{NAMESPACES['fac']}}}reference")}
    assert referred == {"ST1", "ST1:3"}
    assert {("energyInfrastructureSite", "ST1"), ("energyInfrastructureStation", "ST1"),
            ("refillPoint", "ST1:3")} <= declared


def test_datex2_never_mixes_publications_in_one_payload_nor_carries_passages() -> None:
    p = profile("datex2_xml")
    table = render(p, record("lot_static", "L1", lot_static("L1")))
    status = render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 1)))
    with pytest.raises(ValueError, match="one publication"):
        p.body([table, status])
    assert p.publication("lot_static") != p.publication("lot_dynamic") == p.publication("spot_status")
    assert len({p.publication(k) for k in ("lot_static", "lot_dynamic", "charger_static", "charger_status")}) == 4
    with pytest.raises(NotCarried):
        p.render(record("passage", "L1", passage("L1", "P1")), "k")


# ----- NGSI-LD ---------------------------------------------------------------------------------------------------


def test_ngsi_ld_lots_are_off_or_on_street_parking_with_geojson_locations() -> None:
    p = profile("ngsi_ld")
    garage = render(p, record("lot_static", "L1", lot_static("L1")))
    street = render(p, record("lot_static", "L2", lot_static("L2", kind="LOT_KIND_ON_STREET_SEGMENT")))
    assert garage["id"] == "urn:ngsi-ld:OffStreetParking:L1" and garage["type"] == "OffStreetParking"
    assert garage["location"]["value"] == {"type": "Point", "coordinates": [121.49, 31.4]}
    assert street["type"] == "OnStreetParking"
    assert garage["v2xDelivery"]["value"][0]["recordType"] == "lot_static"
    assert "onStreet" not in street["category"]["value"]  # not a category of OnStreetParking
    assert street["location"]["value"]["type"] == "Point"


def test_ngsi_ld_availability_follows_the_lot_type_and_carries_observed_at() -> None:
    p = profile("ngsi_ld")
    ctx = RenderContext({"L2": "LOT_KIND_ON_STREET_SEGMENT"})
    e = render(p, record("lot_dynamic", "L2", lot_dynamic("L2", 1, 50)), ctx)
    assert e["id"] == "urn:ngsi-ld:OnStreetParking:L2" and e["availableSpotNumber"]["value"] == 62
    assert e["availableSpotNumber"]["observedAt"].endswith("Z") and e["status"]["value"] == ["spacesAvailable"]


def test_ngsi_ld_spot_and_charger_entities() -> None:
    p = profile("ngsi_ld")
    ctx = RenderContext({"L1": "LOT_KIND_GARAGE"}, {"L1": {"type": "Point", "coordinates": [121.49, 31.4]}})
    spot = render(p, record("spot_status", "L1", spot_status("L1", "S1")), ctx)
    assert spot["type"] == "ParkingSpot" and spot["status"]["value"] == "occupied"
    assert spot["refParkingSite"]["object"] == "urn:ngsi-ld:OffStreetParking:L1"
    assert spot["location"]["value"]["coordinates"] == [121.49, 31.4]  # the lot's, when the berth has none
    berth = render(p, record("spot_status", "L1", {**spot_status("L1", "S2"), "lat": 31.41, "lon": 121.5}), ctx)
    assert berth["location"]["value"]["coordinates"] == [121.5, 31.41]
    station = render(p, record("charger_status", "ST1", charger_status("ST1", "C1")))
    assert station["type"] == "EVChargingStation" and station["id"] == "urn:ngsi-ld:EVChargingStation:ST1:C1"
    assert station["v2xConnectorStatus"]["value"] == "Charging" and station["status"]["value"] == "working"
    assert (station["capacity"]["value"], station["availableCapacity"]["value"]) == (1, 0)
    assert station["socketType"]["value"] and station["allowedVehicleType"]["value"] == ["car"]
    assert isinstance(json.loads(p.body([spot, station])), list)


def test_ngsi_ld_station_statics_are_fragments_of_its_charging_points_entities() -> None:
    p = profile("ngsi_ld")
    points = render(p, record("charger_static", "ST1", charger_static("ST1"), id_=1))
    assert [e["id"] for e in points] == [f"urn:ngsi-ld:EVChargingStation:ST1:{c}" for c in ("1", "2", "3")]
    assert [e["socketType"]["value"] for e in points] == [["Other"], ["CCS/SAE"], ["Type2"]]
    assert points[0]["name"]["value"] == "宝山充电站 & <1>" and points[2]["v2xMaxPowerKw"]["value"] == 7.0
    assert "status" not in points[0]  # statics only: the status comes with charger_status
    wire = p.wire(points)
    assert p.subjects(wire) == [e["id"] for e in points]
    # With a status of one of its points in the same batch: one fragment per entity, the later record's over it.
    status = render(p, record("charger_status", "ST1", charger_status("ST1", "2"), id_=2))
    entities = json.loads(p.body_of([wire, p.wire(status)]))
    assert [e["id"] for e in entities] == [e["id"] for e in points]
    merged = entities[1]
    assert merged["name"]["value"] and merged["v2xConnectorStatus"]["value"] == "Charging"
    assert [d["sequence"] for d in merged["v2xDelivery"]["value"]] == [1, 2]


def test_ngsi_ld_occupancy_is_a_fragment_with_the_lots_location_and_the_models_status() -> None:
    p = profile("ngsi_ld")
    ctx = RenderContext({"L1": "LOT_KIND_GARAGE"}, {"L1": {"type": "Point", "coordinates": [121.49, 31.4]}})
    full = render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 1, status="SITE_STATUS_FULL_AT_ENTRANCE")), ctx)
    assert full["status"]["value"] == ["fullAtEntrance"] and full["location"]["value"]["type"] == "Point"
    assert "name" not in full  # an update fragment: the broker keeps the rest (?options=update)
    unknown = render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 2, status="SITE_STATUS_UNKNOWN")), ctx)
    assert unknown["status"]["value"] == ["openingTimesInForce"]
    assert p.request_url("http://b/ngsi-ld/v1/entityOperations/upsert") == (
        "http://b/ngsi-ld/v1/entityOperations/upsert?options=update")
    assert p.request_url("http://b/u?options=replace&x=1") == "http://b/u?x=1&options=update"


def test_ngsi_ld_merges_the_records_of_one_entity_in_a_batch_into_one_fragment() -> None:
    p = profile("ngsi_ld")
    ctx = RenderContext({"L1": "LOT_KIND_GARAGE"})
    docs = [render(p, record("lot_static", "L1", lot_static("L1"), id_=1), ctx),
            render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 1, 100), id_=2), ctx),
            render(p, record("spot_status", "L1", spot_status("L1", "S1"), id_=3), ctx),
            render(p, record("lot_dynamic", "L1", lot_dynamic("L1", 2, 90), id_=4), ctx)]
    body = p.body_of([p.wire(d) for d in docs])
    entities = json.loads(body)
    assert [e["id"] for e in entities] == ["urn:ngsi-ld:OffStreetParking:L1", "urn:ngsi-ld:ParkingSpot:L1:S1"]
    lot = entities[0]
    assert lot["name"]["value"] and lot["availableSpotNumber"]["value"] == 102  # the later record's count
    assert [d["sequence"] for d in lot["v2xDelivery"]["value"]] == [1, 2, 4]
    assert body == p.body(docs)


# ----- the vocabulary tables ------------------------------------------------------------------------------------


def _names(enum: Any) -> set[str]:
    return {v.name for v in enum.DESCRIPTOR.values if v.number != 0}


@pytest.mark.parametrize(("table", "enum"), [
    (vocab.MUNICIPAL_PARK_TYPE, parking_pb2.LotKind), (vocab.DATEX_LAYOUT, parking_pb2.LotKind),
    (vocab.NGSI_LOT_TYPE, parking_pb2.LotKind), (vocab.NGSI_LOT_CATEGORY, parking_pb2.LotKind),
    (vocab.MUNICIPAL_DETECTION, parking_pb2.DetectionType), (vocab.STANDARD_DETECTION, parking_pb2.DetectionType),
    (vocab.DATEX_DETECTION, parking_pb2.DetectionType), (vocab.DATEX_OPENING_STATUS, parking_pb2.SiteStatus),
    (vocab.MUNICIPAL_PARK_STATUS, parking_pb2.SiteStatus),
    (vocab.NGSI_SITE_STATUS, parking_pb2.SiteStatus), (vocab.MUNICIPAL_BERTH_STATUS, parking_pb2.SpotStatus),
    (vocab.NGSI_SPOT_STATUS, parking_pb2.SpotStatus),
    ({**vocab.DATEX_SPACE_OCCUPIED, **vocab.DATEX_SPACE_OPENING_STATUS}, parking_pb2.SpotStatus),
    (vocab.MUNICIPAL_DIRECTION, parking_pb2.PassageDirection),
    (vocab.MUNICIPAL_PLATE_COLOUR, parking_pb2.PlateColour),
    (vocab.MUNICIPAL_CONNECTOR_STATUS, charging_pb2.ConnectorStatus),
    (vocab.NGSI_CONNECTOR_STATUS, charging_pb2.ConnectorStatus),
    (vocab.DATEX_REFILL_POINT_STATUS, charging_pb2.ConnectorStatus),
    (vocab.DATEX_CONNECTOR_TYPE, charging_pb2.ConnectorStandard),
    (vocab.MUNICIPAL_CONNECTOR_TYPE, charging_pb2.ConnectorStandard),
    (vocab.NGSI_SOCKET_TYPE, charging_pb2.ConnectorStandard),
    (dict.fromkeys(vocab.CONNECTOR_STANDARDS), charging_pb2.ConnectorStandard),
])
def test_every_mapping_table_covers_every_value_of_its_enum(table: Any, enum: Any) -> None:
    assert set(table) == _names(enum)


def test_masking_keeps_only_the_province_authority_and_last_two() -> None:
    assert plates.mask("沪A12345") == "沪A***45" and plates.mask("AB") == "**"
    assert plates.is_mainland_plate("京A·F0236") and not plates.is_mainland_plate("WXYZ")


def test_destinations_config_names_the_bad_setting() -> None:
    with pytest.raises(ConfigError, match="profile"):
        MunicipalSettings.from_env({"V2X_MUNICIPAL_DESTINATIONS": json.dumps([{
            "name": "c", "url": "http://x/r", "profile": "csv", "secret": SECRET}])})
    with pytest.raises(ConfigError, match="GCJ02"):
        MunicipalSettings.from_env({"V2X_MUNICIPAL_DESTINATIONS": json.dumps([{
            "name": "c", "url": "http://x/r", "profile": "ngsi_ld", "secret": SECRET, "coordinate_system": "GCJ02"}])})
    ok = MunicipalSettings.from_env({"S": SECRET, "V2X_MUNICIPAL_DESTINATIONS": json.dumps([{
        "name": "c", "url": "http://x/r", "profile": "ngsi_ld", "secret_env": "S", "rate_limit_rps": 50}])})
    assert ok.destinations[0].secret == SECRET and ok.destinations[0].rate_limit_rps == 50
