"""Parking persistence: every read and write of lots, spots, state and passages.

State changes and their outbox rows commit in one transaction; writers of one lot serialise on
its state row (`FOR UPDATE`, in lot id order so that batches never deadlock).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.common.geo import Area
from services.common.outbox import OutboxKind, OutboxRow, write_outbox
from services.common.principal import Principal
from services.common.rawsql import Query, fetch
from services.common.read_replica import Reads
from services.parking import payloads, rules
from services.parking.availability import (
    CLASS_NAMES,
    LotState,
    Period,
    minute_of_week,
    multirange_literal,
    next_samples,
    occupied,
    trend,
    week_ranges,
)
from services.parking.model import (
    EntranceSpec,
    FindQuery,
    LotRecord,
    LotSpec,
    LotSummary,
    LotView,
    Outcome,
    PassageAmendment,
    PassageRecord,
    PassageSpec,
    PriceSpec,
    Report,
    SpotRecord,
    SpotSpec,
)
from services.parking.vocab import (
    CLASSES,
    AckResult,
    DetectionType,
    PassageDirection,
    SpaceClass,
)

_FREE_COLUMN: dict[int, str] = {SpaceClass.GENERAL: "free_general", SpaceClass.EV: "free_ev",
                                SpaceClass.DISABLED: "free_disabled", SpaceClass.RESERVED: "free_reserved"}
_CAP_COLUMN: dict[int, str] = {SpaceClass.GENERAL: "cap_general", SpaceClass.EV: "cap_ev",
                               SpaceClass.DISABLED: "cap_disabled", SpaceClass.RESERVED: "cap_reserved"}



def _view_columns(price: str = "l.price") -> str:
    """What every availability answer selects: the lot summary and its live state. `price` spells the tariff
    column (the jsonb, or it as text for callers that parse it themselves)."""
    return f"""
    l.id, l.operator_id, l.name, l.kind, ST_Y(l.location::geometry) AS lat, ST_X(l.location::geometry) AS lon,
    l.cap_general, l.cap_ev, l.cap_disabled, l.cap_reserved, {price}, l.ttl_s, l.detection_type,
    (l.always_open OR l.open_minutes @> CAST(:mow AS integer)) AS open_now,
    s.seq, s.observed_at, s.received_at, s.free_general, s.free_ev, s.free_disabled, s.free_reserved,
    s.closed, s.full_at_entrance, s.trend"""


_VIEW_COLUMNS = _view_columns()
_PRICE_AS_TEXT = "CAST(l.price AS text) AS price"
_STATIC_COLUMNS = """
    l.address, l.region_code, ST_AsGeoJSON(l.line::geometry) AS line, l.opening, l.always_open, l.entrances,
    l.phone, l.version, l.created_at, l.updated_at, l.fast_charging_piles, l.slow_charging_piles"""
_FROM = "FROM parking_lots l JOIN parking_lot_state s ON s.lot_id = l.id"

# Only writers need the occupancy samples (for the trend); answers leave them out (most of a state row).
# JSON as text: `_json` parses it with orjson, several times faster than the driver's jsonb codec (json.loads).
_LOCK = text(f"SELECT {_view_columns(_PRICE_AS_TEXT)}, "
             f"CAST(s.samples AS text) AS samples {_FROM} WHERE s.lot_id = ANY(:ids) ORDER BY s.lot_id FOR UPDATE OF s")
_ENTRY_OF_EXIT = text(
    "SELECT passage_id, passed_at FROM parking_passages WHERE lot_id = :lot_id AND plate = :plate "
    "AND direction = :entry AND passed_at <= :at ORDER BY passed_at DESC, id DESC LIMIT 1")
_GET = text(f"SELECT {_VIEW_COLUMNS}, {_STATIC_COLUMNS} {_FROM} WHERE l.id = :id")
_LIST = text(
    f"SELECT {_VIEW_COLUMNS}, {_STATIC_COLUMNS} {_FROM} "
    "WHERE (CAST(:operator AS text) IS NULL OR l.operator_id = :operator) AND l.id > :after ORDER BY l.id LIMIT :n"
)
_AREA = text(
    f"SELECT {_VIEW_COLUMNS}, ST_Distance(l.location, ST_MakePoint(:lon, :lat)::geography, false) AS distance_m "
    f"{_FROM} WHERE l.location && ST_MakeEnvelope(:w, :s, :e, :n, 4326)::geography ORDER BY l.id LIMIT :n_max"
)
# The columns of a state write, in the order of `_state_row`.
_STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("lot_id", "text"), ("seq", "bigint"), ("observed_at", "timestamptz"), ("received_at", "timestamptz"),
    ("free_general", "integer"), ("free_ev", "integer"), ("free_disabled", "integer"), ("free_reserved", "integer"),
    ("closed", "boolean"), ("full_at_entrance", "boolean"), ("trend", "smallint"), ("samples", "text"),
)


def _state_set(value: str) -> str:
    """The SET list of a state write; `value` spells a column's new value (`{}` is the column)."""
    return ", ".join(f"{c} = CAST({value.format(c)} AS jsonb)" if c == "samples" else f"{c} = {value.format(c)}"
                     for c, _ in _STATE_COLUMNS[1:])


