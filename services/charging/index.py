"""Every station and connector in memory: FindChargers answered without a database round trip.

On 2 cores the PostGIS query of a FindChargers (~1 ms of PostgreSQL, and as much again in the service
turning ~100 rows into views) left the p99 at 4 calls in flight close to its 20 ms goal whenever anything
else ran on the machine. Each charging process therefore keeps this index: loaded from PostgreSQL at
start-up, changed by the process' own writes before they are acknowledged (read-your-writes), and by
other replicas' writes through the change stream (`feed.py`, `services/common/stream_index.py`). It
answers exactly what `ChargingStore.find` (the PostGIS query, still used whenever the index is not known
to be current) answers: the same filters, freshness decided at query time, the same order.

Freshness needs the charge points too: an OCPP reading lives until 3 heartbeat intervals after the later
of its arrival and its charge point's last message, so the index keeps when each charge point was last
heard from (the gateway's flushes, connects and boots, also carried by the stream).

Stations are points of a `PointIndex` (grid cells, great-circle distances as PostGIS computes them); a
station's connectors are consecutive slots of numpy columns (standard, power, status, expiry), so that a
query's filters run vectorised over the ~1,500 connectors within a driver's radius. Each connector's
answer entry is encoded once per (state, fresh or not) and each station's header once; an answer is their
concatenation (FastPath.SPLICED_ANSWERS, `services/common/proto_wire.py`), or, on the plain path, a message built
from the picked connectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from v2x.charging.v1 import charging_pb2 as pb
from v2x.common.v1 import common_pb2 as cpb

from services.charging import convert
from services.charging.model import ConnectorSpec, ConnectorState, FindQuery
from services.charging.status import OCPP_SOURCES, expires_at
from services.charging.store import ChargingStore
from services.common import proto_wire
from services.common.epoch_us import NEVER, at_us, us
from services.common.fast_paths import FastPath, on
from services.common.nearby import PointIndex
from services.common.stream_index import SnapshotIndex

AVAILABLE = pb.CONNECTOR_STATUS_AVAILABLE
_STATION_COLUMNS: dict[str, tuple[Any, Any]] = {"first": (np.int64, 0), "count": (np.int64, 0)}
_STATIONS = proto_wire.tag(pb.FindChargersResponse.DESCRIPTOR, "stations")
_CONNECTORS = proto_wire.tag(pb.ChargerMatch.DESCRIPTOR, "connectors")
_DISTANCE = proto_wire.tag(pb.ChargerMatch.DESCRIPTOR, "distance_m")
_AVAILABLE_COUNT = proto_wire.varint(pb.ChargerMatch.DESCRIPTOR.fields_by_name["available_count"].number << 3)  # varint
Ints = npt.NDArray[np.int64]
Change = tuple[str, str, ConnectorState]  # (station id, connector id, committed state)


def version(state: ConnectorState) -> tuple[int, int]:
    """Later writes of a connector have a higher (observed_at, received_at): a report observed before the
    stored reading is refused (STALE), one observed at the same time arrives later."""
    return (us(state.observed_at) if state.observed_at else -1, us(state.received_at) if state.received_at else -1)


def encode_state(connector_id: str, state: ConnectorState) -> bytes:
    """A connector's committed state as the change stream carries it to other replicas."""
    s = state
    return orjson.dumps([connector_id, s.status, s.error_code, s.info, s.source,
                         *(us(t) if t is not None else None for t in (s.observed_at, s.received_at, s.status_since,
                                                                       s.expires_at)), s.ttl_s])


def decode_state(data: bytes) -> tuple[str, ConnectorState]:
    cid, status, error_code, info, source, observed, received, since, expires, ttl_s = orjson.loads(data)
    return cid, ConnectorState(status, error_code, info, source, at_us(observed), at_us(received), at_us(since),
                               ttl_s, at_us(expires))


def _ranges(first: Ints, count: Ints) -> Ints:
    """The slots [first[k], first[k] + count[k]) of every k, concatenated."""
    total = int(count.sum())
    starts = np.cumsum(count) - count
    out: Ints = np.arange(total, dtype=np.int64) + np.repeat(first - starts, count)
    return out


