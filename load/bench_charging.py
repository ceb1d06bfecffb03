"""Charging benchmark: status ingest through gRPC and through OCPP, and FindChargers on 50,000 connectors.

    .venv/bin/python load/bench_charging.py [--connectors 50000] [--charge-points 500] [--json results.json]

What it does, all in one run (about two minutes on a 2-core machine):

1. creates a fresh database `v2x_bench_charging_<pid>_<hex>` on the local PostgreSQL/PostGIS cluster,
   migrates it and bulk-loads (unmeasured) ~12,500 stations with 50,000 connectors over 30 km x 30 km
   around 31.40 N 121.49 E (half in a few dense hubs, half uniform; 1-8 connectors per station; GB/T AC
   and DC, CCS2, Type 2, CHAdeMO; 7-240 kW), each with a fresh first reading; `--charge-points` of the
   stations are driven by OCPP charge points (half 1.6J, half 2.0.1), registered with real passwords;
2. starts the charging service as a separate process (`v2x serve charging`, gRPC + OCPP gateway), as in
   production, and waits for its health check;
3. measures, each phase for a bounded time after a short warm-up, and each beside its raw baseline:
   - FindChargers (3 km radius, random points, limit 20, half of them available-only, a third GB/T DC
     only, a third >= 60 kW) through gRPC at each `--concurrency` level (default 1 and 4 calls in flight);
     the service answers from its in-memory nearby index (services/charging/index.py); raw: the same
     queries straight through `ChargingStore.find` (the PostGIS query). Then `--check-answers` random
     answers of the service are compared with PostGIS's, built at the same moment: they must be equal;
   - status ingest through `StreamStatus` (`--operators` operator streams, `--window` reports in flight
     each, ACCEPTED acks counted); raw: the same reports, validation and group commit straight through
     a `StatusWriter` in this process, without gRPC;
   - OCPP: `--charge-points` charge points connect over WebSocket (HTTP Basic, real password checks) and
     boot, then each sends StatusNotifications as fast as they are answered (the `ocpp` package's client,
     one message in flight per charge point, as OCPP requires); raw: the same number of concurrent
     single-report writers straight into a `StatusWriter`, without WebSocket and OCPP;
4. stops the service with SIGTERM and drops the database (also on error or Ctrl-C).

The clients run in this one asyncio process; the CPU table says how much of a core each party used (postgres:
the backends of the benchmark database), so a client bottleneck is visible. Other work on the machine shows
up as the machine's busy cores (of the CPUs it has) and the load average in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import ocpp.messages
from grpc import aio
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from v2x.charging.v1 import charging_pb2 as pb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as cpb
from websockets.asyncio.client import ClientConnection, connect

from services.charging import convert
from services.charging.feed import ChargingFeed
from services.charging.group_commit import MAX_BATCH, StatusWriter
from services.charging.model import Report
from services.charging.passwords import hash_password, new_password
from services.charging.settings import ChargingSettings
from services.charging.status import ocpp_ttl_s
from services.charging.store import ChargingStore, plug_mask
from services.common.apikeys import create_key
from services.common.config import Settings
from services.common.db import create_engine, migrate
from services.common.errors import DomainError
from services.common.fast_paths import FastPath
from services.common.redis_streams import create_redis
from services.common.stream_batches import batches

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's `load`
from load.chargepoints import Client16, Client201, basic, ocpp_now
from load.harness import (
    Counter,
    CpuSnapshot,
    PhaseResult,
    ServiceProcess,
    Worker,
    channel,
    free_port,
    load_average,
    offset,
    percentile,
    postgres_pids,
    start_service,
    stop_service,
    timed_phase,
    wait_healthy,
    with_db,
)
from load.variants import FAST, Variant, figures, print_ab, variants

ocpp.messages.ASYNC_VALIDATION = False  # as the gateway does: tiny schemas validate faster inline

CENTER = (31.40, 121.49)
HALF_SIDE_M = 15_000.0
SERVICE = "v2x.charging.v1.ChargingService"
STANDARDS = [(pb.CONNECTOR_STANDARD_GBT_DC, (60.0, 120.0, 160.0, 240.0), 0.45),
             (pb.CONNECTOR_STANDARD_GBT_AC, (7.0, 11.0, 22.0), 0.40),
             (pb.CONNECTOR_STANDARD_CCS2, (50.0, 150.0), 0.07),
             (pb.CONNECTOR_STANDARD_TYPE2, (11.0, 22.0), 0.05),
             (pb.CONNECTOR_STANDARD_CHADEMO, (50.0,), 0.03)]
PUSHED = (pb.CONNECTOR_STATUS_AVAILABLE, pb.CONNECTOR_STATUS_CHARGING, pb.CONNECTOR_STATUS_PREPARING,
          pb.CONNECTOR_STATUS_FINISHING)
GOAL_GRPC = 3000.0
GOAL_OCPP = 1000.0
GOAL_P99_MS = 20.0

BENCH_DB = f"v2x_bench_charging_{os.getpid()}_{uuid.uuid4().hex[:6]}"
# The fast paths the charging service and its raw baselines run (services/common/fast_paths.py), compared by --ab.
CHARGING_FAST_PATHS = (FastPath.DRIVER_READS, FastPath.SPLICED_ANSWERS)


# ----- the city ---------------------------------------------------------------------------------


@dataclass
class BenchStation:
    id: str
    operator: str
    connectors: list[str]
    charge_point: str = ""
    version: str = ""  # "1.6" or "2.0.1" for OCPP-driven stations
    password: str = ""


def random_point(rng: random.Random) -> tuple[float, float]:
    return offset(CENTER, rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), rng.uniform(-HALF_SIDE_M, HALF_SIDE_M))


def generate_city(n_connectors: int, operators: list[str], n_charge_points: int,
                  seed: int) -> tuple[list[BenchStation], dict[str, list[Any]], dict[str, list[Any]]]:
    rng = random.Random(seed)
    hubs = [(rng.uniform(-12_000, 12_000), rng.uniform(-12_000, 12_000), rng.uniform(800, 2500)) for _ in range(16)]
    stations: list[BenchStation] = []
    scol: dict[str, list[Any]] = {k: [] for k in ("id", "op", "name", "lat", "lon", "mask", "kw")}
    ccol: dict[str, list[Any]] = {k: [] for k in ("id", "station", "evse", "epos", "cp", "oevse", "oconn", "std", "kw",
                                                  "status")}
    total = 0
    i = 0
    while total < n_connectors:
        if rng.random() < 0.5:
            hx, hy, sigma = rng.choice(hubs)
            north, east = rng.gauss(hx, sigma), rng.gauss(hy, sigma)
            north, east = max(-HALF_SIDE_M, min(HALF_SIDE_M, north)), max(-HALF_SIDE_M, min(HALF_SIDE_M, east))
        else:
            north, east = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
        lat, lon = offset(CENTER, north, east)
        n = min(rng.choices([1, 2, 4, 6, 8], weights=[10, 30, 30, 15, 15])[0], n_connectors - total)
        sid = f"BS{i:06d}"
        st = BenchStation(sid, operators[rng.randrange(len(operators))], [])
        if i < n_charge_points:  # spread over the city like the rest (station order is random in space)
            st.operator, st.charge_point, st.version = "BENCHOCPP", f"BCP{i:04d}", "1.6" if i % 2 == 0 else "2.0.1"
        standard, powers, _ = rng.choices(STANDARDS, weights=[w for *_, w in STANDARDS])[0]
        kws = [rng.choice(powers) for _ in range(n)]
        for k, v in (("id", sid), ("op", st.operator), ("name", f"Bench station {i}"), ("lat", lat), ("lon", lon),
                     ("mask", plug_mask([standard])), ("kw", max(kws))):
            scol[k].append(v)
        for j in range(1, n + 1):
            cid = f"{sid}-{j}"
            st.connectors.append(cid)
            ocpp201 = st.version == "2.0.1"
            row = (cid, sid, f"E{j}", j - 1, st.charge_point, j if ocpp201 else 0,
                   (1 if ocpp201 else j) if st.charge_point else 0, standard, kws[j - 1],
                   rng.choices((*PUSHED[:2], pb.CONNECTOR_STATUS_FAULTED), weights=[55, 40, 5])[0])
            for key, value in zip(ccol, row, strict=True):
                ccol[key].append(value)
        stations.append(st)
        total += n
        i += 1
    return stations, scol, ccol


_LOAD_STATIONS = """
INSERT INTO charging_stations (id, operator_id, name, location, status_ttl_s, plug_mask, max_power_kw)
SELECT id, op, name, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, 3600, mask, kw
FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int[], $7::float8[])
     AS t(id, op, name, lat, lon, mask, kw)
