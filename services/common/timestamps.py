"""Datetimes into protobuf Timestamps, for every service's answers and change messages."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.fast_paths import FastPath, on

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_ts(t: Timestamp, at: datetime) -> None:
    """`t.FromDatetime(at)` (a naive `at` is UTC). The fast path (FastPath.TIMESTAMPS) does the arithmetic on the
    datetime itself instead of FromDatetime's time-tuple round trip."""
    if not on(FastPath.TIMESTAMPS):
        t.FromDatetime(at)
        return
    d = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)) - _EPOCH
    t.seconds = d.days * 86_400 + d.seconds
    t.nanos = d.microseconds * 1000


def ts(at: datetime | None) -> Timestamp | None:
    if at is None:
        return None
    t = Timestamp()
    set_ts(t, at)
    return t
