"""The operator page's API: the operator's own lots with availability and trend (live from WatchAvailability),
their passages with plates, and amending a passage. Operator keys only; parking shows an operator its own lots and
plates only, and the console filters the live stream to them as well."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from v2x.common.v1 import common_pb2
from v2x.parking.v1 import parking_pb2

from services.console.backends import BACKENDS, CALL_TIMEOUT_S, bearer
from services.console.sse import encode, pump, sse_response
from services.console.web import error, json_body, json_response, require, to_dict

OPERATOR = "operator"
# The watched area is the box around the operator's lots, this much larger on each side.
AREA_MARGIN_DEG = 0.002


async def _lots(request: web.Request, key: str) -> list[parking_pb2.LotView]:
    lots: list[parking_pb2.LotView] = []
    token = ""
    while True:
        reply = await request.app[BACKENDS].parking.ListLots(
            parking_pb2.ListLotsRequest(page=common_pb2.PageRequest(page_size=1000, page_token=token)),
            metadata=bearer(key), timeout=CALL_TIMEOUT_S)
        lots.extend(reply.lots)
        token = reply.page.next_page_token
        if not token or len(lots) >= 5000:
            return lots


async def list_lots(request: web.Request) -> web.Response:
    session = require(request, OPERATOR)
    return json_response({"operator": session.scope, "lots": [to_dict(v) for v in await _lots(request, session.key)]})


async def lot_stream(request: web.Request) -> web.StreamResponse:
    """WatchAvailability over the box around the operator's lots, as `lot` events (the operator's lots only)."""
    session = require(request, OPERATOR)
    lots = await _lots(request, session.key)
    mine = {v.lot.id for v in lots}
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1000)

    async def watch() -> None:
        if not lots:
            await queue.put(encode("snapshot_end", {}))
            return
        lats = [v.lot.location.lat for v in lots]
        lons = [v.lot.location.lon for v in lots]
        area = common_pb2.Area(box=common_pb2.BoundingBox(
            south_west=common_pb2.LatLon(lat=min(lats) - AREA_MARGIN_DEG, lon=min(lons) - AREA_MARGIN_DEG),
            north_east=common_pb2.LatLon(lat=max(lats) + AREA_MARGIN_DEG, lon=max(lons) + AREA_MARGIN_DEG)))
        try:
            async for update in request.app[BACKENDS].parking.WatchAvailability(
                    parking_pb2.WatchAvailabilityRequest(area=area, snapshot=True), metadata=bearer(session.key)):
                if update.reason == parking_pb2.AvailabilityUpdate.REASON_SNAPSHOT_END:
                    await queue.put(encode("snapshot_end", {}))
                elif update.lot.lot_id in mine:
                    await queue.put(encode("lot", to_dict(update.lot)))
        except aio.AioRpcError as exc:
            await queue.put(encode("failure", {"error": exc.details() or exc.code().name}))
            await queue.put(None)

    task = asyncio.create_task(watch())
    try:
        async with sse_response(request) as response:
            await pump(response, queue)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return response


async def list_passages(request: web.Request) -> web.Response:
    session = require(request, OPERATOR)
    reply = await request.app[BACKENDS].parking.ListPassages(
        parking_pb2.ListPassagesRequest(lot_id=request.match_info["lot_id"],
                                        page=common_pb2.PageRequest(page_size=100)),
        metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
    return json_response({"passages": [to_dict(p) for p in reply.passages], "plates_redacted": reply.plates_redacted})


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f'{{"error": "{name} must be text"}}', content_type="application/json")
    return value.strip()


async def amend_passage(request: web.Request) -> web.Response:
    """CORRECT (plate, colour, lane, time) or VOID one passage; parking checks the rest (the lot is the caller's,
    the reason is given, a void is final)."""
    session = require(request, OPERATOR)
    body = await json_body(request)
    action = {"correct": parking_pb2.PASSAGE_AMEND_ACTION_CORRECT,
              "void": parking_pb2.PASSAGE_AMEND_ACTION_VOID}.get(str(body.get("action")))
    if action is None:
        return error(400, "action must be correct or void")
    amend = parking_pb2.AmendPassageRequest(lot_id=request.match_info["lot_id"],
                                            passage_id=request.match_info["passage_id"], action=action,
                                            reason=_text(body, "reason") or "")
    plate, lane, colour, passed_at = (_text(body, n) for n in ("plate", "lane", "plate_colour", "passed_at"))
    if plate is not None:
        amend.plate = plate
    if lane is not None:
        amend.lane = lane
    if colour is not None:
        name = f"PLATE_COLOUR_{colour.upper()}"
        if name not in parking_pb2.PlateColour.keys():  # noqa: SIM118  (an enum wrapper, no __contains__)
            return error(400, f"unknown plate colour {colour!r}")
        amend.plate_colour = parking_pb2.PlateColour.Value(name)
    if passed_at is not None:
        ts = Timestamp()
        try:
            ts.FromJsonString(passed_at)
        except ValueError:
            return error(400, "passed_at must be an RFC 3339 time, e.g. 2026-12-06T10:00:00Z")
        amend.passed_at.CopyFrom(ts)
    reply = await request.app[BACKENDS].parking.AmendPassage(amend, metadata=bearer(session.key),
                                                             timeout=CALL_TIMEOUT_S)
    return json_response({"passage": to_dict(reply)})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/operator/lots", list_lots), web.get("/api/v1/operator/lots/stream", lot_stream),
            web.get("/api/v1/operator/lots/{lot_id}/passages", list_passages),
            web.post("/api/v1/operator/lots/{lot_id}/passages/{passage_id}/amend", amend_passage)]
