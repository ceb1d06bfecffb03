"""All SQL of the municipal adapter: reading the outbox safely, cursors, counts, dead letters.

Draining order. Outbox ids are taken at insert but transactions commit out of id order, so the adapter
never trusts `id > cursor`. It reads only rows whose transaction id is below the oldest transaction still
running (`txid < pg_snapshot_xmin(pg_current_snapshot())`): every such transaction has finished, so
no row can appear later in that range. Those rows are drained in (txid, id) order and the cursor is a
(txid, id) pair. Writers of one lot serialise on the lot, so a lot's rows commit in id order; (txid, id)
order can still disagree with that when a transaction took its txid before another one that then
committed first. To keep every lot in id order, each batch also takes the lot's committed rows that lie
beyond the cursor but have lower ids than a row in the batch (`ahead`); they are delivered in the same
batch, remembered by id, and skipped when the cursor reaches them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.municipal.model import (
    LOCAL_TZ,
    DeadLetter,
    DestinationState,
    DestinationStatus,
    OutboxRecord,
    Outcome,
    Position,
    Reconciliation,
)
from services.municipal.settings import MunicipalDestination

_COLUMNS = "o.id, o.txid::text AS txid, o.created_at, o.kind, o.aggregate_id, o.payload::text AS payload"
_POS = "(CAST(CAST(:{0}_txid AS text) AS xid8), CAST(:{0}_id AS bigint))"

_ENSURE = text("""
INSERT INTO municipal_destinations (name, cursor_txid, origin_txid)
SELECT :name, start, start
FROM (SELECT CASE WHEN :from_now THEN pg_snapshot_xmin(pg_current_snapshot()) ELSE '0'::xid8 END AS start) AS s
ON CONFLICT (name) DO NOTHING""")

_STATE = text("""
SELECT name, cursor_txid::text AS cursor_txid, cursor_id, ahead, paused, pause_reason, replay_from, replay_kinds,
       replay_end_txid::text AS replay_end_txid, replay_end_id, last_delivered_at, last_error_code, last_error,
       last_error_at
FROM municipal_destinations WHERE name = :name""")

_CONTROL = text("""
SELECT paused, pause_reason, replay_from IS NOT NULL AND replay_end_id IS NULL AS replay_pending,
       EXISTS (SELECT 1 FROM municipal_dead_letters l WHERE l.destination = d.name AND l.state = 'requeued')
           AS requeued
FROM municipal_destinations d WHERE name = :name""")

# One read of the drain, in one statement (one round trip, one snapshot): the next `$5` rows after the cursor
# ($1, $2) from finished transactions (`extra` false), and for each lot among them its committed rows beyond the
# last of those rows with ids below the lot's last id there (`extra` true), which are delivered with them to keep
# the lot in id order. `lo` is the lot's last row at or before the cursor (rows below it were all processed).
# It runs on the asyncpg connection itself (positional parameters): rows come back as asyncpg Records, without
# SQLAlchemy's result machinery, and the payload as JSON text for orjson. (A transaction id as a bigint: an
# xid8 is an epoch and a 32-bit xid, and the epoch would need 2^31 wraparounds to reach the sign bit.)
_CHUNK = """
WITH batch AS MATERIALIZED (
    SELECT o.id, o.txid, o.created_at, o.kind, o.aggregate_id, o.payload FROM outbox o
    WHERE (o.txid, o.id) > (CAST($1::text AS xid8), $2::bigint)
      AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
      AND o.kind = ANY($3::text[])
      AND o.id <> ALL($4::bigint[])
    ORDER BY o.txid, o.id
    LIMIT $5
), last AS (
    SELECT txid, id FROM batch ORDER BY txid DESC, id DESC LIMIT 1
), lots AS (
    SELECT aggregate_id AS agg, min(id) AS minid, max(id) AS maxid FROM batch GROUP BY aggregate_id
)
SELECT false AS extra, b.id, b.txid::text::bigint, b.created_at, b.kind, b.aggregate_id, b.payload::text FROM batch b
UNION ALL
SELECT true, o.id, o.txid::text::bigint, o.created_at, o.kind, o.aggregate_id, o.payload::text
FROM lots b CROSS JOIN last
CROSS JOIN LATERAL (
    SELECT COALESCE(max(p.id), 0) AS lo FROM outbox p
    WHERE p.aggregate_id = b.agg AND p.id < b.minid AND (p.txid, p.id) <= (CAST($1::text AS xid8), $2::bigint)
) AS low
CROSS JOIN LATERAL (
    SELECT o.* FROM outbox o
    WHERE o.aggregate_id = b.agg AND o.id > low.lo AND o.id < b.maxid
      AND (o.txid, o.id) > (last.txid, last.id)
      AND o.kind = ANY($3::text[])
      AND o.id <> ALL($4::bigint[])
    OFFSET 0  -- keeps this a per-lot index range scan (the planner would flatten it into a hash join)
) AS o"""

_POSITIONS = text("SELECT id, txid::text AS txid FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))")

_ADVANCE = text("""
UPDATE municipal_destinations SET
    cursor_txid = CAST(CAST(:cur_txid AS text) AS xid8), cursor_id = :cur_id, ahead = CAST(:ahead AS bigint[]),
    last_delivered_at = CASE WHEN :delivered THEN now() ELSE last_delivered_at END,
    last_error_code = CASE WHEN :delivered THEN NULL ELSE last_error_code END,
    last_error = CASE WHEN :delivered THEN NULL ELSE last_error END,
    last_error_at = CASE WHEN :delivered THEN NULL ELSE last_error_at END,
    replay_from = CASE WHEN :replay_done THEN NULL ELSE replay_from END,
    replay_kinds = CASE WHEN :replay_done THEN '{}' ELSE replay_kinds END,
    replay_end_txid = CASE WHEN :replay_done THEN NULL ELSE replay_end_txid END,
    replay_end_id = CASE WHEN :replay_done THEN NULL ELSE replay_end_id END,
    updated_at = now()
