"""Checks of the outbox payloads (the suite's canonical records) before any profile maps them.

Each check collects every bad field as "field: what is wrong" so that a dead letter says exactly why.
The payload shapes are those of services/parking/payloads.py; charger_status is documented below.

Fields added later are optional, so that records written before them (a replay of an old outbox) still pass:
lot_static "fast_charging_piles" / "slow_charging_piles" (absent = 0) and "public_spaces" (berths open to the public;
absent = every space), passage "record_type" (absent = "normal"), spot_status "lat" / "lon" (the berth's WGS-84
coordinates, on-street berths), and on an exit matched to its entry "entry_passage_id", "entry_passed_at",
"duration_s" and "fee_fen" (the stay's fee by the lot's published rule, fen).
A passage record of type "correction" or "void" also carries "original_passage_id" (the passage it amends,
= passage_id), "revision" (>= 1), "reason" and "amended_at".

charger_status payload (written by the charging service; aggregate_id = station_id):
    {"station_id", "connector_id", "evse_id"?, "status": "CONNECTOR_STATUS_*",
     "error_code"?: "CONNECTOR_ERROR_CODE_*", "observed_at": ISO-8601 (null only when UNKNOWN),
     "lat"?, "lon"? (WGS-84), "parking_lot_id"?, "standard"?, "max_power_kw"?}

charger_static payload (written by the charging service with a station's create or update; aggregate_id =
station_id; services/charging/payloads.py):
    {"station_id", "operator_id", "name", "address"?, "coordinate_system": "WGS-84", "lat", "lon",
     "parking_lot_id"?, "version", "updated_at": ISO-8601,
     "connectors": [{"evse_id", "connector_id", "standard": "CONNECTOR_STANDARD_*", "max_power_kw",
                     "price_per_kwh_fen"?, "service_fee_per_kwh_fen"?, "parking_spot_id"?}, ...] (at least one)}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from services.common.validation import EARLIEST, ID_RE
from services.municipal import vocab
from services.municipal.model import OutboxRecord

ID = ID_RE
_CLASSES = frozenset(vocab.SPACE_CLASSES)
# What a passage record is: the passage as recorded, a correction of it, or its withdrawal.
PASSAGE_RECORD_TYPES = ("normal", "correction", "void")
PILE_FIELDS = ("fast_charging_piles", "slow_charging_piles")
MAX_FUTURE = timedelta(minutes=10)


class Checker:
    """Reads fields of one payload, recording every problem instead of stopping at the first."""

    def __init__(self, payload: dict[str, Any], now: datetime) -> None:
        self.p = payload
        self.now = now
        self.reasons: list[str] = []

    def fail(self, field: str, problem: str) -> None:
        self.reasons.append(f"{field}: {problem}")

    def _get(self, obj: dict[str, Any], field: str, path: str, required: bool) -> Any:
        value = obj.get(field)
        if value is None and required:
            self.fail(path, "is missing")
        return value

    def ident(self, field: str, obj: dict[str, Any] | None = None, path: str = "") -> str:
        v = self._get(obj if obj is not None else self.p, field, path or field, True)
        if v is None:
            return ""
        if not isinstance(v, str) or not ID.fullmatch(v):
            self.fail(path or field, "must be 1..64 characters of A-Z a-z 0-9 . _ : -")
            return ""
        return v

    def text(self, field: str, max_len: int, *, required: bool = False) -> str:
        v = self._get(self.p, field, field, required)
        if v is None:
            return ""
        if not isinstance(v, str):
            self.fail(field, "must be a string")
            return ""
        if required and not v.strip():
            self.fail(field, "is empty")
        elif len(v) > max_len:
            self.fail(field, f"is {len(v)} characters long; at most {max_len}")
        elif any(ord(ch) < 32 and ch != "\t" for ch in v):
            self.fail(field, "contains control characters")
        return v

    def number(self, value: Any, path: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, "must be a number")
            return 0.0
        if not math.isfinite(value) or not lo <= value <= hi:
            self.fail(path, f"must be between {lo:g} and {hi:g}, not {value}")
        return float(value)

    def integer(self, value: Any, path: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "must be an integer")
            return 0
        if not lo <= value <= hi:
            self.fail(path, f"must be between {lo} and {hi}, not {value}")
        return value

    def boolean(self, field: str) -> bool:
        v = self.p.get(field)
        if not isinstance(v, bool):
            self.fail(field, "must be true or false")
            return False
        return v

    def enum(self, field: str, allowed: Collection[str], *, required: bool = True) -> str:
        v = self._get(self.p, field, field, required)
        if v is None:
            return ""
        if v not in allowed:
            self.fail(field, f"unknown value {v!r}")
            return ""
        return str(v)

    def time(self, field: str, *, required: bool = True) -> datetime | None:
        v = self._get(self.p, field, field, required)
        if v is None:
            return None
        try:
            at = datetime.fromisoformat(v) if isinstance(v, str) else None
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            self.fail(field, "must be an ISO-8601 time with a UTC offset")
            return None
        if at < EARLIEST:
            self.fail(field, f"{v} is before {EARLIEST.year}")
        elif at > self.now + MAX_FUTURE:
            self.fail(field, f"{v} is in the future")
        return at

    def lat_lon(self, obj: dict[str, Any], path: str) -> tuple[float, float]:
        return (self.number(obj.get("lat"), f"{path}lat", -90, 90),
                self.number(obj.get("lon"), f"{path}lon", -180, 180))

    def counts(self, field: str) -> dict[str, int]:
        v = self.p.get(field)
        if not isinstance(v, dict):
            self.fail(field, "must be an object of space class -> count")
            return {}
        for name, count in v.items():
            # Fast path: a known class with a sane integer count.
            if name in _CLASSES and type(count) is int and 0 <= count <= 100_000:
                continue
            if name not in _CLASSES:
                self.fail(f"{field}.{name}", "is not a space class")
            else:
                self.integer(count, f"{field}.{name}", 0, 100_000)
        return {k: c for k, c in v.items() if k in _CLASSES and type(c) is int}

    def same_aggregate(self, record: OutboxRecord, value: str) -> None:
        if value and value != record.aggregate_id:
            self.fail("aggregate_id", f"{record.aggregate_id!r} is not the record's subject {value!r}")


def _lot_static(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("lot_id"))
    c.text("name", 200, required=True)
    c.text("address", 500)
    region = c.text("region_code", 12)
    if region and not (len(region) in (6, 9, 12) and region.isdigit()):
        c.fail("region_code", "must be a 6, 9 or 12 digit administrative code")
    if c.p.get("coordinate_system") != "WGS-84":
        c.fail("coordinate_system", f"must be WGS-84 (the suite's datum), not {c.p.get('coordinate_system')!r}")
    c.lat_lon(c.p, "")
    c.enum("lot_kind", vocab.LOT_KINDS)
    c.ident("operator_id")
    capacity = c.counts("capacity")
    total = c.integer(c.p.get("total_spaces"), "total_spaces", 1, 1_000_000)
    if capacity and total and sum(capacity.values()) != total:
        c.fail("total_spaces", f"{total} is not the sum of the capacity per class ({sum(capacity.values())})")
    entrances = c.p.get("entrances") or []
    if not isinstance(entrances, list):
        c.fail("entrances", "must be a list")
        entrances = []
    for i, e in enumerate(entrances):
        if not isinstance(e, dict):
            c.fail(f"entrances[{i}]", "must be an object")
            continue
        c.ident("id", e, f"entrances[{i}].id")
        c.lat_lon(e, f"entrances[{i}].")
        if not e.get("entry") and not e.get("exit"):
            c.fail(f"entrances[{i}]", "is neither an entry nor an exit")
    always = c.boolean("always_open")
    periods = c.p.get("opening_periods") or []
    if not isinstance(periods, list):
        c.fail("opening_periods", "must be a list")
        periods = []
    for i, p in enumerate(periods):
        if not isinstance(p, dict):
            c.fail(f"opening_periods[{i}]", "must be an object")
            continue
        c.integer(p.get("weekday"), f"opening_periods[{i}].weekday", 1, 7)
        c.integer(p.get("open_minute"), f"opening_periods[{i}].open_minute", 0, 1439)
        c.integer(p.get("close_minute"), f"opening_periods[{i}].close_minute", 0, 1440)
    if not always and not periods:
        c.fail("opening_periods", "a lot that is not always open needs opening periods")
    price = c.p.get("price")
    if not isinstance(price, dict):
        c.fail("price", "must be an object")
    else:
        for name in ("free_minutes", "first_hour_fen", "per_hour_fen", "daily_cap_fen"):
            c.integer(price.get(name, 0), f"price.{name}", 0, 10_000_000)
    c.enum("detection_type", vocab.DETECTION_TYPES)
    c.text("phone", 32)
    if c.p.get("public_spaces") is not None:
        public = c.integer(c.p["public_spaces"], "public_spaces", 0, 1_000_000)
        if total and public > total:
            c.fail("public_spaces", f"{public} public spaces exceed the lot's {total}")
    fast, slow = (_pile_count(c, name) for name in PILE_FIELDS)
    ev = capacity.get("ev")
    if ev is not None and fast is not None and slow is not None and fast + slow > ev:
        # Each pile serves at least one EV space (the parking service's rule).
        c.fail("fast_charging_piles" if fast > ev else "slow_charging_piles",
               f"{fast} fast + {slow} slow charging piles exceed the {ev} EV spaces (capacity.ev)")


def _pile_count(c: Checker, name: str) -> int | None:
    """A lot's count of fast or slow charging piles: absent (or null) reads 0, None when invalid."""
    value = c.p.get(name)
    if value is None:
        return 0
    if type(value) is int and 0 <= value <= 100_000:
        return value
    c.integer(value, name, 0, 100_000)
    return None


