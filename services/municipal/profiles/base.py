"""What every destination profile does: check, map, validate, and wrap a batch into one body."""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from services.municipal import plates
from services.municipal.checks import Checker, check
from services.municipal.model import LOCAL_TZ, InvalidRecord, NotCarried, OutboxRecord, Rendered
from services.municipal.settings import MunicipalDestination

PREVIEW_CHARS = 2000


@functools.lru_cache(maxsize=4096)
def changed_at(at: datetime) -> str:
    # Rows of one transaction share created_at: format it once.
    return at.astimezone(LOCAL_TZ).isoformat(timespec="milliseconds")


def local_time(value: str | None) -> str | None:
    """An ISO-8601 time from a payload as the platform's local time (UTC+8), to the second."""
    if value is None:
        return None
    return _local_time(value)


@functools.lru_cache(maxsize=8192)
def _local_time(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(LOCAL_TZ).isoformat(timespec="seconds")


def record_key(record: OutboxRecord) -> str:
    """The subject of a record: lot id, lot/spot, lot/passage, or station/connector."""
    p = record.payload if isinstance(record.payload, dict) else {}
    if record.kind == "spot_status":
        return f"{record.aggregate_id}/{p.get('spot_id', '')}"
    if record.kind == "passage":
        return f"{record.aggregate_id}/{p.get('passage_id', '')}"
    if record.kind == "charger_status":
        return f"{record.aggregate_id}/{p.get('connector_id', '')}"
    return record.aggregate_id


def preview(record: OutboxRecord) -> str:
    """The start of the record for a dead letter, plates always masked."""
    p = dict(record.payload) if isinstance(record.payload, dict) else {"payload": record.payload}
    if isinstance(p.get("plate"), str):
        p["plate"] = plates.mask(p["plate"])
    text = json.dumps({"kind": record.kind, "aggregate_id": record.aggregate_id, "payload": p},
                      ensure_ascii=False, default=str)
    return text[:PREVIEW_CHARS]


def lot_location(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A lot's GeoJSON from its static record (WGS-84 [lon, lat]): its street line when it has one, else its point."""
    line = payload.get("line")
    if line:
        return {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in line]}
    return {"type": "Point", "coordinates": [payload["lon"], payload["lat"]]}


class RenderContext:
    """Facts a profile may need beyond the record itself, from the lots' latest static records: which NGSI-LD type a
    lot is, and where it is (GeoJSON, WGS-84: the NGSI-LD models want a location on every entity)."""

    def __init__(self, lot_kinds: Mapping[str, str] | None = None,
                 lot_locations: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.lot_kinds: Mapping[str, str] = lot_kinds or {}
        self.lot_locations: Mapping[str, dict[str, Any]] = lot_locations or {}


# A profile's fast path for one kind: the record's document when the record certainly passes every check of
# the kind and of the profile, else None (the general path then checks it and names what is wrong).
FastRender = Callable[[OutboxRecord, str, datetime], Any]
# The same, straight to the document's wire form (`Profile.wire`).
FastWire = Callable[[OutboxRecord, str, datetime], bytes | None]


def parsed_time(value: str) -> tuple[datetime, str] | None:
    """A payload time and its local (UTC+8) form to the second; None when it is not ISO-8601 with an offset."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return at, at.astimezone(LOCAL_TZ).isoformat(timespec="seconds")


class Profile(ABC):
    """One wire format. Subclasses map a checked payload to their document form (`_map`), adding
    their own rules to the checker, and wrap documents into a request body (`body`). A subclass may
    offer fast paths (`fast_renderers`) for its frequent kinds: straight-line check-and-map functions that
    must give the same document as the general path for every record that passes, and None for any
    record they are not sure of (tests/municipal/test_fast_paths.py holds them to that)."""

    name: ClassVar[str]
    carries: ClassVar[frozenset[str]]
    content_type: ClassVar[str]
    # The profile offers per-day counts (and keys) for reconciliation.
    offers_counts: ClassVar[bool] = False
    # The profile needs to know each lot's kind (RenderContext.lot_kinds) to render dynamic records.
    needs_lot_kinds: ClassVar[bool] = False

    def __init__(self, destination: MunicipalDestination) -> None:
        self.destination = destination
        self.kinds = frozenset(destination.kinds) & self.carries if destination.kinds else self.carries
        self.fast: dict[str, FastRender] = {k: f for k, f in self.fast_renderers().items() if k in self.kinds}
        self.fast_wire: dict[str, FastWire] = {k: f for k, f in self.fast_wires().items() if k in self.kinds}

    def publication(self, kind: str) -> str:
        """Which of the profile's publications a kind goes in. A request body holds one publication: the lane never
        puts records of two in one request. One for all kinds by default."""
        return ""

    def request_url(self, url: str) -> str:
        """Where a batch is POSTed, from the destination's url (a profile may add what its protocol needs)."""
        return url

    def subject(self, wire: bytes) -> str | None:
        """The id the receiver names a document by in a per-entity answer (NGSI-LD 207), or None."""
        return None

    def fast_renderers(self) -> Mapping[str, FastRender]:
        """kind -> fast path (see the class docstring); none by default."""
        return {}

    def fast_wires(self) -> Mapping[str, FastWire]:
        """kind -> fast path to the wire form: `wire(doc)` of the document the general path gives, or None
        exactly when the kind's fast renderer gives None; none by default."""
        return {}

    def render(self, record: OutboxRecord, key: str, ctx: RenderContext | None = None,
               now: datetime | None = None) -> Rendered:
        """The record in this profile's form; raises NotCarried (skip) or InvalidRecord (dead letter)."""
        if record.kind not in self.kinds:
            raise NotCarried(record.kind)
        fast = self.fast.get(record.kind)
        if fast is not None:
            doc = fast(record, key, now or datetime.now(UTC))
            if doc is not None:
                return Rendered(record, key, record_key(record), doc)
        return self.render_checked(record, key, ctx, now)

    def render_checked(self, record: OutboxRecord, key: str, ctx: RenderContext | None = None,
                       now: datetime | None = None) -> Rendered:
        """`render` by the general path: every check of the kind, then the profile's mapping and rules."""
        if record.kind not in self.kinds:
            raise NotCarried(record.kind)
        c = check(record, now or datetime.now(UTC))
        if c.reasons:
            raise InvalidRecord(c.reasons)
        doc = self._map(c, record, key, ctx or RenderContext())
        if c.reasons:
            raise InvalidRecord(c.reasons)
        return Rendered(record, key, record_key(record), doc)

    def envelope(self, record: OutboxRecord, key: str) -> dict[str, Any]:
        """Delivery facts carried with every record: its idempotency key, kind, order and change time."""
        return {"idempotencyKey": key, "recordType": record.kind, "sequence": record.id,
                "aggregateId": record.aggregate_id, "changedAt": changed_at(record.created_at)}

    @abstractmethod
    def _map(self, c: Checker, record: OutboxRecord, key: str, ctx: RenderContext) -> Any:
        """The document for a checked record; profile rules add reasons to `c`."""

    @abstractmethod
    def body(self, docs: Sequence[Any]) -> bytes:
        """One request body holding these documents, in order."""

    @abstractmethod
    def wire(self, doc: Any) -> bytes:
        """One document in its wire form, as it appears in a body."""

    @abstractmethod
    def body_of(self, wires: Sequence[bytes]) -> bytes:
        """`body(docs)` from the documents' wire forms (`wire`): byte for byte the same body. The lane encodes
        each document as soon as it is rendered, so that a chunk in flight holds bytes, not dicts (fewer objects
        for the garbage collector to walk)."""

    def counts_url(self) -> str | None:
        """Where the platform answers per-day counts for this destination, if the profile offers it."""
        return None
