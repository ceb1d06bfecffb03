"""Municipal adapter domain types: outbox records, rendered records, outcomes, destination state.

No grpc and no SQL here.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

# China has kept UTC+8 without daylight saving since 1991: the platform's days and times are local.
LOCAL_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
# Idempotency keys are UUIDv5 of "<destination>/<outbox id>" in this namespace: stable across
# retries, restarts and replays, different per destination.
KEY_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-5b8a-9a57-0c3e2f7d4b11")
_NS_BYTES = KEY_NAMESPACE.bytes

KINDS = ("lot_static", "lot_dynamic", "spot_status", "passage", "charger_status", "charger_static")
# Kinds whose newest row per aggregate is a standing fact (what the lot is, what the station is), kept when older rows
# are pruned.
STANDING_KINDS = ("lot_static", "charger_static")


# The UUID variant nibble ("10xx") for each hex digit of the SHA-1 at that place.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def key_maker(destination: str) -> Callable[[int], str]:
    """idempotency_key(destination, ·) for one destination: the SHA-1 input's prefix is built once (hot path)."""
    prefixed = hashlib.sha1(_NS_BYTES + f"{destination}/".encode())
    variant = _VARIANT

    def key(outbox_id: int) -> str:
        sha1 = prefixed.copy()
        sha1.update(b"%d" % outbox_id)
        h = sha1.hexdigest()
        # Version 5 in the 13th digit, the RFC 4122 variant in the 17th.
        return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant[h[16]]}{h[17:20]}-{h[20:32]}"

    return key


@functools.lru_cache(maxsize=64)
def _key_maker(destination: str) -> Callable[[int], str]:
    return key_maker(destination)


def idempotency_key(destination: str, outbox_id: int) -> str:
    """uuid.uuid5(KEY_NAMESPACE, "<destination>/<outbox id>"), computed without the UUID object."""
    return _key_maker(destination)(outbox_id)


# Not frozen: a frozen dataclass pays an object.__setattr__ per field, and a record is built per outbox row on
# the hot path of draining. Treat it as immutable all the same.
@dataclass(slots=True)
class OutboxRecord:
    """One outbox row as the adapter reads it."""

    id: int
    txid: int
    created_at: datetime
    kind: str
    aggregate_id: str
    payload: dict[str, Any]

    @property
    def day(self) -> str:
        """The local (UTC+8) date of the change, ISO format: the day reconciliation counts it in."""
        return self.created_at.astimezone(LOCAL_TZ).date().isoformat()


class InvalidRecord(Exception):
    """A record that does not satisfy its profile; `reasons` name each bad field."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


class NotCarried(Exception):
    """The destination's profile has no form for this kind of record (not an error: it is skipped)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """A record in its destination's wire form, validated, ready to batch."""

    record: OutboxRecord
    key: str
    record_key: str
    doc: Any


class Fate(enum.Enum):
    DELIVERED = "delivered"  # the platform acknowledged it (new or duplicate at the receiver)
    DEAD = "dead"  # invalid for the profile, or refused by the platform: a dead letter
    SKIPPED = "skipped"  # a kind this destination does not receive


@dataclass(frozen=True, slots=True)
class Outcome:
    record: OutboxRecord
    fate: Fate
    key: str = ""
    record_key: str = ""
    http_status: int = 0
    reason: str = ""  # stable code, e.g. INVALID_RECORD, REJECTED_BY_PLATFORM
    message: str = ""
    preview: str = ""
    attempts: int = 1


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the drain order: (txid, id), compared as a pair."""

    txid: int
    id: int


@dataclass
class DestinationState:
    """A destination's durable state (its row), as the lane last read or wrote it."""

    name: str
    cursor: Position
    ahead: list[int] = field(default_factory=list)
    paused: bool = False
    pause_reason: str = ""
    replay_from: datetime | None = None
    replay_kinds: tuple[str, ...] = ()
    replay_end: Position | None = None
    last_delivered_at: datetime | None = None
    last_error_code: int | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True)
class DestinationStatus:
    state: DestinationState
    lag_records: int
    lag_s: float
    delivered: dict[str, int]
    dead_letters: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    destination: str
    outbox_id: int
    kind: str
    record_key: str
    idempotency_key: str
    state: str
    attempts: int
    http_status: int
    reason: str
    message: str
    payload_preview: str
    first_attempt_at: datetime
    last_attempt_at: datetime


@dataclass(frozen=True)
class KindReconciliation:
    kind: str
    ours: int
    theirs: int | None
    missing_keys: list[str]

    @property
    def difference(self) -> int:
        return self.ours - self.theirs if self.theirs is not None else 0


@dataclass(frozen=True)
class Reconciliation:
    destination: str
    day: str
    kinds: list[KindReconciliation]

    @property
    def matched(self) -> bool:
        return all(k.difference == 0 for k in self.kinds if k.theirs is not None)
