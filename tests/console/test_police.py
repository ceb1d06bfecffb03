"""The police page in a real browser: incidents appear live, a confirmation lands in the audit trail, a second
officer acting on a stale version is told of the conflict."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Browser, BrowserContext, Route, expect
from v2x.idps.v1 import idps_pb2

from services.common.apikeys import create_key
from services.common.runtime import Resources
from services.console.sse import STREAMS
from tests.conftest import Keys
from tests.console.conftest import Console
from tests.console.helpers import idps, report, sign_in_page, site
from tests.waiting import assert_eventually


async def test_an_incident_reported_over_grpc_appears_within_2_s_and_a_confirmation_shows_in_the_audit(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    page = await sign_in_page(context, console, "/police", keys.police)
    await expect(page.locator("#stream-state")).to_have_text("live", timeout=15_000)
    lat, lon = site(unique)
    plate = "沪A" + str(int(unique, 16) % 100000).zfill(5)

    started = time.monotonic()
    reported = await report(console, keys, unique, lat=lat, lon=lon, plate=plate)
    row = page.locator(f'#incidents tr[data-id="{reported.incident_id}"]')
    await expect(row).to_be_visible(timeout=2_000)
    assert time.monotonic() - started < 2.0
    await expect(row.locator(".status")).to_have_text("reported")

    await row.click()
    await expect(page.locator("#detail-title")).to_have_text("accident · reported")
    # Its sources with confidence, the lane, the plate (police only) and the camera snapshot through the console.
    sources = page.locator("#sources")
    await expect(sources).to_contain_text("police officer")
    await expect(sources).to_contain_text("80% · lane L1")
    await expect(sources).to_contain_text(plate)
    snapshot = page.locator("#sources img.snapshot")
    await expect(snapshot).to_be_visible()
    assert await snapshot.evaluate("img => img.complete && img.naturalWidth") == 64

    await page.fill("#note", "seen on camera 3")
    await page.click('button[data-action="confirm"]')
    audit = page.locator("#audit li")
    await expect(audit.last).to_contain_text("transitioned reported → confirmed")
    await expect(audit.last).to_contain_text("police")
    await expect(audit.last).to_contain_text("seen on camera 3")
    await expect(row.locator(".status")).to_have_text("confirmed", timeout=2_000)
    got = await idps(console).GetIncident(idps_pb2.GetIncidentRequest(incident_id=reported.incident_id),
                                          metadata=Keys.md(keys.police))
    assert got.incident.status == idps_pb2.INCIDENT_STATUS_CONFIRMED


async def test_a_second_officer_with_a_stale_version_gets_the_conflict_and_changes_nothing(
        console: Console, browser: Browser, keys: Keys, resources: Resources, unique: str) -> None:
    second_key = (await create_key(resources.engine, "police", "second officer")).key
    lat, lon = site(unique)
    reported = await report(console, keys, unique, lat=lat, lon=lon, kind=idps_pb2.EVENT_TYPE_THROWN_OBJECT)
    a_ctx, b_ctx = await browser.new_context(), await browser.new_context()
    try:
        a = await sign_in_page(a_ctx, console, "/police", keys.police)
        b = await sign_in_page(b_ctx, console, "/police", second_key)
        for page in (a, b):
            row = page.locator(f'#incidents tr[data-id="{reported.incident_id}"]')
            await expect(row).to_be_visible(timeout=15_000)
            await row.click()
            await expect(page.locator("#detail-version")).to_have_text(f"version {reported.incident_version}")

        await a.click('button[data-action="confirm"]')
        await expect(a.locator("#message")).to_contain_text("now confirmed")
        # B still looks at the version it read; the page says the incident changed meanwhile.
        await expect(b.locator("#stale")).to_contain_text("Changed meanwhile: now confirmed", timeout=2_000)
        await b.click('button[data-action="false_alarm"]')
        message = b.locator("#message")
        await expect(message).to_contain_text("version conflict")
        await expect(message).to_contain_text(f"you had version {reported.incident_version}")
        await expect(message).to_have_class("message error")
    finally:
        await a_ctx.close()
        await b_ctx.close()
    got = await idps(console).GetIncident(idps_pb2.GetIncidentRequest(incident_id=reported.incident_id),
                                          metadata=Keys.md(keys.police))
    assert got.incident.status == idps_pb2.INCIDENT_STATUS_CONFIRMED
    assert [r.action for r in got.audit] == [idps_pb2.AUDIT_ACTION_CREATED, idps_pb2.AUDIT_ACTION_TRANSITIONED]


async def test_a_browser_that_loses_the_stream_resumes_with_last_event_id_and_misses_nothing(
        console: Console, context: BrowserContext, keys: Keys, unique: str) -> None:
    page = await sign_in_page(context, console, "/police", keys.police)
    await expect(page.locator("#stream-state")).to_have_text("live", timeout=15_000)
    await expect(page.locator("body")).to_have_attribute("data-resyncs", "1")
    # The browser's reconnection is held until the missed incidents are in.
    gate = asyncio.Event()
    resumed: list[dict[str, str]] = []

    async def hold(route: Route) -> None:
        resumed.append(await route.request.all_headers())
        await gate.wait()
        await route.continue_()

    await page.route("**/api/v1/incidents/stream", hold)
    streams: set[asyncio.Task[Any]] = console.runner.app[STREAMS]
    for task in list(streams):  # the console drops every stream (as a restarted proxy would)
        task.cancel()
    await assert_eventually(lambda: bool(resumed), "the browser reconnecting")
    lat, lon = site(unique)
    missed = [await report(console, keys, unique, lat=lat + i * 0.05, lon=lon, kind=kind)
              for i, kind in enumerate((idps_pb2.EVENT_TYPE_FIRE, idps_pb2.EVENT_TYPE_ANIMAL))]
    gate.set()
    for m in missed:
        await expect(page.locator(f'#incidents tr[data-id="{m.incident_id}"]')).to_be_visible(timeout=5_000)
    await expect(page.locator("#stream-state")).to_have_text("live")
    # Resumed from its Last-Event-ID (Chromium adds that header below where Playwright sees requests): without it the
    # console would have started over with a RESYNC and a snapshot.
    await expect(page.locator("body")).to_have_attribute("data-resyncs", "1")