_UPDATE_STATE = text(f"UPDATE parking_lot_state SET {_state_set(':{}')} WHERE lot_id = :lot_id")
# A batch's state rows and outbox rows in one statement (one round trip, no per-row work in Python
# beyond building the arrays): the state UPDATE runs as a data-modifying CTE beside the outbox INSERT.
# Outbox ids follow the order of the arrays (WITH ORDINALITY), i.e. the order of the reports.
_WRITE_BATCH = text(
    f"WITH state AS (UPDATE parking_lot_state s SET {_state_set('t.{}')} FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _STATE_COLUMNS) + ") AS t("
    + ", ".join(c for c, _ in _STATE_COLUMNS) + ") WHERE s.lot_id = t.lot_id) "
    "INSERT INTO outbox (kind, aggregate_id, payload) SELECT o.kind, o.aggregate_id, CAST(o.payload AS jsonb) "
    "FROM unnest(CAST(:kind AS text[]), CAST(:aggregate_id AS text[]), CAST(:payload AS text[])) WITH ORDINALITY "
    "AS o(kind, aggregate_id, payload, n) ORDER BY o.n"
)
_SPOT_COLUMNS = ("lot_id", "spot_id", "status", "observed_at")  # the order of `spot_updates` entries
_UPDATE_SPOTS = text(
    "UPDATE parking_spots p SET status = t.status, observed_at = t.observed_at "
    "FROM unnest(CAST(:lot_id AS text[]), CAST(:spot_id AS text[]), CAST(:status AS smallint[]), "
    "CAST(:observed_at AS timestamptz[])) AS t(lot_id, spot_id, status, observed_at) "
    "WHERE p.lot_id = t.lot_id AND p.spot_id = t.spot_id"
)


def _find_sql(space_class: int) -> Any:
    free = _FREE_COLUMN[space_class]
    point = "ST_MakePoint(:lon, :lat)::geography"
    filters = (
        "AND (:any_kind OR l.kind = ANY(:kinds)) "
        "AND (:max_price = 0 OR l.hourly_price_fen <= :max_price) "
        # Open now: by opening hours, and not reported closed by a reading that is still fresh.
        "AND (NOT :open_now OR ((l.always_open OR l.open_minutes @> CAST(:mow AS integer)) "
        "AND NOT (s.closed AND s.observed_at + make_interval(secs => l.ttl_s) > :now))) "
        f"AND (:min_free = 0 OR (s.{free} >= :min_free AND NOT s.closed "
        "AND s.observed_at + make_interval(secs => l.ttl_s) > :now "
        "AND (l.always_open OR l.open_minutes @> CAST(:mow AS integer)))) "
    )
    # `near` walks the spatial index outwards from the point (KNN) and stops at `limit` matching lots of the
    # radius' bounding box; the farthest of them bounds the answer. `<->` is the same sphere distance as
    # ST_Distance(..., false) up to ~1e-8 m, so every lot of the exact answer lies within that bound + 1 cm,
    # and the exact query only has to look at the lots that close instead of every lot in the radius
    # (hundreds in a city centre). The answer is the same either way.
    return text(
        f"WITH near AS (SELECT l.location <-> {point} AS d {_FROM} "
        f"WHERE l.location && _ST_Expand({point}, :radius) {filters}"
        f"ORDER BY l.location <-> {point} LIMIT :limit) "
        f"SELECT {_VIEW_COLUMNS}, ST_Distance(l.location, {point}, false) AS distance_m {_FROM} "
        f"WHERE ST_DWithin(l.location, {point}, :radius, false) "
        f"AND ST_DWithin(l.location, {point}, (SELECT max(d) + 0.01 FROM near), false) {filters}"
        "ORDER BY distance_m, l.id LIMIT :limit"
    )


_FIND = {c: _find_sql(c) for c in CLASSES}


_FIND_QUERY = {c: Query.of(sql) for c, sql in _FIND.items()}