WHERE name = :name""")

_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO off"

# The commit of a chunk runs on the asyncpg connection itself (positional parameters), like the drain read.
_ADVANCE_PG = """
UPDATE municipal_destinations SET
    cursor_txid = CAST($2::text AS xid8), cursor_id = $3, ahead = $4::bigint[],
    last_delivered_at = CASE WHEN $5 THEN now() ELSE last_delivered_at END,
    last_error_code = CASE WHEN $5 THEN NULL ELSE last_error_code END,
    last_error = CASE WHEN $5 THEN NULL ELSE last_error END,
    last_error_at = CASE WHEN $5 THEN NULL ELSE last_error_at END,
    replay_from = CASE WHEN $6 THEN NULL ELSE replay_from END,
    replay_kinds = CASE WHEN $6 THEN '{}' ELSE replay_kinds END,
    replay_end_txid = CASE WHEN $6 THEN NULL ELSE replay_end_txid END,
    replay_end_id = CASE WHEN $6 THEN NULL ELSE replay_end_id END,
    updated_at = now()
WHERE name = $1"""

# The commit's fence: the session that took the destination's advisory lock (see delivery.Lane) still holds it. A
# lane whose lock session died (a dropped connection, a terminated backend) notices only at its next look at that
# session; meanwhile another process may own the destination. Checked in the commit's own transaction, its cursor,
# counts and dead letters are never written by a process that no longer owns the destination. (A bigint advisory
# key is stored in pg_locks as its high half in classid and its low half in objid, with objsubid 1.)
_OWNS_PG = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 AND objsubid = 1
                   AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($2, 0))"""

_DELIVERED_AT_PG = "UPDATE municipal_destinations SET last_delivered_at = now() WHERE name = $1"

_COUNT_PG = """
INSERT INTO municipal_delivered (destination, kind, day, delivered)
SELECT $1, k, d, n FROM unnest($2::text[], $3::date[], $4::bigint[]) AS t(k, d, n)
ON CONFLICT (destination, kind, day) DO UPDATE SET delivered = municipal_delivered.delivered + excluded.delivered"""

_DEAD_PG = """
INSERT INTO municipal_dead_letters AS l (destination, outbox_id, kind, record_key, idempotency_key, attempts,
    http_status, reason, message, payload_preview)
SELECT $1, i, k, rk, ik, a, hs, r, m, pv
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::integer[], $8::text[],
            $9::text[], $10::text[]) AS t(i, k, rk, ik, a, hs, r, m, pv)
ON CONFLICT (destination, outbox_id) DO UPDATE SET
    state = 'open', attempts = l.attempts + excluded.attempts, http_status = excluded.http_status,
    reason = excluded.reason, message = excluded.message, payload_preview = excluded.payload_preview,
    last_attempt_at = now()"""

