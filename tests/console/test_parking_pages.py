"""The operator and public pages in a real browser: a PushOccupancy reaches both within 2 s; the operator reads and
amends its passages (plates of its own lots only); the public page never shows a plate."""

from __future__ import annotations

import time

from playwright.async_api import BrowserContext, expect
from v2x.charging.v1 import charging_pb2
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.parking.v1 import parking_pb2

from tests.charging.helpers import station
from tests.conftest import Keys
from tests.console.conftest import Console
from tests.console.helpers import http_client, http_sign_in, now, parking, sign_in_page, site
from tests.parking.helpers import lot, report


async def _lot(console: Console, keys: Keys, unique: str, operator: str = "OPA") -> tuple[str, float, float]:
    lat, lon = site(unique)
    lot_id = f"console-{unique}"
    await parking(console).RegisterLot(parking_pb2.RegisterLotRequest(
        lot=lot(lot_id, operator, lat=lat, lon=lon, general=100, ev=10, disabled=0,
                periods=[(d, 7 * 60, 22 * 60) for d in range(1, 8)], always_open=False)),
        metadata=Keys.md(keys.admin))
    return lot_id, lat, lon


async def test_push_occupancy_changes_the_free_count_on_the_operator_and_the_public_page_within_2_s(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    lot_id, lat, lon = await _lot(console, keys, unique)
    stub = parking(console)
    await stub.PushOccupancy(report(lot_id, 1, general=50, ev=5), metadata=Keys.md(keys.op_a))
    await ChargingServiceStub(console.channels["charging"]).RegisterStation(charging_pb2.RegisterStationRequest(
        station=station(f"st-{unique}", lat=lat + 0.001, lon=lon, lot=lot_id)), metadata=Keys.md(keys.admin))

    operator = await sign_in_page(context, console, "/operator", keys.op_a)
    await expect(operator.locator("#stream-state")).to_have_text("live", timeout=15_000)
    operator_free = operator.locator(f'#lots tr[data-id="{lot_id}"] td.free')
    await expect(operator_free).to_have_attribute("data-free", "55")
    public = await context.new_page()
    await public.goto(f"{console.url}/public?lat={lat}&lon={lon}")
    await expect(public.locator("body")).to_have_attribute("data-live", "1", timeout=15_000)
    public_free = public.locator(f'#lots .lot[data-id="{lot_id}"] .free')
    await expect(public_free).to_have_attribute("data-free", "55")
    # Prices, opening hours, and the charger by connector type and power.
    card = public.locator(f'#lots .lot[data-id="{lot_id}"]')
    await expect(card).to_contain_text("¥8.00 first hour")
    await expect(card).to_contain_text("Mon/Tue/Wed/Thu/Fri/Sat/Sun 07:00–22:00")
    charger = public.locator(f'#chargers .charger[data-id="st-{unique}"]')
    await expect(charger).to_contain_text("GBT DC 120 kW")
    await expect(charger).to_contain_text("¥1.80/kWh")

    started = time.monotonic()
    await stub.PushOccupancy(report(lot_id, 2, general=37, ev=4), metadata=Keys.md(keys.op_a))
    await expect(operator_free).to_have_attribute("data-free", "41", timeout=2_000)
    await expect(public_free).to_have_attribute("data-free", "41", timeout=2_000)
    assert time.monotonic() - started < 2.0


async def test_the_operator_amends_a_passage_and_sees_only_its_own_plates_and_the_public_none(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    lot_id, lat, lon = await _lot(console, keys, unique)
    plate = "沪B" + str(int(unique, 16) % 100000).zfill(5)
    await parking(console).RecordPassage(parking_pb2.RecordPassageRequest(
        lot_id=lot_id, passage_id=f"p-{unique}", direction=parking_pb2.PASSAGE_DIRECTION_ENTRY, plate=plate,
        plate_colour=parking_pb2.PLATE_COLOUR_BLUE, lane="gate-1", passed_at=now(),
        space_class=parking_pb2.SPACE_CLASS_GENERAL), metadata=Keys.md(keys.op_a))

    page = await sign_in_page(context, console, "/operator", keys.op_a)
    await page.locator(f'#lots tr[data-id="{lot_id}"]').click()
    row = page.locator(f'#passage-table tr[data-passage="p-{unique}"]')
    await expect(row.locator(".plate")).to_have_text(plate)
    corrected = plate[:-1] + ("1" if plate[-1] != "1" else "2")
    await row.locator(".amend-plate").fill(corrected)
    await row.locator(".amend-reason").fill("camera misread the last digit")
    await row.locator(".amend-send").click()
    await expect(page.locator("#amend-message")).to_contain_text(f"amended: {corrected}")
    await expect(page.locator(f'#passage-table tr[data-passage="p-{unique}"] .plate')).to_have_text(corrected)
    await expect(page.locator(f'#passage-table tr[data-passage="p-{unique}"] .state')).to_contain_text("corrected")

    # Another operator gets none of this lot's passages.
    async with http_client() as http:
        await http_sign_in(http, console, keys.op_b)
        async with http.get(f"{console.url}/api/v1/operator/lots/{lot_id}/passages") as r:
            assert r.status in (403, 404), await r.text()
            assert plate not in await r.text() and corrected not in await r.text()
        async with http.get(f"{console.url}/api/v1/operator/lots") as r:
            assert lot_id not in await r.text()

    # The public page at the lot: the lot is there, no plate anywhere (page, its API answers).
    public = await context.new_page()
    answers: list[str] = []

    async def keep(response: object) -> None:
        from playwright.async_api import Response

        assert isinstance(response, Response)
        if "/api/" in response.url and "stream" not in response.url:
            answers.append(await response.text())

    public.on("response", keep)
    await public.goto(f"{console.url}/public?lat={lat}&lon={lon}")
    await expect(public.locator(f'#lots .lot[data-id="{lot_id}"]')).to_be_visible()
    html = await public.content()
    assert plate not in html and corrected not in html
    assert answers and not any(plate in a or corrected in a for a in answers)
    assert "plate" not in "".join(answers).lower()