# What the in-memory nearby index (services.parking.index) holds of every lot, or of the lots changed.
_INDEX = Query.of(text(
    # The tariff stays text until a lot is first answered (decoding 100,000 at start-up costs seconds).
    f"SELECT {_view_columns(_PRICE_AS_TEXT)}, l.hourly_price_fen, l.always_open, "
    "ARRAY(SELECT lower(r) FROM unnest(l.open_minutes) AS r) AS open_from, "
    "ARRAY(SELECT upper(r) FROM unnest(l.open_minutes) AS r) AS open_to "
    f"{_FROM} WHERE CAST(:ids AS text[]) IS NULL OR l.id = ANY(CAST(:ids AS text[]))"
))


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _state(r: Any, with_samples: bool = True) -> LotState:
    """The live state of a row of `_view_columns` (read by column name: a SQLAlchemy row's `_mapping`, or a
    record of `rawsql.fetch`)."""
    return LotState(
        sequence=r["seq"], observed_at=r["observed_at"], received_at=r["received_at"],
        free={c: r[_FREE_COLUMN[c]] for c in CLASSES}, closed=r["closed"], full_at_entrance=r["full_at_entrance"],
        trend=r["trend"], samples=_json(r["samples"]) if with_samples else [],
    )


def _summary(r: Any, open_now: bool | None = None) -> LotSummary:
    """The lot summary of a row of `_view_columns` (by column name, as `_state`)."""
    return LotSummary(
        id=r["id"], operator_id=r["operator_id"], name=r["name"], kind=r["kind"], lat=r["lat"], lon=r["lon"],
        capacity={c: r[_CAP_COLUMN[c]] for c in CLASSES}, price=PriceSpec(**_json(r["price"])), ttl_s=r["ttl_s"],
        detection_type=r["detection_type"], open_now=r["open_now"] if open_now is None else open_now,
    )


def _view(r: Any, distance_m: float | None = None, open_now: bool | None = None) -> LotView:
    """The LotView of a row of `_view_columns` (by column name, as `_state`)."""
    return LotView(_summary(r, open_now), _state(r, with_samples=False),
                   (r["distance_m"] or 0.0) if distance_m is None else distance_m)


def view_of(record: Any, open_now: bool) -> LotView:
    """The LotView of a record of `ParkingStore.index_rows`, open or not as the caller decides (the index
    decides opening hours at query time; the record's open_now is not meaningful)."""
    return _view(record, 0.0, open_now)


def _record(row: Row[Any]) -> LotRecord:
    s = _summary(row._mapping)
    opening = _json(row.opening)
    line = _json(row.line)
    spec = LotSpec(
        id=s.id, operator_id=s.operator_id, name=s.name, kind=s.kind, lat=s.lat, lon=s.lon, capacity=s.capacity,
        detection_type=s.detection_type, ttl_s=s.ttl_s, address=row.address, region_code=row.region_code,
        line=[(lat, lon) for lon, lat in line["coordinates"]] if line else None, price=s.price,
        always_open=row.always_open, periods=[Period(**p) for p in opening],
        entrances=[EntranceSpec(**e) for e in _json(row.entrances)], phone=row.phone,
        fast_charging_piles=row.fast_charging_piles, slow_charging_piles=row.slow_charging_piles,
    )
    return LotRecord(spec, row.version, row.created_at, row.updated_at)


def _lot_params(spec: LotSpec) -> dict[str, Any]:
    line = None
    if spec.line:
        line = "LINESTRING(" + ",".join(f"{lon!r} {lat!r}" for lat, lon in spec.line) + ")"
    return {
        "id": spec.id, "operator_id": spec.operator_id, "name": spec.name, "address": spec.address,
        "region_code": spec.region_code, "kind": spec.kind, "lat": spec.lat, "lon": spec.lon, "line": line,
        **{_CAP_COLUMN[c]: spec.capacity.get(c, 0) for c in CLASSES},
        "price": json.dumps(spec.price.__dict__, ensure_ascii=False), "hourly": spec.price.hourly_fen,
        "opening": json.dumps([p.__dict__ for p in spec.periods]), "always_open": spec.always_open,
        "open_minutes": multirange_literal(week_ranges(spec.always_open, spec.periods)),
        "entrances": json.dumps([e.__dict__ for e in spec.entrances]), "detection_type": spec.detection_type,
        "ttl_s": spec.ttl_s, "phone": spec.phone, "fast_piles": spec.fast_charging_piles,
        "slow_piles": spec.slow_charging_piles,
    }