_RESOLVE_PG = """
UPDATE municipal_dead_letters SET state = 'resolved', attempts = attempts + 1, last_attempt_at = now()
WHERE destination = $1 AND outbox_id = ANY($2::bigint[]) AND state <> 'resolved'
RETURNING outbox_id"""




_ERROR = text("""
UPDATE municipal_destinations SET last_error_code = :code, last_error = :message, last_error_at = now()
WHERE name = :name""")

_PAUSE = text("""
UPDATE municipal_destinations SET paused = :paused, pause_reason = :reason, updated_at = now()
WHERE name = :name""")

_REPLAY_REQUEST = text("""
UPDATE municipal_destinations SET replay_from = :from_time, replay_kinds = CAST(:kinds AS text[]),
    replay_end_txid = NULL, replay_end_id = NULL, updated_at = now()
WHERE name = :name""")

_REPLAY_COUNT = text("""
SELECT count(*) FROM outbox o, municipal_destinations d
WHERE d.name = :name AND o.created_at >= :from_time AND o.kind = ANY(CAST(:kinds AS text[]))
  AND (o.txid, o.id) > (d.origin_txid, d.origin_id)
  AND ((o.txid, o.id) <= (d.cursor_txid, d.cursor_id) OR o.id = ANY(d.ahead))""")

_REPLAY_START = text("SELECT min(txid)::text FROM outbox WHERE created_at >= :from_time")

_REPLAY_APPLY = text("""
UPDATE municipal_destinations SET
    replay_end_txid = cursor_txid, replay_end_id = cursor_id,
    cursor_txid = GREATEST(origin_txid, LEAST(cursor_txid, CAST(CAST(:start_txid AS text) AS xid8))),
    cursor_id = CASE WHEN CAST(CAST(:start_txid AS text) AS xid8) > cursor_txid THEN cursor_id
                     WHEN CAST(CAST(:start_txid AS text) AS xid8) <= origin_txid THEN origin_id ELSE 0 END,
    updated_at = now()
WHERE name = :name""")

_LAG = text("""
SELECT count(*) AS n, min(o.created_at) AS oldest FROM outbox o, municipal_destinations d
WHERE d.name = :name AND (o.txid, o.id) > (d.cursor_txid, d.cursor_id) AND o.kind = ANY(CAST(:kinds AS text[]))
  AND o.id <> ALL(d.ahead)""")

_DELIVERED = text("SELECT kind, sum(delivered)::bigint FROM municipal_delivered WHERE destination = :name "
                  "GROUP BY kind")
_OPEN_DEAD = text("SELECT count(*) FROM municipal_dead_letters WHERE destination = :name AND state <> 'resolved'")

_DEAD_COLUMNS = """id, destination, outbox_id, kind, record_key, idempotency_key, state, attempts, http_status, reason,
    message, payload_preview, first_attempt_at, last_attempt_at"""

_REQUEUE_IDS = text("""
UPDATE municipal_dead_letters SET state = 'requeued'
WHERE destination = :name AND id = ANY(CAST(:ids AS bigint[])) AND state = 'open'""")
_REQUEUE_ALL = text("UPDATE municipal_dead_letters SET state = 'requeued' WHERE destination = :name AND state = 'open'")

_REQUEUED = text(f"""
SELECT {_COLUMNS}, l.id AS dead_letter_id FROM municipal_dead_letters l
LEFT JOIN outbox o ON o.id = l.outbox_id
WHERE l.destination = :name AND l.state = 'requeued'
ORDER BY l.outbox_id LIMIT :limit""")

_GONE = text("""
UPDATE municipal_dead_letters SET state = 'open', attempts = attempts + 1, last_attempt_at = now(),
    reason = 'OUTBOX_ROW_GONE', message = 'the outbox row no longer exists'
WHERE id = ANY(CAST(:ids AS bigint[]))""")

_OURS = text("SELECT kind, delivered FROM municipal_delivered WHERE destination = :name AND day = :day")

_OURS_KEYS = text("""
SELECT o.id FROM outbox o, municipal_destinations d
WHERE d.name = :name AND o.kind = :kind AND o.created_at >= :start AND o.created_at < :end
  AND (o.txid, o.id) > (d.origin_txid, d.origin_id)
  AND ((o.txid, o.id) <= (d.cursor_txid, d.cursor_id) OR o.id = ANY(d.ahead))
  AND NOT EXISTS (SELECT 1 FROM municipal_dead_letters l
                  WHERE l.destination = d.name AND l.outbox_id = o.id AND l.state <> 'resolved')
ORDER BY o.id""")

