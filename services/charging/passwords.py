"""Charge point passwords (OCPP security profile 1: HTTP Basic over the WebSocket upgrade).

The suite issues each charge point a random password once and keeps only a salted PBKDF2-SHA256 hash
(`pbkdf2_sha256$<iterations>$<salt>$<hash>`, base64). The passwords carry 192 bits of entropy, so the
iteration count is modest (a few milliseconds per check, paid once per connection); it is stored
with the hash, so it can be raised without invalidating existing passwords.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets

ITERATIONS = 20_000
SCHEME = "pbkdf2_sha256"
# OCPP 2.0.1 BasicAuthPassword and the 1.6 security whitepaper's AuthorizationKey: 16..40 characters.
PASSWORD_CHARS = 32


def new_password() -> str:
    return secrets.token_urlsafe(24)[:PASSWORD_CHARS]


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8", "surrogateescape"), salt, iterations)


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = _derive(password, salt, iterations)
    return "$".join((SCHEME, str(iterations), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = _derive(password, base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# Checked against when the charge point is unknown, so that an unknown identity costs the same time
# as a wrong password (no probing for registered ids).
_DUMMY = hash_password(secrets.token_urlsafe(24))


async def check_password(password: str, stored: str | None) -> bool:
    """Verifies off the event loop (hashlib releases the GIL while it derives)."""
    ok = await asyncio.to_thread(verify_password, password, stored or _DUMMY)
    return ok and stored is not None
