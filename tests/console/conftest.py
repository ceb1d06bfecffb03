"""Console fixtures: every service the console calls, in process on port 0 (real PostgreSQL and Redis), the console
in front of them on a port of its own, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from grpc import aio
from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright

from services.charging.app import assemble as charging_assemble
from services.charging.settings import ChargingSettings
from services.common.runtime import Resources, RunningService, start_service
from services.console.app import bound_port, start_console
from services.console.sessions import RedisSessions
from services.console.settings import ConsoleSettings
from services.municipal.app import assemble as municipal_assemble
from services.municipal.settings import MunicipalSettings
from services.roadside.app import make_builder
from services.roadside.keycolour import KeyColourDetector
from tests.conftest import Keys

CHROMIUM = os.environ.get("V2X_TEST_CHROMIUM", "/usr/bin/chromium")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The README's screenshots are taken only when asked for (`make screenshots`): deselected, not skipped."""
    if os.environ.get("V2X_CONSOLE_SCREENSHOTS"):
        return
    drop = [item for item in items if item.get_closest_marker("screenshots")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if not item.get_closest_marker("screenshots")]


@dataclass
class Console:
    url: str
    services: dict[str, RunningService]
    channels: dict[str, aio.Channel]
    runner: web.AppRunner


@pytest.fixture(scope="package")
async def console(resources: Resources, parking_service: RunningService, keys: Keys) -> AsyncIterator[Console]:
    from services.idps.app import build as idps_build

    local = Resources(dataclasses.replace(resources.settings, bind_host="127.0.0.1"), resources.engine,
                      resources.redis, resources.verifier, resources.reads)
    charging = charging_assemble(local, ChargingSettings(ocpp_port=0, bay_check_interval_s=3600.0))
    services = {
        "parking": parking_service,
        "idps": await start_service(idps_build, local, port=0, host="127.0.0.1"),
        "charging": await start_service(lambda _: charging.parts, local, port=0, host="127.0.0.1"),
        "roadside": await start_service(make_builder(KeyColourDetector(), plates=False), local, port=0,
                                        host="127.0.0.1"),
        "municipal": await start_service(lambda r: municipal_assemble(r, MunicipalSettings(reconcile_hour=-1)),
                                         local, port=0, host="127.0.0.1"),
    }
    targets = {name: f"127.0.0.1:{s.server.port}" for name, s in services.items()}
    settings = ConsoleSettings(port=0, targets=targets, public_key=keys.driver, session_ttl_s=600)
    # Sessions in the tests' Valkey, as in production (V2X_CONSOLE_SESSIONS=redis).
    runner = await start_console(settings, "127.0.0.1", sessions=RedisSessions(resources.redis, settings.session_ttl_s))
    channels = {name: aio.insecure_channel(target) for name, target in targets.items()}
    yield Console(f"http://127.0.0.1:{bound_port(runner)}", services, channels, runner)
    await runner.cleanup()
    for channel in channels.values():
        await channel.close()
    for name, service in services.items():
        if name != "parking":  # the session's, stopped by its own fixture
            await service.stop(0.2)


@pytest.fixture(scope="package")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


@pytest.fixture(scope="package")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run infra/ensure-chromium.sh (make test does)")
    b = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    yield b
    await b.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (its own cookies) per test."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    await ctx.close()