"""
_LOAD_CONNECTORS = """
INSERT INTO charging_connectors (id, station_id, evse_id, evse_position, position, charge_point_id, ocpp_evse_id,
                                 ocpp_connector_id, standard, max_power_kw, price_per_kwh_fen, service_fee_per_kwh_fen)
SELECT id, station, evse, epos, 0, cp, oevse, oconn, std, kw, 100, 60
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[], $7::int[], $8::smallint[],
            $9::float8[]) AS t(id, station, evse, epos, cp, oevse, oconn, std, kw)
"""
# A first reading for every connector, a few seconds old, living an hour (the whole run).
_LOAD_STATE = """
INSERT INTO charging_connector_state (connector_id, status, error_code, source, observed_at, received_at,
                                      status_since, ttl_s)
SELECT id, status, 1, 1, now() - interval '5 s', now() - interval '5 s', now() - interval '5 s', 3600
FROM unnest($1::text[], $2::smallint[]) AS t(id, status)
"""


def _counter() -> Counter:
    return Counter(pb.AckResult.Name, pb.ACK_RESULT_ACCEPTED)  # type: ignore[arg-type]


# ----- FindChargers -----------------------------------------------------------------------------


def find_request(rng: random.Random, radius_m: float) -> pb.FindChargersRequest:
    lat, lon = random_point(rng)
    return pb.FindChargersRequest(
        location=cpb.LatLon(lat=lat, lon=lon), radius_m=radius_m, limit=20, available_only=rng.random() < 0.5,
        standard=pb.CONNECTOR_STANDARD_GBT_DC if rng.random() < 0.3 else pb.CONNECTOR_STANDARD_UNSPECIFIED,
        min_power_kw=60.0 if rng.random() < 0.3 else 0.0)


def grpc_find_worker(channel: aio.Channel, key: str, seed: int, radius_m: float, counter: Counter) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        stub = ChargingServiceStub(channel)
        rng = random.Random(seed)
        md = (("authorization", f"Bearer {key}"),)
        while not stop.is_set():
            request = find_request(rng, radius_m)
            t0 = time.perf_counter()
            response = await stub.FindChargers(request, metadata=md)
            counter.timed(time.perf_counter() - t0, len(response.stations))

    return run


async def check_answers(channel: aio.Channel, key: str, store: ChargingStore, seed: int, radius_m: float,
                        n: int) -> int:
    """How many of `n` random FindChargers answers of the service (its nearby index) equal the PostGIS answer
    built here at the same moment (nothing writes meanwhile)."""
    stub = ChargingServiceStub(channel)
    rng = random.Random(seed)
    equal = 0
    for _ in range(n):
        request = find_request(rng, radius_m)
        served = await stub.FindChargers(request, metadata=(("authorization", f"Bearer {key}"),))
        now = datetime.now(UTC)
        equal += served == convert.answer_proto(await store.find(convert.find_query(request), now), now)
    return equal


def raw_find_worker(store: ChargingStore, seed: int, radius_m: float, counter: Counter) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            request = find_request(rng, radius_m)
            t0 = time.perf_counter()
            matches = await store.find(convert.find_query(request), datetime.now(UTC))
            counter.timed(time.perf_counter() - t0, len(matches))

    return run


# ----- gRPC status ingest -----------------------------------------------------------------------


class ReportSource:
    """An operator's reports: a random one of its connectors, a status, observed now."""

    def __init__(self, connectors: list[str], seed: int) -> None:
        self.connectors = connectors
        self.rng = random.Random(seed)

    def next(self) -> pb.StatusReport:
        report = pb.StatusReport(connector_id=self.connectors[self.rng.randrange(len(self.connectors))],
                                 status=PUSHED[self.rng.randrange(len(PUSHED))])
        report.observed_at.FromNanoseconds(time.time_ns())
        return report


