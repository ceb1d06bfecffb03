"""Request signing between the adapter and the platform: HMAC-SHA256 over "<timestamp>.<body>".

Headers: X-V2X-Timestamp (unix seconds) and X-V2X-Signature ("v1=" + hex digest). The receiver
recomputes the digest with each secret it accepts (rotation) and refuses a timestamp further than
its tolerance from its own clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

TIMESTAMP_HEADER = "X-V2X-Timestamp"
SIGNATURE_HEADER = "X-V2X-Signature"
DEFAULT_TOLERANCE_S = 300.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1=" + mac.hexdigest()


def headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secrets: Sequence[str], timestamp: str | None, sig: str | None, body: bytes, now: float,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> str | None:
    """None when the request is authentic and fresh, else why not (for the 401 answer)."""
    if not timestamp or not sig:
        return "missing signature or timestamp header"
    try:
        ts = int(timestamp)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now - ts) > tolerance_s:
        return f"timestamp is {now - ts:+.0f} s from the receiver's clock (tolerance {tolerance_s:g} s)"
    if not any(hmac.compare_digest(signature(s, ts, body), sig) for s in secrets):
        return "signature does not match"
    return None
