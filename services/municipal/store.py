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
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.config import MunicipalDestination
from services.municipal.model import (
    LOCAL_TZ,
    DeadLetter,
    DestinationState,
    DestinationStatus,
    Fate,
    OutboxRecord,
    Outcome,
    Position,
    Reconciliation,
)

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

_NEXT = text(f"""
SELECT {_COLUMNS} FROM outbox o
WHERE (o.txid, o.id) > {_POS.format('cur')}
  AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
  AND o.kind = ANY(CAST(:kinds AS text[]))
  AND o.id <> ALL(CAST(:ahead AS bigint[]))
ORDER BY o.txid, o.id
LIMIT :limit""")

# For each lot of a batch: its committed rows beyond the batch end with ids below the lot's last id in the
# batch. `lo` is the lot's last row at or before the cursor (rows below it were all processed).
_AHEAD_OF_LOTS = text(f"""
SELECT o.* FROM unnest(CAST(:aggs AS text[]), CAST(:minids AS bigint[]), CAST(:maxids AS bigint[]))
    AS b(agg, minid, maxid)
CROSS JOIN LATERAL (
    SELECT COALESCE(max(p.id), 0) AS lo FROM outbox p
    WHERE p.aggregate_id = b.agg AND p.id < b.minid AND (p.txid, p.id) <= {_POS.format('cur')}
) AS low
CROSS JOIN LATERAL (
    SELECT {_COLUMNS} FROM outbox o
    WHERE o.aggregate_id = b.agg AND o.id > low.lo AND o.id < b.maxid
      AND (o.txid, o.id) > {_POS.format('end')}
      AND o.kind = ANY(CAST(:kinds AS text[]))
      AND o.id <> ALL(CAST(:ahead AS bigint[]))
    OFFSET 0  -- keeps this a per-lot index range scan (the planner would flatten it into a hash join)
) AS o""")

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

_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO off")

_COUNT = text("""
INSERT INTO municipal_delivered (destination, kind, day, delivered)
SELECT :name, k, d, n FROM unnest(CAST(:kinds AS text[]), CAST(:days AS date[]), CAST(:ns AS bigint[])) AS t(k, d, n)
ON CONFLICT (destination, kind, day) DO UPDATE SET delivered = municipal_delivered.delivered + excluded.delivered""")

_DEAD = text("""
INSERT INTO municipal_dead_letters AS l (destination, outbox_id, kind, record_key, idempotency_key, attempts,
    http_status, reason, message, payload_preview)
SELECT :name, i, k, rk, ik, a, hs, r, m, pv
FROM unnest(CAST(:ids AS bigint[]), CAST(:kinds AS text[]), CAST(:rkeys AS text[]), CAST(:ikeys AS text[]),
            CAST(:attempts AS integer[]), CAST(:statuses AS integer[]), CAST(:reasons AS text[]),
            CAST(:messages AS text[]), CAST(:previews AS text[])) AS t(i, k, rk, ik, a, hs, r, m, pv)
ON CONFLICT (destination, outbox_id) DO UPDATE SET
    state = 'open', attempts = l.attempts + excluded.attempts, http_status = excluded.http_status,
    reason = excluded.reason, message = excluded.message, payload_preview = excluded.payload_preview,
    last_attempt_at = now()""")

_RESOLVE = text("""
UPDATE municipal_dead_letters SET state = 'resolved', attempts = attempts + 1, last_attempt_at = now()
WHERE destination = :name AND outbox_id = ANY(CAST(:ids AS bigint[])) AND state <> 'resolved'
RETURNING outbox_id""")

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

_LOT_KINDS = text("""
SELECT DISTINCT ON (aggregate_id) aggregate_id, payload->>'lot_kind' FROM outbox
WHERE kind = 'lot_static' AND aggregate_id = ANY(CAST(:ids AS text[]))
ORDER BY aggregate_id, id DESC""")


