"""The OCPP gateway: a WebSocket server (default port 9000) for charge points speaking OCPP 1.6J or 2.0.1.

- A charge point dials `ws(s)://host:9000/ocpp/<charge point id>` offering the subprotocol it was
  registered for (`ocpp1.6` or `ocpp2.0.1`).
- Security profile 1: HTTP Basic, user = the charge point id, checked in `process_request` before the
  upgrade against the salted hash stored by RegisterChargePoint. Anything else is answered before any
  OCPP message: 404 for another path, 401 for missing or wrong credentials or an unknown charge point
  (the same answer, at the same cost), 400 when it does not offer its registered subprotocol.
- One connection per charge point: a new one replaces the old.
- Draining (the process is told to stop): the listener closes at once, so new connections go to other replicas
  (handshakes under way get 503), and every open connection is closed with 1001 (going away), spread over half
  the grace period, so that the charge points reconnect through the balancer to replicas that stay, and do not
  all arrive there (and pay for their password check) in the same instant.
- Liveness: every message counts as "heard from". Arrival is noted in memory and flushed to the charge
  point row in batches (at most every quarter heartbeat interval, and at least every 5 s); readings of
  its connectors expire 3 heartbeat intervals after the last message (status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

import ocpp.messages
from prometheus_client import Counter, Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHeader, NegotiationError
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from services.charging.chargepoints import ChargePoint16, ChargePoint201, SessionContext
from services.charging.feed import ChargingFeed
from services.charging.group_commit import StatusWriter
from services.charging.passwords import check_password
from services.charging.store import ChargePointAuth, ChargingStore
from services.charging.vocab import OcppProtocol

# The OCPP schemas are tiny: validating in the event loop costs less than the package's default hop to a
# worker thread per message (load/bench_charging.py's OCPP phase), and keeps one charge point's messages in order.
ocpp.messages.ASYNC_VALIDATION = False

log = logging.getLogger("v2x.charging.gateway")
SUBPROTOCOLS: dict[int, Subprotocol] = {OcppProtocol.OCPP16J: Subprotocol("ocpp1.6"),
                                        OcppProtocol.OCPP201: Subprotocol("ocpp2.0.1")}
PATH = re.compile(r"/ocpp/([A-Za-z0-9._-]{1,48})")
REALM = "v2x OCPP"
CONNECTED = Gauge("v2x_charging_ocpp_connected", "Charge points connected to this gateway")
REFUSED = Counter("v2x_charging_ocpp_refused_total", "WebSocket upgrades refused", ["reason"])
MAX_MESSAGE_BYTES = 64 * 1024
GOING_AWAY = 1001  # RFC 6455: the server is going down; a charge point reconnects (OCPP-J: with its retry back-off)
POLICY_VIOLATION = 1008  # RFC 6455: replaced by a newer connection, disconnected by an admin
DRAINING = "server going away; reconnect"


class OcppGateway:
    def __init__(self, store: ChargingStore, writer: StatusWriter, clock: Callable[[], datetime], *, host: str,
                 port: int, heartbeat_s: int, feed: ChargingFeed | None = None) -> None:
        self.store = store
        self.writer = writer
        self.feed = feed
        self.clock = clock
        self.host = host
        self.requested_port = port
        self.heartbeat_s = heartbeat_s
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._flush_gap_s = min(heartbeat_s / 4, 5.0)
        self._auth: weakref.WeakKeyDictionary[ServerConnection, ChargePointAuth] = weakref.WeakKeyDictionary()
        self._live: dict[str, ServerConnection] = {}
        self._seen: dict[str, datetime] = {}
        self._flushed: dict[str, datetime] = {}
        # When each charge point was last heard from as far as its row and the nearby index know: a flush has
        # landed in both (tests wait on it instead of on the flush interval).
        self.recorded: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_context = SessionContext(store, writer, clock, heartbeat_s, self.heard, self.seen,
                                              self.close_soon)
        self._server: Server | None = None

    # ----- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Serves until cancelled (a background task of the charging service). Several processes may
        share the port (SO_REUSEPORT, as the gRPC servers do); a port held by something else is
        retried every few seconds, loudly."""
        while True:
            try:
                server = await serve(
                    self._handle, self.host, self.requested_port, process_request=self._process_request,
                    subprotocols=list(SUBPROTOCOLS.values()), select_subprotocol=self._select_subprotocol,
                    compression=None, max_size=MAX_MESSAGE_BYTES, server_header=None, reuse_port=True,
                    logger=logging.getLogger("v2x.charging.websocket"))
            except OSError:
                log.error("the OCPP gateway cannot listen; retrying in 5 s",
                          extra={"host": self.host, "port": self.requested_port}, exc_info=True)
                await asyncio.sleep(5)
                continue
            break
        async with server:
            self._server = server
            self.port = _bound_port(server)
            self.ready.set()
            log.info("OCPP gateway listening", extra={"port": self.port})
            try:
                await self._flush_forever()
            finally:
                self.ready.clear()
                await self._flush()
                # What a drain did not reach (it was cut short, or there was none): the server's own close below
                # does nothing once a drain has closed the listener.
                for ws in list(self._live.values()):
                    self._close_soon(ws, DRAINING, code=GOING_AWAY)

    async def drain(self, grace_s: float) -> None:
        """Hands every charge point to other replicas within the first half of the grace period (an `on_drain`
        hook of the service): no new connection from now on, and the open ones closed one after another."""
        if self._server is None:
            return
        self.ready.clear()
        self._server.close(close_connections=False)  # the listener only: connections are closed below, spread out
        live = list(self._live.values())
        gap_s = grace_s / 2 / len(live) if live else 0.0
        log.info("OCPP gateway draining", extra={"connections": len(live), "over_s": round(gap_s * len(live), 2)})
        for i, ws in enumerate(live):
            if i:
                await asyncio.sleep(gap_s)
            # Its own task: the close handshake (bounded by the close timeout) outlives the drain if it must.
            self._close_soon(ws, DRAINING, code=GOING_AWAY)

    def close_soon(self, cp_id: str, reason: str) -> None:
        """Closes the charge point's connection shortly, once the current reply has gone out."""
        ws = self._live.get(cp_id)
        if ws is not None:
            self._close_soon(ws, reason, delay_s=0.2)

    async def disconnect(self, cp_id: str, reason: str) -> bool:
        ws = self._live.get(cp_id)
        if ws is None:
            return False
        await self._close(ws, reason)
        return True

    @staticmethod
    async def _close(ws: ServerConnection, reason: str, delay_s: float = 0.0, code: int = POLICY_VIOLATION) -> None:
        await asyncio.sleep(delay_s)
        await ws.close(code=code, reason=reason[:100])

    def connected(self, cp_id: str) -> bool:
        return cp_id in self._live

    # ----- the handshake ------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        match = PATH.fullmatch(urlsplit(request.path).path)
        if match is None:
            REFUSED.labels("path").inc()
            return connection.respond(http.HTTPStatus.NOT_FOUND, "charge points connect to /ocpp/<charge point id>\n")
        cp_id = match.group(1)
        header = request.headers.get("Authorization")
        if header is None:
            return self._unauthorized(connection, cp_id, "missing credentials")
        try:
            user, password = parse_authorization_basic(header)
        except InvalidHeader:
            return self._unauthorized(connection, cp_id, "unsupported credentials (HTTP Basic expected)")
        auth = await self.store.charge_point_auth(cp_id) if user == cp_id else None
        if not await check_password(password, auth.password_hash if auth else None) or auth is None:
            return self._unauthorized(connection, cp_id, "invalid credentials")
        self._auth[connection] = auth
        return None

    def _unauthorized(self, connection: ServerConnection, cp_id: str, why: str) -> Response:
        REFUSED.labels("credentials").inc()
        log.warning("charge point refused", extra={"charge_point": cp_id, "why": why,
                                                   "peer": str(connection.remote_address)})
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{why}\n")
        response.headers["WWW-Authenticate"] = build_www_authenticate_basic(REALM)
        return response

    def _select_subprotocol(self, connection: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        auth = self._auth.get(connection)
        if auth is None:
            raise NegotiationError("not authenticated")
        wanted = SUBPROTOCOLS[auth.protocol]
        if wanted in offered:
            return wanted
        REFUSED.labels("subprotocol").inc()
        raise NegotiationError(f"charge point {auth.id} is registered for {wanted}; offered: "
                               f"{', '.join(offered) or 'none'}")

    # ----- a connection -------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        auth = self._auth.pop(ws)
        old = self._live.get(auth.id)
        self._live[auth.id] = ws
        if old is not None:
            log.info("charge point reconnected; closing its old connection", extra={"charge_point": auth.id})
            self._close_soon(old, "replaced by a new connection")
        cls = ChargePoint16 if ws.subprotocol == SUBPROTOCOLS[OcppProtocol.OCPP16J] else ChargePoint201
        cp = cls(auth.id, ws, self.session_context, auth, await self.store.ocpp_connectors(auth.id))
        now = self.clock()
        await self.store.charge_point_connected(auth.id, True, now)
        await self.seen({auth.id: now})
        CONNECTED.inc()
        log.info("charge point connected", extra={"charge_point": auth.id, "subprotocol": ws.subprotocol})
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            CONNECTED.dec()
            if self._live.get(auth.id) is ws:
                del self._live[auth.id]
                with contextlib.suppress(Exception):
                    now = self.clock()
                    await self.store.charge_point_connected(auth.id, False, now)
                    await self.seen({auth.id: now})
            log.info("charge point disconnected", extra={"charge_point": auth.id})

    def _close_soon(self, ws: ServerConnection, reason: str, delay_s: float = 0.0,
                    code: int = POLICY_VIOLATION) -> None:
        task = asyncio.create_task(self._close(ws, reason, delay_s, code))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- liveness -----------------------------------------------------------------------

    async def seen(self, seen: dict[str, datetime]) -> None:
        """Charge points whose rows now say they were heard from: their connectors' readings live longer
        for FindChargers too (the nearby index, here and in other replicas)."""
        if self.feed is not None:
            await self.feed.charge_points_seen(seen)

    def heard(self, cp_id: str) -> None:
        now = self.clock()
        last = self._flushed.get(cp_id)
        if last is None or (now - last).total_seconds() >= self._flush_gap_s:
            self._seen[cp_id] = now

    async def _flush(self) -> None:
        seen, self._seen = self._seen, {}
        if not seen:
            return
        try:
            await self.store.charge_points_seen(seen)
        except Exception:
            log.exception("could not record charge points heard from")
            for cp_id, at in seen.items():
                self._seen.setdefault(cp_id, at)
            return
        self._flushed.update(seen)
        await self.seen(seen)
        self.recorded.update(seen)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self._flush_gap_s))
            await self._flush()


def _bound_port(server: Server) -> int:
    for sock in server.sockets:
        port: int = sock.getsockname()[1]
        return port
    raise OSError("the OCPP gateway is not listening")

