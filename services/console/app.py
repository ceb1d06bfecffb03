"""The console's aiohttp app: sign-in, the pages, their JSON and event-stream API, the map's layers, static files.

    v2x console        # on V2X_CONSOLE_PORT (8080); `v2x run` starts it beside the services
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from grpc import aio
from v2x.common.v1 import common_pb2, identity_pb2

from services.common.config import Settings
from services.console import operator, police, public
from services.console.backends import BACKENDS, CALL_TIMEOUT_S, Backends, bearer
from services.console.district import district_geojson
from services.console.sessions import COOKIE, MemorySessions, SessionStore, open_store
from services.console.settings import HEALTH_PATH, ConsoleSettings, require_session_redis
from services.console.sse import STREAMS, close_streams
from services.console.web import SESSIONS, error, json_body, json_response, security, session_of

log = logging.getLogger("v2x.console")
STATIC = Path(__file__).resolve().parent / "static"
DISTRICT: web.AppKey[bytes] = web.AppKey("district", bytes)
PAGES = {"/": "index.html", "/police": "police.html", "/operator": "operator.html", "/public": "public.html"}
# Where a signed-in role is sent after sign-in.
HOME = {"police": "/police", "operator": "/operator"}


async def sign_in(request: web.Request) -> web.Response:
    """An API key for a session cookie. The key is checked with WhoAmI (the services say what it may do)."""
    body = await json_body(request)
    key = body.get("key")
    if not isinstance(key, str) or not key.strip():
        return error(400, "key: an API key is needed")
    try:
        who = await request.app[BACKENDS].identity.WhoAmI(identity_pb2.WhoAmIRequest(), metadata=bearer(key.strip()),
                                                         timeout=CALL_TIMEOUT_S)
    except aio.AioRpcError as exc:
        if exc.code().name == "UNAUTHENTICATED":
            return error(401, "unknown or revoked API key")
        raise
    role = common_pb2.Role.Name(who.role).removeprefix("ROLE_").lower()
    store = request.app[SESSIONS]
    old = request.cookies.get(COOKIE)
    if old:
        await store.drop(old)
    session = await store.create(key.strip(), role, who.scope, who.key_id)
    response = json_response({"signed_in": True, "role": role, "scope": who.scope, "csrf": session.csrf,
                              "expires_at": session.expires_at, "home": HOME.get(role, "/public")})
    response.set_cookie(COOKIE, session.id, max_age=store.ttl_s, httponly=True, samesite="Strict", path="/",
                        secure=request.app[public.SETTINGS].secure_cookie)
    log.info("signed in", extra={"role": role, "scope": who.scope, "key_id": who.key_id})
    return response


async def whoami(request: web.Request) -> web.Response:
    session = session_of(request)
    if session is None:
        return json_response({"signed_in": False})
    return json_response({"signed_in": True, "role": session.role, "scope": session.scope, "csrf": session.csrf,
                          "expires_at": session.expires_at, "home": HOME.get(session.role, "/public")})


async def sign_out(request: web.Request) -> web.Response:
    session = session_of(request)
    if session is not None:
        await request.app[SESSIONS].drop(session.id)
    response = json_response({"signed_in": False})
    response.del_cookie(COOKIE, path="/")
    return response


async def healthz(request: web.Request) -> web.Response:
    """The probes' (infra/k8s/base/console.yaml): the process serves. Deliberately not whether Redis or the services
    answer: the public page and the static files work without sessions, and a failing dependency would otherwise take
    every replica out of the Service at once."""
    return web.Response(text="ok", headers={"Cache-Control": "no-store"})


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def district(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DISTRICT], content_type="application/json",
                        headers={"Cache-Control": "public, max-age=3600"})


def _page(name: str) -> web.RouteDef:
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return web.get(next(p for p, n in PAGES.items() if n == name), page)


def build_app(settings: ConsoleSettings, backends: Backends | None = None,
              sessions: SessionStore | None = None) -> web.Application:
    """The app; `backends` (the gRPC clients) default to channels to `settings.targets`, closed with the app;
    `sessions` (the caller's, not closed here) must be given unless `settings.sessions` is "memory"."""
    import orjson

    if sessions is None:
        if settings.sessions != "memory":
            raise ValueError(f"V2X_CONSOLE_SESSIONS={settings.sessions}: the caller opens the store (open_store)")
        sessions = MemorySessions(settings.session_ttl_s)
    app = web.Application(middlewares=[security], client_max_size=64 * 1024)
    app[public.SETTINGS] = settings
    app[SESSIONS] = sessions
    app[STREAMS] = set()
    app[public.LOT_HOURS] = {}
    app[DISTRICT] = orjson.dumps(district_geojson(settings.district_net))
    own = backends is None
    app[BACKENDS] = backends or Backends.connect(settings.targets)
    if not (STATIC / "vendor" / "leaflet" / "leaflet.js").is_file():
        log.warning("the map library is missing (services/console/static/vendor/): run `make deps`")

    async def close(app: web.Application) -> None:
        if own:
            await app[BACKENDS].close()

    app.on_shutdown.append(close_streams)
    app.on_cleanup.append(close)
    app.add_routes([web.post("/api/v1/session", sign_in), web.get("/api/v1/session", whoami),
                    web.delete("/api/v1/session", sign_out), web.get("/api/v1/map/district", district),
                    web.get(HEALTH_PATH, healthz), web.get("/favicon.ico", no_icon),
                    *police.routes(), *operator.routes(), *public.routes(), *(_page(n) for n in PAGES.values()),
                    web.static("/static", STATIC, follow_symlinks=False)])
    return app


async def start_console(settings: ConsoleSettings, host: str, backends: Backends | None = None,
                        sessions: SessionStore | None = None) -> web.AppRunner:
    """Starts the app on `host`:`settings.port` (0: a free port; read it from the runner's addresses)."""
    runner = web.AppRunner(build_app(settings, backends, sessions), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, settings.port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


async def run_console(settings: Settings) -> None:
    """`v2x console`: serves until SIGTERM / SIGINT."""
    from services.common.server import wait_for_stop_signal

    console = ConsoleSettings.from_env(settings.env)
    require_session_redis(console, settings.redis_url)
    sessions = open_store(console.sessions, console.session_ttl_s, settings.redis_url, cluster=settings.redis_cluster)
    try:
        runner = await start_console(console, settings.bind_host, sessions=sessions)
        log.info("console serving", extra={"port": bound_port(runner), "sessions": console.sessions})
        try:
            await wait_for_stop_signal()
        finally:
            await asyncio.shield(runner.cleanup())
    finally:
        await sessions.close()
