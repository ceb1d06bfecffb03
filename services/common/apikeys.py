"""API keys: issued once, stored hashed, verified with an in-process cache.

A key reads `v2x_<key id>_<secret>`. The secret has 256 bits of entropy, so a single SHA-256 is
enough (a slow password hash buys nothing against brute force of such a secret, and would cost a
millisecond on every uncached call). Only the hash is stored; the key is printed once at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.errors import Unauthenticated
from services.common.principal import Principal

PREFIX = "v2x"


@dataclass(frozen=True)
class IssuedKey:
    key: str
    principal: Principal


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _split(key: str) -> tuple[str, str]:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2] or len(key) > 200:
        raise Unauthenticated("malformed API key (expected v2x_<id>_<secret>)")
    return parts[1], parts[2]


async def create_key(engine: AsyncEngine, role_spec: str, label: str = "") -> IssuedKey:
    principal = Principal.parse(role_spec)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32).replace("_", "-")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_keys (key_id, secret_hash, role, scope, label) "
                "VALUES (:key_id, :hash, :role, :scope, :label)"
            ),
            {"key_id": key_id, "hash": _hash(secret), "role": principal.role.value, "scope": principal.scope,
             "label": label},
        )
    return IssuedKey(f"{PREFIX}_{key_id}_{secret}", Principal(principal.role, principal.scope, key_id))


async def revoke_key(engine: AsyncEngine, key_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :k AND revoked_at IS NULL"), {"k": key_id}
        )
    return bool(result.rowcount)


class KeyVerifier:
    """Turns a presented key into a principal. Results (good and bad) are cached for `cache_s`, so a
    revoked key stops working within that time and a flood of bad keys does not reach the database."""

    def __init__(self, engine: AsyncEngine, cache_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._cache_s = cache_s
        self.clock = clock  # seconds, monotonic; a test moves it past the cache instead of waiting
        self._cache: dict[str, tuple[float, bytes | None, Principal | None]] = {}

    async def verify(self, key: str) -> Principal:
        key_id, secret = _split(key)
        now = self.clock()
        hit = self._cache.get(key_id)
        if hit is None or hit[0] < now:
            stored, principal = await self._load(key_id)
            if len(self._cache) > 100_000:
                self._cache.clear()
            hit = (now + self._cache_s, stored, principal)
            self._cache[key_id] = hit
        _, stored, principal = hit
        if stored is None or principal is None or not hmac.compare_digest(stored, _hash(secret)):
            raise Unauthenticated("unknown or revoked API key")
        return principal

    async def _load(self, key_id: str) -> tuple[bytes | None, Principal | None]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT secret_hash, role, scope FROM api_keys WHERE key_id = :k AND revoked_at IS NULL"),
                    {"k": key_id},
                )
            ).first()
        if row is None:
            return None, None
        spec = f"{row.role}:{row.scope}" if row.scope else row.role
        return bytes(row.secret_hash), Principal.parse(spec, key_id)
