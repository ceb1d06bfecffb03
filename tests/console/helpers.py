"""Helpers of the console tests: places of a test's own, gRPC stubs on the console's services, HTTP sign-in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import cv2
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import BrowserContext, Page
from v2x.common.v1 import common_pb2
from v2x.idps.v1 import idps_pb2
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from tests.conftest import Keys
from tests.console.conftest import Console

if TYPE_CHECKING:
    from v2x.idps.v1.idps_pb2_grpc import IdpsServiceAsyncStub as IdpsStub
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as ParkingStub
else:
    IdpsStub, ParkingStub = IdpsServiceStub, ParkingServiceStub


def now() -> Timestamp:
    t = Timestamp()
    t.GetCurrentTime()
    return t


def site(unique: str) -> tuple[float, float]:
    """A place of this test's own, far (> 1 km) from every other test's."""
    n = int(unique, 16)
    return 30.5 + (n % 1_000_003) / 1_000_003 * 1.8, 120.5 + (n // 1_000_003 % 1_000_033) / 1_000_033 * 1.8


def idps(console: Console) -> IdpsStub:
    return IdpsServiceStub(console.channels["idps"])


def parking(console: Console) -> ParkingStub:
    return ParkingServiceStub(console.channels["parking"])


def snapshot_jpeg() -> bytes:
    image = np.full((48, 64, 3), (40, 90, 200), np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


async def report(console: Console, keys: Keys, unique: str, *, lat: float, lon: float,
                 kind: int = idps_pb2.EVENT_TYPE_ACCIDENT, plate: str = "") -> idps_pb2.ReportEventResponse:
    """A camera-like report by a police officer (the console's tests report as the police)."""
    evidence = idps_pb2.Evidence(snapshot_jpeg=snapshot_jpeg(), plate=plate) if plate else None
    return await idps(console).ReportEvent(idps_pb2.ReportEventRequest(
        idempotency_key=f"console-{unique}-{lat:.5f}-{kind}", source_id="officer-7",
        source_kind=idps_pb2.SOURCE_KIND_POLICE_OFFICER, type=kind,  # type: ignore[arg-type]
        position=common_pb2.LatLon(lat=lat, lon=lon), radius_m=30, confidence=0.8, lane_id="L1", observed_at=now(),
        evidence=evidence, description=f"console test {unique}"), metadata=Keys.md(keys.police))


async def sign_in_page(context: BrowserContext, console: Console, path: str, key: str) -> Page:
    page = await context.new_page()
    await page.goto(console.url + path)
    await page.fill("#key", key)
    await page.click("#signin-button")
    return page


def http_client() -> aiohttp.ClientSession:
    """An HTTP client that keeps the console's cookie (it is set by 127.0.0.1, an address: aiohttp's default jar
    refuses cookies from addresses)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def http_sign_in(session: aiohttp.ClientSession, console: Console, key: str) -> dict[str, Any]:
    async with session.post(console.url + "/api/v1/session", json={"key": key}) as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body
