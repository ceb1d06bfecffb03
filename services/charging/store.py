"""Charging persistence: every read and write of stations, connector state, charge points, sessions
and bay flags.

Status changes and their outbox rows (`charger_status`), and a station's create or update and its outbox row
(`charger_static`), commit in one transaction; writers of one connector serialise
on its state row (`FOR UPDATE`, in connector id order so that batches never deadlock).

The EV bay check and a station's links to a parking lot read the parking service's read model (the views
parking_read_spots and parking_read_lots, migration 0004), never parking's tables: a spot's state there is the system
of record, and the views are what parking promises other services.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Row, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.charging import payloads, rules
from services.charging.model import (
    BayFlag,
    BayFlagCount,
    BayFlagFilter,
    ChargePointRecord,
    ConnectorSpec,
    ConnectorState,
    ConnectorView,
    EvseSpec,
    FindQuery,
    MeterSample,
    OcppConnector,
    Outcome,
    Report,
    StationMatch,
    StationRecord,
    StationSpec,
)
from services.charging.status import advance, judge, refine
from services.charging.vocab import AckResult, BayFlagKind, ConnectorStatus, OcppProtocol
from services.common.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from services.common.outbox import OutboxKind, OutboxRow, write_outbox
from services.common.principal import Principal
from services.common.rawsql import Query, fetch
from services.common.read_replica import Reads

T = TypeVar("T")

S = ConnectorStatus

# When a connector's reading expires (see status.py): OCPP readings live while the charge point is heard from.
_EXPIRES = """CASE WHEN st.observed_at IS NULL THEN NULL
    WHEN st.source IN (2, 3) THEN GREATEST(st.received_at, cp.last_seen_at) + make_interval(secs => st.ttl_s)
    ELSE st.observed_at + make_interval(secs => st.ttl_s) END"""
_CONNECTOR_COLUMNS = """c.id, c.station_id, c.evse_id, c.evse_position, c.position, c.charge_point_id, c.ocpp_evse_id,
    c.ocpp_connector_id, c.standard, c.max_power_kw, c.price_per_kwh_fen, c.service_fee_per_kwh_fen, c.parking_spot_id,
    st.status, st.error_code, st.info, st.source, st.observed_at, st.received_at, st.status_since, st.ttl_s,
    st.expiry_announced, cp.last_seen_at AS cp_last_seen, """ + f"({_EXPIRES}) AS expires_at"
_CONNECTOR_FROM = """charging_connectors c JOIN charging_connector_state st ON st.connector_id = c.id
    LEFT JOIN charging_charge_points cp ON cp.id = c.charge_point_id"""
_STATION_COLUMNS = """s.id, s.operator_id, s.name, s.address, ST_Y(s.location::geometry) AS lat,
    ST_X(s.location::geometry) AS lon, s.parking_lot_id, s.status_ttl_s, s.version, s.created_at, s.updated_at"""

_STATIONS = text(f"SELECT {_STATION_COLUMNS} FROM charging_stations s WHERE s.id = ANY(:ids)")
_STATION_CONNECTORS = text(
    f"SELECT {_CONNECTOR_COLUMNS} FROM {_CONNECTOR_FROM} WHERE c.station_id = ANY(:ids) "
    "ORDER BY c.station_id, c.evse_position, c.position")
_LIST = text(
    f"SELECT {_STATION_COLUMNS} FROM charging_stations s "
    "WHERE (CAST(:operator AS text) IS NULL OR s.operator_id = :operator) "
    "AND (CAST(:lot AS text) IS NULL OR s.parking_lot_id = :lot) AND s.id > :after ORDER BY s.id LIMIT :n")

# The rows a batch of reports works on, locked.
_LOCK = text(
    f"SELECT {_CONNECTOR_COLUMNS}, s.operator_id, s.status_ttl_s, s.parking_lot_id, "
    "ST_Y(s.location::geometry) AS lat, ST_X(s.location::geometry) AS lon "
    f"FROM {_CONNECTOR_FROM} JOIN charging_stations s ON s.id = c.station_id "
    "WHERE st.connector_id = ANY(:ids) ORDER BY st.connector_id FOR UPDATE OF st")
_UPDATE_STATE = text(
    "UPDATE charging_connector_state AS st SET status = u.status, error_code = u.error_code, info = u.info, "
    "source = u.source, observed_at = u.observed_at, received_at = u.received_at, status_since = u.status_since, "
    "ttl_s = u.ttl_s, expiry_announced = false "
    "FROM unnest(CAST(:ids AS text[]), CAST(:status AS smallint[]), CAST(:error_code AS smallint[]), "
    "CAST(:info AS text[]), CAST(:source AS smallint[]), CAST(:observed_at AS timestamptz[]), "
    "CAST(:received_at AS timestamptz[]), CAST(:status_since AS timestamptz[]), CAST(:ttl_s AS integer[])) "
    "AS u(id, status, error_code, info, source, observed_at, received_at, status_since, ttl_s) "
    "WHERE st.connector_id = u.id")

# Stations within the radius that have a matching connector (AVAILABLE and fresh, if asked), nearest
# first; then their matching connectors. The nearest-first walk of the GiST index (`<->`) stops after
# `limit` matches instead of sorting every station in the radius. The radius is written as the box
# the index serves plus the distance itself: ST_DWithin's row estimate is so low that the planner
# would rather sort everything.
_MATCH = """(:standard = 0 OR c.standard = :standard) AND c.max_power_kw >= :min_power"""
_FIND = text(f"""
WITH near AS (
    SELECT s.id, s.operator_id, s.name, s.address, s.parking_lot_id, ST_Y(s.location::geometry) AS lat,
           ST_X(s.location::geometry) AS lon,
           ST_Distance(s.location, ST_MakePoint(:lon, :lat)::geography, false) AS distance_m
    FROM charging_stations s
    WHERE s.location && _ST_Expand(ST_MakePoint(:lon, :lat)::geography, :radius)
      AND ST_Distance(s.location, ST_MakePoint(:lon, :lat)::geography, false) <= :radius
      AND (:plug_bit = 0 OR s.plug_mask & :plug_bit <> 0) AND s.max_power_kw >= :min_power
      AND EXISTS (SELECT 1 FROM {_CONNECTOR_FROM}
                  WHERE c.station_id = s.id AND {_MATCH}
                    AND (NOT :available_only OR (st.status = 1 AND ({_EXPIRES}) > :now)))
    ORDER BY s.location <-> ST_MakePoint(:lon, :lat)::geography LIMIT :limit
)
SELECT near.id AS s_id, near.operator_id AS s_operator, near.name AS s_name, near.address AS s_address,
       near.parking_lot_id AS s_lot, near.lat AS s_lat, near.lon AS s_lon, near.distance_m,
       c.id, c.station_id, c.evse_id, c.standard, c.max_power_kw, c.price_per_kwh_fen, c.service_fee_per_kwh_fen,
       c.parking_spot_id, c.ocpp_connector_id, st.status, st.error_code, st.info, st.source, st.observed_at,
       st.received_at, st.status_since, st.ttl_s, ({_EXPIRES}) AS expires_at