_LOT_VALUES = """:id, :operator_id, :name, :address, :region_code, :kind,
    ST_MakePoint(:lon, :lat)::geography, CAST(:line AS text)::geography,
    :cap_general, :cap_ev, :cap_disabled, :cap_reserved, CAST(:price AS jsonb), :hourly, CAST(:opening AS jsonb),
    :always_open, CAST(CAST(:open_minutes AS text) AS int4multirange), CAST(:entrances AS jsonb), :detection_type,
    :ttl_s, :phone, :fast_piles, :slow_piles"""
_LOT_COLUMNS = """id, operator_id, name, address, region_code, kind, location, line,
    cap_general, cap_ev, cap_disabled, cap_reserved, price, hourly_price_fen, opening,
    always_open, open_minutes, entrances, detection_type, ttl_s, phone, fast_charging_piles, slow_charging_piles"""


@dataclass
class _Working:
    """A locked lot during a batch: its summary and the state as the batch has changed it so far."""

    summary: LotSummary
    state: LotState
    dirty: bool = False


class ParkingStore:
    def __init__(self, engine: AsyncEngine, reads: Reads | None = None) -> None:
        self.engine = engine
        # Drivers' queries (lots, a lot, the PostGIS nearby search) may be answered by the read replica within its
        # bound; writes' answers, the nearby index's loads and a watch's snapshot stay on the primary.
        self.reads = reads or Reads(engine)

    # ----- lots ---------------------------------------------------------------------------

    async def register_lot(self, spec: LotSpec) -> LotRecord:
        async with self.engine.begin() as conn:
            try:
                await conn.execute(text(f"INSERT INTO parking_lots ({_LOT_COLUMNS}) VALUES ({_LOT_VALUES})"),
                                   _lot_params(spec))
            except IntegrityError:
                raise AlreadyExists(f"lot {spec.id} already exists") from None
            await conn.execute(text("INSERT INTO parking_lot_state (lot_id) VALUES (:id)"), {"id": spec.id})
            await write_outbox(conn, [OutboxRow(OutboxKind.LOT_STATIC, spec.id, payloads.lot_static(spec))])
            return await self._get_record(conn, spec.id)

    async def update_lot(self, principal: Principal, spec: LotSpec, expected_version: int) -> LotRecord:
        async with self.engine.begin() as conn:
            current = (await conn.execute(
                text("SELECT operator_id, version FROM parking_lots WHERE id = :id FOR UPDATE"), {"id": spec.id}
            )).first()
            if current is None:
                raise NotFound(f"lot {spec.id} does not exist")
            rules.may_update_lot(principal, current.operator_id, spec)
            if expected_version and expected_version != current.version:
                raise Aborted(f"lot {spec.id} is at version {current.version}, not {expected_version}: re-read it")
            await conn.execute(
                text(f"UPDATE parking_lots SET ({_LOT_COLUMNS}) = ({_LOT_VALUES}), version = version + 1, "
                     "updated_at = now() WHERE id = :id"),
                _lot_params(spec),
            )
            # A smaller capacity must not leave more free spaces than spaces.
            await conn.execute(text(
                "UPDATE parking_lot_state SET " + ", ".join(
                    f"{_FREE_COLUMN[c]} = LEAST({_FREE_COLUMN[c]}, :{_CAP_COLUMN[c]})" for c in CLASSES)
                + " WHERE lot_id = :id"), {"id": spec.id, **{_CAP_COLUMN[c]: spec.capacity[c] for c in CLASSES}})
            await write_outbox(conn, [OutboxRow(OutboxKind.LOT_STATIC, spec.id, payloads.lot_static(spec))])
            return await self._get_record(conn, spec.id)

    async def _get_record(self, conn: AsyncConnection, lot_id: str) -> LotRecord:
        row = (await conn.execute(_GET, {"id": lot_id, "mow": minute_of_week(datetime.now().astimezone())})).first()
        if row is None:
            raise NotFound(f"lot {lot_id} does not exist")
        return _record(row)

    async def get_lot(self, lot_id: str, now: datetime) -> tuple[LotRecord, LotView]:
        async def query(conn: AsyncConnection) -> Row[Any] | None:
            return (await conn.execute(_GET, {"id": lot_id, "mow": minute_of_week(now)})).first()

        row = await self.reads.read(query)
        if row is None:
            raise NotFound(f"lot {lot_id} does not exist")
        return _record(row), _view(row._mapping, 0.0)

    async def list_lots(self, operator_id: str | None, after: str, n: int,
                        now: datetime) -> list[tuple[LotRecord, LotView]]:
        async def query(conn: AsyncConnection) -> Sequence[Row[Any]]:
            return (await conn.execute(
                _LIST, {"operator": operator_id, "after": after, "n": n, "mow": minute_of_week(now)})).all()

        rows = await self.reads.read(query)
        return [(_record(r), _view(r._mapping, 0.0)) for r in rows]

    # ----- spots --------------------------------------------------------------------------

    async def upsert_spots(self, principal: Principal, lot_id: str, spots: Sequence[SpotSpec]) -> int:
        async with self.engine.begin() as conn:
            lot = (await conn.execute(_LOCK, {"ids": [lot_id], "mow": 0})).first()
            if lot is None:
                raise NotFound(f"lot {lot_id} does not exist")
            rules.require_owner_or_admin(principal, lot.operator_id, lot_id)
            if lot.detection_type != DetectionType.SINGLE_SPACE:
                raise InvalidArgument(FieldViolation("lot_id", f"lot {lot_id} does not detect single spaces "
                                                               "(detection_type must be SINGLE_SPACE)"))
            await conn.execute(text(
                "INSERT INTO parking_spots (lot_id, spot_id, space_class, connector_id, location) "
                "VALUES (:lot_id, :spot_id, :space_class, :connector_id, "
                "CASE WHEN CAST(:lat AS float8) IS NULL THEN NULL "
                "ELSE ST_MakePoint(:lon, :lat)::geography END) "
                "ON CONFLICT (lot_id, spot_id) DO UPDATE SET space_class = excluded.space_class, "
                "connector_id = excluded.connector_id, location = excluded.location"),
                [{"lot_id": lot_id, "spot_id": s.id, "space_class": s.space_class, "connector_id": s.connector_id,
                  "lat": s.lat, "lon": s.lon} for s in spots])
            per_class = (await conn.execute(text(
                "SELECT space_class, count(*) AS n FROM parking_spots WHERE lot_id = :id GROUP BY space_class"),
                {"id": lot_id})).all()
            for r in per_class:
                cap = getattr(lot, _CAP_COLUMN[r.space_class])
                if r.n > cap:
                    # Raising rolls the whole request back: nothing is half-written.
                    raise InvalidArgument(FieldViolation(
                        "spots", f"lot {lot_id} would have {r.n} {CLASS_NAMES[r.space_class]} spots "
                                 f"but a {CLASS_NAMES[r.space_class]} capacity of {cap}"))
            return sum(r.n for r in per_class)

    async def list_spots(self, lot_id: str) -> tuple[list[SpotRecord], LotView]:
        async with self.engine.connect() as conn:
            lot = (await conn.execute(_GET, {"id": lot_id, "mow": 0})).first()
            if lot is None:
                raise NotFound(f"lot {lot_id} does not exist")
            rows = (await conn.execute(text(
                "SELECT spot_id, space_class, status, observed_at, connector_id, "
                "ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon "
                "FROM parking_spots WHERE lot_id = :id ORDER BY spot_id"), {"id": lot_id})).all()
        return ([SpotRecord(SpotSpec(r.spot_id, r.space_class, r.connector_id, r.lat, r.lon), r.status, r.observed_at)
                 for r in rows], _view(lot._mapping, 0.0))

    # ----- occupancy ----------------------------------------------------------------------

    async def apply_reports(self, principal: Principal, reports: Sequence[Report],
                            now: datetime) -> tuple[list[Outcome], list[LotView]]:
        """Applies a batch in one transaction. Returns one outcome per report (in order) and the
        final view of every lot that changed."""
        ids = sorted({r.lot_id for r in reports})
        async with self.engine.begin() as conn:
            working = {row.id: _Working(_summary(row._mapping), _state(row._mapping))
                       for row in (await conn.execute(_LOCK, {"ids": ids, "mow": minute_of_week(now)})).all()}
            spot_lots = sorted({r.lot_id for r in reports if r.spots and r.lot_id in working})
            spots: dict[str, dict[str, list[int]]] = {lid: {} for lid in spot_lots}
            places: dict[tuple[str, str], tuple[float, float]] = {}  # (lot, spot) -> (lat, lon) of located spots
            if spot_lots:
                for srow in (await conn.execute(text(
                        "SELECT lot_id, spot_id, space_class, status, ST_Y(location::geometry) AS lat, "
                        "ST_X(location::geometry) AS lon FROM parking_spots WHERE lot_id = ANY(:ids)"),
                        {"ids": spot_lots})).all():
                    spots[srow.lot_id][srow.spot_id] = [srow.space_class, srow.status]
                    if srow.lat is not None and srow.lon is not None:
                        places[(srow.lot_id, srow.spot_id)] = (srow.lat, srow.lon)
            outcomes: list[Outcome] = []
            outbox: list[OutboxRow] = []
            spot_updates: list[tuple[str, str, int, datetime]] = []
            for r in reports:
                try:
                    outcomes.append(self._apply_one(principal, r, working, spots, now, outbox, spot_updates, places))
                except DomainError as exc:
                    stored = working[r.lot_id].state.sequence if r.lot_id in working else 0
                    outcomes.append(Outcome(AckResult.REJECTED, stored, exc))
            changed = [w for w in working.values() if w.dirty]
            if changed:
                await _write_batch(conn, changed, spot_updates, outbox)
        return outcomes, [LotView(w.summary, w.state) for w in changed]

    def _apply_one(self, principal: Principal, r: Report, working: dict[str, _Working],
                   spots: dict[str, dict[str, list[int]]], now: datetime, outbox: list[OutboxRow],
                   spot_updates: list[tuple[str, str, int, datetime]],
                   places: Mapping[tuple[str, str], tuple[float, float]]) -> Outcome:
        w = working.get(r.lot_id)
        if w is None:
            raise NotFound(f"lot {r.lot_id} does not exist")
        rules.require_owner(principal, w.summary.operator_id, r.lot_id)
        lot_spots = spots.get(r.lot_id, {})
        rules.check_report(r, w.summary, lot_spots)
        state = w.state
        verdict = rules.sequence_verdict(state, r)
        if verdict is not None:
            return Outcome(verdict, state.sequence)
        free = dict(state.free)
        free.update(r.counts)
        if r.spots:
            for spot_id, status in r.spots.items():
                if lot_spots[spot_id][1] != status:
                    lot_spots[spot_id][1] = status
                    spot_updates.append((r.lot_id, spot_id, status, r.observed_at))
                    outbox.append(OutboxRow(OutboxKind.SPOT_STATUS, r.lot_id, payloads.spot_status(
                        r.lot_id, spot_id, lot_spots[spot_id][0], status, r.observed_at,
                        places.get((r.lot_id, spot_id)))))
            free = rules.free_from_spots(free, lot_spots)
        w.state = _advance(state, w.summary, free, r.sequence, r.observed_at, now, r.closed, r.full_at_entrance)
        w.dirty = True
        outbox.append(OutboxRow(OutboxKind.LOT_DYNAMIC, r.lot_id, payloads.lot_dynamic(w.summary, w.state, now)))
        return Outcome(AckResult.ACCEPTED, r.sequence)

    # ----- passages -----------------------------------------------------------------------

    async def record_passage(self, principal: Principal, p: PassageSpec,
                             now: datetime) -> tuple[bool, LotView, LotView | None]:
        """Returns (created, current view, view to publish if the state changed)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(_LOCK, {"ids": [p.lot_id], "mow": minute_of_week(now)})).first()
            if row is None:
                raise NotFound(f"lot {p.lot_id} does not exist")
            rules.require_owner(principal, row.operator_id, p.lot_id)
            summary, state = _summary(row._mapping), _state(row._mapping)
            rules.check_passage(p, summary)
            inserted = (await conn.execute(text(
                "INSERT INTO parking_passages (lot_id, passage_id, direction, plate, plate_colour, lane, space_class, "
                "passed_at, received_at) VALUES (:lot_id, :passage_id, :direction, :plate, :plate_colour, :lane, "
                ":space_class, :passed_at, :now) ON CONFLICT (lot_id, passage_id) DO NOTHING RETURNING id"),
                {**p.__dict__, "now": now})).first()
            if inserted is None:
                return False, LotView(summary, state), None
            entry, fee = None, None
            if p.direction == PassageDirection.EXIT:
                # The stay this exit ends: the plate's latest entry into the lot before it.
                found = (await conn.execute(_ENTRY_OF_EXIT, {"lot_id": p.lot_id, "plate": p.plate,
                                                             "entry": PassageDirection.ENTRY,
                                                             "at": p.passed_at})).first()
                if found is not None:
                    entry = (found.passage_id, found.passed_at)
                    fee = rules.parking_fee_fen(summary.price, (p.passed_at - found.passed_at).total_seconds())
            outbox = [OutboxRow(OutboxKind.PASSAGE, p.lot_id, payloads.passage(p, now, entry, fee))]
            changed = None
            if rules.moves_occupancy(summary):
                # Passages are deltas: a late one still counts, but does not move observed_at back.
                free = rules.free_after_passage(state, summary, p)
                observed = max(state.observed_at, p.passed_at) if state.observed_at else p.passed_at
                state = _advance(state, summary, free, state.sequence, observed, now, state.closed,
                                 state.full_at_entrance)
                await conn.execute(_UPDATE_STATE, _state_params(_Working(summary, state)))
                outbox.append(OutboxRow(OutboxKind.LOT_DYNAMIC, p.lot_id, payloads.lot_dynamic(summary, state, now)))
                changed = LotView(summary, state)
            await write_outbox(conn, outbox)
            return True, LotView(summary, state), changed

    async def list_passages(self, principal: Principal, lot_id: str, since: datetime | None, after_id: int,
                            n: int) -> tuple[list[tuple[int, PassageRecord]], bool]:
        """Newest first (by passed_at; late passages take their place in time). Returns the passages
        (with their row ids: the page token is the last row's id) and whether plates are to be
        redacted for this caller."""
        async with self.engine.connect() as conn:
            operator_id = await _lot_operator(conn, lot_id)
            rules.may_read_passages(principal, operator_id, lot_id)
            rows = (await conn.execute(text(
                f"SELECT {_PASSAGE_COLUMNS} FROM parking_passages WHERE lot_id = :lot_id "
                "AND (CAST(:since AS timestamptz) IS NULL OR passed_at >= :since) "
                "AND (:after = 0 OR (passed_at, id) < (SELECT a.passed_at, a.id FROM parking_passages a "
                "WHERE a.id = :after)) ORDER BY passed_at DESC, id DESC LIMIT :n"),
                {"lot_id": lot_id, "since": since, "after": after_id, "n": n})).all()
        redact = not rules.sees_plates(principal, operator_id)
        return [(r.id, _passage_record(r)) for r in rows], redact

    async def amend_passage(self, principal: Principal, a: PassageAmendment, now: datetime) -> PassageRecord:
        """Corrects or voids a recorded passage and writes its correction/void record to the outbox in the same
        transaction. Availability is left as it is (see the rpc's comment)."""
        async with self.engine.begin() as conn:
            rules.require_owner(principal, await _lot_operator(conn, a.lot_id), a.lot_id)
            row = (await conn.execute(text(
                f"SELECT {_PASSAGE_COLUMNS} FROM parking_passages WHERE lot_id = :lot_id AND passage_id = :passage_id "
                "FOR UPDATE"), {"lot_id": a.lot_id, "passage_id": a.passage_id})).first()
            if row is None:
                raise NotFound(f"lot {a.lot_id} has no passage {a.passage_id}")
            current = _passage_record(row)
            change = rules.amended(current, a)
            if change is None:
                return current  # nothing to correct (e.g. a retry): nothing written, nothing sent
            before, (after, state) = current.spec, change
            updated = (await conn.execute(text(
                "UPDATE parking_passages SET plate = :plate, plate_colour = :plate_colour, passed_at = :passed_at, "
                "lane = :lane, state = :state, revision = revision + 1, amended_at = :now, amend_reason = :reason "
                f"WHERE id = :id RETURNING {_PASSAGE_COLUMNS}"),
                {"plate": after.plate, "plate_colour": after.plate_colour, "passed_at": after.passed_at,
                 "lane": after.lane, "state": state, "now": now, "reason": a.reason, "id": row.id})).one()
            record = _passage_record(updated)
            await conn.execute(text(
                "INSERT INTO parking_passage_amendments (passage_row, revision, action, reason, amended_by, before, "
                "after, amended_at) VALUES (:row, :revision, :action, :reason, :by, CAST(:before AS jsonb), "
                "CAST(:after AS jsonb), :now)"),
                {"row": row.id, "revision": record.revision, "action": a.action, "reason": a.reason,
                 "by": f"{principal.role.value}:{principal.scope or ''}/{principal.key_id}",
                 "before": orjson.dumps(_amendable(before)).decode(),
                 "after": orjson.dumps(_amendable(after)).decode(), "now": now})
            await write_outbox(conn, [OutboxRow(OutboxKind.PASSAGE, a.lot_id,
                                                payloads.passage_amendment(record, a.action))])
            return record

    # ----- queries ------------------------------------------------------------------------

    async def find_available(self, q: FindQuery, now: datetime) -> list[LotView]:
        params = {"lat": q.lat, "lon": q.lon, "radius": q.radius_m, "any_kind": not q.kinds, "kinds": q.kinds,
                  "max_price": q.max_price_per_hour_fen, "open_now": q.open_now, "mow": minute_of_week(now),
                  "min_free": q.min_free, "now": now, "limit": q.limit}
        records = await self.reads.read(lambda conn: fetch(conn, _FIND_QUERY[q.space_class], params))
        return [_view(r) for r in records]

    async def index_rows(self, ids: Sequence[str] | None = None) -> Sequence[Any]:
        """Every lot (or the lots `ids`) with its live state and what the nearby index filters on, as
        records (`rawsql.fetch`; `view_of` turns one into a LotView): one statement, so a start-up load of
        100,000 lots takes seconds, not minutes."""
        async with self.engine.connect() as conn:
            return await fetch(conn, _INDEX, {"ids": list(ids) if ids is not None else None, "mow": 0})

    async def lots_in_area(self, area: Area, now: datetime, limit: int = 5000) -> list[LotView]:
        if area.box is not None:
            s, w, n, e = area.box
            lat, lon = (s + n) / 2, (w + e) / 2
        else:
            assert area.circle is not None
            lat, lon, r = area.circle
            dlat = r / 111_000
            dlon = r / (111_000 * max(0.01, math.cos(math.radians(lat))))
            s, w, n, e = lat - dlat, lon - dlon, lat + dlat, lon + dlon
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_AREA, {"s": s, "w": w, "n": n, "e": e, "lat": lat, "lon": lon,
                                               "mow": minute_of_week(now), "n_max": limit})).all()
        views = [_view(r._mapping) for r in rows]
        return [v for v in views if area.contains(v.summary.lat, v.summary.lon)]


