"""Every lot and its live state in memory: FindAvailable answered without a database round trip.

On 2 cores a PostGIS query per request cannot serve 1,000 drivers a second, so each parking process
keeps this index: loaded from PostgreSQL at start-up, changed by the process' own writes before they are
acknowledged (read-your-writes), and by other replicas' writes through the change stream (`feed.py`).
It answers exactly what `ParkingStore.find_available` (the PostGIS query, still used whenever the index
is not known to be current) answers: the same filters, freshness decided at query time, the same order.

Each answer is joined from per-lot serialized `LotAvailability` messages (FastPath.SPLICED_ANSWERS,
`services/common/proto_wire.py`), cached until the lot changes: what a lot reads depends on its data and on two
facts of the moment only, whether its reading is fresh and whether it is within opening hours, so at most four
encodings per lot exist. The plain path builds the answer's messages from the lots' views instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from v2x.parking.v1 import parking_pb2 as pb

from services.common import proto_wire
from services.common.epoch_us import NEVER, at_us, us
from services.common.fast_paths import FastPath, on
from services.common.nearby import PointIndex
from services.common.stream_index import SnapshotIndex
from services.parking import convert
from services.parking.availability import CLASS_NAMES, LotState, minute_of_week
from services.parking.model import FindQuery, LotView
from services.parking.store import ParkingStore, view_of
from services.parking.vocab import CLASSES

_FREE = {c: f"free{c}" for c in CLASSES}
_COLUMNS: dict[str, tuple[Any, Any]] = {
    "kind": (np.int32, -1), "hourly": (np.int64, 0), "always_open": (np.bool_, False),
    "ttl_us": (np.int64, 0), "exp_us": (np.int64, NEVER), "closed": (np.bool_, False),
    # -1: no count (NULL in the database), which no min_free admits.
    **{name: (np.int32, -1) for name in _FREE.values()},
}
_DISTANCE = proto_wire.tag(pb.LotAvailability.DESCRIPTOR, "distance_m")
_LOTS = proto_wire.tag(pb.FindAvailableResponse.DESCRIPTOR, "lots")


def encode_state(state: LotState) -> bytes:
    """A lot's live state as the change stream carries it to other replicas."""
    return orjson.dumps([
        state.sequence, us(state.observed_at) if state.observed_at else None,
        us(state.received_at) if state.received_at else None, [state.free.get(c) for c in CLASSES],
        state.closed, state.full_at_entrance, state.trend,
    ])


def decode_state(data: bytes) -> LotState:
    seq, observed, received, free, closed, full, trend = orjson.loads(data)
    return LotState(sequence=seq, observed_at=at_us(observed), received_at=at_us(received),
                    free=dict(zip(CLASSES, free, strict=True)), closed=closed, full_at_entrance=full, trend=trend,
                    samples=[])


def _version(state: LotState) -> tuple[int, int]:
    """Later writes of a lot have a higher (sequence, received_at): passages keep the sequence, reports raise it."""
    return state.sequence, us(state.received_at) if state.received_at else -1