_SAVE_RECONCILIATION = text("""
INSERT INTO municipal_reconciliations (destination, day, matched, report) VALUES (:name, :day, :matched,
    CAST(:report AS jsonb))
ON CONFLICT (destination, day) DO UPDATE SET matched = excluded.matched, report = excluded.report,
    created_at = now()""")

_LOT_FACTS = text("""
SELECT DISTINCT ON (aggregate_id) aggregate_id, payload->>'lot_kind', (payload->>'lat')::float8,
       (payload->>'lon')::float8, (payload->'line')::text
FROM outbox WHERE kind = 'lot_static' AND aggregate_id = ANY(CAST(:ids AS text[]))
ORDER BY aggregate_id, id DESC""")
# Outbox rows the suite no longer needs, a batch of them: older than the retention, at or behind every configured
# destination's cursor (delivered or dead-lettered everywhere), not behind an unresolved dead letter (it may be
# requeued), and not the newest row of a standing fact (a lot's or a station's static record: the drain looks a
# lot's facts up there, and a destination added later needs them). The cursors are read in the statement, so a
# cursor moved back for a replay keeps what it will read again.
_PRUNE = text("""
DELETE FROM outbox WHERE id IN (
    SELECT o.id FROM outbox o
    WHERE o.created_at < now() - make_interval(hours => CAST(:hours AS int))
      AND NOT EXISTS (SELECT 1 FROM municipal_destinations d
                      WHERE d.name = ANY(CAST(:names AS text[])) AND (o.txid, o.id) > (d.cursor_txid, d.cursor_id))
      AND NOT EXISTS (SELECT 1 FROM municipal_dead_letters l WHERE l.outbox_id = o.id AND l.state <> 'resolved')
      AND NOT (o.kind = ANY(CAST(:standing AS text[])) AND NOT EXISTS (
              SELECT 1 FROM outbox n WHERE n.aggregate_id = o.aggregate_id AND n.kind = o.kind AND n.id > o.id))
    ORDER BY o.created_at
    LIMIT :batch)""")

_LOT_KINDS = text("""
SELECT DISTINCT ON (aggregate_id) aggregate_id, payload->>'lot_kind' FROM outbox
WHERE kind = 'lot_static' AND aggregate_id = ANY(CAST(:ids AS text[]))
ORDER BY aggregate_id, id DESC""")


def _record(r: Sequence[Any]) -> OutboxRecord:
    # Columns of _COLUMNS, by position.
    return OutboxRecord(r[0], int(r[1]), r[2], r[3], r[4], orjson.loads(r[5]))


Row = Sequence[Any]  # a row of _CHUNK: extra, id, txid, created_at, kind, aggregate_id, payload (JSON text)


def to_records(rows: Iterable[Row]) -> list[OutboxRecord]:
    """Rows of a chunk as OutboxRecords (the hot path of draining: names bound once)."""
    loads, rec = orjson.loads, OutboxRecord
    return [rec(r[1], r[2], r[3], r[4], r[5], loads(r[6])) for r in rows]


def row_position(r: Row) -> Position:
    return Position(r[2], r[1])


def chunk_end(rows: Sequence[Row]) -> Position:
    """The last of a chunk's (non-extra) rows in drain order."""
    txid, id_ = max([(r[2], r[1]) for r in rows])
    return Position(txid, id_)


def day_counts(records: Iterable[OutboxRecord]) -> dict[tuple[str, date], int]:
    """Records per (kind, local day of the change). Rows of a transaction share created_at and mostly follow each
    other: the day is worked out once per run of them (aware times with the same tzinfo compare field by field)."""
    groups: dict[tuple[str, date], int] = {}
    last_kind: str | None = None
    last_at: datetime | None = None
    key: tuple[str, date] | None = None
    n = 0
    for r in records:
        if r.created_at != last_at or r.kind != last_kind:
            if key is not None:
                groups[key] = groups.get(key, 0) + n
            last_kind, last_at, n = r.kind, r.created_at, 0
            key = (r.kind, r.created_at.astimezone(LOCAL_TZ).date())
        n += 1
    if key is not None:
        groups[key] = groups.get(key, 0) + n
    return groups


def _drain_order(r: OutboxRecord) -> tuple[int, int]:
    return r.txid, r.id