_PASSAGE_COLUMNS = ("id, lot_id, passage_id, direction, plate, plate_colour, lane, passed_at, space_class, "
                    "received_at, state, revision, amended_at, amend_reason")


def _passage_record(r: Row[Any]) -> PassageRecord:
    return PassageRecord(PassageSpec(r.lot_id, r.passage_id, r.direction, r.plate, r.plate_colour, r.lane, r.passed_at,
                                     r.space_class), r.received_at, r.state, r.revision, r.amended_at, r.amend_reason)


def _amendable(p: PassageSpec) -> dict[str, Any]:
    """What a correction can change of a passage, as kept in the amendment history."""
    return {"plate": p.plate, "plate_colour": p.plate_colour, "passed_at": p.passed_at.isoformat(), "lane": p.lane}


def _advance(state: LotState, summary: LotSummary, free: dict[int, int | None], sequence: int,
             observed_at: datetime, now: datetime, closed: bool, full_at_entrance: bool) -> LotState:
    samples = next_samples(state.samples, observed_at, occupied(free, summary.capacity))
    # Every field is new: the constructor, not dataclasses.replace (which costs as much again).
    return LotState(sequence=sequence, observed_at=observed_at, received_at=now, free=free, closed=closed,
                    full_at_entrance=full_at_entrance, trend=trend(samples, sum(summary.capacity.values())),
                    samples=samples)


