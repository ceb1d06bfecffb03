"""The console's doors: SSE resumes exactly where it stopped, roles per route, CSRF, cookies and headers, and a map
that loads nothing from outside."""

from __future__ import annotations

from typing import Any

import aiohttp
from playwright.async_api import BrowserContext, ConsoleMessage, Request, expect
from v2x.idps.v1 import idps_pb2

from services.common.apikeys import create_key, revoke_key
from services.common.runtime import Resources
from tests.conftest import Keys
from tests.console.conftest import Console
from tests.console.helpers import http_client, http_sign_in, idps, report, sign_in_page, site
from tests.waiting import assert_eventually


async def _events(response: aiohttp.ClientResponse, until: str) -> list[dict[str, Any]]:
    """SSE events of `response` up to and including the first of kind `until`."""
    import json

    events: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line == "":
            if "event" in event:
                events.append(event)
                if event["event"] == until:
                    return events
            event = {}
        elif line.startswith(("id: ", "event: ")):
            name, _, value = line.partition(": ")
            event[name] = value
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])


async def test_an_sse_reconnect_with_last_event_id_receives_exactly_the_missed_incidents(
        console: Console, keys: Keys, unique: str) -> None:
    url = console.url + "/api/v1/incidents/stream"
    async with http_client() as http:
        await http_sign_in(http, console, keys.police)
        async with http.get(url) as first:
            assert first.status == 200 and first.headers["Content-Type"].startswith("text/event-stream")
            opening = await _events(first, "snapshot_end")
            assert opening[0]["event"] == "resync" and "id" not in opening[0]
            last_id = opening[-1]["id"]
        # Gone: three incidents open meanwhile (far apart, so three incidents, not one).
        lat, lon = site(unique)
        missed = [await report(console, keys, unique, lat=lat + i * 0.05, lon=lon, kind=kind)
                  for i, kind in enumerate((idps_pb2.EVENT_TYPE_ACCIDENT, idps_pb2.EVENT_TYPE_FIRE,
                                            idps_pb2.EVENT_TYPE_ANIMAL))]
        assert all(m.opened for m in missed)
        async with http.get(url, headers={"Last-Event-ID": last_id}) as again:
            # Everything up to the next heartbeat (IDPS sends one on an idle stream after 5 s).
            events = await _events(again, "heartbeat")
    changes = [e for e in events if e["event"] != "heartbeat"]
    assert [e["event"] for e in changes] == ["new", "new", "new"], events
    assert [e["data"]["id"] for e in changes] == [m.incident_id for m in missed]
    ids = [e["id"] for e in changes]
    assert all(ids) and len(set(ids)) == 3 and last_id not in ids


async def test_a_driver_or_the_public_gets_403_from_every_police_endpoint(
        console: Console, keys: Keys, unique: str) -> None:
    lat, lon = site(unique)
    incident = (await report(console, keys, unique, lat=lat, lon=lon)).incident_id
    gets = ["/api/v1/incidents", "/api/v1/incidents/stream", f"/api/v1/incidents/{incident}", "/api/v1/cameras",
            "/api/v1/municipal/status", "/api/v1/evidence/whatever", "/api/v1/operator/lots"]
    async with http_client() as public:
        for path in gets:
            async with public.get(console.url + path) as r:
                assert r.status == 403, (path, r.status)
                assert "without sign-in" in (await r.json())["error"]
    async with http_client() as driver:
        session = await http_sign_in(driver, console, keys.driver)
        assert session["role"] == "driver" and session["home"] == "/public"
        for path in gets:
            async with driver.get(console.url + path) as r:
                assert r.status == 403, (path, r.status)
                assert "role driver may not use this" in (await r.json())["error"]
        async with driver.post(console.url + f"/api/v1/incidents/{incident}/transition",
                               json={"action": "confirm"}, headers={"X-CSRF-Token": session["csrf"]}) as r:
            assert r.status == 403
    got = await idps(console).GetIncident(idps_pb2.GetIncidentRequest(incident_id=incident),
                                          metadata=Keys.md(keys.police))
    assert got.incident.status == idps_pb2.INCIDENT_STATUS_REPORTED