FROM near JOIN {_CONNECTOR_FROM} ON c.station_id = near.id
WHERE {_MATCH}
ORDER BY near.distance_m, near.id, c.evse_position, c.position
""")
_FIND_QUERY = Query.of(_FIND)

# Everything the nearby index (index.py) holds of stations (or of the stations :ids), one row per
# connector (a station without connectors has one row of NULLs), in answer order: one statement, so
# one consistent snapshot.
_INDEX = Query.of(text(f"""
SELECT s.id AS s_id, s.operator_id, s.name, s.address, s.parking_lot_id, ST_Y(s.location::geometry) AS lat,
       ST_X(s.location::geometry) AS lon, c.id, c.evse_id, c.charge_point_id, c.standard, c.max_power_kw,
       c.price_per_kwh_fen, c.service_fee_per_kwh_fen, c.parking_spot_id, c.ocpp_connector_id, st.status,
       st.error_code, st.info, st.source, st.observed_at, st.received_at, st.status_since, st.ttl_s,
       cp.last_seen_at AS cp_last_seen
FROM charging_stations s LEFT JOIN ({_CONNECTOR_FROM}) ON c.station_id = s.id
WHERE CAST(:ids AS text[]) IS NULL OR s.id = ANY(CAST(:ids AS text[]))
ORDER BY s.id, c.evse_position, c.position
"""))

_INSERT_CONNECTORS = text(
    "INSERT INTO charging_connectors (id, station_id, evse_id, evse_position, position, charge_point_id, "
    "ocpp_evse_id, ocpp_connector_id, standard, max_power_kw, price_per_kwh_fen, service_fee_per_kwh_fen, "
    "parking_spot_id) SELECT * FROM unnest(CAST(:id AS text[]), CAST(:station_id AS text[]), "
    "CAST(:evse_id AS text[]), CAST(:evse_position AS integer[]), CAST(:position AS integer[]), "
    "CAST(:charge_point_id AS text[]), CAST(:ocpp_evse_id AS integer[]), CAST(:ocpp_connector_id AS integer[]), "
    "CAST(:standard AS smallint[]), CAST(:max_power_kw AS float8[]), CAST(:price AS integer[]), "
    "CAST(:fee AS integer[]), CAST(:spot AS text[])) "
    "ON CONFLICT (id) DO UPDATE SET evse_id = excluded.evse_id, evse_position = excluded.evse_position, "
    "position = excluded.position, charge_point_id = excluded.charge_point_id, ocpp_evse_id = excluded.ocpp_evse_id, "
    "ocpp_connector_id = excluded.ocpp_connector_id, standard = excluded.standard, "
    "max_power_kw = excluded.max_power_kw, price_per_kwh_fen = excluded.price_per_kwh_fen, "
    "service_fee_per_kwh_fen = excluded.service_fee_per_kwh_fen, parking_spot_id = excluded.parking_spot_id "
    "WHERE charging_connectors.station_id = excluded.station_id")

# Every connector linked to a parking spot, with both states (the spot's from parking's read model).
_BAYS = text(f"""
SELECT c.id AS connector_id, c.station_id, s.operator_id, p.lot_id, p.spot_id, p.status AS spot_status,
       p.observed_at AS spot_since, p.expires_at AS spot_expires,
       st.status, st.status_since, ({_EXPIRES}) AS expires_at
FROM charging_connectors c
JOIN charging_stations s ON s.id = c.station_id AND s.parking_lot_id <> ''
JOIN parking_read_spots p ON p.lot_id = s.parking_lot_id
     AND (p.spot_id = c.parking_spot_id OR (c.parking_spot_id = '' AND p.connector_id = c.id))