class LotIndex(SnapshotIndex):
    def __init__(self, store: ParkingStore) -> None:
        super().__init__()
        self.store = store
        # Per slot: the record it was read from, the version of its state, and (if it changed since) that
        # state as the stream carries it. Answers' encodings by (slot, fresh, open now). All of it bytes,
        # numbers and records read at start-up: nothing per lot that the garbage collector has to walk
        # through again and again (a full collection over 100,000 lots' objects would stall answers).
        self._records: list[Any] = []
        self._versions: list[tuple[int, int]] = []
        self._states: dict[int, bytes] = {}
        self._encoded: dict[tuple[int, bool, bool], bytes] = {}
        # Opening hours as minute-of-week ranges of all lots, each slot's at positions [a, b) (a lot's
        # earlier ranges are emptied to (0, 0) when its hours change).
        self._range_slot = np.empty(0, dtype=np.int64)
        self._range_from = np.empty(0, dtype=np.int32)
        self._range_to = np.empty(0, dtype=np.int32)
        self._range_span: list[tuple[int, int]] = []
        self._open: tuple[int, int, npt.NDArray[np.bool_]] | None = None  # (minute, generation, mask)
        self._generation = 0

    # ----- state ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._points) if self._points is not None else 0

    async def _rows(self, ids: Sequence[str] | None) -> Sequence[Any]:
        return await self.store.index_rows(ids)

    async def apply(self, states: Iterable[tuple[str, LotState]]) -> None:
        """Takes committed live states of lots (this process' writes, or another replica's)."""
        unknown: list[str] = []
        for lot_id, state in states:
            self._touch((lot_id,))
            slot = self._points.slot.get(lot_id) if self._points is not None else None
            if slot is None:
                unknown.append(lot_id)
            else:
                self._set_state(slot, state)
        if unknown and self._points is not None:
            # A lot registered by another replica whose announcement has not arrived yet.
            await self.refresh(unknown)

    def _build(self, rows: Sequence[Any]) -> None:
        points = PointIndex.bulk([r["id"] for r in rows], [r["lat"] for r in rows], [r["lon"] for r in rows],
                                 _COLUMNS)
        n = len(rows)
        col = points.column
        col["kind"][:n] = [r["kind"] for r in rows]
        col["hourly"][:n] = [r["hourly_price_fen"] for r in rows]
        col["always_open"][:n] = [r["always_open"] for r in rows]
        col["ttl_us"][:n] = [r["ttl_s"] * 1_000_000 for r in rows]
        col["closed"][:n] = [r["closed"] for r in rows]
        observed = [r["observed_at"] for r in rows]
        col["exp_us"][:n] = [NEVER if o is None else us(o) + r["ttl_s"] * 1_000_000 for o, r in zip(observed, rows,
                                                                                                     strict=True)]
        for c, name in _FREE.items():
            column = f"free_{CLASS_NAMES[c]}"
            col[name][:n] = [-1 if r[column] is None else r[column] for r in rows]
        lengths = [len(r["open_from"]) for r in rows]
        self._range_slot = np.repeat(np.arange(n, dtype=np.int64), lengths)
        self._range_from = np.fromiter((v for r in rows for v in r["open_from"]), dtype=np.int32)
        self._range_to = np.fromiter((v for r in rows for v in r["open_to"]), dtype=np.int32)
        ends = np.cumsum(lengths).tolist()
        self._range_span = [(e - k, e) for e, k in zip(ends, lengths, strict=True)]
        self._records = list(rows)
        self._versions = [(r["seq"], us(r["received_at"]) if r["received_at"] else -1) for r in rows]
        self._states = {}
        self._encoded = {}
        self._points = points
        self._generation += 1

    def _upsert(self, ids: Sequence[str], rows: Sequence[Any]) -> None:
        points = self._points
        assert points is not None
        found = {r["id"] for r in rows}
        for lot_id in ids:
            if lot_id not in found:
                slot = points.slot.get(lot_id)
                if slot is not None:
                    self._set_ranges(slot, [], [])
                    self._states.pop(slot, None)
                    self._forget(slot)
                    points.remove(lot_id)
        for r in rows:
            slot = points.put(r["id"], r["lat"], r["lon"])
            version = (r["seq"], us(r["received_at"]) if r["received_at"] else -1)
            newer: LotState | None = None
            if slot == len(self._records):
                self._records.append(r)
                self._versions.append((-1, -1))
                self._range_span.append((0, 0))
            elif self._versions[slot] > version:
                # A write announced after this row was read: the row brings the static data, not the state.
                newer = self._view(slot).state
            self._records[slot] = r
            self._states.pop(slot, None)
            self._forget(slot)
            self._versions[slot] = version
            col = points.column
            col["kind"][slot] = r["kind"]
            col["hourly"][slot] = r["hourly_price_fen"]
            col["always_open"][slot] = r["always_open"]
            col["ttl_us"][slot] = r["ttl_s"] * 1_000_000
            col["closed"][slot] = r["closed"]
            observed = r["observed_at"]
            col["exp_us"][slot] = NEVER if observed is None else us(observed) + r["ttl_s"] * 1_000_000
            for c, name in _FREE.items():
                value = r[f"free_{CLASS_NAMES[c]}"]
                col[name][slot] = -1 if value is None else value
            self._set_ranges(slot, r["open_from"], r["open_to"])
            if newer is not None:
                self._set_state(slot, newer)
        self._generation += 1

    def _set_ranges(self, slot: int, starts: Sequence[int], ends: Sequence[int]) -> None:
        a, b = self._range_span[slot]
        self._range_from[a:b] = 0
        self._range_to[a:b] = 0
        first = len(self._range_slot)
        self._range_slot = np.concatenate((self._range_slot, np.full(len(starts), slot, dtype=np.int64)))
        self._range_from = np.concatenate((self._range_from, np.asarray(starts, dtype=np.int32)))
        self._range_to = np.concatenate((self._range_to, np.asarray(ends, dtype=np.int32)))
        self._range_span[slot] = (first, first + len(starts))

    def _set_state(self, slot: int, state: LotState) -> None:
        version = _version(state)
        if version < self._versions[slot]:
            return  # an older write, announced after a newer one
        self._versions[slot] = version
        points = self._points
        assert points is not None
        col = points.column
        col["closed"][slot] = state.closed
        col["exp_us"][slot] = NEVER if state.observed_at is None else us(state.observed_at) + int(col["ttl_us"][slot])
        for c, name in _FREE.items():
            value = state.free.get(c)
            col[name][slot] = -1 if value is None else value
        self._states[slot] = encode_state(state)
        self._forget(slot)

    def _forget(self, slot: int) -> None:
        for key in ((slot, True, True), (slot, True, False), (slot, False, True), (slot, False, False)):
            self._encoded.pop(key, None)

    def _view(self, slot: int, open_now: bool = False) -> LotView:
        view = view_of(self._records[slot], open_now)
        state = self._states.get(slot)
        return view if state is None else LotView(view.summary, decode_state(state))

    def _open_mask(self, now: datetime) -> npt.NDArray[np.bool_]:
        """Which slots are within opening hours this minute (recomputed once a minute or after an edit)."""
        minute = minute_of_week(now)
        cached = self._open
        if cached is not None and cached[0] == minute and cached[1] == self._generation:
            return cached[2]
        points = self._points
        assert points is not None
        mask = points.column["always_open"].copy()
        hit = (self._range_from <= minute) & (minute < self._range_to)
        mask[self._range_slot[hit]] = True
        self._open = (minute, self._generation, mask)
        return mask

    def _encode(self, slot: int, open_now: bool, now: datetime) -> bytes:
        return convert.lot_availability_proto(self._view(slot, open_now), now).SerializeToString()

    def warm(self, now: datetime) -> None:
        """Encodes every lot as it reads now, so that answers right after a start need no encoding (a lot
        not encoded costs its first answer ~25 us). For start-up, before the server reports SERVING: it
        holds the event loop for a couple of seconds per 100,000 lots."""
        points = self._points
        assert points is not None
        n = len(points.ids)
        fresh = (points.column["exp_us"][:n] > us(now)).tolist()
        opened = self._open_mask(now)[:n].tolist()
        for slot in np.flatnonzero(points.live[:n]).tolist():
            self._encoded[(slot, fresh[slot], opened[slot])] = self._encode(slot, opened[slot], now)

    # ----- queries ----------------------------------------------------------------------------

    def find(self, q: FindQuery, now: datetime) -> bytes | None:
        """A serialized FindAvailableResponse, or None when the index is not current (ask PostgreSQL)."""
        points = self._points
        if not self._synced or points is None:  # not loaded, or other replicas' changes may be missing
            return None
        slots, a = points.within(q.lat, q.lon, q.radius_m)
        col = points.column
        now_us = us(now)
        is_open = self._open_mask(now)
        if len(slots) and (q.kinds or q.max_price_per_hour_fen or q.open_now or q.min_free):
            keep = np.ones(len(slots), dtype=np.bool_)
            if q.kinds:
                keep &= np.isin(col["kind"][slots], q.kinds)
            if q.max_price_per_hour_fen:
                keep &= col["hourly"][slots] <= q.max_price_per_hour_fen
            if q.open_now or q.min_free:
                hours = is_open[slots]
                closed = col["closed"][slots]
                fresh = col["exp_us"][slots] > now_us
                if q.open_now:
                    # Open now: by opening hours, and not reported closed by a reading that is still fresh.
                    keep &= hours & ~(closed & fresh)
                if q.min_free:
                    # Counted free spaces only from a fresh reading of an open lot.
                    keep &= (col[_FREE[q.space_class]][slots] >= q.min_free) & ~closed & fresh & hours
            slots, a = slots[keep], a[keep]
        picked, distances = points.nearest(slots, a, q.radius_m, q.limit)
        if not distances:
            return b""
        # What a lot reads depends on the moment only through these two (see the module's docstring).
        moment = zip((col["exp_us"][picked] > now_us).tolist(), is_open[picked].tolist(), strict=True)
        if not on(FastPath.SPLICED_ANSWERS):
            return self._built(picked.tolist(), distances, moment, now)
        encoded = self._encoded
        parts: list[bytes] = []
        for slot, d, (fresh, is_open_now) in zip(picked.tolist(), distances, moment, strict=True):
            key = (slot, fresh, is_open_now)
            body = encoded.get(key)
            if body is None:
                body = encoded[key] = self._encode(slot, is_open_now, now)
            # As convert.lot_availability_proto rounds it.
            distance = round(d, 2) if math.isfinite(d) else 0.0
            parts.append(proto_wire.embedded(_LOTS, body + proto_wire.double(_DISTANCE, distance)))
        return b"".join(parts)

    def _built(self, slots: list[int], distances: list[float], moment: Iterable[tuple[bool, bool]],
               now: datetime) -> bytes:
        """`find`'s answer as a message built from the picked lots (FastPath.SPLICED_ANSWERS' plain path)."""
        out = pb.FindAvailableResponse()
        for slot, d, (_, is_open_now) in zip(slots, distances, moment, strict=True):
            view = self._view(slot, is_open_now)
            out.lots.append(convert.lot_availability_proto(LotView(view.summary, view.state, d), now))
        return out.SerializeToString()