def grpc_ingest_worker(channel: aio.Channel, key: str, source: ReportSource, window: int, counter: Counter) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        stub = ChargingServiceStub(channel)
        call = stub.StreamStatus(metadata=(("authorization", f"Bearer {key}"),))
        credit = asyncio.Semaphore(window)

        async def write() -> None:
            while True:
                await credit.acquire()
                if stop.is_set():
                    break
                await call.write(source.next())
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            while True:
                ack = await call.read()
                if ack is aio.EOF:
                    break
                assert isinstance(ack, pb.StatusAck)
                counter.ack(ack.result, ack.error.message)
                credit.release()
            await writer
        finally:
            writer.cancel()

    return run


def raw_ingest_worker(writer: StatusWriter, settings: Settings, operator: str, source: ReportSource, window: int,
                      counter: Counter) -> Worker:
    """What the service does for one stream, without gRPC: the same batching (services/common/stream_batches: whatever
    queued up, at most MAX_BATCH), the same validation and group commit."""

    async def run(stop: asyncio.Event) -> None:
        credit = asyncio.Semaphore(window)

        async def arriving() -> AsyncIterator[pb.StatusReport]:
            while True:
                await credit.acquire()
                if stop.is_set():
                    return
                yield source.next()
                await asyncio.sleep(0)  # as reports arrive one by one from the network

        async with aclosing(batches(arriving(), limit=MAX_BATCH, buffered=4 * MAX_BATCH)) as stream:
            async for batch in stream:
                now = datetime.now(UTC)
                valid: list[Report] = []
                for r in batch:
                    try:
                        valid.append(convert.report(r, operator, settings, now))
                    except DomainError as exc:
                        counter.ack(pb.ACK_RESULT_REJECTED, exc.message)
                for o in await writer.submit(valid):
                    counter.ack(o.result, o.error.message if o.error else "")
                for _ in batch:
                    credit.release()

    return run