class ChargerIndex(SnapshotIndex):
    def __init__(self, store: ChargingStore) -> None:
        super().__init__()
        self.store = store
        # Per station slot: its ChargerMatch header (id, name, operator, location, address, lot), encoded.
        self._headers: list[bytes] = []
        # Per connector slot (a station's are consecutive, in answer order; a station that changes gets
        # new slots, its old ones are left unused): the filter columns, and what its encodings are made of.
        self._n = 0
        self._standard: Ints = np.zeros(0, dtype=np.int64)
        self._kw: npt.NDArray[np.float64] = np.zeros(0)
        self._status: Ints = np.zeros(0, dtype=np.int64)
        self._exp: Ints = np.zeros(0, dtype=np.int64)
        self._specs: list[ConnectorSpec] = []
        self._states: list[ConnectorState] = []
        self._versions: list[tuple[int, int]] = []
        self._cps: list[str] = []
        self._fresh: list[bytes | None] = []
        self._stale: list[bytes | None] = []
        self._slot: dict[str, int] = {}  # live connectors by id
        self._by_cp: dict[str, set[int]] = {}
        # When each charge point was last heard from. Only ever moves forward (as the column does, by
        # GREATEST), so it survives reloads: a report of it during a load is not lost.
        self._seen: dict[str, datetime] = {}

    # ----- state ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slot)

    async def _rows(self, ids: Sequence[str] | None) -> Sequence[Any]:
        return await self.store.index_rows(ids)

    async def apply(self, changes: Iterable[Change]) -> None:
        """Takes committed connector states (this process' writes, or another replica's)."""
        unknown: set[str] = set()
        for station_id, connector_id, state in changes:
            self._touch((station_id,))
            slot = self._slot.get(connector_id)
            if slot is None:
                unknown.add(station_id)
            else:
                self._set_state(slot, state)
        if unknown and self._points is not None:
            # A station registered or changed by another replica whose announcement has not arrived yet.
            await self.refresh(sorted(unknown))

    def charge_points_seen(self, seen: Mapping[str, datetime]) -> None:
        """Charge points heard from (as recorded in their rows): their OCPP readings live longer."""
        for cp_id, at in seen.items():
            if self._heard(cp_id, at):
                for slot in self._by_cp.get(cp_id, ()):
                    self._set_state(slot, self._states[slot])

    def _heard(self, cp_id: str, at: datetime) -> bool:
        """Records that a charge point was heard from at `at`; whether that is later than what was known."""
        last = self._seen.get(cp_id)
        if last is not None and last >= at:
            return False
        self._seen[cp_id] = at
        return True

    # ----- building ---------------------------------------------------------------------------

    def _build(self, rows: Sequence[Any]) -> None:
        groups = _by_station(rows)
        points = PointIndex.bulk([g[0]["s_id"] for g in groups], [g[0]["lat"] for g in groups],
                                 [g[0]["lon"] for g in groups], _STATION_COLUMNS)
        self._n = 0
        capacity = len(rows) + len(rows) // 8 + 16
        self._standard = np.zeros(capacity, dtype=np.int64)
        self._kw = np.zeros(capacity)
        self._status = np.zeros(capacity, dtype=np.int64)
        self._exp = np.full(capacity, NEVER, dtype=np.int64)
        self._specs, self._states, self._versions, self._cps = [], [], [], []
        self._fresh, self._stale = [], []
        self._slot, self._by_cp = {}, {}
        self._headers = []
        first, count = points.column["first"], points.column["count"]
        for k, group in enumerate(groups):
            first[k], count[k] = self._add_connectors(group, {})
            self._headers.append(_header(group[0]))
        self._points = points

    def _upsert(self, station_ids: Sequence[str], rows: Sequence[Any]) -> None:
        points = self._points
        assert points is not None
        groups = {g[0]["s_id"]: g for g in _by_station(rows)}
        first, count = points.column["first"], points.column["count"]
        for station_id in station_ids:
            slot = points.slot.get(station_id)
            previous: dict[str, ConnectorState] = {}
            if slot is not None:
                for c in range(int(first[slot]), int(first[slot] + count[slot])):
                    previous[self._specs[c].id] = self._states[c]
                    self._drop(c)
            group = groups.get(station_id)
            if group is None:
                points.remove(station_id)
                continue
            # (put may grow the columns: read them again after it)
            slot = points.put(station_id, group[0]["lat"], group[0]["lon"])
            first, count = points.column["first"], points.column["count"]
            first[slot], count[slot] = self._add_connectors(group, previous)
            header = _header(group[0])
            if slot == len(self._headers):
                self._headers.append(header)
            else:
                self._headers[slot] = header

    def _add_connectors(self, group: Sequence[Any], previous: Mapping[str, ConnectorState]) -> tuple[int, int]:
        """Appends a station's connectors (from its rows) as new slots; returns (first slot, count)."""
        start = self._n
        for r in group:
            if r["id"] is None:
                continue  # a station without connectors
            if r["cp_last_seen"] is not None:
                self._heard(r["charge_point_id"], r["cp_last_seen"])
            spec = ConnectorSpec(r["id"], r["standard"], r["max_power_kw"], r["price_per_kwh_fen"],
                                 r["service_fee_per_kwh_fen"], r["parking_spot_id"], r["ocpp_connector_id"])
            state = ConnectorState(r["status"], r["error_code"], r["info"], r["source"], r["observed_at"],
                                   r["received_at"], r["status_since"], r["ttl_s"], None)
            newer = previous.get(spec.id)
            if newer is not None and version(newer) > version(state):
                state = newer  # a write announced after this row was read: the row brings the static data only
            slot = self._n
            if slot == len(self._standard):
                self._grow()
            self._n += 1
            self._specs.append(spec)
            self._states.append(state)
            self._versions.append((-1, -1))
            self._cps.append(r["charge_point_id"])
            self._fresh.append(None)
            self._stale.append(None)
            self._standard[slot] = spec.standard
            self._kw[slot] = spec.max_power_kw
            self._slot[spec.id] = slot
            if r["charge_point_id"]:
                self._by_cp.setdefault(r["charge_point_id"], set()).add(slot)
            self._set_state(slot, state)
        return start, self._n - start

    def _drop(self, slot: int) -> None:
        cid = self._specs[slot].id
        if self._slot.get(cid) == slot:
            del self._slot[cid]
        cps = self._by_cp.get(self._cps[slot])
        if cps is not None:
            cps.discard(slot)
        self._fresh[slot] = self._stale[slot] = None

    def _grow(self) -> None:
        extra = max(1024, len(self._standard))
        self._standard = np.concatenate((self._standard, np.zeros(extra, dtype=np.int64)))
        self._kw = np.concatenate((self._kw, np.zeros(extra)))
        self._status = np.concatenate((self._status, np.zeros(extra, dtype=np.int64)))
        self._exp = np.concatenate((self._exp, np.full(extra, NEVER, dtype=np.int64)))

    def _set_state(self, slot: int, state: ConnectorState) -> None:
        v = version(state)
        if v < self._versions[slot]:
            return  # an older write, announced after a newer one
        self._versions[slot] = v
        # The expiry as `store._EXPIRES` computes it: an OCPP reading lives on while its charge point is heard
        # from. A writer may have known a later "heard from" than this index: the later expiry holds.
        exp = expires_at(state.source, state.observed_at, state.received_at, state.ttl_s,
                         self._seen.get(self._cps[slot]) if state.source in OCPP_SOURCES else None)
        if exp is not None and state.expires_at is not None and state.expires_at > exp:
            exp = state.expires_at
        if exp != state.expires_at:
            state = replace(state, expires_at=exp)
        self._states[slot] = state
        self._status[slot] = state.status
        self._exp[slot] = NEVER if exp is None else us(exp)
        self._fresh[slot] = self._stale[slot] = None

    def _encode(self, slot: int, now: datetime) -> bytes:
        body = convert.connector_proto(self._specs[slot], self._states[slot], now).SerializeToString()
        return proto_wire.embedded(_CONNECTORS, body)

    def warm(self, now: datetime) -> None:
        """Encodes every connector as it reads now, so that answers right after a start need no encoding.
        For start-up, before the server reports SERVING (about a second per 50,000 connectors)."""
        now_us = us(now)
        for slot in self._slot.values():
            if self._exp[slot] > now_us:
                self._fresh[slot] = self._encode(slot, now)
            else:
                self._stale[slot] = self._encode(slot, now)

    # ----- queries ----------------------------------------------------------------------------

    def find(self, q: FindQuery, now: datetime) -> bytes | None:
        """A serialized FindChargersResponse, or None when the index is not current (ask PostgreSQL)."""
        points = self._points
        if not self._synced or points is None:
            return None
        now_us = us(now)
        first, count = points.column["first"], points.column["count"]
        slots, a = points.within(q.lat, q.lon, q.radius_m)
        if len(slots):
            # Stations with a connector that matches (AVAILABLE and fresh, if asked), as `store._FIND`'s EXISTS.
            cfirst, ccount = first[slots], count[slots]
            idx = _ranges(cfirst, ccount)
            match = self._matching(idx, q)
            if q.available_only:
                match &= (self._status[idx] == AVAILABLE) & (self._exp[idx] > now_us)
            owner = np.repeat(np.arange(len(slots)), ccount)
            keep = np.bincount(owner[match], minlength=len(slots)) > 0
            slots, a = slots[keep], a[keep]
        picked, distances = points.nearest(slots, a, q.radius_m, q.limit)
        if not distances:
            return b""
        # Each picked station's connectors that match the plug and power (any status), in order.
        idx = _ranges(first[picked], count[picked])
        listed = self._matching(idx, q).tolist()
        exp = self._exp[idx]
        fresh = (exp > now_us).tolist()
        available = ((self._status[idx] == AVAILABLE) & (exp > now_us)).tolist()
        slot_of = idx.tolist()
        if not on(FastPath.SPLICED_ANSWERS):
            return self._built(picked.tolist(), distances, count[picked].tolist(), listed, available, slot_of, now)
        headers, fresh_enc, stale_enc = self._headers, self._fresh, self._stale
        parts: list[bytes] = []
        k = 0
        for station, d, n in zip(picked.tolist(), distances, count[picked].tolist(), strict=True):
            body = [headers[station]]
            n_available = 0
            for j in range(k, k + n):
                if not listed[j]:
                    continue
                c = slot_of[j]
                cache = fresh_enc if fresh[j] else stale_enc
                entry = cache[c]
                if entry is None:
                    entry = cache[c] = self._encode(c, now)
                body.append(entry)
                n_available += available[j]
            k += n
            # As convert.match_proto rounds it.
            body.append(proto_wire.double(_DISTANCE, round(d, 2) if math.isfinite(d) else 0.0))
            if n_available:
                body.append(_AVAILABLE_COUNT + proto_wire.varint(n_available))
            parts.append(proto_wire.embedded(_STATIONS, b"".join(body)))
        return b"".join(parts)

    def _built(self, stations: list[int], distances: list[float], counts: list[int], listed: list[bool],
               available: list[bool], slot_of: list[int], now: datetime) -> bytes:
        """`find`'s answer as a message built from the picked connectors (FastPath.SPLICED_ANSWERS' plain path)."""
        out = pb.FindChargersResponse()
        k = 0
        for station, d, n in zip(stations, distances, counts, strict=True):
            m = out.stations.add()
            m.MergeFromString(self._headers[station])
            m.distance_m = round(d, 2) if math.isfinite(d) else 0.0
            picked = [j for j in range(k, k + n) if listed[j]]
            m.connectors.extend(convert.connector_proto(self._specs[slot_of[j]], self._states[slot_of[j]], now)
                                for j in picked)
            m.available_count = sum(available[j] for j in picked)
            k += n
        return out.SerializeToString()

    def _matching(self, idx: Ints, q: FindQuery) -> npt.NDArray[np.bool_]:
        """Which of the connectors `idx` have the plug and power asked for (store._MATCH)."""
        match: npt.NDArray[np.bool_] = np.ones(len(idx), dtype=np.bool_)
        if q.standard:
            match &= self._standard[idx] == q.standard
        if q.min_power_kw:
            match &= self._kw[idx] >= q.min_power_kw
        return match


def _by_station(rows: Sequence[Any]) -> list[list[Any]]:
    """Rows (ordered by station) grouped by station."""
    groups: list[list[Any]] = []
    for r in rows:
        if not groups or groups[-1][0]["s_id"] != r["s_id"]:
            groups.append([])
        groups[-1].append(r)
    return groups


def _header(r: Any) -> bytes:
    """A station's part of its ChargerMatch, as convert.match_proto fills it."""
    return pb.ChargerMatch(station_id=r["s_id"], name=r["name"], operator_id=r["operator_id"],
                           location=cpb.LatLon(lat=r["lat"], lon=r["lon"]), address=r["address"],
                           parking_lot_id=r["parking_lot_id"]).SerializeToString()
