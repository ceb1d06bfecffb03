"""The platform emulator: authenticates, dedupes, answers per record, and fails when told to."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from services.municipal import signing
from services.municipal.emulator import RunningEmulator
from services.municipal.model import idempotency_key
from services.municipal.profiles import make_profile
from services.municipal.settings import MunicipalDestination
from tests.municipal.conftest import PATHS, admin_get, set_faults
from tests.municipal.helpers import SECRET, lot_dynamic, lot_static, record


def batch(emu: RunningEmulator, ids: list[int], lot: str = "L1", profile: str = "municipal_json") -> bytes:
    p = make_profile(MunicipalDestination(name="e", url=emu.url + PATHS[profile], profile=profile, secret=SECRET))
    return p.body([p.render(record("lot_dynamic", lot, lot_dynamic(lot, i), id_=i), idempotency_key("e", i)).doc
                   for i in ids])


def ngsi_batch(emu: RunningEmulator, records: list[tuple[int, str]]) -> bytes:
    p = make_profile(MunicipalDestination(name="e", url=emu.url + PATHS["ngsi_ld"], profile="ngsi_ld", secret=SECRET))
    return p.body([p.render(record("lot_dynamic", lot, lot_dynamic(lot, i), id_=i), idempotency_key("e", i)).doc
                   for i, lot in records])


async def post(emu: RunningEmulator, body: bytes, *, secret: str = SECRET, ts: int | None = None,
               profile: str = "municipal_json", query: str = "") -> tuple[int, Any]:
    headers = signing.headers(secret, int(time.time()) if ts is None else ts, body)
    async with aiohttp.ClientSession() as s, s.post(emu.url + PATHS[profile] + query, data=body,
                                                    headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_a_signed_batch_is_stored_and_each_record_answered(emulator: RunningEmulator) -> None:
    status, answer = await post(emulator, batch(emulator, [1, 2, 3]))
    assert status == 200 and [r["status"] for r in answer["results"]] == [201, 201, 201]
    assert (await admin_get(emulator, "/_admin/lots")) == {"": {"L1": [1, 2, 3]}}


async def test_records_are_deduped_by_idempotency_key(emulator: RunningEmulator) -> None:
    await post(emulator, batch(emulator, [1, 2]))
    status, answer = await post(emulator, batch(emulator, [2, 3]))
    assert status == 200 and [r["status"] for r in answer["results"]] == [200, 201]
    state = await admin_get(emulator, "/_admin/state")
    assert state["unique_records"] == 3 and state["stats"]["duplicates"] == 1


@pytest.mark.parametrize("profile", ["datex2_xml", "ngsi_ld"])
async def test_the_other_profiles_are_read_and_deduped_too(emulator: RunningEmulator, profile: str) -> None:
    body = batch(emulator, [5, 6], lot="L1", profile=profile) if profile == "datex2_xml" else ngsi_batch(
        emulator, [(5, "L1"), (6, "L2")])
    assert (await post(emulator, body, profile=profile))[0] in (200, 201)
    status, _ = await post(emulator, body, profile=profile)
    assert status in (200, 201) and emulator.platform.stats.duplicates == 2
    assert emulator.platform.stats.accepted == 2


async def test_a_bad_signature_is_refused_and_nothing_is_stored(emulator: RunningEmulator) -> None:
    status, answer = await post(emulator, batch(emulator, [1]), secret="another-secret-0123456789")
    assert status == 401 and "signature" in answer["error"]
    body = batch(emulator, [1])
    headers = signing.headers(SECRET, int(time.time()), body)
    async with aiohttp.ClientSession() as s, s.post(emulator.url + PATHS["municipal_json"], data=body + b" ",
                                                    headers=headers) as r:
        assert r.status == 401  # the body was changed after signing
    assert emulator.platform.stats.bad_signature == 2 and not emulator.platform.seen


async def test_an_old_timestamp_is_refused_even_with_a_valid_signature(emulator: RunningEmulator) -> None:
    status, answer = await post(emulator, batch(emulator, [1]), ts=int(time.time()) - 3600)
    assert status == 401 and "timestamp" in answer["error"]
    assert emulator.platform.stats.stale_timestamp == 1 and not emulator.platform.seen


async def test_missing_signature_headers_are_refused(emulator: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as s, s.post(emulator.url + PATHS["municipal_json"],
                                                    data=batch(emulator, [1])) as r:
        assert r.status == 401


async def test_it_fails_on_demand_with_500s(emulator: RunningEmulator) -> None:
    await set_faults(emulator, fail_rate=1.0, fail_after_store=1.0)
    status, _ = await post(emulator, batch(emulator, [1]))
    assert status == 500 and emulator.platform.seen  # stored, but the answer says it failed


async def test_an_outage_window_answers_503_or_drops_connections(emulator: RunningEmulator) -> None:
    await set_faults(emulator, outage_s=30, outage_mode="503")
    assert (await post(emulator, batch(emulator, [1])))[0] == 503
    await set_faults(emulator, outage_mode="drop")
    with pytest.raises(aiohttp.ClientError):
        await post(emulator, batch(emulator, [1]))
    assert (await admin_get(emulator, "/_admin/state"))["faults"]["outage_remaining_s"] > 25
    await set_faults(emulator, outage_s=0)
    assert (await post(emulator, batch(emulator, [1])))[0] == 200


async def test_dropped_connections_and_added_latency(emulator: RunningEmulator) -> None:
    await set_faults(emulator, drop_rate=1.0)
    with pytest.raises(aiohttp.ClientError):
        await post(emulator, batch(emulator, [1]))
    await set_faults(emulator, drop_rate=0.0, latency_ms=300)
    t = time.monotonic()
    assert (await post(emulator, batch(emulator, [2])))[0] == 200
    assert time.monotonic() - t >= 0.3


async def test_records_of_refused_lots_get_a_per_record_422(emulator: RunningEmulator) -> None:
    await set_faults(emulator, reject_aggregates=["BAD"])
    body = json.loads(batch(emulator, [1], lot="OK"))
    body["records"] += json.loads(batch(emulator, [2], lot="BAD"))["records"]
    status, answer = await post(emulator, json.dumps(body).encode())
    assert status == 207 and [r["status"] for r in answer["results"]] == [201, 422]


async def test_it_counts_records_out_of_order_per_lot(emulator: RunningEmulator) -> None:
    await post(emulator, batch(emulator, [5, 6]))
    await post(emulator, batch(emulator, [4]))
    assert emulator.platform.stats.order_violations == 1


async def test_counts_per_day_need_a_signature(emulator: RunningEmulator) -> None:
    await post(emulator, batch(emulator, [1, 2]))
    day = next(iter(emulator.platform.counts))[1]
    async with aiohttp.ClientSession() as s:
        async with s.get(emulator.url + "/municipal/v1/counts", params={"day": day}) as r:
            assert r.status == 401
        headers = signing.headers(SECRET, int(time.time()), b"")
        async with s.get(emulator.url + "/municipal/v1/counts", params={"day": day}, headers=headers) as r:
            assert (await r.json())["counts"] == {"lot_dynamic": 2}


async def test_a_datex2_payload_that_the_xsd_refuses_is_answered_400_with_the_validation_error(
        emulator: RunningEmulator) -> None:
    body = batch(emulator, [1, 2], profile="datex2_xml")
    assert (await post(emulator, body, profile="datex2_xml"))[0] == 200
    # A v2.3 element name inside the v3 namespace, as the profile once wrote.
    bad = batch(emulator, [3], profile="datex2_xml").replace(b"prk:occupancy>", b"prk:parkingOccupancy>")
    status, answer = await post(emulator, bad, profile="datex2_xml")
    assert status == 400 and "DATEX II" in answer["error"]
    assert any("parkingOccupancy" in e for e in answer["errors"]), answer
    assert emulator.platform.stats.invalid_bodies == 1 and emulator.platform.stats.accepted == 2


async def test_an_ngsi_ld_upsert_replaces_whole_entities_unless_asked_to_update(emulator: RunningEmulator) -> None:
    p = make_profile(MunicipalDestination(name="e", url=emulator.url + PATHS["ngsi_ld"], profile="ngsi_ld",
                                          secret=SECRET))
    static = p.body([p.render(record("lot_static", "L1", lot_static("L1"), id_=1), idempotency_key("e", 1)).doc])
    assert (await post(emulator, static, profile="ngsi_ld"))[0] == 201
    (entity,) = emulator.platform.entities.values()
    assert entity["name"]["value"]
    occupancy = ngsi_batch(emulator, [(2, "L1")])
    assert (await post(emulator, occupancy, profile="ngsi_ld"))[0] == 201  # no ?options=update: replaced
    (entity,) = emulator.platform.entities.values()
    assert "name" not in entity and entity["availableSpotNumber"]["value"] == 132
    assert (await post(emulator, static, profile="ngsi_ld"))[0] == 201
    assert (await post(emulator, ngsi_batch(emulator, [(3, "L1")]), profile="ngsi_ld", query="?options=update"))[
        0] == 201
    (entity,) = emulator.platform.entities.values()
    assert entity["name"]["value"] and entity["availableSpotNumber"]["value"] == 132
    held = await admin_get(emulator, "/_admin/entities")
    assert held == {"": {"urn:ngsi-ld:OffStreetParking:L1": entity}}


async def test_an_ngsi_ld_batch_with_a_refused_entity_is_answered_207_per_entity(emulator: RunningEmulator) -> None:
    await set_faults(emulator, reject_aggregates=["L2"], transient_aggregates=["L3"])
    status, answer = await post(emulator, ngsi_batch(emulator, [(1, "L1"), (2, "L2"), (3, "L3")]), profile="ngsi_ld")
    assert status == 207 and answer["success"] == ["urn:ngsi-ld:OffStreetParking:L1"]
    errors = {e["entityId"]: e["error"] for e in answer["errors"]}
    assert errors["urn:ngsi-ld:OffStreetParking:L2"]["status"] == 400
    assert errors["urn:ngsi-ld:OffStreetParking:L3"]["status"] == 503
    status, answer = await post(emulator, ngsi_batch(emulator, [(3, "L3")]), profile="ngsi_ld")
    assert status == 201  # a transient failure happens once
