"""IDPS persistence: every read and write of incidents, reports, evidence, links and audit.

Each change is one transaction: the incident rows, the report, its evidence, the links and the audit
records commit together. Reports are stored in batches (group commit, see `batching`): one transaction
per batch, each report correlated as if it had come alone after the ones before it. Correlation is
race-free: a batch first takes transaction-scoped advisory locks on the 3 x 3 cells around each of its
reports (`geo.lock_keys`, all in ascending order), so two reports close enough to join each other never
decide at the same time, whichever process has them; the candidate incidents are then locked
`FOR UPDATE`. Lifecycle changes lock incident rows (in id order when there are several).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.common.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from services.common.geo import Area
from services.common.read_replica import Reads
from services.idps import aggregate, correlate, lifecycle
from services.idps.geo import lock_keys
from services.idps.model import (
    AuditEntry,
    Change,
    Incident,
    IncidentDetail,
    IncidentFilter,
    Link,
    ListQuery,
    ReportInput,
    ReportOutcome,
    Source,
    UpdateSpec,
)
from services.idps.settings import IdpsSettings
from services.idps.vocab import AuditAction, LinkKind

SNAPSHOT_LIMIT = 50_000
SYSTEM = "system"

log = logging.getLogger("v2x.idps.store")

_COLS = """id, type, type_fixed, status, severity, severity_derived, lane_impacts, lat, lon, radius_m, heading_deg,
    confidence, source_conf, weight_sum, source_count, source_kinds, plates, version, first_observed_at,
    last_observed_at, created_at, updated_at, cleared_at, closed_at, merged_into_id, description"""
_VALUES = """:id, :type, :type_fixed, :status, :severity, :severity_derived, CAST(:lane_impacts AS jsonb), :lat, :lon,
    :radius_m, :heading_deg, :confidence, CAST(:source_conf AS jsonb), :weight_sum, :source_count, :source_kinds,
    :plates, :version, :first_observed_at, :last_observed_at, :created_at, :updated_at, :cleared_at, :closed_at,
    :merged_into_id, :description"""
_POINT = "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography"
_INSERT_INCIDENT = f"INSERT INTO idps_incidents ({_COLS}, position) VALUES ({_VALUES}, {_POINT})"
_UPDATE_INCIDENT = f"UPDATE idps_incidents SET ({_COLS}, position) = ({_VALUES}, {_POINT}) WHERE id = :id"
_AUDIT_COLS = "incident_id, version, at, actor, action, note, from_status, to_status, details, report_id, " \
              "related_incident_id"
_INSERT_AUDIT = f"""INSERT INTO idps_audit ({_AUDIT_COLS}) VALUES (:a_incident_id, :a_version, :a_at, :a_actor,
    :a_action, :a_note, :a_from_status, :a_to_status, :a_details, :a_report_id, :a_related_incident_id)"""
_INSERT_LINK = """INSERT INTO idps_links (report_id, kind, from_incident_id, to_incident_id, at, actor)
    VALUES (:l_report_id, :l_kind, :l_from_incident_id, :l_to_incident_id, :l_at, :l_actor)"""

# The report path talks to the asyncpg driver connection directly (a batch is a handful of statements
# with array parameters; SQLAlchemy's per-statement layers would cost more than the statements), in as
# few round trips as it can: each costs more CPU (both ends' system calls) than most of the work.
# 1. BEGIN and the cell locks of every report of the batch, in one round trip (the keys are integers of
#    our own making, written into the statement; sorted, so that lockers never deadlock).
#    Statements 2 and 3 run on generic plans (prepared once per connection, planned once): their shape does
#    not depend on the values (each report is one index probe), and re-planning them for every batch, as
#    `plan_cache_mode = force_custom_plan` did, cost PostgreSQL ~1.5 ms a batch (test_plans.py).
_PG_BEGIN_AND_LOCK = ("BEGIN; "
                      "SELECT count(pg_advisory_xact_lock(k)) FROM unnest('{{{keys}}}'::bigint[]) AS k")
# 2. (A statement of its own, so that its snapshot is taken after the locks were granted.) The reports
#    already stored under the batch's idempotency keys ("<index in batch> <report id> <incident id>", on
#    every row) and every incident any report of the batch might join, locked (none: one row of NULLs);
#    `correlate` decides which one each report joins.
_PG_DUPS_AND_CANDIDATES = f"""WITH d AS (SELECT ARRAY(
        SELECT q.i || ' ' || r.id || ' ' || r.incident_id
        FROM unnest($1::smallint[], $2::text[], $3::text[]) WITH ORDINALITY AS q(kind, sid, key, i)
        -- LIMIT keeps the lookup per report on the unique index (a join may become a scan of all reports)
        CROSS JOIN LATERAL (SELECT r.id, r.incident_id FROM idps_reports r WHERE r.source_kind = q.kind
                            AND r.source_id = q.sid AND r.idempotency_key = q.key LIMIT 1) AS r
    ) AS dups)