def _position(txid: str | None, id_: int | None) -> Position | None:
    return Position(int(txid), int(id_)) if txid is not None and id_ is not None else None


@dataclass(frozen=True)
class Control:
    paused: bool
    pause_reason: str
    replay_pending: bool
    requeued: bool


@dataclass(frozen=True)
class Commit:
    """What one delivered chunk changes, written in one transaction after the platform's answers."""

    cursor: Position
    ahead: list[int]
    delivered: Sequence[OutboxRecord]  # acknowledged by the platform
    dead: Sequence[Outcome]  # invalid or refused: dead letters
    replay_end: Position | None  # the replay in progress, if any
    replay_done: bool


@dataclass(frozen=True)
class Owner:
    """Who drains a destination: the backend (pid) of the session holding its advisory lock, and the lock's key."""

    pid: int
    key: str


class NotOwner(Exception):
    """The destination's lock is no longer held by this process's session: its commit was refused."""


def local_day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ)
    return start, start + timedelta(days=1)


class MunicipalStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ----- destinations -------------------------------------------------------------------------------

    async def ensure(self, destinations: Iterable[MunicipalDestination]) -> None:
        async with self.engine.begin() as conn:
            for d in destinations:
                await conn.execute(_ENSURE, {"name": d.name, "from_now": d.start == "now"})

    async def state(self, name: str) -> DestinationState | None:
        async with self.engine.connect() as conn:
            r = (await conn.execute(_STATE, {"name": name})).first()
        if r is None:
            return None
        return DestinationState(
            name=r.name, cursor=Position(int(r.cursor_txid), r.cursor_id), ahead=list(r.ahead), paused=r.paused,
            pause_reason=r.pause_reason, replay_from=r.replay_from, replay_kinds=tuple(r.replay_kinds),
            replay_end=_position(r.replay_end_txid, r.replay_end_id), last_delivered_at=r.last_delivered_at,
            last_error_code=r.last_error_code, last_error=r.last_error, last_error_at=r.last_error_at)

    async def control(self, name: str) -> Control:
        async with self.engine.connect() as conn:
            r = (await conn.execute(_CONTROL, {"name": name})).one()
        return Control(r.paused, r.pause_reason, r.replay_pending, r.requeued)

    async def set_paused(self, name: str, paused: bool, reason: str) -> bool:
        async with self.engine.begin() as conn:
            return (await conn.execute(_PAUSE, {"name": name, "paused": paused, "reason": reason})).rowcount == 1

    async def record_error(self, name: str, code: int, message: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_ERROR, {"name": name, "code": code, "message": message[:1000]})

    # ----- draining -----------------------------------------------------------------------------------

    async def read_chunk(self, cursor: Position, ahead: Sequence[int], kinds: Sequence[str],
                         limit: int) -> tuple[list[Row], list[Row]]:
        """The next `limit` rows after the cursor from finished transactions, and the rows to deliver with
        them to keep each lot in id order (see the module docstring), as rows of _CHUNK, in no particular order."""
        async with self.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            rows = await pg.fetch(_CHUNK, str(cursor.txid), cursor.id, list(kinds), list(ahead), limit)
        batch: list[Row] = []
        extra: list[Row] = []
        for r in rows:
            (extra if r[0] else batch).append(r)
        return batch, extra

    async def next_batch(self, cursor: Position, ahead: Sequence[int], kinds: Sequence[str],
                         limit: int) -> tuple[list[OutboxRecord], list[OutboxRecord]]:
        """`read_chunk` as OutboxRecords, both lists in (txid, id) order."""
        batch, extra = await self.read_chunk(cursor, ahead, kinds, limit)
        return sorted(to_records(batch), key=_drain_order), sorted(to_records(extra), key=_drain_order)

    async def positions(self, ids: Sequence[int]) -> dict[int, Position]:
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            return {r.id: Position(int(r.txid), r.id)
                    for r in await conn.execute(_POSITIONS, {"ids": list(ids)})}

    async def commit(self, name: str, c: Commit, owner: Owner | None = None) -> int:
        """Advances the cursor and records the batch's outcomes; returns how many records were counted
        as delivered (each record is counted once, also when a replay or a retry sends it again). With `owner`,
        only while that session still holds the destination's lock (else NotOwner, and nothing is written)."""
        delivered, dead = c.delivered, c.dead
        async with self.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            async with pg.transaction():
                if owner is not None and not await pg.fetchval(_OWNS_PG, owner.pid, owner.key):
                    raise NotOwner(f"the lock of destination {name} is no longer held by backend {owner.pid}")
                # No wait for the WAL flush: if PostgreSQL itself crashes, the last few advances are lost and their
                # records are sent again, which the receiver dedupes (same idempotency keys), with counts and dead
                # letters lost and redone in the same transactions. The cursor never gets ahead of the platform.
                await pg.execute(_ASYNC_COMMIT)
                await pg.execute(_ADVANCE_PG, name, str(c.cursor.txid), c.cursor.id, c.ahead, bool(delivered),
                                 c.replay_done)
                if c.replay_end is not None:
                    # Inside a replay only records that were dead letters are new to the platform.
                    replayed = [r for r in delivered if Position(r.txid, r.id) <= c.replay_end]
                    fresh = [r for r in delivered if not Position(r.txid, r.id) <= c.replay_end]
                    resolved = await self._resolve(pg, name, [r.id for r in replayed])
                    counted: Sequence[OutboxRecord] = fresh + [r for r in replayed if r.id in resolved]
                else:
                    counted = delivered
                await self._count(pg, name, counted)
                await self._dead(pg, name, dead)
        return len(counted)

    @staticmethod
    async def _resolve(pg: Any, name: str, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        return {r[0] for r in await pg.fetch(_RESOLVE_PG, name, list(ids))}

    @staticmethod
    async def _count(pg: Any, name: str, records: Sequence[OutboxRecord]) -> None:
        groups = day_counts(records)
        if groups:
            await pg.execute(_COUNT_PG, name, [k for k, _ in groups], [d for _, d in groups], list(groups.values()))

    @staticmethod
    async def _dead(pg: Any, name: str, dead: Sequence[Outcome]) -> None:
        if dead:
            await pg.execute(_DEAD_PG, name, [o.record.id for o in dead], [o.record.kind for o in dead],
                             [o.record_key for o in dead], [o.key for o in dead], [o.attempts for o in dead],
                             [o.http_status for o in dead], [o.reason for o in dead],
                             [o.message[:2000] for o in dead], [o.preview for o in dead])

    # ----- replay -------------------------------------------------------------------------------------

    async def request_replay(self, name: str, from_time: datetime, kinds: Sequence[str]) -> int:
        """Asks the destination's lane to rewind; returns how many records that re-sends."""
        async with self.engine.begin() as conn:
            await conn.execute(_REPLAY_REQUEST, {"name": name, "from_time": from_time, "kinds": list(kinds)})
            return int((await conn.execute(_REPLAY_COUNT, {"name": name, "from_time": from_time,
                                                           "kinds": list(kinds)})).scalar_one())

    async def apply_replay(self, name: str) -> None:
        """Run by the lane between batches: the cursor goes back to the first transaction at or after the
        replay time; the old cursor becomes the replay's end."""
        async with self.engine.begin() as conn:
            state = (await conn.execute(_STATE, {"name": name})).one()
            start = (await conn.execute(_REPLAY_START, {"from_time": state.replay_from})).scalar_one()
            if start is None:
                await conn.execute(_ADVANCE, {"name": name, "cur_txid": state.cursor_txid,
                                              "cur_id": state.cursor_id, "ahead": list(state.ahead),
                                              "delivered": False, "replay_done": True})
                return
            await conn.execute(_REPLAY_APPLY, {"name": name, "start_txid": start})

    # ----- status ---------------------------------------------------------------------------------------

    async def status(self, name: str, kinds: Sequence[str], now: datetime) -> DestinationStatus | None:
        state = await self.state(name)
        if state is None:
            return None
        async with self.engine.connect() as conn:
            lag = (await conn.execute(_LAG, {"name": name, "kinds": list(kinds)})).one()
            delivered = {r[0]: int(r[1]) for r in await conn.execute(_DELIVERED, {"name": name})}
            dead = int((await conn.execute(_OPEN_DEAD, {"name": name})).scalar_one())
        lag_s = max(0.0, (now - lag.oldest).total_seconds()) if lag.oldest is not None else 0.0
        return DestinationStatus(state, int(lag.n), lag_s, delivered, dead)

    # ----- dead letters ---------------------------------------------------------------------------------

    async def dead_letters(self, name: str | None, kind: str | None, include_resolved: bool, before_id: int,
                           limit: int) -> list[DeadLetter]:
        where = ["(CAST(:name AS text) IS NULL OR destination = :name)",
                 "(CAST(:kind AS text) IS NULL OR kind = :kind)", "id < :before"]
        if not include_resolved:
            where.append("state <> 'resolved'")
        sql = text(f"SELECT {_DEAD_COLUMNS} FROM municipal_dead_letters WHERE {' AND '.join(where)} "
                   "ORDER BY id DESC LIMIT :limit")
        async with self.engine.connect() as conn:
            rows = await conn.execute(sql, {"name": name, "kind": kind, "before": before_id or 2**63 - 1,
                                            "limit": limit})
            return [DeadLetter(**r._mapping) for r in rows]

    async def requeue(self, name: str, ids: Sequence[int] | None) -> int:
        async with self.engine.begin() as conn:
            if ids is None:
                return (await conn.execute(_REQUEUE_ALL, {"name": name})).rowcount
            return (await conn.execute(_REQUEUE_IDS, {"name": name, "ids": list(ids)})).rowcount

    async def requeued(self, name: str, limit: int) -> tuple[list[tuple[int, OutboxRecord]], list[int]]:
        """Requeued dead letters with their outbox rows, oldest record first; and the ids of those whose
        outbox row is gone (they go back to open with that reason)."""
        async with self.engine.begin() as conn:
            rows = list(await conn.execute(_REQUEUED, {"name": name, "limit": limit}))
            gone = [r.dead_letter_id for r in rows if r.id is None]
            if gone:
                await conn.execute(_GONE, {"ids": gone})
        return [(r.dead_letter_id, _record(r)) for r in rows if r.id is not None], gone

    async def commit_retried(self, name: str, delivered: Sequence[OutboxRecord], dead: Sequence[Outcome]) -> int:
        """Outcomes of requeued dead letters: delivered ones are resolved and counted, the others open."""
        async with self.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            async with pg.transaction():
                resolved = await self._resolve(pg, name, [r.id for r in delivered])
                await self._count(pg, name, [r for r in delivered if r.id in resolved])
                await self._dead(pg, name, dead)
                if delivered:
                    await pg.execute(_DELIVERED_AT_PG, name)
        return len(resolved)

    # ----- reconciliation -------------------------------------------------------------------------------

    async def ours(self, name: str, day: date) -> dict[str, int]:
        async with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in await conn.execute(_OURS, {"name": name, "day": day})}

    async def delivered_ids(self, name: str, day: date, kind: str) -> list[int]:
        start, end = local_day_bounds(day)
        async with self.engine.connect() as conn:
            return [r[0] for r in await conn.execute(_OURS_KEYS, {"name": name, "kind": kind, "start": start,
                                                                 "end": end})]

    async def save_reconciliation(self, r: Reconciliation) -> None:
        report = {"kinds": [{"kind": k.kind, "ours": k.ours, "theirs": k.theirs, "difference": k.difference,
                             "missing_keys": k.missing_keys} for k in r.kinds]}
        async with self.engine.begin() as conn:
            await conn.execute(_SAVE_RECONCILIATION, {"name": r.destination, "day": date.fromisoformat(r.day),
                                                      "matched": r.matched, "report": json.dumps(report)})

    # ----- facts for profiles ---------------------------------------------------------------------------

    async def lot_facts(self, lot_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each lot's kind and location from its latest static record: {lot: {"lot_kind", "lat", "lon", "line"}}."""
        if not lot_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(_LOT_FACTS, {"ids": list(lot_ids)})
            return {r[0]: {"lot_kind": r[1], "lat": r[2], "lon": r[3], "line": orjson.loads(r[4]) if r[4] else None}
                    for r in rows if r[1]}

    async def prune(self, destinations: Sequence[str], retention_h: int, standing_kinds: Sequence[str],
                    batch: int) -> int:
        """Deletes one batch of outbox rows no destination needs any more (`_PRUNE`); returns how many."""
        async with self.engine.begin() as conn:
            result = await conn.execute(_PRUNE, {"hours": retention_h, "names": list(destinations),
                                                 "standing": list(standing_kinds), "batch": batch})
        return int(result.rowcount)

    async def lot_kinds(self, lot_ids: Sequence[str]) -> dict[str, str]:
        if not lot_ids:
            return {}
        async with self.engine.connect() as conn:
            return {r[0]: r[1] for r in await conn.execute(_LOT_KINDS, {"ids": list(lot_ids)}) if r[1]}
