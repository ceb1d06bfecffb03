"""Datetimes into protobuf Timestamps, for every service's answers and change messages."""

from __future__ import annotations

from datetime import datetime
from typing import overload

from google.protobuf.timestamp_pb2 import Timestamp


@overload
def ts(at: datetime) -> Timestamp: ...
@overload
def ts(at: None) -> None: ...
@overload
def ts(at: datetime | None) -> Timestamp | None: ...


def ts(at: datetime | None) -> Timestamp | None:
    """`at` as a Timestamp (a naive `at` is UTC), None for None (the field stays unset)."""
    if at is None:
        return None
    t = Timestamp()
    t.FromDatetime(at)
    return t