JOIN charging_connector_state st ON st.connector_id = c.id
LEFT JOIN charging_charge_points cp ON cp.id = c.charge_point_id
ORDER BY p.lot_id, p.spot_id, c.id
""")
_FLAG_FILTER = """(CAST(:operator AS text) IS NULL OR operator_id = :operator)
    AND (CAST(:station AS text) IS NULL OR station_id = :station)
    AND (CAST(:lot AS text) IS NULL OR parking_lot_id = :lot)
    AND (:any_kind OR kind = ANY(CAST(:kinds AS smallint[])))"""
# A charge point reads connected while its connection is open and it is heard from (a gateway that
# died without closing leaves the flag behind).
_CP_COLUMNS = """id, station_id, protocol, heartbeat_s, created_at, last_seen_at,
    COALESCE(connected AND last_seen_at > now() - make_interval(secs => 3 * heartbeat_s), false) AS connected"""
_BAY_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtext('v2x:charging:bay-check'))")


def _state(row: Row[Any]) -> ConnectorState:
    return ConnectorState(status=row.status, error_code=row.error_code, info=row.info, source=row.source,
                          observed_at=row.observed_at, received_at=row.received_at, status_since=row.status_since,
                          ttl_s=row.ttl_s, expires_at=row.expires_at)


def _connector(row: Row[Any]) -> ConnectorSpec:
    return ConnectorSpec(row.id, row.standard, row.max_power_kw, row.price_per_kwh_fen, row.service_fee_per_kwh_fen,
                         row.parking_spot_id, row.ocpp_connector_id)


def _view(row: Row[Any]) -> ConnectorView:
    return ConnectorView(row.station_id, row.evse_id, _connector(row), _state(row))


def _evses(rows: Iterable[Row[Any]]) -> tuple[EvseSpec, ...]:
    """Connector rows of one station (in EVSE, connector order) back into EVSEs."""
    evses: list[EvseSpec] = []
    for r in rows:
        if not evses or evses[-1].id != r.evse_id:
            evses.append(EvseSpec(r.evse_id, (), r.charge_point_id, r.ocpp_evse_id))
        last = evses[-1]
        evses[-1] = replace(last, connectors=(*last.connectors, _connector(r)))
    return tuple(evses)


def _record(station: Row[Any], connectors: Sequence[Row[Any]]) -> StationRecord:
    spec = StationSpec(id=station.id, operator_id=station.operator_id, name=station.name, lat=station.lat,
                       lon=station.lon, status_ttl_s=station.status_ttl_s, evses=_evses(connectors),
                       address=station.address, parking_lot_id=station.parking_lot_id)
    return StationRecord(spec, {r.id: _state(r) for r in connectors}, station.version, station.created_at,
                         station.updated_at)


def _connector_params(spec: StationSpec) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in (
        "id", "station_id", "evse_id", "evse_position", "position", "charge_point_id", "ocpp_evse_id",
        "ocpp_connector_id", "standard", "max_power_kw", "price", "fee", "spot")}
    for ei, e in enumerate(spec.evses):
        for ci, c in enumerate(e.connectors):
            for k, v in (("id", c.id), ("station_id", spec.id), ("evse_id", e.id), ("evse_position", ei),
                         ("position", ci), ("charge_point_id", e.charge_point_id), ("ocpp_evse_id", e.ocpp_evse_id),
                         ("ocpp_connector_id", c.ocpp_connector_id), ("standard", c.standard),
                         ("max_power_kw", c.max_power_kw), ("price", c.price_per_kwh_fen),
                         ("fee", c.service_fee_per_kwh_fen), ("spot", c.parking_spot_id)):
                cols[k].append(v)
    return cols


@dataclass
class _Working:
    """A locked connector during a batch: its static data and its state as the batch left it."""

    row: Row[Any]
    state: ConnectorState
    announced: tuple[int, int]  # (status, error code) the city last saw
    dirty: bool = False


@dataclass(frozen=True)
class BayCondition:
    """An EV bay check that fails now (see bay_checks.py)."""

    kind: int
    operator_id: str
    station_id: str
    connector_id: str
    parking_lot_id: str
    parking_spot_id: str
    connector_status: int
    since: datetime


@dataclass(frozen=True)
class BayLink:
    """A connector linked to a parking spot, with both states, as the bay check reads them."""

    connector_id: str
    station_id: str
    operator_id: str
    lot_id: str
    spot_id: str
    spot_status: int
    spot_since: datetime | None
    spot_expires: datetime | None
    status: int
    status_since: datetime | None
    expires_at: datetime | None


@dataclass(frozen=True)
class ChargePointAuth:
    id: str
    station_id: str
    protocol: int
    password_hash: str
    heartbeat_s: int


class ChargingStore:
    def __init__(self, engine: AsyncEngine, read_leases: int = 4, reads: Reads | None = None) -> None:
        self.engine = engine
        # Drivers' queries (stations, a station, the PostGIS charger search) go to the read replica while it is within
        # its bound; writes' answers, the index's loads and a watch's snapshot stay on the primary.
        self.reads = reads
        # Reads are single statements: in autocommit they need no BEGIN / ROLLBACK round trips.
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # A few connections of the engine's pool stay checked out for reads: a checkout (pre-ping,
        # reset on return) costs more than a FindChargers query. Busy leases fall back to the pool.
        self._max_leases = read_leases
        self._leases: list[AsyncConnection] = []
        self._leased = 0

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        if self._leases:
            conn = self._leases.pop()
        elif self._leased < self._max_leases:
            self._leased += 1
            try:
                conn = await self.reader.connect().start()
            except BaseException:
                self._leased -= 1
                raise
        else:
            async with self.reader.connect() as pooled:
                yield pooled
            return
        try:
            yield conn
        except (DBAPIError, OSError, asyncio.CancelledError):
            # The connection may be broken, or mid-statement when cancelled: give it back to the pool,
            # which checks it before its next use.
            self._leased -= 1
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            raise
        except BaseException:
            self._leases.append(conn)
            raise
        self._leases.append(conn)

    async def _stale_ok(self, query: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """A read that may be up to the replica's bound behind: on the replica while it is within it, else on a
        leased connection to the primary."""
        if self.reads is not None and self.reads.replica_fresh():
            return await self.reads.read(query)
        async with self._read() as conn:
            return await query(conn)

    async def close(self) -> None:
        """Returns the leased read connections to the pool (before the engine is disposed)."""
        leases, self._leases = self._leases, []
        self._leased -= len(leases)
        for conn in leases:
            with contextlib.suppress(Exception):
                await conn.close()

    # ----- stations -----------------------------------------------------------------------

    async def register_station(self, spec: StationSpec) -> StationRecord:
        async with self.engine.begin() as conn:
            await self._check_links(conn, spec)
            try:
                await conn.execute(text(
                    "INSERT INTO charging_stations (id, operator_id, name, address, location, parking_lot_id, "
                    "status_ttl_s, plug_mask, max_power_kw) VALUES (:id, :operator_id, :name, :address, "
                    "ST_MakePoint(:lon, :lat)::geography, :lot, :ttl, :plug_mask, :max_power)"), _station_params(spec))
            except IntegrityError:
                raise AlreadyExists(f"station {spec.id} already exists") from None
            await self._write_connectors(conn, spec)
            return await self._announce(conn, spec.id)

    async def update_station(self, principal: Principal, spec: StationSpec, expected_version: int) -> StationRecord:
        async with self.engine.begin() as conn:
            current = (await conn.execute(text(
                "SELECT operator_id, version FROM charging_stations WHERE id = :id FOR UPDATE"),
                {"id": spec.id})).first()
            if current is None:
                raise NotFound(f"station {spec.id} does not exist")
            rules.may_update_station(principal, spec.id, current.operator_id, spec.operator_id)
            if expected_version and expected_version != current.version:
                raise Aborted(f"station {spec.id} is at version {current.version}, not {expected_version}: re-read it")
            await self._check_links(conn, spec)
            await conn.execute(text(
                "UPDATE charging_stations SET operator_id = :operator_id, name = :name, address = :address, "
                "location = ST_MakePoint(:lon, :lat)::geography, parking_lot_id = :lot, status_ttl_s = :ttl, "
                "plug_mask = :plug_mask, max_power_kw = :max_power, version = version + 1, updated_at = now() "
                "WHERE id = :id"), _station_params(spec))
            ids = [c.id for _, c in spec.connectors()]
            await conn.execute(text(
                "DELETE FROM charging_connectors WHERE station_id = :id AND NOT (id = ANY(:ids))"),
                {"id": spec.id, "ids": ids})
            # OCPP addresses may move between connectors: free them before the upsert re-assigns them.
            await conn.execute(text(
                "UPDATE charging_connectors SET charge_point_id = '', ocpp_evse_id = 0, ocpp_connector_id = 0 "
                "WHERE station_id = :id"), {"id": spec.id})
            await self._write_connectors(conn, spec)
            return await self._announce(conn, spec.id)

    async def _check_links(self, conn: AsyncConnection, spec: StationSpec) -> None:
        """What needs the database: connector ids and charge points not taken by other stations, and
        the linked parking lot and spots exist."""
        ids = [c.id for _, c in spec.connectors()]
        taken = (await conn.execute(text(
            "SELECT id, station_id FROM charging_connectors WHERE id = ANY(:ids) AND station_id <> :sid ORDER BY id"),
            {"ids": ids, "sid": spec.id})).first()
        if taken is not None:
            raise AlreadyExists(f"connector {taken.id} belongs to station {taken.station_id}")
        cps = sorted({e.charge_point_id for e in spec.evses if e.charge_point_id})
        if cps:
            other = (await conn.execute(text(
                "SELECT charge_point_id, station_id FROM charging_connectors WHERE charge_point_id = ANY(:cps) "
                "AND station_id <> :sid UNION ALL SELECT id, station_id FROM charging_charge_points "
                "WHERE id = ANY(:cps) AND station_id <> :sid LIMIT 1"), {"cps": cps, "sid": spec.id})).first()
            if other is not None:
                raise FailedPrecondition(
                    f"charge point {other.charge_point_id} drives EVSEs of station {other.station_id}")
        if spec.parking_lot_id:
            lot = (await conn.execute(text("SELECT 1 FROM parking_read_lots WHERE id = :id"),
                                      {"id": spec.parking_lot_id})).first()
            if lot is None:
                raise InvalidArgument(FieldViolation(
                    "station.parking_lot_id", f"parking lot {spec.parking_lot_id} does not exist"))
            spots = sorted({c.parking_spot_id for _, c in spec.connectors() if c.parking_spot_id})
            if spots:
                known = set((await conn.execute(text(
                    "SELECT spot_id FROM parking_read_spots WHERE lot_id = :lot AND spot_id = ANY(:spots)"),
                    {"lot": spec.parking_lot_id, "spots": spots})).scalars())
                missing = [s for s in spots if s not in known]
                if missing:
                    raise InvalidArgument(FieldViolation(
                        "station.evses", f"parking lot {spec.parking_lot_id} has no spot {missing[0]!r}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + "; register the spots in the parking service first"))

    async def _write_connectors(self, conn: AsyncConnection, spec: StationSpec) -> None:
        try:
            await conn.execute(_INSERT_CONNECTORS, _connector_params(spec))
        except IntegrityError:
            raise AlreadyExists("two connectors would share one OCPP (charge point, evse, connector) address") from None
        await conn.execute(text(
            "INSERT INTO charging_connector_state (connector_id) SELECT unnest(CAST(:ids AS text[])) "
            "ON CONFLICT DO NOTHING"), {"ids": [c.id for _, c in spec.connectors()]})

    async def _announce(self, conn: AsyncConnection, station_id: str) -> StationRecord:
        """The station as written, and its outbox row (`charger_static`) in the same transaction."""
        record = await self._get(conn, station_id)
        await self._write_static(conn, [record])
        return record

    async def _write_static(self, conn: AsyncConnection, records: Sequence[StationRecord]) -> None:
        await write_outbox(conn, [OutboxRow(OutboxKind.CHARGER_STATIC, r.spec.id, payloads.charger_static(r))
                                  for r in records])
        await conn.execute(text("UPDATE charging_stations SET announced = true WHERE id = ANY(:ids) AND NOT announced"),
                           {"ids": [r.spec.id for r in records]})

    async def announce_pending(self, batch: int = 500) -> int:
        """Writes the static record of every station that has none (registered before the record existed);
        returns how many. Replicas starting together share the work: each batch skips rows another holds."""
        done = 0
        while True:
            async with self.engine.begin() as conn:
                ids = list((await conn.execute(text(
                    "SELECT id FROM charging_stations WHERE NOT announced ORDER BY id LIMIT :n "
                    "FOR UPDATE SKIP LOCKED"), {"n": batch})).scalars())
                if not ids:
                    return done
                await self._write_static(conn, await self._records(conn, ids))
                done += len(ids)

    async def _get(self, conn: AsyncConnection, station_id: str) -> StationRecord:
        records = await self._records(conn, [station_id])
        if not records:
            raise NotFound(f"station {station_id} does not exist")
        return records[0]

    async def _records(self, conn: AsyncConnection, ids: Sequence[str]) -> list[StationRecord]:
        stations = (await conn.execute(_STATIONS, {"ids": list(ids)})).all()
        if not stations:
            return []
        by_station: dict[str, list[Row[Any]]] = {}
        for r in (await conn.execute(_STATION_CONNECTORS, {"ids": [s.id for s in stations]})).all():
            by_station.setdefault(r.station_id, []).append(r)
        order = {sid: i for i, sid in enumerate(ids)}
        return sorted((_record(s, by_station.get(s.id, [])) for s in stations), key=lambda r: order[r.spec.id])

    async def get_station(self, station_id: str, stale_ok: bool = False) -> StationRecord:
        """A station; with `stale_ok` (a driver's GetStation) possibly from the read replica."""
        if stale_ok:
            return await self._stale_ok(lambda conn: self._get(conn, station_id))
        async with self._read() as conn:
            return await self._get(conn, station_id)

    async def list_stations(self, operator_id: str | None, lot_id: str | None, after: str,
                            n: int) -> list[StationRecord]:
        async def query(conn: AsyncConnection) -> list[StationRecord]:
            rows = (await conn.execute(_LIST, {"operator": operator_id, "lot": lot_id, "after": after, "n": n})).all()
            return await self._records(conn, [r.id for r in rows])

        return await self._stale_ok(query)

    # ----- status -------------------------------------------------------------------------

    async def apply_reports(self, reports: Sequence[Report],
                            now: datetime) -> tuple[list[Outcome], list[ConnectorView]]:
        """Applies a batch in one transaction. Returns one outcome per report (in order) and the final
        view of every connector that changed."""
        ids = sorted({r.connector_id for r in reports})
        async with self.engine.begin() as conn:
            working: dict[str, _Working] = {}
            for row in (await conn.execute(_LOCK, {"ids": ids})).all():
                state = _state(row)
                announced = ((S.UNKNOWN, 0) if row.expiry_announced or state.observed_at is None
                             else (state.status, state.error_code))
                working[row.id] = _Working(row, state, announced)
            outcomes: list[Outcome] = []
            outbox: list[OutboxRow] = []
            for r in reports:
                try:
                    outcomes.append(_apply_one(r, working, now, outbox))
                except DomainError as exc:
                    outcomes.append(Outcome(AckResult.REJECTED, None, exc))
            changed = [w for w in working.values() if w.dirty]
            if changed:
                cols: dict[str, list[Any]] = {k: [] for k in (
                    "ids", "status", "error_code", "info", "source", "observed_at", "received_at", "status_since",
                    "ttl_s")}
                for w in changed:
                    s = w.state
                    for k, v in (("ids", w.row.id), ("status", s.status), ("error_code", s.error_code),
                                 ("info", s.info), ("source", s.source), ("observed_at", s.observed_at),
                                 ("received_at", s.received_at), ("status_since", s.status_since),
                                 ("ttl_s", s.ttl_s)):
                        cols[k].append(v)
                await conn.execute(_UPDATE_STATE, cols)
            await write_outbox(conn, outbox)
        return outcomes, [ConnectorView(w.row.station_id, w.row.evse_id, _connector(w.row), w.state) for w in changed]

    async def sweep_expired(self, now: datetime, limit: int = 5000) -> list[ConnectorView]:
        """Announces readings that expired since they were written (outbox: status UNKNOWN), once each."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(text(
                f"SELECT {_CONNECTOR_COLUMNS}, s.operator_id, s.parking_lot_id, ST_Y(s.location::geometry) AS lat, "
                f"ST_X(s.location::geometry) AS lon FROM {_CONNECTOR_FROM} JOIN charging_stations s "
                f"ON s.id = c.station_id WHERE NOT st.expiry_announced AND st.observed_at IS NOT NULL "
                f"AND ({_EXPIRES}) <= :now ORDER BY st.connector_id LIMIT :n FOR UPDATE OF st SKIP LOCKED"),
                {"now": now, "n": limit})).all()
            if not rows:
                return []
            await conn.execute(text(
                "UPDATE charging_connector_state SET expiry_announced = true WHERE connector_id = ANY(:ids)"),
                {"ids": [r.id for r in rows]})
            await write_outbox(conn, [OutboxRow(OutboxKind.CHARGER_STATUS, r.station_id, _payload(
                r, S.UNKNOWN, r.error_code, "", r.observed_at, now, expired=True)) for r in rows])
        return [_view(r) for r in rows]

    # ----- queries ------------------------------------------------------------------------

    async def find(self, q: FindQuery, now: datetime) -> list[StationMatch]:
        params = {"lat": q.lat, "lon": q.lon, "radius": q.radius_m, "standard": q.standard,
                  "plug_bit": 1 << q.standard if q.standard else 0,
                  "min_power": q.min_power_kw, "available_only": q.available_only, "now": now, "limit": q.limit}
        rows = await self._stale_ok(lambda conn: fetch(conn, _FIND_QUERY, params))
        out: list[StationMatch] = []
        for (s_id, s_operator, s_name, s_address, s_lot, s_lat, s_lon, distance_m, cid, station_id, evse_id,
             standard, kw, price, fee, spot, ocpp_connector, status, error_code, info, source, observed_at,
             received_at, since, ttl_s, expires_at) in rows:
            if not out or out[-1].station_id != s_id:
                out.append(StationMatch(s_id, s_name, s_operator, s_lat, s_lon, s_address, s_lot, distance_m, []))
            out[-1].connectors.append(ConnectorView(
                station_id, evse_id, ConnectorSpec(cid, standard, kw, price, fee, spot, ocpp_connector),
                ConnectorState(status, error_code, info, source, observed_at, received_at, since, ttl_s, expires_at)))
        return out

    async def index_rows(self, ids: Sequence[str] | None = None) -> Sequence[Any]:
        """Every station (or the stations `ids`) with its connectors and their states, as records (`rawsql.fetch`)
        (see `_INDEX`): a start-up load of 50,000 connectors takes a fraction of a second."""
        async with self.reader.connect() as conn:
            return await fetch(conn, _INDEX, {"ids": list(ids) if ids is not None else None})

    async def station_states(self, station_id: str) -> list[ConnectorView]:
        async with self._read() as conn:
            rows = (await conn.execute(_STATION_CONNECTORS, {"ids": [station_id]})).all()
        return [_view(r) for r in rows]

    # ----- charge points ------------------------------------------------------------------

    async def register_charge_point(self, cp_id: str, station_id: str, protocol: int, password_hash: str,
                                    heartbeat_s: int, reset: bool) -> ChargePointRecord:
        async with self.engine.begin() as conn:
            station = (await conn.execute(text("SELECT id FROM charging_stations WHERE id = :id FOR SHARE"),
                                          {"id": station_id})).first()
            if station is None:
                raise NotFound(f"station {station_id} does not exist")
            driven = (await conn.execute(text(
                "SELECT ocpp_evse_id, ocpp_connector_id, evse_id FROM charging_connectors "
                "WHERE station_id = :sid AND charge_point_id = :cp"), {"sid": station_id, "cp": cp_id})).all()
            if not driven:
                raise FailedPrecondition(f"station {station_id} has no EVSE driven by charge point {cp_id} "
                                         "(set evses[].charge_point_id first)")
            if protocol == OcppProtocol.OCPP16J and any(r.ocpp_evse_id != 0 for r in driven):
                raise FailedPrecondition(f"an OCPP 1.6 charge point has no EVSE ids: set ocpp_evse_id = 0 on the "
                                         f"EVSEs of {cp_id}")
            if protocol == OcppProtocol.OCPP201 and any(r.ocpp_evse_id < 1 for r in driven):
                raise FailedPrecondition(f"an OCPP 2.0.1 charge point numbers its EVSEs from 1: set ocpp_evse_id "
                                         f"on the EVSEs of {cp_id}")
            row = (await conn.execute(text(
                "INSERT INTO charging_charge_points (id, station_id, protocol, password_hash, heartbeat_s) "
                "VALUES (:id, :sid, :protocol, :hash, :hb) "
                "ON CONFLICT (id) DO UPDATE SET station_id = excluded.station_id, protocol = excluded.protocol, "
                "password_hash = excluded.password_hash, heartbeat_s = excluded.heartbeat_s, updated_at = now() "
                f"WHERE :reset RETURNING {_CP_COLUMNS}"),
                {"id": cp_id, "sid": station_id, "protocol": protocol, "hash": password_hash, "hb": heartbeat_s,
                 "reset": reset})).first()
            if row is None:
                raise AlreadyExists(f"charge point {cp_id} is registered; set reset_password to issue a new password")
            return ChargePointRecord(row.id, row.station_id, row.protocol, row.heartbeat_s, row.connected,
                                     row.last_seen_at, row.created_at)

    async def charge_point_auth(self, cp_id: str) -> ChargePointAuth | None:
        async with self._read() as conn:
            row = (await conn.execute(text(
                "SELECT id, station_id, protocol, password_hash, heartbeat_s FROM charging_charge_points "
                "WHERE id = :id"), {"id": cp_id})).first()
        return None if row is None else ChargePointAuth(row.id, row.station_id, row.protocol, row.password_hash,
                                                        row.heartbeat_s)

    async def ocpp_connectors(self, cp_id: str) -> list[OcppConnector]:
        async with self._read() as conn:
            rows = (await conn.execute(text(
                "SELECT id, station_id, evse_id, ocpp_evse_id, ocpp_connector_id FROM charging_connectors "
                "WHERE charge_point_id = :cp ORDER BY ocpp_evse_id, ocpp_connector_id"), {"cp": cp_id})).all()
        return [OcppConnector(r.id, r.station_id, r.evse_id, r.ocpp_evse_id, r.ocpp_connector_id) for r in rows]

    async def charge_point_connected(self, cp_id: str, connected: bool, now: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE charging_charge_points SET connected = :c, last_seen_at = GREATEST(last_seen_at, :now) "
                "WHERE id = :id"), {"id": cp_id, "c": connected, "now": now})

    async def charge_points_seen(self, seen: dict[str, datetime]) -> None:
        if not seen:
            return
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE charging_charge_points AS cp SET last_seen_at = GREATEST(cp.last_seen_at, u.at) "
                "FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[])) AS u(id, at) WHERE cp.id = u.id"),
                {"ids": list(seen), "ats": list(seen.values())})

    async def charge_point_booted(self, cp_id: str, vendor: str, model: str, firmware: str, heartbeat_s: int,
                                  now: datetime) -> bool:
        """Records a BootNotification; False when the charge point is no longer registered."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "UPDATE charging_charge_points SET booted_at = :now, vendor = :vendor, model = :model, "
                "firmware = :fw, heartbeat_s = :hb, last_seen_at = GREATEST(last_seen_at, :now) WHERE id = :id "
                "RETURNING id"), {"id": cp_id, "now": now, "vendor": vendor[:50], "model": model[:50],
                                  "fw": firmware[:50], "hb": heartbeat_s})).first()
        return row is not None

    async def get_charge_point(self, cp_id: str) -> ChargePointRecord:
        async with self._read() as conn:
            row = (await conn.execute(text(
                f"SELECT {_CP_COLUMNS} FROM charging_charge_points WHERE id = :id"), {"id": cp_id})).first()
        if row is None:
            raise NotFound(f"charge point {cp_id} does not exist")
        return ChargePointRecord(row.id, row.station_id, row.protocol, row.heartbeat_s, row.connected,
                                 row.last_seen_at, row.created_at)

    # ----- sessions -----------------------------------------------------------------------

    async def start_session(self, cp_id: str, connector_id: str, transaction_id: str | None, id_token_sha256: str,
                            started_at: datetime, meter_start_wh: float | None) -> int:
        """Opens a session (idempotent: a repeated start returns the same id)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "INSERT INTO charging_sessions (charge_point_id, connector_id, transaction_id, id_token_sha256, "
                "started_at, meter_start_wh, last_energy_wh) "
                "VALUES (:cp, :connector, :tx, :token, :at, :meter, :meter) "
                "ON CONFLICT DO NOTHING RETURNING id"),
                {"cp": cp_id, "connector": connector_id, "tx": transaction_id, "token": id_token_sha256,
                 "at": started_at, "meter": meter_start_wh})).first()
            if row is None:
                row = (await conn.execute(text(
                    "SELECT id FROM charging_sessions WHERE charge_point_id = :cp AND (transaction_id = :tx "
                    "OR (connector_id = :connector AND started_at = :at)) ORDER BY id LIMIT 1"),
                    {"cp": cp_id, "tx": transaction_id, "connector": connector_id, "at": started_at})).first()
            assert row is not None
            return int(row.id)

    async def update_session(self, cp_id: str, *, session_id: int | None = None, transaction_id: str | None = None,
                             meter: MeterSample | None = None, charging_state: str = "",
                             stopped_at: datetime | None = None, meter_stop_wh: float | None = None,
                             stop_reason: str = "") -> bool:
        """Meter values, charging state or the end of a session; False when there is no such session."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "UPDATE charging_sessions SET "
                "last_energy_wh = COALESCE(CAST(:energy AS float8), last_energy_wh), "
                "last_power_w = COALESCE(CAST(:power AS float8), last_power_w), "
                "last_soc_pct = COALESCE(CAST(:soc AS float8), last_soc_pct), "
                "last_meter_at = COALESCE(CAST(:meter_at AS timestamptz), last_meter_at), "
                "charging_state = CASE WHEN :state = '' THEN charging_state ELSE :state END, "
                "stopped_at = COALESCE(CAST(:stopped AS timestamptz), stopped_at), "
                "meter_stop_wh = COALESCE(CAST(:stop_wh AS float8), meter_stop_wh), "
                "stop_reason = CASE WHEN :reason = '' THEN stop_reason ELSE :reason END "
                "WHERE charge_point_id = :cp AND (id = :sid OR transaction_id = :tx) RETURNING id"),
                {"cp": cp_id, "sid": session_id or 0, "tx": transaction_id,
                 "energy": meter.energy_wh if meter else None, "power": meter.power_w if meter else None,
                 "soc": meter.soc_pct if meter else None, "meter_at": meter.at if meter else None,
                 "state": charging_state, "stopped": stopped_at, "stop_wh": meter_stop_wh,
                 "reason": stop_reason})).first()
        return row is not None

    async def session_connector(self, cp_id: str, transaction_id: str) -> str | None:
        async with self._read() as conn:
            row = (await conn.execute(text(
                "SELECT connector_id FROM charging_sessions WHERE charge_point_id = :cp AND transaction_id = :tx"),
                {"cp": cp_id, "tx": transaction_id})).first()
        return None if row is None else str(row.connector_id)

    # ----- EV bays ------------------------------------------------------------------------

    async def bay_links(self) -> list[BayLink]:
        async with self._read() as conn:
            rows = (await conn.execute(_BAYS)).all()
        return [BayLink(r.connector_id, r.station_id, r.operator_id, r.lot_id, r.spot_id, r.spot_status, r.spot_since,
                        r.spot_expires, r.status, r.status_since, r.expires_at) for r in rows]

    async def sync_bay_flags(self, conditions: Sequence[BayCondition], now: datetime) -> tuple[list[BayCondition],
                                                                                               int] | None:
        """Makes the open flags match the failing checks: raises new ones, keeps the rest seen, clears
        those whose condition ended. Returns (raised, cleared), or None when another process holds the
        check (one runs at a time)."""
        async with self.engine.begin() as conn:
            if not (await conn.execute(_BAY_LOCK)).scalar_one():
                return None
            open_rows = (await conn.execute(text(
                "SELECT id, kind, parking_lot_id, parking_spot_id FROM charging_bay_flags WHERE cleared_at IS NULL "
                "FOR UPDATE"))).all()
            open_by_key = {(r.parking_lot_id, r.parking_spot_id, r.kind): r.id for r in open_rows}
            keep: list[int] = []
            raised: list[BayCondition] = []
            for c in conditions:
                flag_id = open_by_key.pop((c.parking_lot_id, c.parking_spot_id, c.kind), None)
                if flag_id is None:
                    raised.append(c)
                else:
                    keep.append(flag_id)
            if keep:
                await conn.execute(text("UPDATE charging_bay_flags SET last_seen_at = :now WHERE id = ANY(:ids)"),
                                   {"now": now, "ids": keep})
            if open_by_key:
                await conn.execute(text("UPDATE charging_bay_flags SET cleared_at = :now WHERE id = ANY(:ids)"),
                                   {"now": now, "ids": list(open_by_key.values())})
            if raised:
                await conn.execute(text(
                    "INSERT INTO charging_bay_flags (kind, operator_id, station_id, connector_id, parking_lot_id, "
                    "parking_spot_id, connector_status, since, raised_at, last_seen_at) VALUES (:kind, :operator_id, "
                    ":station_id, :connector_id, :parking_lot_id, :parking_spot_id, :connector_status, :since, :now, "
                    ":now)"), [{**c.__dict__, "now": now} for c in raised])
        return raised, len(open_by_key)

    async def list_bay_flags(self, f: BayFlagFilter, after_id: int, n: int) -> tuple[list[BayFlag],
                                                                                      list[BayFlagCount]]:
        params = {"operator": f.operator_id, "station": f.station_id, "lot": f.parking_lot_id,
                  "any_kind": not f.kinds, "kinds": list(f.kinds), "open_only": f.open_only, "after": after_id,
                  "n": n}
        async with self._read() as conn:
            rows = (await conn.execute(text(
                "SELECT id, kind, operator_id, station_id, connector_id, parking_lot_id, parking_spot_id, "
                f"connector_status, since, last_seen_at, cleared_at FROM charging_bay_flags WHERE {_FLAG_FILTER} "
                "AND (NOT :open_only OR cleared_at IS NULL) AND (:after = 0 OR id < :after) "
                "ORDER BY id DESC LIMIT :n"), params)).all()
            counts = {r.kind: BayFlagCount(r.kind, r.open, r.total) for r in (await conn.execute(text(
                "SELECT kind, count(*) FILTER (WHERE cleared_at IS NULL) AS open, count(*) AS total "
                f"FROM charging_bay_flags WHERE {_FLAG_FILTER} GROUP BY kind"), params)).all()}
        kinds = f.kinds or tuple(BayFlagKind)
        return ([BayFlag(r.id, r.kind, r.operator_id, r.station_id, r.connector_id, r.parking_lot_id,
                         r.parking_spot_id, r.connector_status, r.since, r.last_seen_at, r.cleared_at) for r in rows],
                [counts.get(k, BayFlagCount(k, 0, 0)) for k in sorted(kinds)])

    async def station_operator(self, station_id: str) -> str:
        async with self._read() as conn:
            row = (await conn.execute(text("SELECT operator_id FROM charging_stations WHERE id = :id"),
                                      {"id": station_id})).first()
        if row is None:
            raise NotFound(f"station {station_id} does not exist")
        return str(row.operator_id)