def _lot_dynamic(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("lot_id"))
    c.integer(c.p.get("sequence", 0), "sequence", 0, 2**63 - 1)
    status = c.enum("status", vocab.SITE_STATUSES)
    observed = c.time("observed_at", required=status != "SITE_STATUS_UNKNOWN")
    c.time("received_at")
    if observed is None and status and status != "SITE_STATUS_UNKNOWN":
        c.fail("status", "a status other than UNKNOWN needs observed_at")
    capacity = c.counts("capacity")
    if capacity and sum(capacity.values()) <= 0:
        c.fail("capacity", "the lot has no spaces")
    free = c.p.get("free")
    if not isinstance(free, dict):
        c.fail("free", "must be an object of space class -> free spaces (null = unknown)")
        return
    for name, value in free.items():
        if name not in capacity:
            c.fail(f"free.{name}", "is a class the lot has no capacity for")
        elif value is not None and not (type(value) is int and 0 <= value <= capacity[name]):
            # The complaint users have about city data: free > capacity, negative counts.
            c.integer(value, f"free.{name}", 0, capacity[name])


def _spot_status(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("lot_id"))
    c.ident("spot_id")
    c.enum("space_class", vocab.SPACE_CLASSES)
    c.enum("status", vocab.SPOT_STATUSES)
    c.time("observed_at")
    if c.p.get("lat") is not None or c.p.get("lon") is not None:
        c.lat_lon(c.p, "")


