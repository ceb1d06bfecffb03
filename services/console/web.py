"""What every console route shares: security headers, the session, CSRF, role checks, gRPC errors as HTTP."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc import aio

from services.console.sessions import COOKIE, CSRF_HEADER, Session, SessionStore, SessionsUnavailable

log = logging.getLogger("v2x.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions")
SESSION: web.RequestKey[Session | None] = web.RequestKey("session", Session)
# Scripts, styles, images and connections from the console itself only: no inline script, no CDN, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
               grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
               grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
               grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
               grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504}


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status)


def grpc_error(exc: aio.AioRpcError, **extra: Any) -> web.Response:
    status = HTTP_STATUS.get(exc.code(), 502)
    return error(status, exc.details() or exc.code().name, code=exc.code().name, **extra)


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def require(request: web.Request, *roles: str) -> Session:
    """The request's session when its role is one of `roles`; else 403 (also without a session: the public)."""
    session = session_of(request)
    if session is None or session.role not in roles:
        who = f"role {session.role}" if session else "without sign-in, the public"
        message = f"{who} may not use this (allowed: {', '.join(roles)})"
        raise web.HTTPForbidden(text=orjson.dumps({"error": message}).decode(), content_type="application/json")
    return session


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=orjson.loads)
    except (ValueError, orjson.JSONDecodeError):
        raise web.HTTPBadRequest(text=orjson.dumps({"error": "the body must be a JSON object"}).decode(),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=orjson.dumps({"error": "the body must be a JSON object"}).decode(),
                                 content_type="application/json")
    return body


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session lookup, CSRF on every state-changing request, security headers on every answer.

    A state-changing request must be JSON (a cross-site form cannot send it without a preflight), come from this
    origin when the browser says where it comes from, and, once signed in, carry the session's CSRF token in
    `X-CSRF-Token`. The sign-in itself has no token yet: it is held to the first two.

    Only the API looks the session up: pages and static files are the same for everyone, and need no trip to the
    session store (Redis) however many a page loads."""
    try:
        cookie = request.cookies.get(COOKIE) if request.path.startswith("/api/") else None
        request[SESSION] = await request.app[SESSIONS].get(cookie)
        if request.method not in SAFE_METHODS:
            refused = _csrf_refusal(request)
            if refused is not None:
                response: web.StreamResponse = error(403, refused)
            else:
                response = await handler(request)
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        _headers(request, exc)
        raise
    except SessionsUnavailable as exc:
        # Not a sign-out: the session may well be valid, the store just does not answer now.
        log.warning("the session store does not answer: %s", exc)
        response = error(503, "sign-in is unavailable for a moment (the session store does not answer): try again")
    except aio.AioRpcError as exc:
        response = grpc_error(exc)
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            await forget_session(request)
            response = error(401, "your key is no longer valid (revoked?): sign in again", code="UNAUTHENTICATED")
    _headers(request, response)
    return response


async def forget_session(request: web.Request) -> None:
    """The services no longer know the session's key (it was revoked): the session ends with it."""
    session = session_of(request)
    if session is not None:
        try:
            await request.app[SESSIONS].drop(session.id)
        except SessionsUnavailable as exc:  # harmless: the services refuse the revoked key on every call anyway
            log.warning("a revoked key's session stays until it expires: %s", exc)


def _csrf_refusal(request: web.Request) -> str | None:
    if not _same_origin(request):
        return "cross-origin request refused"
    if request.content_type != "application/json" and request.method != "DELETE":
        return "state-changing requests must be application/json"
    if request.path == "/api/v1/session" and request.method == "POST":
        return None
    session = session_of(request)
    if session is None:
        return "not signed in"
    if not session.csrf_ok(request.headers.get(CSRF_HEADER)):
        return f"missing or wrong CSRF token (send the session's token in {CSRF_HEADER})"
    return None


def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a stream already sent its headers (set in `sse_response`)
        return
    for name, value in security_headers().items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


def security_headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
            "Permissions-Policy": "geolocation=(self), camera=(), microphone=()"}
