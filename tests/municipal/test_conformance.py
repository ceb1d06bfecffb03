"""Conformance: every record kind of every profile, through the real delivery path (outbox -> adapter -> the platform
emulator), and each body the emulator received checked against the standard's own published schema
(../shared/standards: DATEX II v3.5 XSD, FIWARE Smart Data Models JSON Schemas). A missing schema folder fails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from v2x.municipal.v1 import municipal_pb2 as pb

from services.common.runtime import Resources
from services.municipal.emulator import Faults, Platform, RunningEmulator
from services.municipal.standards import MissingStandards, standards_dir
from tests.municipal.conftest import PATHS, StartAdapter, destination, set_faults
from tests.municipal.helpers import (
    Row,
    charger_static,
    charger_status,
    insert,
    lot_dynamic,
    lot_static,
    passage,
    spot_status,
)
from tests.municipal.standards import datex2_problems, folder, sdm_problems
from tests.municipal.test_delivery import caught_up, dead_letters, delivered


def every_kind(u: str) -> list[Row]:
    """Each kind of record in each of the shapes that map differently somewhere."""
    street = {**lot_static(f"N{u}", kind="LOT_KIND_ON_STREET_SEGMENT"),
              "line": [[31.40, 121.49], [31.401, 121.491]], "always_open": True, "opening_periods": [],
              "price": {"free_minutes": 0, "first_hour_fen": 0, "per_hour_fen": 0, "daily_cap_fen": 0}}
    surface = {**lot_static(f"S{u}", kind="LOT_KIND_SURFACE_LOT"), "fast_charging_piles": 2, "public_spaces": 300,
               "slow_charging_piles": 6, "detection_type": "DETECTION_TYPE_SINGLE_SPACE"}
    now = datetime.now(UTC).isoformat()
    exit_ = {**passage(f"G{u}", "P2"), "direction": "PASSAGE_DIRECTION_EXIT", "entry_passage_id": "P1",
             "entry_passed_at": now, "duration_s": 0, "fee_fen": 0}
    amended = {**passage(f"G{u}", "P1"), "record_type": "correction", "original_passage_id": "P1", "revision": 1,
               "reason": "plate misread", "amended_at": now}
    unknown_charger = {**charger_status(f"C{u}", "2", "CONNECTOR_STATUS_UNKNOWN"), "observed_at": None}
    return [
        ("lot_static", f"G{u}", lot_static(f"G{u}")), ("lot_static", f"N{u}", street),
        ("lot_static", f"S{u}", surface),
        *[("lot_dynamic", f"G{u}", lot_dynamic(f"G{u}", i, status=s)) for i, s in enumerate(
            ("SITE_STATUS_SPACES_AVAILABLE", "SITE_STATUS_ALMOST_FULL", "SITE_STATUS_FULL_AT_ENTRANCE",
             "SITE_STATUS_FULL", "SITE_STATUS_CLOSED", "SITE_STATUS_UNKNOWN"), 1)],
        ("lot_dynamic", f"N{u}", lot_dynamic(f"N{u}", 1)),
        *[("spot_status", f"N{u}", spot_status(f"N{u}", f"B{i}", s)) for i, s in enumerate(
            ("SPOT_STATUS_FREE", "SPOT_STATUS_OCCUPIED", "SPOT_STATUS_CLOSED", "SPOT_STATUS_UNKNOWN"))],
        ("spot_status", f"G{u}", spot_status(f"G{u}", "S1")),
        ("spot_status", f"N{u}", {**spot_status(f"N{u}", "B9"), "lat": 31.4005, "lon": 121.4905}),
        ("passage", f"G{u}", passage(f"G{u}", "P1")), ("passage", f"G{u}", exit_), ("passage", f"G{u}", amended),
        # A station on its own (its connectors 1-3 get status records next) and one in a lot, on a spot.
        ("charger_static", f"C{u}", charger_static(f"C{u}")),
        ("charger_static", f"D{u}", charger_static(f"D{u}", lot_id=f"G{u}")),
        ("charger_status", f"C{u}", charger_status(f"C{u}", "1")), ("charger_status", f"C{u}", unknown_charger),
        ("charger_status", f"C{u}", charger_status(f"C{u}", "3", "CONNECTOR_STATUS_FAULTED")),
    ]


async def deliver_every_kind(resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter,
                             unique: str, profile: str, **kw: Any) -> list[bytes]:
    """The bodies the emulator received for one destination of `profile` that got every kind of record."""
    folder()  # fail at once, before anything starts, when the schemas are missing
    emulator.platform.bodies = []
    dest = destination(emulator, profile, batch_size=7, **kw)
    a = await start_adapter(dest)
    await insert(resources.engine, every_kind(unique))
    status = await caught_up(a)
    assert status.dead_letters == 0, "a record the adapter refused or the emulator rejected"
    bodies = [body for path, body in emulator.platform.bodies if path == PATHS[profile]]
    assert bodies
    return bodies


async def test_every_datex2_body_is_a_valid_v3_5_payload(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    bodies = await deliver_every_kind(resources, emulator, start_adapter, unique, "datex2_xml")
    publications = set()
    for body in bodies:
        assert datex2_problems(body) == [], body[:2000]
        assert body.count(b"<d2:payload ") == 1
        publications.add(body.split(b'xsi:type="', 1)[1].split(b'"', 1)[0])
    assert publications == {b"prk:ParkingTablePublication", b"prk:ParkingStatusPublication",
                            b"egi:EnergyInfrastructureTablePublication", b"egi:EnergyInfrastructureStatusPublication"}
    # Every record the profile carries arrived (passages have no DATEX II form).
    assert emulator.platform.stats.accepted == len([r for r in every_kind(unique) if r[0] != "passage"])
    assert emulator.platform.stats.invalid_bodies == 0 and emulator.platform.stats.rejected == 0


async def test_every_municipal_json_record_has_what_the_platform_requires(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    bodies = await deliver_every_kind(resources, emulator, start_adapter, unique, "municipal_json")
    records = [r for body in bodies for r in orjson.loads(body)["records"]]
    assert {r["recordType"] for r in records} == {"lot_static", "lot_dynamic", "spot_status", "passage",
                                                  "charger_status", "charger_static"}
    assert len(records) == len(every_kind(unique)) and emulator.platform.stats.rejected == 0
    lots = {r["data"]["parkCode"]: r["data"] for r in records if r["recordType"] == "lot_static"}
    assert lots[f"S{unique}"]["publicBerths"] == 300 and lots[f"G{unique}"]["feeRule"]["periods"][0]["bands"]
    exits = [r["data"] for r in records if r["recordType"] == "passage" and r["data"]["direction"] == 2]
    assert exits[0]["entryRecordId"] == "P1" and exits[0]["feeFen"] == 0
    berths = [r["data"] for r in records if r["recordType"] == "spot_status" and r["data"]["berthCode"] == "B9"]
    assert berths[0]["latitude"] == 31.4005
    stations = {r["data"]["stationCode"]: r["data"] for r in records if r["recordType"] == "charger_static"}
    assert stations[f"D{unique}"]["parkCode"] == f"G{unique}" and len(stations[f"C{unique}"]["connectors"]) == 3


async def test_every_ngsi_ld_entity_validates_against_its_smart_data_model(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    bodies = await deliver_every_kind(resources, emulator, start_adapter, unique, "ngsi_ld")
    types = set()
    for body in bodies:
        entities = orjson.loads(body)
        ids = [e["id"] for e in entities]
        assert len(ids) == len(set(ids)), "an entity id twice in one batch"
        for e in entities:
            assert sdm_problems(e) == [], e
            assert any("smart-data-models" in c for c in e["@context"] if isinstance(c, str))
            types.add(e["type"])
    assert types == {"OffStreetParking", "OnStreetParking", "ParkingSpot", "EVChargingStation"}
    # And as the broker holds them after every update.
    for entity in emulator.platform.entities.values():
        assert sdm_problems(entity) == [], entity
    assert emulator.platform.stats.rejected == 0
    # A station's statics and its points' status end up in one entity per point.
    sources = {source for source, _ in emulator.platform.entities}
    (source,) = sources
    point = emulator.platform.entities[(source, f"urn:ngsi-ld:EVChargingStation:C{unique}:3")]
    assert point["name"]["value"] == charger_static("C")["name"] and point["v2xConnectorStatus"]["value"] == "Faulted"
    assert point["v2xMaxPowerKw"]["value"] == 7.0
    assert (source, f"urn:ngsi-ld:EVChargingStation:D{unique}:1") in emulator.platform.entities


async def test_a_lots_occupancy_update_keeps_its_name_and_location_at_a_replacing_broker(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    # The emulator replaces whole entities on upsert unless the request says ?options=update, as brokers do.
    a = await start_adapter(destination(emulator, "ngsi_ld"))
    lot = f"K{unique}"
    await insert(resources.engine, [("lot_static", lot, lot_static(lot))])
    await caught_up(a)
    await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1, 77))])
    s = await caught_up(a)
    assert delivered(s) == 1
    entity = emulator.platform.entities[(a.name, f"urn:ngsi-ld:OffStreetParking:{lot}")]
    assert entity["name"]["value"] == lot_static(lot)["name"]
    assert entity["location"]["value"] == {"type": "Point", "coordinates": [121.49, 31.4]}
    assert entity["totalSpotNumber"]["value"] == 346 and entity["availableSpotNumber"]["value"] == 89
    assert sdm_problems(entity) == []


async def test_a_207_with_one_rejected_entity_leaves_exactly_one_dead_letter_and_a_transient_one_is_retried(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    refused, flaky, fine = f"R{unique}", f"T{unique}", f"F{unique}"
    await set_faults(emulator, reject_aggregates=[refused], transient_aggregates=[flaky])
    a = await start_adapter(destination(emulator, "ngsi_ld"))
    ids = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1)) for lot in (refused, flaky, fine)])
    s = await caught_up(a)
    assert s.dead_letters == 1 and delivered(s) == 2
    (letter,) = await dead_letters(a)
    assert letter.outbox_id == ids[0] and letter.reason == "REJECTED_BY_PLATFORM"
    assert letter.http_status == 400 and f"records of {refused}" in letter.last_error.message
    assert {r.sequence for r in emulator.platform.seen.values()} == set(ids[1:])
    assert not emulator.platform.faults.transient_aggregates  # the flaky entity failed once, then got through


async def test_a_station_refused_by_the_broker_is_one_dead_letter_though_it_is_an_entity_per_connector(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    refused, fine = f"R{unique}", f"F{unique}"
    await set_faults(emulator, reject_aggregates=[refused])
    a = await start_adapter(destination(emulator, "ngsi_ld"))
    ids = await insert(resources.engine, [("charger_static", s, charger_static(s)) for s in (refused, fine)])
    s = await caught_up(a)
    assert s.dead_letters == 1 and delivered(s, pb.RECORD_KIND_CHARGER_STATIC) == 1
    (letter,) = await dead_letters(a)
    assert letter.outbox_id == ids[0] and letter.reason == "REJECTED_BY_PLATFORM" and letter.http_status == 400
    held = {eid for src, eid in emulator.platform.entities if src == a.name}
    assert held == {f"urn:ngsi-ld:EVChargingStation:{fine}:{c}" for c in ("1", "2", "3")}


def test_a_missing_schema_folder_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("V2X_STANDARDS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(pytest.fail.Exception, match="the published schemas are missing"):
        folder()
    with pytest.raises(MissingStandards, match="nowhere"):
        Platform(["x" * 16], 300.0, Faults(), standards=standards_dir())