def _record(r: Sequence[Any]) -> OutboxRecord:
    # Columns of _COLUMNS, by position (the hot path of draining).
    return OutboxRecord(r[0], int(r[1]), r[2], r[3], r[4], orjson.loads(r[5]))


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
    """What one delivered batch changes, written in one transaction after the platform's answer."""

    cursor: Position
    ahead: list[int]
    outcomes: Sequence[Outcome]
    replay_end: Position | None  # the replay in progress, if any
    replay_done: bool


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

    async def next_batch(self, cursor: Position, ahead: Sequence[int], kinds: Sequence[str],
                         limit: int) -> tuple[list[OutboxRecord], list[OutboxRecord]]:
        """The next `limit` rows after the cursor from finished transactions, and the rows to deliver with
        them to keep each lot in id order (see the module docstring). Both in (txid, id) order."""
        async with self.engine.connect() as conn:
            rows = [_record(r) for r in await conn.execute(_NEXT, {
                "cur_txid": str(cursor.txid), "cur_id": cursor.id, "kinds": list(kinds), "ahead": list(ahead),
                "limit": limit})]
            if not rows:
                return [], []
            bounds: dict[str, list[int]] = {}
            for r in rows:
                b = bounds.setdefault(r.aggregate_id, [r.id, r.id])
                b[0], b[1] = min(b[0], r.id), max(b[1], r.id)
            end = rows[-1]
            extra = [_record(r) for r in await conn.execute(_AHEAD_OF_LOTS, {
                "aggs": list(bounds), "minids": [b[0] for b in bounds.values()],
                "maxids": [b[1] for b in bounds.values()], "cur_txid": str(cursor.txid), "cur_id": cursor.id,
                "end_txid": str(end.txid), "end_id": end.id, "kinds": list(kinds), "ahead": list(ahead)})]
        extra.sort(key=lambda r: (r.txid, r.id))
        return rows, extra

    async def positions(self, ids: Sequence[int]) -> dict[int, Position]:
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            return {r.id: Position(int(r.txid), r.id)
                    for r in await conn.execute(_POSITIONS, {"ids": list(ids)})}

    async def commit(self, name: str, c: Commit) -> int:
        """Advances the cursor and records the batch's outcomes; returns how many records were counted
        as delivered (each record is counted once, also when a replay or a retry sends it again)."""
        delivered = [o for o in c.outcomes if o.fate is Fate.DELIVERED]
        dead = [o for o in c.outcomes if o.fate is Fate.DEAD]
        async with self.engine.begin() as conn:
            # No wait for the WAL flush: if PostgreSQL itself crashes, the last few advances are lost and their
            # records are sent again, which the receiver dedupes (same idempotency keys), with counts and dead
            # letters lost and redone in the same transactions. The cursor never gets ahead of the platform.
            await conn.execute(_ASYNC_COMMIT)
            await conn.execute(_ADVANCE, {"name": name, "cur_txid": str(c.cursor.txid), "cur_id": c.cursor.id,
                                          "ahead": c.ahead, "delivered": bool(delivered),
                                          "replay_done": c.replay_done})
            if c.replay_end is not None:
                # Inside a replay only records that were dead letters are new to the platform.
                replayed = [o for o in delivered if Position(o.record.txid, o.record.id) <= c.replay_end]
                fresh = [o for o in delivered if not Position(o.record.txid, o.record.id) <= c.replay_end]
                resolved = await self._resolve(conn, name, [o.record.id for o in replayed])
                counted = fresh + [o for o in replayed if o.record.id in resolved]
            else:
                counted = delivered
            await self._count(conn, name, counted)
            await self._dead(conn, name, dead)
        return len(counted)

    async def _resolve(self, conn: AsyncConnection, name: str, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        return {r[0] for r in await conn.execute(_RESOLVE, {"name": name, "ids": list(ids)})}

    async def _count(self, conn: AsyncConnection, name: str, outcomes: Sequence[Outcome]) -> None:
        groups: dict[tuple[str, str], int] = {}
        for o in outcomes:
            k = (o.record.kind, o.record.day)
            groups[k] = groups.get(k, 0) + 1
        if groups:
            await conn.execute(_COUNT, {"name": name, "kinds": [k for k, _ in groups],
                                        "days": [date.fromisoformat(d) for _, d in groups],
                                        "ns": list(groups.values())})

    async def _dead(self, conn: AsyncConnection, name: str, dead: Sequence[Outcome]) -> None:
        if dead:
            await conn.execute(_DEAD, {
                "name": name, "ids": [o.record.id for o in dead], "kinds": [o.record.kind for o in dead],
                "rkeys": [o.record_key for o in dead], "ikeys": [o.key for o in dead],
                "attempts": [o.attempts for o in dead], "statuses": [o.http_status for o in dead],
                "reasons": [o.reason for o in dead], "messages": [o.message[:2000] for o in dead],
                "previews": [o.preview for o in dead]})

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

    async def commit_retried(self, name: str, outcomes: Sequence[Outcome]) -> int:
        """Outcomes of requeued dead letters: delivered ones are resolved and counted, the others open."""
        async with self.engine.begin() as conn:
            delivered = [o for o in outcomes if o.fate is Fate.DELIVERED]
            resolved = await self._resolve(conn, name, [o.record.id for o in delivered])
            await self._count(conn, name, [o for o in delivered if o.record.id in resolved])
            await self._dead(conn, name, [o for o in outcomes if o.fate is not Fate.DELIVERED])
            if delivered:
                await conn.execute(text("UPDATE municipal_destinations SET last_delivered_at = now() "
                                        "WHERE name = :name"), {"name": name})
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

    async def lot_kinds(self, lot_ids: Sequence[str]) -> dict[str, str]:
        if not lot_ids:
            return {}
        async with self.engine.connect() as conn:
            return {r[0]: r[1] for r in await conn.execute(_LOT_KINDS, {"ids": list(lot_ids)}) if r[1]}