def _passage(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("lot_id"))
    passage_id = c.ident("passage_id")
    record_type = c.enum("record_type", PASSAGE_RECORD_TYPES, required=False) or "normal"
    if record_type == "normal":
        if c.p.get("original_passage_id") is not None:
            c.fail("original_passage_id", "only a correction or void record refers to an original passage")
    elif c.p.get("record_type") in PASSAGE_RECORD_TYPES:
        original = c.ident("original_passage_id")
        if original and passage_id and original != passage_id:
            c.fail("original_passage_id", f"{original!r} is not the passage this record amends ({passage_id!r})")
        if c.p.get("revision") is None:
            c.fail("revision", "is missing")
        else:
            c.integer(c.p["revision"], "revision", 1, 1_000_000)
        c.text("reason", 500, required=True)
        c.time("amended_at")
    c.enum("direction", vocab.DIRECTIONS)
    c.text("plate", 16, required=True)
    c.enum("plate_colour", (*vocab.PLATE_COLOURS, "PLATE_COLOUR_UNSPECIFIED"))
    c.text("lane", 64)
    passed = c.time("passed_at")
    c.enum("space_class", vocab.SPACE_CLASSES)
    if c.p.get("entry_passage_id") is not None:
        if c.p.get("direction") != "PASSAGE_DIRECTION_EXIT":
            c.fail("entry_passage_id", "only an exit names the entry of its stay")
        c.ident("entry_passage_id")
        entered = c.time("entry_passed_at")
        if entered is not None and passed is not None and entered > passed:
            c.fail("entry_passed_at", "is after the exit")
        c.integer(c.p.get("duration_s"), "duration_s", 0, 10 * 365 * 86400)
        c.integer(c.p.get("fee_fen"), "fee_fen", 0, 100_000_000)