# ----- OCPP -------------------------------------------------------------------------------------


@dataclass
class OcppClient:
    station: BenchStation
    ws: ClientConnection
    cp: Any
    task: asyncio.Task[None]


async def connect_charge_point(url: str, st: BenchStation) -> OcppClient:
    protocol = "ocpp1.6" if st.version == "1.6" else "ocpp2.0.1"
    ws = await connect(f"{url}/{st.charge_point}", subprotocols=[protocol],  # type: ignore[list-item]
                       additional_headers={"Authorization": basic(st.charge_point, st.password)}, open_timeout=60,
                       compression=None)
    cp = (Client16 if st.version == "1.6" else Client201)(st.charge_point, ws, response_timeout=60)
    task = asyncio.create_task(cp.start())
    if st.version == "1.6":
        boot = await cp.call(call16.BootNotification(charge_point_model="Bench", charge_point_vendor="v2x"))
    else:
        boot = await cp.call(call201.BootNotification(charging_station={"model": "Bench", "vendor_name": "v2x"},
                                                      reason="PowerUp"))
    if boot.status != "Accepted":
        raise RuntimeError(f"{st.charge_point}: BootNotification {boot.status}")
    return OcppClient(st, ws, cp, task)


def status_message(st: BenchStation, k: int) -> Any:
    n = len(st.connectors)
    connector = k % n + 1
    if st.version == "1.6":
        return call16.StatusNotification(connector_id=connector, error_code="NoError",
                                         status="Available" if (k // n) % 2 else "Charging", timestamp=ocpp_now())
    return call201.StatusNotification(timestamp=ocpp_now(),
                                      connector_status="Available" if (k // n) % 2 else "Occupied",
                                      evse_id=connector, connector_id=1)


def ocpp_worker(client: OcppClient, counter: Counter, seed: int) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        k = random.Random(seed).randrange(1000)
        while not stop.is_set():
            k += 1
            message = status_message(client.station, k)
            t0 = time.perf_counter()
            await client.cp.call(message, suppress=False)
            counter.timed(time.perf_counter() - t0)

    return run


def raw_ocpp_worker(writer: StatusWriter, st: BenchStation, counter: Counter, heartbeat_s: int, seed: int) -> Worker:
    """One charge point's reports without WebSocket and OCPP: one report at a time into the writer."""
    source = pb.STATUS_SOURCE_OCPP16 if st.version == "1.6" else pb.STATUS_SOURCE_OCPP201

    async def run(stop: asyncio.Event) -> None:
        k = random.Random(seed).randrange(1000)
        n = len(st.connectors)
        while not stop.is_set():
            k += 1
            status = pb.CONNECTOR_STATUS_AVAILABLE if (k // n) % 2 else pb.CONNECTOR_STATUS_CHARGING
            report = Report(st.connectors[k % n], status, pb.CONNECTOR_ERROR_CODE_NO_ERROR, "", datetime.now(UTC),
                            source, st.charge_point, ocpp_ttl_s(heartbeat_s))
            t0 = time.perf_counter()
            [outcome] = await writer.submit([report])
            if outcome.error is not None:
                counter.ack(outcome.result, outcome.error.message)
            counter.timed(time.perf_counter() - t0)

    return run


# ----- the run ----------------------------------------------------------------------------------


async def wait_ocpp(service: ServiceProcess, timeout_s: float = 60.0) -> None:
    """Until the OCPP gateway (a background task that starts with the server) listens."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", service.ports["ocpp"])
            writer.close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the OCPP gateway did not listen")
        await asyncio.sleep(0.2)


async def outbox_batches(db_url: str, since: datetime) -> float | None:
    """Average status changes per transaction since `since` (each writes one outbox row in its batch's
    transaction, and outbox.txid is that transaction's id)."""
    conn = await asyncpg.connect(db_url)
    try:
        rows, txs = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT txid) FROM outbox WHERE kind = 'charger_status' AND created_at >= $1",
            since)
    finally:
        await conn.close()
    return round(rows / txs, 1) if txs else None


async def prepare(args: argparse.Namespace, db_url: str, operators: list[str]) -> tuple[list[BenchStation],
                                                                                          dict[str, Any]]:
    t0 = time.perf_counter()
    await migrate(db_url)
    stations, scol, ccol = generate_city(args.connectors, operators, args.charge_points, args.seed)
    driven = [s for s in stations if s.charge_point]
    for st in driven:
        st.password = new_password()
    with ThreadPoolExecutor(2) as pool:  # the real salted hashes the gateway will check
        hashes = list(pool.map(hash_password, [s.password for s in driven]))
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(_LOAD_STATIONS, *scol.values())
        chunk = 25_000
        cols = [ccol[k] for k in ("id", "station", "evse", "epos", "cp", "oevse", "oconn", "std", "kw")]
        for start in range(0, len(ccol["id"]), chunk):
            await conn.execute(_LOAD_CONNECTORS, *[c[start:start + chunk] for c in cols])
            await conn.execute(_LOAD_STATE, ccol["id"][start:start + chunk], ccol["status"][start:start + chunk])
        await conn.executemany(
            "INSERT INTO charging_charge_points (id, station_id, protocol, password_hash, heartbeat_s) "
            "VALUES ($1, $2, $3, $4, 60)",
            [(s.charge_point, s.id, pb.OCPP_PROTOCOL_OCPP16J if s.version == "1.6" else pb.OCPP_PROTOCOL_OCPP201, h)
             for s, h in zip(driven, hashes, strict=True)])
        for table in ("charging_stations", "charging_connectors", "charging_connector_state",
                      "charging_charge_points"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        rng = random.Random(args.seed + 1)
        counts = sorted([
            await conn.fetchval(
                "SELECT count(*) FROM charging_connectors c JOIN charging_stations s ON s.id = c.station_id "
                "WHERE ST_DWithin(s.location, ST_MakePoint($1, $2)::geography, $3, false)", lon, lat, args.radius)
            for lat, lon in (random_point(rng) for _ in range(200))
        ])
    finally:
        await conn.close()
    city = {"stations": len(stations), "connectors": len(ccol["id"]), "charge_points": len(driven),
            "load_s": round(time.perf_counter() - t0, 1),
            "connectors_within_radius": {"mean": round(sum(counts) / len(counts), 1), "p50": percentile(counts, 0.5),
                                         "p90": percentile(counts, 0.9), "max": counts[-1]}}
    return stations, city


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    db = BENCH_DB
    db_url = with_db(args.pg_admin, db)
    operators = [f"BENCHOP{k:02d}" for k in range(args.operators)]
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{db}"')
    service: ServiceProcess | None = None
    engine: AsyncEngine | None = None
    redis: Redis | None = None
    clients: list[OcppClient] = []
    writer_task: asyncio.Task[None] | None = None
    store: ChargingStore | None = None
    try:
        r = Redis.from_url(args.redis_url)
        await r.flushdb()
        await r.aclose()
        print(f"setting up {args.connectors:,} connectors in database {db} ...", flush=True)
        stations, city = await prepare(args, db_url, operators)
        within = city["connectors_within_radius"]
        print(f"  {city['stations']:,} stations, {city['charge_points']} OCPP charge points, loaded in "
              f"{city['load_s']} s; connectors within {args.radius:g} m of a random point: mean {within['mean']}, "
              f"p50 {within['p50']}, p90 {within['p90']}, max {within['max']}", flush=True)

        settings = Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": args.redis_url})
        engine = create_engine(db_url, pool_size=settings.db_pool_size, application_name="v2x-bench")
        redis = create_redis(args.redis_url)
        store = ChargingStore(engine)
        clock = lambda: datetime.now(UTC)  # noqa: E731
        writer = StatusWriter(store, ChargingFeed(redis, store, settings.redis_stream_maxlen, clock), clock)
        keys = {op: (await create_key(engine, f"operator:{op}", "bench")).key for op in operators}
        driver_key = (await create_key(engine, "driver", "bench")).key
        mine: dict[str, list[str]] = {op: [] for op in operators}
        for st in stations:
            if not st.charge_point:
                mine[st.operator] += st.connectors
        driven = [s for s in stations if s.charge_point]

        async def start(variant: Variant) -> tuple[ServiceProcess, float, Callable[[], Awaitable[CpuSnapshot]]]:
            """The service running `variant` (and this process too), the seconds until it served (its nearby index
            loaded), and its CPU snapshots."""
            variant.apply()
            t0 = time.perf_counter()
            ocpp_port = free_port()
            service = start_service("charging", {"DATABASE_URL": db_url, "REDIS_URL": args.redis_url,
                                                 "V2X_OCPP_PORT": str(ocpp_port), **variant.env()},
                                    args.server_processes, ocpp=ocpp_port)
            await wait_healthy(service, SERVICE, args.server_processes)
            await wait_ocpp(service)
            started_s = round(time.perf_counter() - t0, 2)
            pid = service.proc.pid

            async def cpu() -> CpuSnapshot:
                return CpuSnapshot.read(pid, await postgres_pids(admin, db))

            print(f"charging service ({variant.name}) pid {pid}: gRPC {service.port}, OCPP {service.ports['ocpp']}, "
                  f"serving after {started_s} s; phases: {args.warmup:g} s warm-up + {args.seconds:g} s each; "
                  f"load average {load_average()}", flush=True)
            return service, started_s, cpu

        async def finds(service: ServiceProcess, cpu: Callable[[], Awaitable[CpuSnapshot]], levels: list[int],
                        results: dict[str, dict[str, PhaseResult]]) -> None:
            """FindChargers through gRPC, then straight against the store, at each concurrency level."""
            channels = [channel(service.port) for _ in range(args.find_channels)]
            try:
                for level in levels:
                    kind = f"find@{level}"
                    results[kind] = {}
                    counter = _counter()
                    results[kind]["service"] = await timed_phase(
                        args.seconds, args.warmup, cpu, counter,
                        [grpc_find_worker(channels[i % len(channels)], driver_key, args.seed + i, args.radius, counter)
                         for i in range(level)])
                    counter = _counter()
                    results[kind]["raw"] = await timed_phase(
                        args.seconds, args.warmup, cpu, counter,
                        [raw_find_worker(store, args.seed + i, args.radius, counter) for i in range(level)])
                    print(f"  FindChargers with {level} in flight done", flush=True)
                equal = await check_answers(channels[0], driver_key, store, args.seed + 999, args.radius,
                                            args.check_answers)
            finally:
                for ch in channels:
                    await ch.close()
            city["find_answers_equal_to_postgis"] = f"{equal}/{args.check_answers}"
            print(f"  FindChargers answers equal to PostGIS's: {equal} of {args.check_answers}", flush=True)

        async def grpc_ingest(service: ServiceProcess, cpu: Callable[[], Awaitable[CpuSnapshot]],
                              results: dict[str, dict[str, PhaseResult]]) -> None:
            """Status ingest: one stream per operator through gRPC, then the same through a writer here."""
            results["grpc"] = {}
            channels: list[aio.Channel] = []
            try:
                for mode in ("service", "raw"):
                    await admin.execute("CHECKPOINT")
                    since = datetime.now(UTC)
                    counter = _counter()
                    workers: list[Worker] = []
                    for k, op in enumerate(operators):
                        source = ReportSource(mine[op], args.seed * 100 + k + (50 if mode == "raw" else 0))
                        if mode == "service":
                            ch = channel(service.port)
                            channels.append(ch)
                            workers.append(grpc_ingest_worker(ch, keys[op], source, args.window, counter))
                        else:
                            workers.append(raw_ingest_worker(writer, settings, op, source, args.window, counter))
                    phase = await timed_phase(args.seconds, args.warmup, cpu, counter, workers)
                    phase.avg_batch = await outbox_batches(db_url, since)
                    results["grpc"][mode] = phase
            finally:
                for ch in channels:
                    await ch.close()
            print("  gRPC status ingest done", flush=True)

        writer_task = asyncio.create_task(writer.run())
        if args.ab:
            compared: list[tuple[Variant, dict[str, dict[str, PhaseResult]], float]] = []
            for variant in variants(CHARGING_FAST_PATHS):
                service, started_s, cpu = await start(variant)
                results: dict[str, dict[str, PhaseResult]] = {}
                await finds(service, cpu, args.concurrency[:1], results)
                await grpc_ingest(service, cpu, results)
                await stop_service(service)
                compared.append((variant, results, started_s))
            FAST.apply()
            return ab_report(args, city, compared)

        service, _, cpu = await start(FAST)
        results = {}
        await finds(service, cpu, args.concurrency, results)
        await grpc_ingest(service, cpu, results)
        results["ocpp"] = {}

        # OCPP: connect and boot every charge point, then StatusNotifications as fast as answered.
        t0 = time.perf_counter()
        url = f"ws://127.0.0.1:{service.ports['ocpp']}/ocpp"
        gate = asyncio.Semaphore(args.connect_concurrency)

        async def connect_one(st: BenchStation) -> OcppClient:
            async with gate:
                return await connect_charge_point(url, st)

        clients = list(await asyncio.gather(*(connect_one(st) for st in driven)))
        connect_s = time.perf_counter() - t0
        print(f"  {len(clients)} charge points connected and booted in {connect_s:.1f} s", flush=True)
        for mode in ("service", "raw"):
            await admin.execute("CHECKPOINT")
            since = datetime.now(UTC)
            counter = _counter()
            if mode == "service":
                workers = [ocpp_worker(c, counter, args.seed + i) for i, c in enumerate(clients)]
            else:
                workers = [raw_ocpp_worker(writer, st, counter, ChargingSettings().ocpp_heartbeat_s, args.seed + i)
                           for i, st in enumerate(driven)]
            phase = await timed_phase(args.seconds, args.warmup, cpu, counter, workers)
            phase.avg_batch = await outbox_batches(db_url, since)
            results["ocpp"][mode] = phase
        print("  OCPP status ingest done", flush=True)

        for c in clients:
            c.task.cancel()
            await c.ws.close()
        clients = []
        code = await stop_service(service)
        if code not in (0, -signal.SIGTERM):
            print(f"warning: the charging service exited with {code}:\n{service.log_tail()}", file=sys.stderr)
        return report(args, city, results, connect_s, time.monotonic() - started)
    finally:
        if writer_task is not None:
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
        for c in clients:
            c.task.cancel()
            with contextlib.suppress(Exception):
                await c.ws.close()
        FAST.apply()
        if service is not None:
            await stop_service(service)
        if redis is not None:
            await redis.aclose()
        if store is not None:
            await store.close()
        if engine is not None:
            await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def report(args: argparse.Namespace, city: dict[str, Any], results: dict[str, dict[str, PhaseResult]],
           connect_s: float, total_s: float) -> dict[str, Any]:
    def ratio(kind: str) -> float:
        raw = results[kind]["raw"].rate
        return round(results[kind]["service"].rate / raw, 2) if raw else float("nan")

    find_kind = f"find@{args.concurrency[-1]}"  # the goal holds under the heaviest level measured
    find, grpc_, ocpp_ = (results[k]["service"] for k in (find_kind, "grpc", "ocpp"))
    goals: dict[str, dict[str, Any]] = {
        "grpc_status_updates_per_s": {"goal": f">= {GOAL_GRPC:g}", "value": round(grpc_.rate),
                                      "met": grpc_.rate >= GOAL_GRPC},
        "ocpp_status_notifications_per_s": {"goal": f">= {GOAL_OCPP:g} from {args.charge_points} charge points",
                                            "value": round(ocpp_.rate), "met": ocpp_.rate >= GOAL_OCPP},
        "find_p99_ms": {"goal": f"<= {GOAL_P99_MS:g} with {args.concurrency[-1]} in flight", "value": find.p99_ms,
                        "met": find.p99_ms is not None and find.p99_ms <= GOAL_P99_MS},
    }
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_1m": os.getloadavg()[0]},
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "pg_admin")},
        "city": city,
        "ocpp_connect_and_boot_s": round(connect_s, 1),
        "total_s": round(total_s, 1),
        "results": {kind: {**{mode: r.__dict__ for mode, r in modes.items()}, "ratio": ratio(kind)}
                    for kind, modes in results.items()},
        "goals": goals,
    }
    _print_table(args, city, results, {k: ratio(k) for k in results}, goals, connect_s)
    return out


def ab_report(args: argparse.Namespace, city: dict[str, Any],
              compared: list[tuple[Variant, dict[str, dict[str, PhaseResult]], float]]) -> dict[str, Any]:
    results = [(v.name, figures({f"{kind} {mode}": (r, mode == "service") for kind, by_mode in res.items()
                                 for mode, r in by_mode.items()}, started))
               for v, res, started in compared]
    print_ab(f"charging A/B: {city['connectors']:,} connectors, {args.concurrency[0]} FindChargers calls in flight, "
             f"{args.operators} operator streams (CPU us/op: the service's in gRPC phases, this process' in raw ones)",
             results)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "load_average": load_average(),
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "pg_admin")}, "city": city,
            "ab": results}