async def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
        console: Console, keys: Keys, unique: str) -> None:
    lat, lon = site(unique)
    reported = await report(console, keys, unique, lat=lat, lon=lon)
    path = f"{console.url}/api/v1/incidents/{reported.incident_id}/transition"
    body = {"action": "confirm", "expected_version": reported.incident_version}
    async with http_client() as http:
        session = await http_sign_in(http, console, keys.police)
        refusals = [({}, body, "missing or wrong CSRF token"),
                    ({"X-CSRF-Token": "not-the-token"}, body, "missing or wrong CSRF token"),
                    ({"X-CSRF-Token": session["csrf"], "Origin": "http://evil.example"}, body, "cross-origin"),
                    ({"X-CSRF-Token": session["csrf"], "Content-Type": "application/x-www-form-urlencoded"},
                     "action=confirm", "must be application/json")]
        for headers, data, why in refusals:
            kwargs: dict[str, Any] = {"json": data} if isinstance(data, dict) else {"data": data}
            async with http.post(path, headers=headers, **kwargs) as r:
                assert r.status == 403, (headers, await r.text())
                assert why in (await r.json())["error"]
            got = await idps(console).GetIncident(idps_pb2.GetIncidentRequest(incident_id=reported.incident_id),
                                                  metadata=Keys.md(keys.police))
            assert (got.incident.status, got.incident.version) == (idps_pb2.INCIDENT_STATUS_REPORTED,
                                                                   reported.incident_version)
        # Signing out needs the token too.
        async with http.delete(console.url + "/api/v1/session") as r:
            assert r.status == 403
        async with http.post(path, json=body, headers={"X-CSRF-Token": session["csrf"]}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["incident"]["status"] == "INCIDENT_STATUS_CONFIRMED"


async def test_sign_in_sets_a_strict_httponly_expiring_cookie_and_the_key_stays_out_of_the_page(
        console: Console, context: BrowserContext, keys: Keys) -> None:
    async with http_client() as http:
        async with http.post(console.url + "/api/v1/session", json={"key": "v2x_000000000000_wrong"}) as r:
            assert r.status == 401 and (await r.json())["error"] == "unknown or revoked API key"
        async with http.post(console.url + "/api/v1/session", json={"key": keys.police}) as r:
            assert r.status == 200
            cookie = r.headers["Set-Cookie"]
            for flag in ("HttpOnly", "SameSite=Strict", "Max-Age=600", "Path=/"):
                assert flag in cookie, cookie
            assert keys.police not in await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        for path in ("/", "/police", "/operator", "/public", "/static/console.js", "/api/v1/map/district"):
            async with http.get(console.url + path) as r:
                assert r.status == 200, path
                assert "script-src 'self'" in r.headers["Content-Security-Policy"], path
                assert r.headers["X-Content-Type-Options"] == "nosniff"

    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url) if isinstance(request, Request) else None)
    page = await sign_in_page(context, console, "/police", keys.police)
    await expect(page.locator("#stream-state")).to_be_visible()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if isinstance(m, ConsoleMessage) and m.type == "error" else None)
    await page.reload()  # the signed-in page, watched from its first byte
    await expect(page.locator("#stream-state")).to_have_text("live", timeout=15_000)
    assert not errors, errors  # no script error, nothing the Content-Security-Policy blocked
    assert keys.police not in page.url
    storage = await page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])")
    assert keys.police not in storage and "v2x_console_session" not in storage
    # The map: Leaflet from the console's own static files, the district's outline and lanes as vectors, no tiles.
    assert await page.locator("#map path.leaflet-interactive").count() >= 40
    assert await page.locator("#map img.leaflet-tile").count() == 0
    assert requests and all(u.startswith(console.url) for u in requests), [u for u in requests
                                                                          if not u.startswith(console.url)]
    assert any(u.endswith("/static/vendor/leaflet/leaflet.js") for u in requests)


async def test_a_last_event_id_that_is_no_cursor_starts_over_with_a_snapshot(console: Console, keys: Keys) -> None:
    async with http_client() as http:
        await http_sign_in(http, console, keys.police)
        async with http.get(console.url + "/api/v1/incidents/stream", headers={"Last-Event-ID": "nonsense"}) as r:
            events = await _events(r, "snapshot_end")
    assert events[0]["event"] == "resync" and events[-1]["id"]


async def test_a_revoked_key_ends_its_session(console: Console, keys: Keys, resources: Resources) -> None:
    issued = await create_key(resources.engine, "police", "to be revoked")
    async with http_client() as http:
        await http_sign_in(http, console, issued.key)
        async with http.get(console.url + "/api/v1/incidents") as r:
            assert r.status == 200
        await revoke_key(resources.engine, issued.principal.key_id)

        async def refused() -> bool:
            async with http.get(console.url + "/api/v1/incidents") as r:
                return r.status == 401 and "sign in again" in (await r.json())["error"]

        await assert_eventually(refused, "the revoked key refused (after the services' key cache)", within_s=10)
        async with http.get(console.url + "/api/v1/session") as r:
            assert (await r.json()) == {"signed_in": False}
        async with http.get(console.url + "/api/v1/incidents") as r:
            assert r.status == 403