SELECT d.dups, c.* FROM d LEFT JOIN (SELECT {_COLS} FROM idps_incidents WHERE id IN (
    SELECT n.id FROM unnest($4::float8[], $5::float8[], $6::timestamptz[], $7::timestamptz[]) AS q(lat, lon, lo, hi)
    -- One index lookup per report, whatever the statistics: as a plain join, a fresh table (no statistics
    -- yet, or a generic plan) was planned as every open incident against every report, ~20 ms a batch.
    -- OFFSET 0 keeps the planner from flattening the subquery back into that join.
    CROSS JOIN LATERAL (
      SELECT i.id FROM idps_incidents i
      WHERE ST_DWithin(i.position, ST_SetSRID(ST_MakePoint(q.lon, q.lat), 4326)::geography, $8, false)
        AND i.status BETWEEN 1 AND 5
        AND ((i.status < 5 AND i.first_observed_at <= q.hi AND i.last_observed_at >= q.lo)
             OR (i.status = 5 AND i.cleared_at >= $9))
      OFFSET 0) AS n)
    ORDER BY id FOR UPDATE) AS c ON true"""
# 3. Everything the batch wrote, in one statement: incidents opened (inserted) or joined (updated, final
#    state), reports, evidence, audit records and links. `j` carries the json and array columns.
_INCIDENT_ARRAYS = """unnest($1::text[], $2::int[], $3::bool[], $4::smallint[], $5::smallint[], $6::bool[], $7::text[],
    $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::real[], $13::float8[], $14::int[], $15::bigint[],
    $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[],
    $21::timestamptz[], $22::text[], $23::text[], $24::bool[]) AS x(id, type, type_fixed, status, severity,
    severity_derived, j, lat, lon, radius_m, heading_deg, confidence, weight_sum, source_count, version,
    first_observed_at, last_observed_at, created_at, updated_at, cleared_at, closed_at, merged_into_id,
    description, is_new)"""
_INCIDENT_EXPRS = """x.id, x.type, x.type_fixed, x.status, x.severity, x.severity_derived, x.j -> 0, x.lat, x.lon,
    x.radius_m, x.heading_deg, x.confidence, x.j -> 1, x.weight_sum, x.source_count,
    ARRAY(SELECT jsonb_array_elements_text(x.j -> 2))::smallint[], ARRAY(SELECT jsonb_array_elements_text(x.j -> 3)),
    x.version, x.first_observed_at, x.last_observed_at, x.created_at, x.updated_at, x.cleared_at, x.closed_at,
    x.merged_into_id, x.description, ST_SetSRID(ST_MakePoint(x.lon, x.lat), 4326)::geography"""
_REPORT_ARRAYS = """unnest($25::text[], $26::text[], $27::smallint[], $28::text[], $29::text[], $30::text[], $31::int[],
    $32::text[], $33::float8[], $34::float8[], $35::float8[], $36::real[], $37::timestamptz[], $38::timestamptz[],
    $39::text[], $40::float8[], $41::text[], $42::smallint[], $43::bytea[], $44::text[], $45::smallint[],
    $46::bigint[], $47::smallint[], $48::smallint[], $49::smallint[], $50::text[]) WITH ORDINALITY
    AS q(id, incident_id, source_kind, source_id, idempotency_key, actor, type, external_code, lat, lon, radius_m,
    confidence, observed_at, received_at, lane_id, heading_deg, plate, plate_colour, snapshot, description,
    link_kind, a_version, a_action, a_from, a_to, a_details, ord)"""
_PG_WRITE = f"""WITH x AS (SELECT x.id, x.type, x.type_fixed, x.status, x.severity, x.severity_derived, x.j::jsonb AS j,
        x.lat, x.lon, x.radius_m, x.heading_deg, x.confidence, x.weight_sum, x.source_count, x.version,
        x.first_observed_at, x.last_observed_at, x.created_at, x.updated_at, x.cleared_at, x.closed_at,
        x.merged_into_id, x.description, x.is_new FROM {_INCIDENT_ARRAYS}),
  ni AS (INSERT INTO idps_incidents ({_COLS}, position) SELECT {_INCIDENT_EXPRS} FROM x WHERE x.is_new),
  ui AS (UPDATE idps_incidents SET ({_COLS}, position) = ({_INCIDENT_EXPRS}) FROM x
         WHERE NOT x.is_new AND idps_incidents.id = x.id),
  q AS (SELECT * FROM {_REPORT_ARRAYS}),
  r AS (INSERT INTO idps_reports (id, incident_id, source_kind, source_id, idempotency_key, actor, type,
        external_code, lat, lon, radius_m, confidence, observed_at, received_at, lane_id, heading_deg, plate,
        plate_colour, has_snapshot, description)
        SELECT id, incident_id, source_kind, source_id, idempotency_key, actor, type, external_code, lat, lon,
        radius_m, confidence, observed_at, received_at, lane_id, heading_deg, plate, plate_colour,
        length(snapshot) > 0, description FROM q ORDER BY ord),
  e AS (INSERT INTO idps_evidence (report_id, snapshot_jpeg) SELECT id, snapshot FROM q WHERE length(snapshot) > 0),
  a AS (INSERT INTO idps_audit ({_AUDIT_COLS})
        SELECT incident_id, a_version, received_at, actor, a_action, '', a_from, a_to, a_details, id, '' FROM q
        ORDER BY ord),
  l AS (INSERT INTO idps_links (report_id, kind, from_incident_id, to_incident_id, at, actor)
        SELECT id, link_kind, NULL, incident_id, received_at, actor FROM q ORDER BY ord)
