"""Screenshots of the three pages for the README, from the real suite (`v2x run` with the simulated district: its
cameras, occupancy and chargers, incidents from the roadside simulator's scenarios).

    V2X_CONSOLE_SCREENSHOTS=docs/console .venv/bin/python -m pytest tests/console/test_screenshots.py

Runs only when V2X_CONSOLE_SCREENSHOTS names the directory to write them to: a whole simulated suite takes both
cores of this machine for minutes, too much for every `make test`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, expect

from tests.runner.conftest import start_suite, stop_suite
from tests.waiting import assert_eventually

# The simulator's gate garage belongs to the first demo operator by name (roadside_sim/__main__.py).
GATE_OPERATOR = "ACME"
OUT = os.environ.get("V2X_CONSOLE_SCREENSHOTS", "")
pytestmark = [pytest.mark.skipif(not OUT, reason="V2X_CONSOLE_SCREENSHOTS (a directory) is not set"),
              pytest.mark.timeout(1200), pytest.mark.slow]


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        return await r.json() if r.status == 200 else None


async def _sign_in(page: Page, url: str, key: str) -> None:
    await page.goto(url)
    await page.fill("#key", key)
    await page.click("#signin-button")


@pytest.fixture
def out() -> Path:
    path = Path(OUT)
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_screenshots_of_the_three_pages_from_the_simulated_suite(browser: Browser, tmp_path: Path,
                                                                       out: Path) -> None:
    suite = await start_suite(tmp_path, simulate=True)
    try:
        url = suite.state()["console_url"].rstrip("/")
        keys = suite.keys
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(url + "/api/v1/session", json={"key": keys["police"]}) as r:
                assert r.status == 200

            async def district_alive() -> bool:
                cameras = await _json(http, url + "/api/v1/cameras")
                incidents = await _json(http, url + "/api/v1/incidents")
                return bool(cameras and any(c["lanes"] for c in cameras["cameras"]) and incidents
                            and incidents["incidents"])

            await assert_eventually(district_alive, "cameras with counts and an incident from the simulator",
                                    within_s=600, every_s=5)
        # The operator of the simulator's gate garage (plates read at its gates), once trends are known (two
        # minutes of readings) and its garage has passages.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(url + "/api/v1/session", json={"key": keys[f"operator:{GATE_OPERATOR}"]}) as r:
                assert r.status == 200

            async def operator_alive() -> bool:
                lots = await _json(http, url + "/api/v1/operator/lots")
                if not lots:
                    return False
                garage = [v["lot"]["id"] for v in lots["lots"] if "GARAGE" in v["lot"]["id"]]
                trends = {v.get("availability", {}).get("trend") for v in lots["lots"]}
                passages = garage and await _json(http, f"{url}/api/v1/operator/lots/{garage[0]}/passages")
                return bool(passages and passages["passages"] and trends - {None, "OCCUPANCY_TREND_UNKNOWN"})

            await assert_eventually(operator_alive, "trends and gate passages", within_s=600, every_s=5)
        police = await browser.new_page(viewport={"width": 1440, "height": 1000})
        await _sign_in(police, url + "/police", keys["police"])
        await expect(police.locator("#stream-state")).to_have_text("live", timeout=30_000)
        await police.locator("#incidents tbody tr").first.click()
        await expect(police.locator("#audit li").first).to_be_visible()
        await expect(police.locator("#cameras .card").first).to_be_visible(timeout=30_000)
        await police.screenshot(path=str(out / "police.png"), full_page=True)

        operator = await browser.new_page(viewport={"width": 1440, "height": 1000})
        await _sign_in(operator, url + "/operator", keys[f"operator:{GATE_OPERATOR}"])
        await expect(operator.locator("#stream-state")).to_have_text("live", timeout=30_000)
        await operator.locator('#lots tbody tr[data-id*="GARAGE"]').click()
        await expect(operator.locator("#passage-table .plate").first).to_be_visible()
        await operator.screenshot(path=str(out / "operator.png"), full_page=False)

        public = await browser.new_page(viewport={"width": 1440, "height": 1000})
        await public.goto(url + "/public")
        await expect(public.locator("body")).to_have_attribute("data-live", "1", timeout=30_000)
        await public.screenshot(path=str(out / "public.png"), full_page=False)
        phone = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
        await phone.goto(url + "/public")
        await expect(phone.locator("body")).to_have_attribute("data-live", "1", timeout=30_000)
        await phone.screenshot(path=str(out / "public-phone.png"), full_page=False)
        plates = await operator.locator("#passage-table .plate").all_inner_texts()
        html = await public.content()
        assert not any(p and p in html for p in plates)
        for name in ("police.png", "operator.png", "public.png", "public-phone.png"):
            assert (out / name).stat().st_size > 20_000, name
    finally:
        assert await stop_suite(suite) == 0, suite.output()[-4000:]