def _state_row(w: _Working) -> tuple[Any, ...]:
    """A lot's state as written, in the order of `_STATE_COLUMNS`."""
    s, free = w.state, w.state.free
    return (w.summary.id, s.sequence, s.observed_at, s.received_at, *[free.get(c) for c in CLASSES], s.closed,
            s.full_at_entrance, s.trend, orjson.dumps(s.samples).decode())


def _state_params(w: _Working) -> dict[str, Any]:
    return dict(zip((c for c, _ in _STATE_COLUMNS), _state_row(w), strict=True))


async def _write_batch(conn: AsyncConnection, changed: Sequence[_Working],
                       spot_updates: Sequence[tuple[str, str, int, datetime]], outbox: Sequence[OutboxRow]) -> None:
    """Writes a batch's state rows, spot states and outbox rows in the transaction of `conn`: a column
    array per parameter and one statement, instead of SQLAlchemy's parameter set per row."""
    if spot_updates:
        await conn.execute(_UPDATE_SPOTS, dict(zip(_SPOT_COLUMNS, map(list, zip(*spot_updates, strict=True)),
                                                         strict=True)))
    columns = dict(zip((c for c, _ in _STATE_COLUMNS), map(list, zip(*map(_state_row, changed), strict=True)),
                       strict=True))
    await conn.execute(_WRITE_BATCH, {
        **columns, "kind": [r.kind.value for r in outbox], "aggregate_id": [r.aggregate_id for r in outbox],
        # As write_outbox serialises, with orjson (several times faster than json.dumps).
        "payload": [orjson.dumps(r.payload, default=str).decode() for r in outbox]})


async def _lot_operator(conn: AsyncConnection, lot_id: str) -> str:
    """The operator of a lot; NOT_FOUND when there is no such lot."""
    operator_id = (await conn.execute(text("SELECT operator_id FROM parking_lots WHERE id = :id"),
                                      {"id": lot_id})).scalar_one_or_none()
    if operator_id is None:
        raise NotFound(f"lot {lot_id} does not exist")
    return str(operator_id)
