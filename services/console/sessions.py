"""Sign-in sessions: an API key exchanged for a random session id (the cookie).

The key stays on the server: the page never sees it again, it is never in a URL or the page's storage. Each session
has its own CSRF token, which every state-changing request must echo in a header (`X-CSRF-Token`).

Two stores, chosen by V2X_CONSOLE_SESSIONS:

- `redis` (the default): sessions in Redis, so every replica of the console knows every session (a sign-in on one
  pod, the next request on another, a sign-out seen by all at once). Redis never holds what a session opens: an entry
  is named by a hash of the session id and encrypted (AES-GCM) with a key derived from it, so a copy of the Redis data
  (a dump, a replica, a MONITOR) yields neither cookies nor API keys.
- `memory`: this process only (a single console, e.g. without Redis). A restart signs everyone out.

This module is the only part of the console that touches a datastore (tests/house/test_boundaries.py): its own
sign-ins, never the services' data, which it reaches only through their rpcs with the signed-in person's key.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Protocol, cast

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("v2x.console")

COOKIE = "v2x_console_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 10_000  # of the memory store; Redis bounds its entries by their TTL
REDIS_PREFIX = "v2x:console:session:"
_NONCE = 12


@dataclass(frozen=True)
class Session:
    id: str
    key: str
    role: str  # police, operator, driver, admin, platform, camera
    scope: str  # the operator (or camera) id of a scoped role, else ""
    key_id: str
    csrf: str
    expires_at: float  # time.time()

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class SessionsUnavailable(Exception):
    """The session store does not answer (Redis down): the console answers 503, it does not sign anyone out."""


class SessionStore(Protocol):
    ttl_s: int

    async def create(self, key: str, role: str, scope: str, key_id: str) -> Session: ...

    async def get(self, session_id: str | None) -> Session | None: ...

    async def drop(self, session_id: str) -> None: ...

    async def close(self) -> None: ...


def open_store(kind: str, ttl_s: int, redis_url: str | None, *, cluster: bool = False) -> SessionStore:
    """The store V2X_CONSOLE_SESSIONS names, with a Redis client of its own (closed by `close`)."""
    if kind == "memory":
        return MemorySessions(ttl_s)
    if not redis_url:
        raise ValueError("sessions in Redis need REDIS_URL (services/console/settings.require_session_redis)")
    from services.common.redis_streams import create_redis

    return RedisSessions(create_redis(redis_url, cluster=cluster), ttl_s, own_client=True)


def new_session(key: str, role: str, scope: str, key_id: str, ttl_s: int) -> Session:
    return Session(secrets.token_urlsafe(32), key, role, scope, key_id, secrets.token_urlsafe(32), time.time() + ttl_s)


class MemorySessions:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    async def create(self, key: str, role: str, scope: str, key_id: str) -> Session:
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:  # the oldest go first
            for sid in sorted(self._sessions, key=lambda s: self._sessions[s].expires_at)[: MAX_SESSIONS // 10]:
                del self._sessions[sid]
        session = new_session(key, role, scope, key_id, self.ttl_s)
        self._sessions[session.id] = session
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.time():
            del self._sessions[session_id]
            return None
        return session

    async def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    async def close(self) -> None:
        self._sessions.clear()

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, v in self._sessions.items() if v.expires_at <= now]:
            del self._sessions[sid]


def redis_key(session_id: str) -> str:
    """Where a session lives in Redis: a hash of its id, so the data names no cookie."""
    return REDIS_PREFIX + hashlib.sha256(b"v2x console session id\0" + session_id.encode()).hexdigest()


def _cipher(session_id: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"v2x console session key")
    return AESGCM(hkdf.derive(session_id.encode()))


def seal(session: Session) -> bytes:
    """The session as Redis stores it: nonce + AES-GCM of its fields, under a key only the cookie's holder can derive
    (the entry's name is the associated data, so an entry copied under another name does not open)."""
    fields = {"key": session.key, "role": session.role, "scope": session.scope, "key_id": session.key_id,
              "csrf": session.csrf, "expires_at": session.expires_at}
    nonce = secrets.token_bytes(_NONCE)
    return nonce + _cipher(session.id).encrypt(nonce, orjson.dumps(fields), redis_key(session.id).encode())


def unseal(session_id: str, sealed: bytes) -> Session | None:
    try:
        plain = _cipher(session_id).decrypt(sealed[:_NONCE], sealed[_NONCE:], redis_key(session_id).encode())
    except (InvalidTag, ValueError):
        log.warning("a console session entry in Redis does not open: ignored")
        return None
    f = orjson.loads(plain)
    return Session(session_id, f["key"], f["role"], f["scope"], f["key_id"], f["csrf"], float(f["expires_at"]))


class RedisSessions:
    def __init__(self, redis: Redis, ttl_s: int, *, own_client: bool = False) -> None:
        self.ttl_s = ttl_s
        self._redis = redis
        self._own_client = own_client

    async def create(self, key: str, role: str, scope: str, key_id: str) -> Session:
        session = new_session(key, role, scope, key_id, self.ttl_s)
        try:
            await self._redis.set(redis_key(session.id), seal(session), ex=self.ttl_s)
        except RedisError as exc:
            raise SessionsUnavailable(str(exc)) from exc
        return session

    async def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        try:
            # bytes: the suite's clients never decode replies (services/common/redis_streams.create_redis)
            sealed = cast(bytes | None, await self._redis.get(redis_key(session_id)))
        except RedisError as exc:
            raise SessionsUnavailable(str(exc)) from exc
        if sealed is None:
            return None
        session = unseal(session_id, sealed)
        # Redis expires the entry itself; this guards against a clock or TTL that lags by a moment.
        return session if session is not None and session.expires_at > time.time() else None

    async def drop(self, session_id: str) -> None:
        try:
            await self._redis.delete(redis_key(session_id))
        except RedisError as exc:
            raise SessionsUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._own_client:
            await self._redis.aclose()