def _print_table(args: argparse.Namespace, city: dict[str, Any], results: dict[str, dict[str, PhaseResult]],
                 ratios: dict[str, float], goals: dict[str, dict[str, Any]], connect_s: float) -> None:
    def fmt(v: float | None, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'phase':<34}{'mode':<9}{'rate':>9}{'p50 ms':>9}{'p99 ms':>9}{'st/ans':>8}{'batch':>7}"
            f"   cpu cores: client server pg(db) redis (machine busy)")
    print()
    print(f"charging benchmark: {city['connectors']:,} connectors at {city['stations']:,} stations, "
          f"{os.cpu_count()} CPUs; FindChargers radius {args.radius:g} m; "
          f"{args.operators} operator streams x {args.window} reports in flight; {city['charge_points']} OCPP "
          f"charge points (connected + booted in {connect_s:.1f} s)")
    print(head)
    print("-" * len(head))
    labels = {f"find@{n}": f"FindChargers, {n} in flight (q/s)" for n in args.concurrency}
    labels.update({"grpc": "status via gRPC stream (updates/s)", "ocpp": "status via OCPP (notifications/s)"})
    for kind in labels:
        for mode in ("service", "raw"):
            r = results[kind][mode]
            c = r.cpu_cores
            print(f"{labels[kind] if mode == 'service' else '':<34}{mode:<9}{fmt(r.rate):>9}"
                  f"{fmt(r.p50_ms, '.2f'):>9}{fmt(r.p99_ms, '.2f'):>9}{fmt(r.mean_items, '.1f'):>8}"
                  f"{fmt(r.avg_batch, '.0f'):>7}   {c['client']:>6.2f} {c['server']:>6.2f} {c['postgres']:>8.2f} "
                  f"{c['redis']:>5.2f} ({c['machine_busy']:.2f})")
            if r.not_accepted:
                print(f"{'':<34}{'':<9}  {r.not_accepted} not ACCEPTED, e.g. {r.errors[:1]}")
        print(f"{'':<34}{'ratio':<9}{ratios[kind]:>9.2f}  (service / raw)")
    print()
    for name, g in goals.items():
        print(f"  {'met ' if g['met'] else 'MISSED'}  {name:<34} {g['value']!s:>8}  (goal {g['goal']})")
    if "find_answers_equal_to_postgis" in city:
        print(f"  FindChargers answers equal to PostGIS's: {city['find_answers_equal_to_postgis']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connectors", type=int, default=50_000, help="connectors in the city (default 50000)")
    p.add_argument("--charge-points", type=int, default=500, help="OCPP charge points (half 1.6J, half 2.0.1)")
    p.add_argument("--operators", type=int, default=8, help="operator streams, each owning a share of the stations")
    p.add_argument("--window", type=int, default=500, help="reports in flight per operator stream")
    p.add_argument("--concurrency", type=lambda v: sorted(int(x) for x in v.split(",")), default=[1, 4],
                   help="FindChargers calls in flight, one phase per comma-separated level (default 1,4)")
    p.add_argument("--find-channels", type=int, default=16,
                   help="gRPC connections the queries are spread over (the server processes share them)")
    p.add_argument("--server-processes", type=int, default=1,
                   help="`v2x serve charging --processes N` (default 1: clients, PostgreSQL and the status "
                        "writer's transactions leave no second core to a second process here)")
    p.add_argument("--check-answers", type=int, default=200,
                   help="random FindChargers answers compared with PostGIS's after the find phases (default 200)")
    p.add_argument("--connect-concurrency", type=int, default=50, help="charge points connecting at once")
    p.add_argument("--radius", type=float, default=3000.0, help="FindChargers radius, metres")
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--pg-admin", default=os.environ.get("V2X_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin URL of the cluster to create the benchmark database in")
    p.add_argument("--redis-url", default=os.environ.get("V2X_BENCH_CHARGING_REDIS", "redis://127.0.0.1:6379/12"),
                   help="a Redis database the benchmark may flush")
    p.add_argument("--ab", action="store_true",
                   help="compare the fast paths: FindChargers (at the first --concurrency level) and gRPC ingest with "
                        "every fast path on, then with each off in turn (load/variants.py); no OCPP phases")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if (args.connectors < 1000 or args.charge_points < 1 or args.operators < 1 or args.window < 1
            or min(args.concurrency) < 1):
        p.error("need --connectors >= 1000 and positive --charge-points, --operators, --window")
    if args.charge_points * 8 > args.connectors // 2:
        p.error("--charge-points may drive at most half of the stations")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
