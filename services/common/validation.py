"""Request validation: collect every bad field, then raise one INVALID_ARGUMENT naming them all."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from services.common.errors import FieldViolation, InvalidArgument

ID_PATTERN = r"[A-Za-z0-9._:\-]{1,64}"  # the ids of lots, stations, cameras, incidents...
ID_RE = re.compile(rf"^{ID_PATTERN}$")
# Timestamps before this are certainly wrong for live data (and guard against epoch-zero defaults).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


class Validator:
    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def check(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def ident(self, field: str, value: str, *, required: bool = True) -> str:
        if not value:
            if required:
                self.fail(field, "is required")
        elif not ID_RE.fullmatch(value):  # `$` alone would let a trailing newline through
            self.fail(field, "must be 1..64 characters of A-Z a-z 0-9 . _ : -")
        return value

    def text(self, field: str, value: str, max_len: int, *, required: bool = False) -> str:
        if required and not value.strip():
            self.fail(field, "is required")
        elif len(value) > max_len:
            self.fail(field, f"is {len(value)} characters long; at most {max_len}")
        elif any(ord(ch) < 32 and ch not in "\t" for ch in value):
            self.fail(field, "contains control characters")
        return value

    def number(self, field: str, value: float, lo: float, hi: float) -> float:
        if not math.isfinite(value):
            self.fail(field, f"must be a finite number, not {value}")
        elif not lo <= value <= hi:
            self.fail(field, f"must be between {lo:g} and {hi:g}, not {value:g}")
        return value

    def integer(self, field: str, value: int, lo: int, hi: int) -> int:
        if not lo <= value <= hi:
            self.fail(field, f"must be between {lo} and {hi}, not {value}")
        return value

    def lat_lon(self, field: str, lat: float, lon: float) -> tuple[float, float]:
        self.number(f"{field}.lat", lat, -90, 90)
        self.number(f"{field}.lon", lon, -180, 180)
        return lat, lon

    def enum(self, field: str, value: int, descriptor: EnumDescriptor, *, required: bool = True) -> int:
        if value == 0:
            if required:
                self.fail(field, f"is required (one of {', '.join(_names(descriptor))})")
        elif value not in descriptor.values_by_number:
            self.fail(field, f"unknown value {value} (one of {', '.join(_names(descriptor))})")
        return value

    def timestamp(self, field: str, ts: Timestamp, *, max_future_s: float | None = None,
                  now: datetime | None = None) -> datetime | None:
        if ts.seconds == 0 and ts.nanos == 0:
            self.fail(field, "is required")
            return None
        try:
            at = ts.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            self.fail(field, "is not a valid timestamp")
            return None
        if at < EARLIEST:
            self.fail(field, f"{at.isoformat()} is before {EARLIEST.year}")
            return None
        if max_future_s is not None:
            limit = (now or datetime.now(UTC)) + timedelta(seconds=max_future_s)
            if at > limit:
                self.fail(field, f"{at.isoformat()} is more than {max_future_s:g} s in the future")
                return None
        return at


def _names(descriptor: EnumDescriptor) -> list[str]:
    return [v.name for v in descriptor.values if v.number != 0]