SELECT 1"""
_GET = text(f"SELECT {_COLS} FROM idps_incidents WHERE id = :id")
_PG_GET_MANY = f"SELECT {_COLS} FROM idps_incidents WHERE id = ANY($1::text[])"
_LOCK_ONE = text(f"SELECT {_COLS} FROM idps_incidents WHERE id = :id FOR UPDATE")
_LOCK_MANY = text(f"SELECT {_COLS} FROM idps_incidents WHERE id = ANY(:ids) ORDER BY id FOR UPDATE")
_SOURCE_COLS = """id, incident_id, source_id, source_kind, type, external_code, lat, lon, radius_m, confidence,
    observed_at, received_at, lane_id, heading_deg, plate, plate_colour, has_snapshot, description"""
_SOURCES = text(f"SELECT {_SOURCE_COLS} FROM idps_reports WHERE incident_id = :id ORDER BY observed_at, id")
_AUDIT = text(f"SELECT {_AUDIT_COLS} FROM idps_audit WHERE incident_id = :id ORDER BY id")
_LINKS = text("SELECT report_id, kind, from_incident_id, to_incident_id, at, actor FROM idps_links "
              "WHERE to_incident_id = :id OR from_incident_id = :id ORDER BY id")


def _record(rec: Any) -> Any:
    return SimpleNamespace(**dict(rec.items()))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _incident(row: Row[Any]) -> Incident:
    return Incident(
        id=row.id, type=row.type, status=row.status, severity=row.severity, lat=row.lat, lon=row.lon,
        confidence=float(row.confidence), first_observed_at=row.first_observed_at,
        last_observed_at=row.last_observed_at, created_at=row.created_at, updated_at=row.updated_at,
        version=row.version, type_fixed=row.type_fixed, severity_derived=row.severity_derived,
        lane_impacts=[(lane, state) for lane, state in _json(row.lane_impacts)], radius_m=row.radius_m,
        heading_deg=row.heading_deg, source_conf=dict(_json(row.source_conf)), weight_sum=row.weight_sum,
        source_count=row.source_count, source_kinds=list(row.source_kinds), plates=list(row.plates),
        cleared_at=row.cleared_at, closed_at=row.closed_at, merged_into_id=row.merged_into_id or "",
        description=row.description,
    )


def _params(inc: Incident) -> dict[str, Any]:
    return {
        "id": inc.id, "type": inc.type, "type_fixed": inc.type_fixed, "status": inc.status, "severity": inc.severity,
        "severity_derived": inc.severity_derived, "lane_impacts": json.dumps([list(x) for x in inc.lane_impacts]),
        "lat": inc.lat, "lon": inc.lon, "radius_m": inc.radius_m, "heading_deg": inc.heading_deg,
        "confidence": inc.confidence, "source_conf": json.dumps(inc.source_conf), "weight_sum": inc.weight_sum,
        "source_count": inc.source_count, "source_kinds": inc.source_kinds, "plates": inc.plates,
        "version": inc.version, "first_observed_at": inc.first_observed_at, "last_observed_at": inc.last_observed_at,
        "created_at": inc.created_at, "updated_at": inc.updated_at, "cleared_at": inc.cleared_at,
        "closed_at": inc.closed_at, "merged_into_id": inc.merged_into_id or None, "description": inc.description,
    }


def _audit_params(incident_id: str, e: AuditEntry) -> dict[str, Any]:
    return {"a_incident_id": incident_id, "a_version": e.version, "a_at": e.at, "a_actor": e.actor,
            "a_action": e.action, "a_note": e.note, "a_from_status": e.from_status, "a_to_status": e.to_status,
            "a_details": e.details, "a_report_id": e.report_id, "a_related_incident_id": e.related_incident_id}


def _link_params(link: Link) -> dict[str, Any]:
    return {"l_report_id": link.report_id, "l_kind": link.kind, "l_from_incident_id": link.from_incident_id or None,
            "l_to_incident_id": link.to_incident_id, "l_at": link.at, "l_actor": link.actor}


def _source(row: Row[Any]) -> Source:
    return Source(
        report_id=row.id, incident_id=row.incident_id, source_id=row.source_id, source_kind=row.source_kind,
        type=row.type, external_code=row.external_code, lat=row.lat, lon=row.lon, radius_m=row.radius_m,
        confidence=float(row.confidence), observed_at=row.observed_at, received_at=row.received_at,
        lane_id=row.lane_id, heading_deg=row.heading_deg, plate=row.plate, plate_colour=row.plate_colour,
        has_snapshot=row.has_snapshot, description=row.description,
    )


def _check_version(inc: Incident, expected: int) -> None:
    if expected and expected != inc.version:
        raise Aborted(f"incident {inc.id} is at version {inc.version}, not {expected}: re-read it and retry")


def _filter_sql(f: IncidentFilter, params: dict[str, Any]) -> list[str]:
    where: list[str] = []
    if f.area is not None:
        where.append(_area_sql(f.area, params))
    if f.types:
        where.append("type = ANY(:f_types)")
        params["f_types"] = sorted(f.types)
    if f.statuses:
        where.append("status = ANY(:f_statuses)")
        params["f_statuses"] = sorted(f.statuses)
    if f.min_severity:
        where.append("severity >= :f_min_severity")
        params["f_min_severity"] = f.min_severity
    return where


def _area_sql(area: Area, params: dict[str, Any]) -> str:
    if area.box is not None:
        s, w, n, e = area.box
        params.update(f_s=s, f_w=w, f_n=n, f_e=e)
        return ("position && ST_MakeEnvelope(:f_w, :f_s, :f_e, :f_n, 4326)::geography "
                "AND lat BETWEEN :f_s AND :f_n AND lon BETWEEN :f_w AND :f_e")
    assert area.circle is not None
    lat, lon, r = area.circle
    params.update(f_lat=lat, f_lon=lon, f_r=r)
    return "ST_DWithin(position, ST_SetSRID(ST_MakePoint(:f_lon, :f_lat), 4326)::geography, :f_r, false)"


class _Batch:
    """What the reports of one batch make: their outcomes, and the rows to write (the incidents they
    opened or joined are written once each, in their final state)."""

    def __init__(self) -> None:
        self.outcomes: list[ReportOutcome] = []
        self.reports: list[tuple[Any, ...]] = []
        self.touched: dict[str, bool] = {}  # incident id -> opened by this batch
        self.first: dict[tuple[int, str, str], int] = {}  # idempotency key -> index of its first report

    def add(self, r: ReportInput, now: datetime, target: Incident | None, pool: dict[str, Incident]) -> None:
        """One report, not stored before this batch: a repeat of an earlier one, a join or a new incident."""
        key = (r.source_kind, r.source_id, r.idempotency_key)
        earlier = self.first.get(key)
        if earlier is not None:
            first = self.outcomes[earlier]
            self.outcomes.append(ReportOutcome(pool[first.incident.id].snapshot(), first.report_id, duplicate=True))
            return
        self.first[key] = len(self.outcomes)
        report_id = aggregate.new_id("R")
        if target is None:
            inc = aggregate.open_incident(aggregate.new_id("I"), r, now)
            pool[inc.id] = inc
            self.touched[inc.id] = True
            audit = (AuditAction.CREATED, 0, inc.status, f"opened by {lifecycle.type_name(r.type)} report")
            link, before, reactivated = LinkKind.OPENED, None, False
        else:
            inc, before, from_status = target, target.attrs(), target.status
            details, reactivated = aggregate.join(inc, r, now)
            self.touched.setdefault(inc.id, False)
            audit = (AuditAction.REACTIVATED if reactivated else AuditAction.SOURCE_ADDED, from_status,
                     inc.status, "; ".join(details))
            link = LinkKind.JOINED
        snap = inc.snapshot()
        self.outcomes.append(ReportOutcome(snap, report_id, opened=before is None, reactivated=reactivated,
                                           changes=(Change(snap, before),)))
        self.reports.append((
            report_id, inc.id, r.source_kind, r.source_id, r.idempotency_key, r.actor, r.type, r.external_code,
            r.lat, r.lon, r.radius_m, r.confidence, r.observed_at, now, r.lane_id, r.heading_deg, r.plate,
            r.plate_colour, r.snapshot_jpeg, r.description, link, inc.version, *audit))

    def incident_columns(self, pool: dict[str, Incident]) -> list[list[Any]]:
        rows = [(inc.id, inc.type, inc.type_fixed, inc.status, inc.severity, inc.severity_derived,
                 json.dumps([inc.lane_impacts, inc.source_conf, inc.source_kinds, inc.plates]), inc.lat, inc.lon,
                 inc.radius_m, inc.heading_deg, inc.confidence, inc.weight_sum, inc.source_count, inc.version,
                 inc.first_observed_at, inc.last_observed_at, inc.created_at, inc.updated_at, inc.cleared_at,
                 inc.closed_at, inc.merged_into_id or None, inc.description, opened)
                for inc, opened in ((pool[iid], opened) for iid, opened in self.touched.items())]
        return [list(col) for col in zip(*rows, strict=True)]

    def report_columns(self) -> list[list[Any]]:
        return [list(col) for col in zip(*self.reports, strict=True)]


class IdpsStore:
    def __init__(self, engine: AsyncEngine, settings: IdpsSettings, reads: Reads | None = None) -> None:
        self.engine = engine
        # Consoles' lookups and listings may be up to the replica's bound behind; a write's answer and
        # Subscribe's snapshot (aligned with the feed) always come from the primary.
        self.reads = reads or Reads(engine)
        self.reopen_s = settings.reopen_window_s
        self.windows = correlate.Windows(settings.correlation_distance_m,
                                         timedelta(seconds=settings.correlation_window_s),
                                         timedelta(seconds=self.reopen_s))

    # ----- reports ------------------------------------------------------------------------------

    async def report(self, r: ReportInput, now: datetime) -> ReportOutcome:
        """Joins the report to a matching incident or opens one, in one transaction."""
        out = (await self.report_many([(r, now)]))[0]
        if isinstance(out, Exception):
            raise out
        return out

    async def report_many(self, items: Sequence[tuple[ReportInput, datetime]]) -> list[ReportOutcome | Exception]:
        """Stores reports in one transaction, each correlated as if the reports had come one after the other
        in this order. When that transaction fails, each report is tried again alone, so that a bad report
        fails only itself (its failure is in its place in the answer; nothing of it was written)."""
        if len(items) > 1:
            try:
                return list(await self._report_batch(items))
            except Exception:
                log.warning("a batch of %d reports failed; storing them one by one", len(items), exc_info=True)
        return [await self._report_alone(r, now) for r, now in items]

    async def _report_alone(self, r: ReportInput, now: datetime) -> ReportOutcome | Exception:
        try:
            return (await self._report_batch([(r, now)]))[0]
        except asyncpg.UniqueViolationError as exc:
            # The same report arrived twice at the same moment: the other copy won the unique key.
            existing = await self._existing(r)
            return exc if existing is None else existing
        except Exception as exc:
            return exc

    async def _report_batch(self, items: Sequence[tuple[ReportInput, datetime]]) -> list[ReportOutcome]:
        w = self.windows
        keys = sorted({k for r, _ in items for k in lock_keys(r.lat, r.lon, w.distance_m)})
        async with self.engine.connect() as sa_conn:
            c = (await sa_conn.get_raw_connection()).driver_connection
            assert c is not None
            try:
                await c.execute(_PG_BEGIN_AND_LOCK.format(keys=",".join(map(str, keys))))
                rows = await c.fetch(
                    _PG_DUPS_AND_CANDIDATES, [r.source_kind for r, _ in items], [r.source_id for r, _ in items],
                    [r.idempotency_key for r, _ in items], [r.lat for r, _ in items], [r.lon for r, _ in items],
                    [r.observed_at - w.window for r, _ in items], [r.observed_at + w.window for r, _ in items],
                    # a metre more than the window: the exact distance is decided in `correlate`
                    w.distance_m + 1.0, min(now for _, now in items) - w.reopen)
                outcomes = await self._correlate_and_write(c, items, rows)
                await c.execute("COMMIT")
                return outcomes
            except BaseException:
                if c.is_in_transaction():
                    try:
                        await c.execute("ROLLBACK")
                    except BaseException:
                        await sa_conn.invalidate()  # never back into the pool in an unknown state
                        raise
                raise

    async def _correlate_and_write(self, c: asyncpg.Connection, items: Sequence[tuple[ReportInput, datetime]],
                                   rows: list[asyncpg.Record]) -> list[ReportOutcome]:
        stored: dict[int, tuple[str, str]] = {}
        for dup in rows[0]["dups"]:
            i, report_id, incident_id = dup.split(" ")
            stored[int(i) - 1] = (report_id, incident_id)
        pool = {rec["id"]: _incident(_record(rec)) for rec in rows if rec["id"] is not None}
        others: dict[str, Incident] = {}
        elsewhere = sorted({iid for _, iid in stored.values() if iid not in pool})
        if elsewhere:
            others = {rec["id"]: _incident(_record(rec)) for rec in await c.fetch(_PG_GET_MANY, elsewhere)}
        batch = _Batch()
        for i, (r, now) in enumerate(items):
            if i in stored:
                report_id, incident_id = stored[i]
                inc = pool.get(incident_id) or others[incident_id]
                batch.outcomes.append(ReportOutcome(inc.snapshot(), report_id, duplicate=True))
            else:
                batch.add(r, now, correlate.best(pool.values(), r, now, self.windows), pool)
        if batch.reports:
            await c.execute(_PG_WRITE, *batch.incident_columns(pool), *batch.report_columns())
        return batch.outcomes

    async def _existing(self, r: ReportInput) -> ReportOutcome | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(text(
                "SELECT id, incident_id FROM idps_reports WHERE source_kind = :kind AND source_id = :sid "
                "AND idempotency_key = :key"), {"kind": r.source_kind, "sid": r.source_id,
                                                 "key": r.idempotency_key})).first()
            if row is None:
                return None
            return ReportOutcome(await self._get(conn, row.incident_id), row.id, duplicate=True)

    # ----- lifecycle ----------------------------------------------------------------------------

    async def transition(self, incident_id: str, target: int, expected_version: int, note: str, actor: str,
                         now: datetime) -> Change:
        async with self.engine.begin() as conn:
            inc = await self._lock(conn, incident_id)
            _check_version(inc, expected_version)
            age = (now - inc.cleared_at).total_seconds() if inc.cleared_at else None
            error = lifecycle.transition_error(inc.status, target, age, self.reopen_s)
            if error:
                raise FailedPrecondition(error, reason="INVALID_TRANSITION")
            before, from_status = inc.attrs(), inc.status
            inc.status = target
            if target == lifecycle.CLEARED:
                inc.cleared_at = now
            elif from_status == lifecycle.CLEARED and target in lifecycle.REOPEN_TARGETS:
                inc.cleared_at = None
            if target in lifecycle.TERMINAL:
                inc.closed_at = now
            inc.version += 1
            inc.updated_at = now
            await conn.execute(text(_UPDATE_INCIDENT), _params(inc))
            await self._audit(conn, inc.id, AuditEntry(inc.version, now, actor, AuditAction.TRANSITIONED, note,
                                                       from_status, target))
            return Change(inc, before)

    async def update(self, incident_id: str, spec: UpdateSpec, expected_version: int, actor: str,
                     now: datetime) -> Change:
        async with self.engine.begin() as conn:
            inc = await self._lock(conn, incident_id)
            _check_version(inc, expected_version)
            if inc.status in lifecycle.TERMINAL:
                raise FailedPrecondition(f"incident {inc.id} is {lifecycle.status_name(inc.status)}: it cannot change",
                                         reason="INCIDENT_ENDED")
            before = inc.attrs()
            details: list[str] = []
            if spec.type and spec.type != inc.type:
                details.append(f"type {lifecycle.type_name(inc.type)}->{lifecycle.type_name(spec.type)}")
                inc.type = spec.type
            if spec.type:
                inc.type_fixed = True
            lanes = dict(inc.lane_impacts)
            for lane, state in spec.lane_impacts:
                old = lanes.get(lane)
                if old != state:
                    was = lifecycle.lane_state_name(old) if old else "-"
                    details.append(f"lane {lane} {was}->{lifecycle.lane_state_name(state)}")
                lanes[lane] = state
            inc.lane_impacts = list(lanes.items())
            old_severity = inc.severity
            if spec.severity:
                inc.severity, inc.severity_derived = spec.severity, False
            elif spec.derive_severity:
                inc.severity_derived = True
            if inc.severity_derived:
                inc.severity = lifecycle.derive_severity(inc.lane_impacts)
            if inc.severity != old_severity:
                details.append(f"severity {lifecycle.severity_name(old_severity)}->"
                               f"{lifecycle.severity_name(inc.severity)}")
            inc.version += 1
            inc.updated_at = now
            await conn.execute(text(_UPDATE_INCIDENT), _params(inc))
            await self._audit(conn, inc.id, AuditEntry(inc.version, now, actor, AuditAction.UPDATED, spec.note,
                                                       inc.status, inc.status, "; ".join(details)))
            return Change(inc, before)

    async def merge(self, target_id: str, other_ids: Sequence[str], expected_version: int, note: str, actor: str,
                    now: datetime) -> list[Change]:
        """Moves the sources of `other_ids` into the target; the others close, merged into it."""
        async with self.engine.begin() as conn:
            ids = sorted({target_id, *other_ids})
            rows = {r.id: _incident(r) for r in (await conn.execute(_LOCK_MANY, {"ids": ids})).all()}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise NotFound(f"no incident {', '.join(missing)}")
            target = rows[target_id]
            _check_version(target, expected_version)
            ended = [i for i in ids if rows[i].status in lifecycle.TERMINAL]
            if ended:
                raise FailedPrecondition(f"incidents {', '.join(ended)} have ended and cannot be merged",
                                         reason="INCIDENT_ENDED")
            moved = (await conn.execute(text(
                "UPDATE idps_reports r SET incident_id = :target FROM idps_reports old "
                "WHERE old.id = r.id AND r.incident_id = ANY(:others) RETURNING r.id, old.incident_id AS was"),
                {"target": target_id, "others": list(other_ids)})).all()
            if moved:
                await conn.execute(text(_INSERT_LINK), [_link_params(Link(
                    m.id, LinkKind.MERGED, m.was, target_id, now, actor)) for m in moved])
            sources = [_source(r) for r in (await conn.execute(_SOURCES, {"id": target_id})).all()]
            changes: list[Change] = []
            before = target.attrs()
            aggregate.recompute(target, sources)
            lanes = dict(target.lane_impacts)
            for other_id in other_ids:
                for lane, state in rows[other_id].lane_impacts:
                    lanes.setdefault(lane, state)
            target.lane_impacts = list(lanes.items())
            if target.severity_derived:
                target.severity = lifecycle.derive_severity(target.lane_impacts)
            target.version += 1
            target.updated_at = now
            await conn.execute(text(_UPDATE_INCIDENT), _params(target))
            for other_id in other_ids:
                other = rows[other_id]
                other_before, other_status = other.attrs(), other.status
                other.status, other.closed_at, other.merged_into_id = lifecycle.CLOSED, now, target_id
                other.source_count, other.version, other.updated_at = 0, other.version + 1, now
                await conn.execute(text(_UPDATE_INCIDENT), _params(other))
                await self._audit(conn, other_id, AuditEntry(
                    other.version, now, actor, AuditAction.MERGED, note, other_status, lifecycle.CLOSED,
                    f"merged into {target_id}", related_incident_id=target_id))
                await self._audit(conn, target_id, AuditEntry(
                    target.version, now, actor, AuditAction.MERGED, note, target.status, target.status,
                    f"merged {other_id} ({sum(1 for m in moved if m.was == other_id)} sources)",
                    related_incident_id=other_id))
                changes.append(Change(other, other_before))
            return [Change(target, before), *changes]

    async def split(self, incident_id: str, report_ids: Sequence[str], expected_version: int, note: str, actor: str,
                    now: datetime) -> tuple[Change, Change]:
        """Moves reports out of an incident into a new one (status REPORTED)."""
        async with self.engine.begin() as conn:
            inc = await self._lock(conn, incident_id)
            _check_version(inc, expected_version)
            if inc.status in lifecycle.TERMINAL:
                raise FailedPrecondition(f"incident {inc.id} is {lifecycle.status_name(inc.status)}: it cannot change",
                                         reason="INCIDENT_ENDED")
            sources = [_source(r) for r in (await conn.execute(_SOURCES, {"id": incident_id})).all()]
            known = {s.report_id for s in sources}
            wanted = set(report_ids)
            strangers = sorted(wanted - known)
            if strangers:
                raise InvalidArgument([FieldViolation("report_ids", f"{rid} is not a source of incident {incident_id}")
                                       for rid in strangers])
            stay = [s for s in sources if s.report_id not in wanted]
            go = [s for s in sources if s.report_id in wanted]
            if not stay:
                raise InvalidArgument(FieldViolation("report_ids", "at least one report must stay in the incident"))
            new = aggregate.open_incident(aggregate.new_id("I"), ReportInput(
                "", go[0].source_id, go[0].source_kind, go[0].type, go[0].lat, go[0].lon, go[0].confidence,
                go[0].observed_at, actor), now)
            aggregate.recompute(new, go, retype=True)
            await conn.execute(text(_INSERT_INCIDENT), _params(new))
            await conn.execute(text("UPDATE idps_reports SET incident_id = :new WHERE id = ANY(:ids)"),
                               {"new": new.id, "ids": [s.report_id for s in go]})
            await conn.execute(text(_INSERT_LINK), [_link_params(Link(s.report_id, LinkKind.SPLIT, incident_id,
                                                                      new.id, now, actor)) for s in go])
            before = inc.attrs()
            aggregate.recompute(inc, stay)
            inc.version += 1
            inc.updated_at = now
            await conn.execute(text(_UPDATE_INCIDENT), _params(inc))
            moved = ", ".join(s.report_id for s in go)
            await self._audit(conn, inc.id, AuditEntry(inc.version, now, actor, AuditAction.SPLIT, note,
                                                       inc.status, inc.status, f"moved {moved} to {new.id}",
                                                       related_incident_id=new.id))
            await self._audit(conn, new.id, AuditEntry(1, now, actor, AuditAction.SPLIT, note, 0, new.status,
                                                       f"split from {inc.id}: {moved}", related_incident_id=inc.id))
            return Change(inc, before), Change(new, None)

    async def close_expired(self, now: datetime, limit: int = 500) -> list[Change]:
        """Closes incidents cleared longer ago than the reopen window (any process may run this)."""
        cutoff = now - timedelta(seconds=self.reopen_s)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(text(
                f"SELECT {_COLS} FROM idps_incidents WHERE status = 5 AND cleared_at < :cutoff "
                "ORDER BY cleared_at LIMIT :n FOR UPDATE SKIP LOCKED"), {"cutoff": cutoff, "n": limit})).all()
            changes: list[Change] = []
            for row in rows:
                inc = _incident(row)
                before = inc.attrs()
                inc.status, inc.closed_at, inc.version, inc.updated_at = lifecycle.CLOSED, now, inc.version + 1, now
                changes.append(Change(inc, before))
            if changes:
                await conn.execute(text(_UPDATE_INCIDENT), [_params(c.incident) for c in changes])
                await conn.execute(text(_INSERT_AUDIT), [_audit_params(c.incident.id, AuditEntry(
                    c.incident.version, now, SYSTEM, AuditAction.AUTO_CLOSED, "", lifecycle.CLEARED,
                    lifecycle.CLOSED, f"cleared more than {self.reopen_s:g} s ago")) for c in changes])
            return changes

    # ----- reads --------------------------------------------------------------------------------

    async def get(self, incident_id: str) -> IncidentDetail:
        return await self.reads.read(lambda conn: self._detail(conn, incident_id))

    async def _detail(self, conn: AsyncConnection, incident_id: str) -> IncidentDetail:
        inc = await self._get(conn, incident_id)
        sources = [_source(r) for r in (await conn.execute(_SOURCES, {"id": incident_id})).all()]
        audit = [AuditEntry(r.version, r.at, r.actor, r.action, r.note, r.from_status, r.to_status, r.details,
                            r.report_id, r.related_incident_id)
                 for r in (await conn.execute(_AUDIT, {"id": incident_id})).all()]
        links = [Link(r.report_id, r.kind, r.from_incident_id or "", r.to_incident_id, r.at, r.actor)
                 for r in (await conn.execute(_LINKS, {"id": incident_id})).all()]
        return IncidentDetail(inc, sources, audit, links)

    async def evidence(self, report_id: str) -> tuple[str, int, bytes]:
        async def query(conn: AsyncConnection) -> Any:
            return (await conn.execute(text(
                "SELECT r.plate, r.plate_colour, e.snapshot_jpeg FROM idps_reports r "
                "LEFT JOIN idps_evidence e ON e.report_id = r.id WHERE r.id = :id"), {"id": report_id})).first()

        row = await self.reads.read(query)
        if row is None:
            raise NotFound(f"no report {report_id}")
        return row.plate, row.plate_colour, bytes(row.snapshot_jpeg or b"")

    async def list_incidents(self, q: ListQuery) -> list[Incident]:
        params: dict[str, Any] = {"n": q.limit}
        where = _filter_sql(q.filter, params)
        if q.start_time is not None:
            where.append("(closed_at IS NULL OR closed_at >= :start_time)")
            params["start_time"] = q.start_time
        if q.end_time is not None:
            where.append("created_at < :end_time")
            params["end_time"] = q.end_time
        if q.after is not None:
            where.append("(created_at, id) < (:after_at, :after_id)")
            params["after_at"], params["after_id"] = q.after
        sql = f"SELECT {_COLS} FROM idps_incidents {'WHERE ' + ' AND '.join(where) if where else ''} " \
              "ORDER BY created_at DESC, id DESC LIMIT :n"
        async def query(conn: AsyncConnection) -> list[Incident]:
            return [_incident(r) for r in (await conn.execute(text(sql), params)).all()]

        return await self.reads.read(query)

    async def snapshot(self, f: IncidentFilter) -> list[Incident]:
        """Every incident a live subscriber with this filter follows now."""
        params: dict[str, Any] = {"n": SNAPSHOT_LIMIT}
        where = ["status BETWEEN 1 AND 5", *_filter_sql(f, params)]
        sql = f"SELECT {_COLS} FROM idps_incidents WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT :n"
        async with self.engine.connect() as conn:
            return [_incident(r) for r in (await conn.execute(text(sql), params)).all()]

    # ----- helpers ------------------------------------------------------------------------------

    async def _get(self, conn: AsyncConnection, incident_id: str) -> Incident:
        row = (await conn.execute(_GET, {"id": incident_id})).first()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        return _incident(row)

    async def _lock(self, conn: AsyncConnection, incident_id: str) -> Incident:
        row = (await conn.execute(_LOCK_ONE, {"id": incident_id})).first()
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        return _incident(row)

    async def _audit(self, conn: AsyncConnection, incident_id: str, entry: AuditEntry) -> None:
        await conn.execute(text(_INSERT_AUDIT), _audit_params(incident_id, entry))