def _apply_one(r: Report, working: dict[str, _Working], now: datetime, outbox: list[OutboxRow]) -> Outcome:
    w = working.get(r.connector_id)
    if w is None:
        raise NotFound(f"connector {r.connector_id} does not exist")
    row = w.row
    rules.may_report(r.connector_id, r.source, r.actor, row.operator_id, row.charge_point_id)
    stored = w.state
    status = refine(stored, r, now)
    result = judge(stored, r, status)
    if result != AckResult.ACCEPTED:
        return Outcome(result, stored)
    ttl = r.ttl_s or row.status_ttl_s
    w.state = advance(stored, r, status, ttl, now, row.cp_last_seen)
    w.dirty = True
    if (status, r.error_code) != w.announced:
        w.announced = (status, r.error_code)
        outbox.append(OutboxRow(OutboxKind.CHARGER_STATUS, row.station_id, _payload(
            row, status, r.error_code, r.info, r.observed_at, now, source=r.source)))
    return Outcome(result, w.state)


def _payload(row: Row[Any], status: int, error_code: int, info: str, observed_at: datetime | None, now: datetime,
             *, source: int | None = None, expired: bool = False) -> dict[str, Any]:
    return payloads.charger_status(
        station_id=row.station_id, operator_id=row.operator_id, evse_id=row.evse_id, connector_id=row.id,
        standard=row.standard, max_power_kw=row.max_power_kw, lat=row.lat, lon=row.lon,
        parking_lot_id=row.parking_lot_id, parking_spot_id=row.parking_spot_id, status=status,
        error_code=error_code, info=info, source=row.source if source is None else source, observed_at=observed_at,
        received_at=now, expired=expired)


def _station_params(spec: StationSpec) -> dict[str, Any]:
    connectors = [c for _, c in spec.connectors()]
    return {"id": spec.id, "operator_id": spec.operator_id, "name": spec.name, "address": spec.address,
            "lat": spec.lat, "lon": spec.lon, "lot": spec.parking_lot_id, "ttl": spec.status_ttl_s,
            "plug_mask": plug_mask(c.standard for c in connectors),
            "max_power": max(c.max_power_kw for c in connectors)}


def plug_mask(standards: Iterable[int]) -> int:
    mask = 0
    for s in standards:
        mask |= 1 << s
    return mask
