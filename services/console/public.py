"""The public page's API, no sign-in: parking and charging near a place. Free spaces by class, chargers by
connector type and power, prices and opening hours, and live changes. The console asks with its own driver key
(V2X_CONSOLE_PUBLIC_KEY), and what it answers is built field by field from what a driver may see: never a plate,
never an operator's passages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiohttp import web
from grpc import aio
from v2x.charging.v1 import charging_pb2
from v2x.common.v1 import common_pb2
from v2x.parking.v1 import parking_pb2

from services.console.backends import BACKENDS, CALL_TIMEOUT_S, bearer
from services.console.settings import ConsoleSettings
from services.console.sse import encode, pump, sse_response
from services.console.web import json_response

SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("settings", ConsoleSettings)
LOT_HOURS: web.AppKey[dict[str, tuple[float, list[str]]]] = web.AppKey("lot_hours", dict)
DEFAULT_RADIUS_M, MAX_RADIUS_M = 1500.0, 5000.0
MAX_LOTS, MAX_STATIONS = 40, 30
HOURS_CACHE_S = 300.0  # a lot's opening hours change rarely: asked again after this long
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _query(request: web.Request) -> tuple[float, float, float]:
    try:
        lat = float(request.query.get("lat", "31.40"))
        lon = float(request.query.get("lon", "121.49"))
        radius = float(request.query.get("radius_m", DEFAULT_RADIUS_M))
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "lat, lon and radius_m must be numbers"}',
                                 content_type="application/json") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 < radius <= MAX_RADIUS_M):
        raise web.HTTPBadRequest(text=f'{{"error": "lat -90..90, lon -180..180, radius_m 1..{MAX_RADIUS_M:g}"}}',
                                 content_type="application/json")
    return lat, lon, radius


def _key(request: web.Request) -> str:
    key = request.app[SETTINGS].public_key
    if not key:
        raise web.HTTPServiceUnavailable(text='{"error": "the public page is not configured (V2X_CONSOLE_PUBLIC_KEY)"}',
                                         content_type="application/json")
    return key


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def opening_text(hours: parking_pb2.OpeningHours) -> list[str]:
    if hours.always_open:
        return ["open 24 h"]
    if not hours.periods:
        return ["hours not published"]
    by_span: dict[tuple[int, int], list[int]] = {}
    for p in hours.periods:
        by_span.setdefault((p.open_minute, p.close_minute), []).append(p.weekday)
    return [f"{'/'.join(WEEKDAYS[d - 1] for d in sorted(days))} {_hhmm(o)}–{_hhmm(c)}"
            for (o, c), days in sorted(by_span.items(), key=lambda kv: min(kv[1]))]


def public_lot(lot: parking_pb2.LotAvailability, hours: list[str] | None = None) -> dict[str, Any]:
    a = lot.availability
    return {"id": lot.lot_id, "name": lot.name, "kind": parking_pb2.LotKind.Name(lot.kind).removeprefix("LOT_KIND_"),
            "lat": lot.location.lat, "lon": lot.location.lon, "distance_m": round(lot.distance_m),
            "status": parking_pb2.SiteStatus.Name(a.status).removeprefix("SITE_STATUS_"),
            "trend": parking_pb2.OccupancyTrend.Name(a.trend).removeprefix("OCCUPANCY_TREND_"),
            "total_free": a.total_free if a.HasField("total_free") else None,
            "classes": [{"class": parking_pb2.SpaceClass.Name(c.space_class).removeprefix("SPACE_CLASS_"),
                         "capacity": c.capacity, "free": c.free if c.HasField("free") else None} for c in a.classes],
            "price": {"free_minutes": lot.price.free_minutes, "first_hour_fen": lot.price.first_hour_fen,
                      "per_hour_fen": lot.price.per_hour_fen, "daily_cap_fen": lot.price.daily_cap_fen,
                      "description": lot.price.description},
            **({"opening_hours": hours} if hours is not None else {})}


def public_connector(c: charging_pb2.Connector) -> dict[str, Any]:
    return {"id": c.id, "standard": charging_pb2.ConnectorStandard.Name(c.standard).removeprefix("CONNECTOR_STANDARD_"),
            "max_power_kw": c.max_power_kw, "price_per_kwh_fen": c.price_per_kwh_fen,
            "service_fee_per_kwh_fen": c.service_fee_per_kwh_fen,
            "status": charging_pb2.ConnectorStatus.Name(c.state.status).removeprefix("CONNECTOR_STATUS_")}


def public_station(s: charging_pb2.ChargerMatch, hours: list[str] | None) -> dict[str, Any]:
    return {"id": s.station_id, "name": s.name, "address": s.address, "lat": s.location.lat, "lon": s.location.lon,
            "distance_m": round(s.distance_m), "available": s.available_count, "lot_id": s.parking_lot_id,
            "opening_hours": hours if hours is not None else ["open 24 h"],
            "connectors": [public_connector(c) for c in s.connectors]}


async def _hours(request: web.Request, key: str, lot_ids: set[str]) -> dict[str, list[str]]:
    cache = request.app[LOT_HOURS]
    now = time.monotonic()
    missing = [i for i in lot_ids if i not in cache or cache[i][0] < now]

    async def one(lot_id: str) -> None:
        with contextlib.suppress(aio.AioRpcError):
            view = await request.app[BACKENDS].parking.GetLot(parking_pb2.GetLotRequest(lot_id=lot_id),
                                                              metadata=bearer(key), timeout=CALL_TIMEOUT_S)
            cache[lot_id] = (now + HOURS_CACHE_S, opening_text(view.lot.opening_hours))

    await asyncio.gather(*(one(i) for i in missing))
    return {i: cache[i][1] for i in lot_ids if i in cache}


async def nearby(request: web.Request) -> web.Response:
    lat, lon, radius = _query(request)
    key = _key(request)
    backends = request.app[BACKENDS]
    here = common_pb2.LatLon(lat=lat, lon=lon)
    lots, chargers = await asyncio.gather(
        backends.parking.FindAvailable(parking_pb2.FindAvailableRequest(location=here, radius_m=radius,
                                                                        limit=MAX_LOTS),
                                       metadata=bearer(key), timeout=CALL_TIMEOUT_S),
        backends.charging.FindChargers(charging_pb2.FindChargersRequest(location=here, radius_m=radius,
                                                                        limit=MAX_STATIONS),
                                       metadata=bearer(key), timeout=CALL_TIMEOUT_S))
    hours = await _hours(request, key, {lot.lot_id for lot in lots.lots} |
                         {s.parking_lot_id for s in chargers.stations if s.parking_lot_id})
    return json_response({"lots": [public_lot(lot, hours.get(lot.lot_id)) for lot in lots.lots],
                          "chargers": [public_station(s, hours.get(s.parking_lot_id)) for s in chargers.stations]})


async def stream(request: web.Request) -> web.StreamResponse:
    """`lot` events from WatchAvailability over the circle, `connector` events from WatchStation of the stations
    named in `stations` (those the page shows), in one event stream."""
    lat, lon, radius = _query(request)
    key = _key(request)
    station_ids = [s for s in request.query.get("stations", "").split(",") if s][:MAX_STATIONS]
    backends = request.app[BACKENDS]
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)

    async def lots() -> None:
        area = common_pb2.Area(circle=common_pb2.Circle(center=common_pb2.LatLon(lat=lat, lon=lon), radius_m=radius))
        async for update in backends.parking.WatchAvailability(
                parking_pb2.WatchAvailabilityRequest(area=area, snapshot=True), metadata=bearer(key)):
            if update.reason == parking_pb2.AvailabilityUpdate.REASON_SNAPSHOT_END:
                await queue.put(encode("snapshot_end", {}))  # watching from here on
            elif update.HasField("lot"):
                await queue.put(encode("lot", public_lot(update.lot)))

    async def station(station_id: str) -> None:
        async for update in backends.charging.WatchStation(charging_pb2.WatchStationRequest(station_id=station_id),
                                                           metadata=bearer(key)):
            if update.HasField("connector"):
                await queue.put(encode("connector", {"station_id": station_id,
                                                     "connector": public_connector(update.connector)}))

    async def guarded(job: Any) -> None:
        try:
            await job
        except aio.AioRpcError as exc:
            await queue.put(encode("failure", {"error": exc.details() or exc.code().name}))
            if exc.code().name not in ("NOT_FOUND", "INVALID_ARGUMENT"):  # those would fail again on reconnect
                await queue.put(None)

    tasks = [asyncio.create_task(guarded(lots())), *(asyncio.create_task(guarded(station(s))) for s in station_ids)]
    try:
        async with sse_response(request) as response:
            await pump(response, queue)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return response


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/public/nearby", nearby), web.get("/api/v1/public/stream", stream)]

