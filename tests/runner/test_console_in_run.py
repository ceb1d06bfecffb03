"""`v2x run` starts the web console beside the services, and it reaches them with the caller's key."""

from __future__ import annotations

import aiohttp
import pytest

from tests.runner.conftest import RunningSuite


@pytest.mark.slow  # the whole `v2x run`
async def test_the_console_serves_and_signs_the_demo_police_key_in(suite: RunningSuite) -> None:
    url = suite.state()["console_url"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # the cookie of 127.0.0.1
        async with http.get(url + "healthz") as r:
            assert r.status == 200
        async with http.post(url + "api/v1/session", json={"key": suite.keys["police"]}) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["role"] == "police"
        async with http.get(url + "api/v1/incidents") as r:
            assert r.status == 200, await r.text()
        # The police read the demo adapter's delivery lag with their own key.
        async with http.get(url + "api/v1/municipal/status") as r:
            assert r.status == 200, await r.text()
            assert {d["destination"] for d in (await r.json())["destinations"]} >= {"city"}
        # The public page's key is the console's own driver key, made by `v2x run`.
        async with http.get(url + "api/v1/public/nearby?lat=31.40&lon=121.49&radius_m=1000") as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["lots"], "the demo district has lots within 1 km of its centre"