def _charger_status(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("station_id"))
    c.ident("connector_id")
    status = c.enum("status", vocab.CONNECTOR_STATUSES)
    c.time("observed_at", required=status != "CONNECTOR_STATUS_UNKNOWN")
    if c.p.get("error_code") is not None and not str(c.p["error_code"]).startswith("CONNECTOR_ERROR_CODE_"):
        c.fail("error_code", f"unknown value {c.p['error_code']!r}")
    if c.p.get("lat") is not None or c.p.get("lon") is not None:
        c.lat_lon(c.p, "")


def _charger_static(c: Checker, r: OutboxRecord) -> None:
    c.same_aggregate(r, c.ident("station_id"))
    c.ident("operator_id")
    c.text("name", 200, required=True)
    c.text("address", 500)
    if c.p.get("coordinate_system") != "WGS-84":
        c.fail("coordinate_system", f"must be WGS-84 (the suite's datum), not {c.p.get('coordinate_system')!r}")
    c.lat_lon(c.p, "")
    if c.p.get("parking_lot_id") is not None:
        c.ident("parking_lot_id")
    c.integer(c.p.get("version"), "version", 1, 2**63 - 1)
    c.time("updated_at")
    connectors = c.p.get("connectors")
    if not isinstance(connectors, list) or not connectors:
        c.fail("connectors", "must be a list of at least one connector")
        return
    seen: set[str] = set()
    for i, k in enumerate(connectors):
        path = f"connectors[{i}]"
        if not isinstance(k, dict):
            c.fail(path, "must be an object")
            continue
        c.ident("evse_id", k, f"{path}.evse_id")
        connector = c.ident("connector_id", k, f"{path}.connector_id")
        if connector in seen:
            c.fail(f"{path}.connector_id", f"{connector!r} comes twice")
        seen.add(connector)
        if k.get("standard") not in vocab.CONNECTOR_STANDARDS:
            c.fail(f"{path}.standard", f"unknown value {k.get('standard')!r}")
        power = k.get("max_power_kw")
        if power == 0 and type(power) in (int, float):
            c.fail(f"{path}.max_power_kw", "must be more than 0")
        else:
            c.number(power, f"{path}.max_power_kw", 0, 2000)
        for name in ("price_per_kwh_fen", "service_fee_per_kwh_fen"):
            c.integer(k.get(name, 0), f"{path}.{name}", 0, 10_000_000)
        if k.get("parking_spot_id") is not None:
            c.ident("parking_spot_id", k, f"{path}.parking_spot_id")


CHECKS: dict[str, Callable[[Checker, OutboxRecord], None]] = {
    "lot_static": _lot_static, "lot_dynamic": _lot_dynamic, "spot_status": _spot_status,
    "passage": _passage, "charger_status": _charger_status, "charger_static": _charger_static,
}


def check(record: OutboxRecord, now: datetime | None = None) -> Checker:
    """Runs the canonical checks of the record's kind; the checker's `reasons` is empty when it passed."""
    c = Checker(record.payload if isinstance(record.payload, dict) else {}, now or datetime.now(UTC))
    if not isinstance(record.payload, dict):
        c.fail("payload", "must be a JSON object")
    elif record.kind not in CHECKS:
        c.fail("kind", f"unknown kind {record.kind!r}")
    else:
        CHECKS[record.kind](c, record)
    return c
