"""The per-record hot path of draining: each record's idempotency key and wire form, and the municipal JSON
profile's straight-line writers for its frequent kinds (lot_dynamic, spot_status).

This module is plain, fully typed Python, and it is also compiled with mypyc (`make native`, part of `make deps`)
into a C extension that does the same about twice as fast: a 2-core machine drains records with the adapter,
the receiver and PostgreSQL sharing the cores, so the adapter's CPU per record sets the drain rate
(load/README.md). `services.municipal.native` picks the compiled module when it was built from this very file,
else this one. Nothing here may depend on which one runs: tests/municipal/test_fast_paths.py runs both.

The writers check what the general path (checks.py + MunicipalJson._map) checks and give the record's JSON text,
or None when anything is off (the general path then says what). Only identifiers that passed checks.ID (letters,
digits, . _ : -), integers, codes and ISO times go into the text, so nothing in it needs escaping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from services.common.validation import EARLIEST
from services.municipal import vocab
from services.municipal.checks import ID, MAX_FUTURE
from services.municipal.local_times import changed_at, parsed_time
from services.municipal.model import OutboxRecord

# A profile's fast path for one kind: the record's wire form (`Profile.wire` of its document) when the record
# certainly passes every check of the kind and of the profile, else None (the general path then checks it and
# names what is wrong).
FastWire = Callable[[OutboxRecord, str, datetime], bytes | None]

# The writers accept exactly these values (the vocabularies the checks allow), each with its code.
_PARK_STATUS: dict[str, int] = {s: vocab.MUNICIPAL_PARK_STATUS[s] for s in vocab.SITE_STATUSES}
_BERTH_STATUS: dict[str, int] = {s: vocab.MUNICIPAL_BERTH_STATUS[s] for s in vocab.SPOT_STATUSES}
_BERTH_CLASS: dict[str, int] = {c: vocab.MUNICIPAL_BERTH_CLASS[c] for c in vocab.SPACE_CLASSES}
_MAX_SEQUENCE = 2**63 - 1
_MAX_COUNT = 100_000

_CACHE_LIMIT = 65536
_IDENTS: set[str] = set()  # identifiers known to pass checks.ID
# payload time -> (microseconds since the epoch, local form); None if it is not ISO-8601 with an offset
_TIMES: dict[str, tuple[int, str] | None] = {}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EARLIEST_US: int = (EARLIEST - _EPOCH) // _US


class _Memo:
    """The last `now` and created_at seen, with what they give: rows come in id order, so a transaction's rows (one
    created_at) mostly follow each other, and the renderers get one `now` per slice of records."""

    def __init__(self) -> None:
        self.now: datetime | None = None
        self.latest_us = 0
        self.created_at: datetime | None = None
        self.changed = ""


_memo = _Memo()


def _ident(value: str) -> bool:
    if value in _IDENTS:
        return True
    if ID.fullmatch(value) is None:
        return False
    if len(_IDENTS) >= _CACHE_LIMIT:
        _IDENTS.clear()
    _IDENTS.add(value)
    return True


def _latest_us(now: datetime) -> int:
    """now + MAX_FUTURE in epoch microseconds."""
    if _memo.now is not now:
        _memo.now, _memo.latest_us = now, (now + MAX_FUTURE - _EPOCH) // _US
    return _memo.latest_us


def _changed_at(at: datetime) -> str:
    # Aware times with the same tzinfo compare field by field, without the utcoffset() a hash needs.
    if at != _memo.created_at:
        _memo.created_at, _memo.changed = at, changed_at(at)
    return _memo.changed


def _time(value: object, latest_us: int) -> str | None:
    """The local form of a valid payload time (ISO-8601 with offset, from 2000 on, not in the future). Aware times
    compare as their instants, which epoch microseconds are exactly."""
    if not isinstance(value, str):
        return None
    if value in _TIMES:
        parsed = _TIMES[value]
    else:
        if len(_TIMES) >= _CACHE_LIMIT:
            _TIMES.clear()
        at = parsed_time(value)
        parsed = _TIMES[value] = None if at is None else ((at[0] - _EPOCH) // _US, at[1])
    if parsed is None or not _EARLIEST_US <= parsed[0] <= latest_us:
        return None
    return parsed[1]


def wire_lot_dynamic(record: OutboxRecord, key: str, now: datetime) -> bytes | None:
    p = record.payload
    if type(p) is not dict:
        return None
    lot = p.get("lot_id")
    if not isinstance(lot, str) or lot != record.aggregate_id or not _ident(lot):
        return None
    sequence = p.get("sequence", 0)
    if type(sequence) is not int or not 0 <= sequence <= _MAX_SEQUENCE:
        return None
    status = p.get("status")
    park_status = _PARK_STATUS.get(status) if isinstance(status, str) else None
    if park_status is None:
        return None
    latest = _latest_us(now)
    observed = _time(p.get("observed_at"), latest)
    received = _time(p.get("received_at"), latest)
    if observed is None or received is None:
        return None
    cap = p.get("capacity")
    free = p.get("free")
    if type(cap) is not dict or type(free) is not dict:
        return None
    total = 0
    berths: list[str] = []
    for name, count in cap.items():
        code = _BERTH_CLASS.get(name)
        if code is None or type(count) is not int or not 0 <= count <= _MAX_COUNT:
            return None
        if count > 0:
            total += count
            f = free.get(name)
            berths.append(f'{{"berthClass":{code},"total":{count},"free":{"null" if f is None else f}}}')
    if total <= 0:
        return None
    free_total = 0
    known = False
    for name, value in free.items():
        room = cap.get(name)
        if room is None:
            return None
        if value is not None:
            if type(value) is not int or not 0 <= value <= room:
                return None
            free_total += value
            known = True
    return (f'{{"idempotencyKey":"{key}","recordType":"lot_dynamic","sequence":{record.id},"aggregateId":"{lot}",'
            f'"changedAt":"{_changed_at(record.created_at)}","data":{{"parkCode":"{lot}","totalBerths":{total},'
            f'"freeBerths":{free_total if known else "null"},"berthClasses":[{",".join(berths)}],'
            f'"parkStatus":{park_status},"observedTime":"{observed}","uploadTime":"{received}",'
            f'"sequence":{sequence}}}}}').encode()


def wire_spot_status(record: OutboxRecord, key: str, now: datetime) -> bytes | None:
    p = record.payload
    if type(p) is not dict:
        return None
    lot, spot = p.get("lot_id"), p.get("spot_id")
    if (not isinstance(lot, str) or lot != record.aggregate_id or not _ident(lot) or not isinstance(spot, str)
            or not _ident(spot)):
        return None
    if "lat" in p or "lon" in p:
        return None  # a berth with coordinates (on-street) goes the general way
    space_class, status = p.get("space_class"), p.get("status")
    berth_class = _BERTH_CLASS.get(space_class) if isinstance(space_class, str) else None
    berth_status = _BERTH_STATUS.get(status) if isinstance(status, str) else None
    observed = _time(p.get("observed_at"), _latest_us(now))
    if berth_class is None or berth_status is None or observed is None:
        return None
    return (f'{{"idempotencyKey":"{key}","recordType":"spot_status","sequence":{record.id},"aggregateId":"{lot}",'
            f'"changedAt":"{_changed_at(record.created_at)}","data":{{"parkCode":"{lot}","berthCode":"{spot}",'
            f'"berthClass":{berth_class},"berthStatus":{berth_status},"observedTime":"{observed}"}}}}').encode()


def render(records: Sequence[OutboxRecord], make_key: Callable[[int], str], now: datetime,
           fast_wire: Mapping[str, FastWire], skips: Callable[[OutboxRecord], bool] | None,
           general: Callable[[OutboxRecord, str], bytes | None],
           sendable: list[OutboxRecord], keys: list[str], wires: list[bytes]) -> None:
    """Appends the records to send (in the order given), their keys and wire forms. A record `skips` says no to is
    left out; one without a fast writer, or that its writer is not sure of, goes the `general` way, which gives its
    wire form or None (left out: a dead letter or a kind the destination does not take, noted by `general`)."""
    for r in records:
        key = make_key(r.id)
        if skips is not None and skips(r):
            continue
        to_wire = fast_wire.get(r.kind)
        w = to_wire(r, key, now) if to_wire is not None else None
        if w is None:
            w = general(r, key)
            if w is None:
                continue
        sendable.append(r)
        keys.append(key)
        wires.append(w)
