"""The police page's API: incidents (list, detail, lifecycle, merge, evidence, the live stream), cameras with their
counts and queues, and the municipal delivery lag. Police keys only, as IDPS has it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio
from v2x.common.v1 import common_pb2
from v2x.idps.v1 import idps_pb2
from v2x.municipal.v1 import municipal_pb2
from v2x.roadside.v1 import roadside_pb2

from services.console.backends import BACKENDS, CALL_TIMEOUT_S, bearer
from services.console.camera_view import field_of_view
from services.console.sse import encode, sse_response
from services.console.web import error, forget_session, grpc_error, json_body, json_response, require, to_dict

POLICE = "police"
# The page's lifecycle buttons, by the status they move to.
ACTIONS = {"confirm": idps_pb2.INCIDENT_STATUS_CONFIRMED, "dispatch": idps_pb2.INCIDENT_STATUS_DISPATCHED,
           "on_scene": idps_pb2.INCIDENT_STATUS_ON_SCENE, "clear": idps_pb2.INCIDENT_STATUS_CLEARED,
           "false_alarm": idps_pb2.INCIDENT_STATUS_FALSE_ALARM}
OPEN = [idps_pb2.INCIDENT_STATUS_REPORTED, idps_pb2.INCIDENT_STATUS_CONFIRMED, idps_pb2.INCIDENT_STATUS_DISPATCHED,
        idps_pb2.INCIDENT_STATUS_ON_SCENE, idps_pb2.INCIDENT_STATUS_CLEARED]
KINDS = {idps_pb2.IncidentMessage.KIND_NEW: "new", idps_pb2.IncidentMessage.KIND_UPDATE: "update",
         idps_pb2.IncidentMessage.KIND_END: "end", idps_pb2.IncidentMessage.KIND_RESYNC: "resync",
         idps_pb2.IncidentMessage.KIND_HEARTBEAT: "heartbeat",
         idps_pb2.IncidentMessage.KIND_SNAPSHOT_END: "snapshot_end"}
# IDPS heartbeats on an idle stream this often: it is also how soon a browser that left is noticed.
HEARTBEAT_S = 5


def _version(body: dict[str, Any]) -> int:
    value = body.get("expected_version", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise web.HTTPBadRequest(text='{"error": "expected_version must be a whole number >= 0"}',
                                 content_type="application/json")
    return value


def _note(body: dict[str, Any]) -> str:
    note = body.get("note", "")
    if not isinstance(note, str):
        raise web.HTTPBadRequest(text='{"error": "note must be text"}', content_type="application/json")
    return note


async def list_incidents(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    reply = await request.app[BACKENDS].idps.ListIncidents(
        idps_pb2.ListIncidentsRequest(statuses=OPEN, page=common_pb2.PageRequest(page_size=500)),
        metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
    return json_response({"incidents": [to_dict(i) for i in reply.incidents]})


async def get_incident(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    reply = await request.app[BACKENDS].idps.GetIncident(
        idps_pb2.GetIncidentRequest(incident_id=request.match_info["incident_id"]), metadata=bearer(session.key),
        timeout=CALL_TIMEOUT_S)
    return json_response(to_dict(reply))


async def _conflict(request: web.Request, key: str, incident_id: str, exc: aio.AioRpcError,
                    had: int) -> web.Response:
    """ABORTED: someone changed the incident since this officer read it. The answer says what it is now."""
    try:
        now = (await request.app[BACKENDS].idps.GetIncident(idps_pb2.GetIncidentRequest(incident_id=incident_id),
                                                             metadata=bearer(key), timeout=CALL_TIMEOUT_S)).incident
    except aio.AioRpcError:
        return grpc_error(exc, conflict=True)
    status = idps_pb2.IncidentStatus.Name(now.status).removeprefix("INCIDENT_STATUS_")
    return error(409, f"version conflict: another officer changed this incident first (you had version {had}, it "
                      f"is now version {now.version}, {status}); look again and act on the current state",
                 code="ABORTED", conflict=True, incident=to_dict(now))


async def transition(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    body = await json_body(request)
    action = body.get("action")
    if action not in ACTIONS:
        return error(400, f"action must be one of {', '.join(ACTIONS)}")
    incident_id, version = request.match_info["incident_id"], _version(body)
    try:
        reply = await request.app[BACKENDS].idps.TransitionIncident(
            idps_pb2.TransitionIncidentRequest(incident_id=incident_id, target_status=ACTIONS[action],
                                               expected_version=version, note=_note(body)),
            metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
    except aio.AioRpcError as exc:
        if exc.code().name == "ABORTED":
            return await _conflict(request, session.key, incident_id, exc, version)
        raise
    return json_response({"incident": to_dict(reply)})


async def merge(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    body = await json_body(request)
    others = body.get("incident_ids")
    if not isinstance(others, list) or not others or not all(isinstance(i, str) and i for i in others):
        return error(400, "incident_ids must be a list of incident ids to merge into this one")
    incident_id, version = request.match_info["incident_id"], _version(body)
    try:
        reply = await request.app[BACKENDS].idps.MergeIncidents(
            idps_pb2.MergeIncidentsRequest(target_incident_id=incident_id, incident_ids=others,
                                           expected_version=version, note=_note(body)),
            metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
    except aio.AioRpcError as exc:
        if exc.code().name == "ABORTED":
            return await _conflict(request, session.key, incident_id, exc, version)
        raise
    return json_response({"incident": to_dict(reply)})


async def evidence(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    reply = await request.app[BACKENDS].idps.GetEvidence(
        idps_pb2.GetEvidenceRequest(report_id=request.match_info["report_id"]), metadata=bearer(session.key),
        timeout=CALL_TIMEOUT_S)
    if not reply.snapshot_jpeg:
        return error(404, "this report has no snapshot")
    return web.Response(body=reply.snapshot_jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})


async def incident_stream(request: web.Request) -> web.StreamResponse:
    """IDPS Subscribe as Server-Sent Events. Each event's id is the IDPS cursor, so a browser that reconnects sends
    it back as Last-Event-ID and IDPS resumes right after it: nothing is missed, nothing repeated. Without one (or
    with one IDPS can no longer resume) the stream starts with `resync` and a snapshot; a Last-Event-ID that is no
    cursor at all gets the same."""
    session = require(request, POLICE)
    cursor = request.headers.get("Last-Event-ID", "").strip()
    async with sse_response(request) as response:
        while True:
            call = request.app[BACKENDS].idps.Subscribe(
                idps_pb2.SubscribeRequest(cursor=cursor, heartbeat_interval_s=HEARTBEAT_S),
                metadata=bearer(session.key))
            sent = False
            try:
                async for reply in call:
                    for m in reply.messages:
                        data = to_dict(m.incident) if m.HasField("incident") else {}
                        await response.write(encode(KINDS.get(m.kind, "unknown"), data, m.cursor or None))
                        sent = True
                break
            except aio.AioRpcError as exc:
                if exc.code().name == "INVALID_ARGUMENT" and cursor and not sent:
                    cursor = ""  # not a cursor IDPS issued: start over with a snapshot
                    continue
                if exc.code().name == "UNAUTHENTICATED":
                    await forget_session(request)  # the reconnect then gets 403 and the page asks to sign in
                # The browser reconnects after `retry` with its Last-Event-ID; IDPS may be back by then.
                await response.write(encode("failure", {"error": exc.details() or exc.code().name,
                                                        "code": exc.code().name}))
                break
            finally:
                call.cancel()
    return response


async def cameras(request: web.Request) -> web.Response:
    """Every camera with its field of view and, per lane (approach), the last minute with frames: vehicles, the
    longest queue, congestion."""
    session = require(request, POLICE)
    backends = request.app[BACKENDS]
    reply = await backends.roadside.ListCameras(
        roadside_pb2.ListCamerasRequest(page=common_pb2.PageRequest(page_size=500)), metadata=bearer(session.key),
        timeout=CALL_TIMEOUT_S)
    end = datetime.now(UTC)
    start, stop = Timestamp(), Timestamp()
    start.FromDatetime(end - timedelta(minutes=3))
    stop.FromDatetime(end + timedelta(minutes=1))

    async def counts(camera_id: str) -> list[dict[str, Any]]:
        try:
            got = await backends.roadside.GetCounts(
                roadside_pb2.GetCountsRequest(camera_id=camera_id, start_time=start, end_time=stop),
                metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
        except aio.AioRpcError:
            return []
        latest = [m for m in got.minutes if m.frames > 0]
        if not latest:
            return []
        m = latest[-1]
        return [{"lane_id": lane.lane_id, "vehicles_per_min": lane.vehicles,
                 "queue_m": round(lane.max_queue_length_m, 1),
                 "congestion": roadside_pb2.CongestionLevel.Name(lane.congestion).removeprefix("CONGESTION_LEVEL_"),
                 "minute": m.minute_start.ToJsonString()} for lane in m.lanes]

    per_camera = await asyncio.gather(*(counts(c.id) for c in reply.cameras))
    out = []
    for camera, lanes in zip(reply.cameras, per_camera, strict=True):
        headings = {lane.id: lane.direction_heading_deg for lane in camera.lanes
                    if lane.WhichOneof("direction") == "direction_heading_deg"}
        for lane in lanes:
            if lane["lane_id"] in headings:
                lane["heading_deg"] = headings[lane["lane_id"]]
        out.append({"id": camera.id, "name": camera.name, "lat": camera.location.lat, "lon": camera.location.lon,
                    "heading_deg": camera.heading_deg, "fov": field_of_view(camera), "lanes": lanes})
    return json_response({"cameras": out})


async def municipal_status(request: web.Request) -> web.Response:
    session = require(request, POLICE)
    reply = await request.app[BACKENDS].municipal.GetStatus(municipal_pb2.GetStatusRequest(),
                                                            metadata=bearer(session.key), timeout=CALL_TIMEOUT_S)
    return json_response({"destinations": [
        {"destination": d.destination, "lag_records": d.lag_records, "lag_s": round(d.lag_s, 1), "paused": d.paused,
         "dead_letters": d.dead_letters,
         "last_delivered_at": d.last_delivered_at.ToJsonString() if d.HasField("last_delivered_at") else None,
         "last_error": d.last_error.message if d.HasField("last_error") else None}
        for d in reply.destinations]})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/incidents", list_incidents), web.get("/api/v1/incidents/stream", incident_stream),
            web.get("/api/v1/incidents/{incident_id}", get_incident),
            web.post("/api/v1/incidents/{incident_id}/transition", transition),
            web.post("/api/v1/incidents/{incident_id}/merge", merge),
            web.get("/api/v1/evidence/{report_id}", evidence), web.get("/api/v1/cameras", cameras),
            web.get("/api/v1/municipal/status", municipal_status)]
