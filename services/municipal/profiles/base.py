"""What every destination profile does: check, map, validate, and wrap a batch into one body."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from services.municipal import plates
from services.municipal.checks import Checker, check
from services.municipal.fastpath import FastWire
from services.municipal.local_times import changed_at
from services.municipal.model import InvalidRecord, NotCarried, OutboxRecord, Rendered
from services.municipal.native import fastpath
from services.municipal.settings import MunicipalDestination

PREVIEW_CHARS = 2000


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


class Profile(ABC):
    """One wire format. Subclasses map a checked payload to their document form (`_map`), adding
    their own rules to the checker, and wrap documents into a request body (`body`). A subclass may
    offer fast paths (`fast_wires`) for its frequent kinds: straight-line check-and-write functions that
    must give the same wire form as the general path for every record that passes, and None for any
    record they are not sure of (tests/municipal/test_fast_paths.py holds them to that). They sit behind
    `wires`, the one function the lane renders every record with."""

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
        self.fast_wire: dict[str, FastWire] = {k: f for k, f in self.fast_wires().items() if k in self.kinds}

    def publication(self, kind: str) -> str:
        """Which of the profile's publications a kind goes in. A request body holds one publication: the lane never
        puts records of two in one request. One for all kinds by default."""
        return ""

    def request_url(self, url: str) -> str:
        """Where a batch is POSTed, from the destination's url (a profile may add what its protocol needs)."""
        return url

    def subjects(self, wire: bytes) -> Sequence[str]:
        """The ids the receiver names a document's entities by in a per-entity answer (NGSI-LD 207); none by
        default."""
        return ()

    def fast_wires(self) -> Mapping[str, FastWire]:
        """kind -> fast path to the wire form: `wire(doc)` of the document `render` gives, or None when the record is
        not certainly valid; none by default."""
        return {}

    def wires(self, records: Sequence[OutboxRecord], make_key: Callable[[int], str], now: datetime,
              ctx: RenderContext, skips: Callable[[OutboxRecord], bool] | None,
              invalid: Callable[[OutboxRecord, str, InvalidRecord], None],
              sendable: list[OutboxRecord], keys: list[str], wires: list[bytes]) -> None:
        """Appends the records to send (in order), their idempotency keys and wire forms: the one function every
        record is rendered with for delivery. A kind's fast writer (services/municipal/fastpath.py) when the profile
        has one and it is sure of the record, else the general path (`render`): a record it refuses goes to
        `invalid` (with the reasons), one `skips` says no to and a kind the destination does not take nowhere."""
        wire = self.wire

        def general(r: OutboxRecord, key: str) -> bytes | None:
            try:
                return wire(self.render(r, key, ctx, now).doc)
            except NotCarried:
                return None
            except InvalidRecord as exc:
                invalid(r, key, exc)
                return None

        fastpath.render(records, make_key, now, self.fast_wire, skips, general, sendable, keys, wires)

    def render(self, record: OutboxRecord, key: str, ctx: RenderContext | None = None,
               now: datetime | None = None) -> Rendered:
        """The record in this profile's form by the general path: every check of the kind, then the profile's
        mapping and rules. Raises NotCarried (skip) or InvalidRecord (dead letter)."""
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
