"""Parking benchmark: occupancy ingest and FindAvailable against a city of 100,000 lots.

    .venv/bin/python load/bench_parking.py [--lots 100000] [--json results.json]

What it does, in one run of about two minutes:

1. creates a fresh database `v2x_bench_<pid>_<hex>` on the local PostgreSQL/PostGIS cluster, migrates
   it, and bulk-loads the lots with plain SQL (not measured): garages, surface lots and on-street
   segments over 30 km x 30 km around 31.40 N 121.49 E (half in 16 dense hubs, half uniform), with
   mixed capacities, tariffs and opening hours, and a first reading with 12 minutes of occupancy
   history per lot;
2. starts the parking service as separate processes (`v2x serve parking --processes 2`, one per core, sharing
   the port, as in production) and waits until every process serves;
3. measures, each phase for a bounded time after a short warm-up:
   - FindAvailable (1 km radius, random points in the district, only lots with free spaces) at each
     `--concurrency` level (calls in flight), through gRPC, then the same queries straight through
     `ParkingStore.find_available` in this process;
   - occupancy ingest through `StreamOccupancy`: `--operators` concurrent operator streams, each
     owning its share of the lots, `--window` reports in flight per stream in messages of `--batch`
     reports (the stream carries batches), ACCEPTED acks counted
     (an ack means committed); then the same work straight through `ParkingStore.apply_reports` +
     `AvailabilityFeed.publish` (same validation, transactions and publication, batches of the size
     the service formed, one worker per operator);
4. stops the service with SIGTERM and drops the database (also on error or Ctrl-C).

The client is one asyncio process. Next to the rates, the table gives the CPU each party used (per
operation and in cores), so a client bottleneck or other work on the machine is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from grpc import aio
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from v2x.common.v1 import common_pb2 as cpb
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.apikeys import create_key
from services.common.config import Settings
from services.common.db import create_engine, migrate
from services.common.errors import DomainError
from services.common.fast_paths import FastPath
from services.common.principal import Principal
from services.common.redis_streams import create_redis
from services.parking import convert
from services.parking.availability import Period, multirange_literal, week_ranges
from services.parking.feed import AvailabilityFeed
from services.parking.model import Report
from services.parking.servicer import MAX_BATCH
from services.parking.store import ParkingStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's `load`
from load.harness import (
    Counter,
    CpuSnapshot,
    PhaseResult,
    ServiceProcess,
    Worker,
    channel,
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

CENTER = (31.40, 121.49)
HALF_SIDE_M = 15_000.0  # the district is 30 km x 30 km
SERVICE = "v2x.parking.v1.ParkingService"
CLASS_IDS = (pb.SPACE_CLASS_GENERAL, pb.SPACE_CLASS_EV, pb.SPACE_CLASS_DISABLED, pb.SPACE_CLASS_RESERVED)
GOAL_INGEST = 5000.0
GOAL_QPS = 1000.0
GOAL_P99_MS = 20.0
GOAL_RATIO = 0.5
# The fast paths the parking service and its raw baselines run (services/common/fast_paths.py), compared by --ab.
PARKING_FAST_PATHS = (FastPath.DRIVER_READS, FastPath.SPLICED_ANSWERS)


# ----- the city ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchLot:
    id: str
    operator: str
    classes: tuple[tuple[int, int], ...]  # (space class, capacity) for classes with capacity > 0


def random_point(rng: random.Random) -> tuple[float, float]:
    """A uniformly random point of the district (lat, lon)."""
    return offset(CENTER, rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), rng.uniform(-HALF_SIDE_M, HALF_SIDE_M))


def generate_city(n: int, operators: list[str], seed: int) -> tuple[list[BenchLot], list[list[Any]]]:
    """The lots, and the columns to load them with (one list per column of `_LOAD_LOTS`)."""
    rng = random.Random(seed)
    hubs = [(rng.uniform(-12_000, 12_000), rng.uniform(-12_000, 12_000), rng.uniform(800, 2500)) for _ in range(16)]
    day = [Period(d, 7 * 60, 22 * 60) for d in range(1, 8)]
    street_hours = [Period(d, 7 * 60, 21 * 60) for d in range(1, 8)]
    cols: list[list[Any]] = [[] for _ in range(20)]
    lots: list[BenchLot] = []
    for i in range(n):
        if rng.random() < 0.5:  # half the lots in dense hubs (centres, malls, stations), half spread out
            hx, hy, sigma = rng.choice(hubs)
            while True:
                north, east = rng.gauss(hx, sigma), rng.gauss(hy, sigma)
                if abs(north) <= HALF_SIDE_M and abs(east) <= HALF_SIDE_M:
                    break
        else:
            north, east = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)
        lat, lon = offset(CENTER, north, east)
        roll = rng.random()
        line: str | None = None
        entrances: list[dict[str, Any]] = []
        if roll < 0.25:
            kind, prefix = pb.LOT_KIND_GARAGE, "G"
            total = rng.choice([120, 180, 260, 400, 520, 800, 1200, 1500])
            ev = int(total * rng.choice([0, 0.05, 0.1, 0.15]))
            disabled = max(2, total // 100)
            reserved = rng.choice([0, 0, 10, 20])
            caps = (total - ev - disabled - reserved, ev, disabled, reserved)
            first, per, ttl = rng.choice([800, 1000, 1200, 1500]), rng.choice([500, 800, 1000]), 1800
            detection = pb.DETECTION_TYPE_BALANCING
            always_open = rng.random() < 0.8
            periods = [] if always_open else day
            entrances = [{"id": "E0", "lat": lat, "lon": lon, "entry": True, "exit": True}]
        elif roll < 0.55:
            kind, prefix = pb.LOT_KIND_SURFACE_LOT, "S"
            total = rng.choice([20, 30, 50, 80, 120, 200, 300])
            ev, disabled = rng.choice([0, 0, 2, 4, 8]), rng.choice([1, 2])
            caps = (total - ev - disabled, ev, disabled, 0)
            first, per, ttl = rng.choice([500, 600, 800]), rng.choice([300, 500]), 900
            detection = rng.choice([pb.DETECTION_TYPE_BALANCING, pb.DETECTION_TYPE_MODEL_BASED])
            always_open = rng.random() < 0.6
            periods = [] if always_open else day
        else:
            # Kerbside segments; counted by roadside cameras as class counts (no per-spot states here).
            kind, prefix = pb.LOT_KIND_ON_STREET_SEGMENT, "R"
            total = rng.choice([6, 8, 10, 12, 16, 20, 24, 30])
            disabled = 1 if total >= 12 else 0
            caps = (total - disabled, 0, disabled, 0)
            first = per = 1500
            ttl = 600
            detection = pb.DETECTION_TYPE_MODEL_BASED
            always_open, periods = False, street_hours
            heading, half = rng.random() * math.pi, total * 3.0
            a = offset(CENTER, north - half * math.cos(heading), east - half * math.sin(heading))
            b = offset(CENTER, north + half * math.cos(heading), east + half * math.sin(heading))
            line = f"LINESTRING({a[1]!r} {a[0]!r},{b[1]!r} {b[0]!r})"
        lot_id = f"BENCH-{prefix}{i:06d}"
        operator = operators[rng.randrange(len(operators))]
        lots.append(BenchLot(lot_id, operator, tuple((c, cap) for c, cap in zip(CLASS_IDS, caps, strict=True)
                                                     if cap > 0)))
        price = {"free_minutes": 15, "first_hour_fen": first, "per_hour_fen": per, "daily_cap_fen": 0,
                 "description": ""}
        row: list[Any] = [
            lot_id, operator, f"Bench {prefix}{i}", f"宝山区 bench road {i % 2000}", kind, lat, lon, line, *caps,
            json.dumps(price), max(first, per), json.dumps([p.__dict__ for p in periods]), always_open,
            multirange_literal(week_ranges(always_open, periods)), json.dumps(entrances), detection, ttl,
        ]
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return lots, cols


_LOAD_LOTS = """
INSERT INTO parking_lots (id, operator_id, name, address, region_code, kind, location, line, cap_general, cap_ev,
                          cap_disabled, cap_reserved, price, hourly_price_fen, opening, always_open, open_minutes,
                          entrances, detection_type, ttl_s)
SELECT id, op, name, addr, '310113', kind, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, line::geography,
       cg, ce, cd, cr, price::jsonb, hourly, opening::jsonb, ao, om::int4multirange, ent::jsonb, det, ttl
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::float8[], $7::float8[], $8::text[],
            $9::int[], $10::int[], $11::int[], $12::int[], $13::text[], $14::int[], $15::text[], $16::bool[],
            $17::text[], $18::text[], $19::int[], $20::int[])
     AS t(id, op, name, addr, kind, lat, lon, line, cg, ce, cd, cr, price, hourly, opening, ao, om, ent, det, ttl)
"""

# A first reading for every lot, observed a few seconds ago, with 12 minutes of occupancy samples
# (one per 30 s, as a lot reporting continuously would have).
_FIRST_READING = """
INSERT INTO parking_lot_state (lot_id, seq, observed_at, received_at, free_general, free_ev, free_disabled,
                               free_reserved, trend, samples)
SELECT id, 1, now() - interval '5 s', now() - interval '5 s',
       CASE WHEN cap_general > 0 THEN floor(random() * (cap_general + 1))::int END,
       CASE WHEN cap_ev > 0 THEN floor(random() * (cap_ev + 1))::int END,
       CASE WHEN cap_disabled > 0 THEN floor(random() * (cap_disabled + 1))::int END,
       CASE WHEN cap_reserved > 0 THEN floor(random() * (cap_reserved + 1))::int END,
       3,
       (SELECT jsonb_agg(jsonb_build_array(extract(epoch FROM now()) - 5 - 30 * k,
                                           round((cap_general + cap_ev + cap_disabled + cap_reserved)
                                                 * (0.4 + 0.3 * random())))
                         ORDER BY k DESC)
        FROM generate_series(0, 24) AS k)
FROM parking_lots
"""


# ----- ingest -----------------------------------------------------------------------------------


class ReportSource:
    """An operator's reports: a random one of its lots, the lot's next sequence, plausible counts."""

    def __init__(self, lots: list[BenchLot], sequences: dict[str, int], seed: int) -> None:
        self.lots = lots
        self.sequences = sequences
        self.rng = random.Random(seed)

    def batch(self, n: int) -> pb.OccupancyReportBatch:
        """`n` fresh reports (next sequence, new counts) in one stream message, observed now."""
        out = pb.OccupancyReportBatch()
        add = out.reports.add
        lots, sequences, pick, randint = self.lots, self.sequences, self.rng.randrange, self.rng.randint
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        for _ in range(n):
            lot = lots[pick(len(lots))]
            seq = sequences[lot.id] + 1
            sequences[lot.id] = seq
            report = add(lot_id=lot.id, sequence=seq, report_id=str(seq))
            observed = report.observed_at
            observed.seconds, observed.nanos = seconds, nanos
            counts = report.counts.add
            for space_class, cap in lot.classes:
                counts(space_class=space_class, free=randint(0, cap))
        return out


def grpc_ingest_worker(channel: aio.Channel, key: str, source: ReportSource, window: int, batch: int,
                       counter: Counter) -> Worker:
    """One operator stream: `batch` reports per message, up to `window` reports in flight."""

    async def run(stop: asyncio.Event) -> None:
        stub = ParkingServiceStub(channel)
        call = stub.StreamOccupancy(metadata=(("authorization", f"Bearer {key}"),))
        credit = asyncio.Semaphore(max(1, window // batch))

        async def write() -> None:
            while True:
                await credit.acquire()
                if stop.is_set():
                    break
                await call.write(source.batch(batch))
            await call.done_writing()

        writer = asyncio.create_task(write())
        try:
            while True:
                acks = await call.read()
                if acks is aio.EOF:
                    break
                assert isinstance(acks, pb.OccupancyAckBatch)
                for a in acks.acks:
                    counter.ack(a.result, a.error.message)
                credit.release()
            await writer
        finally:
            writer.cancel()

    return run


def raw_ingest_worker(store: ParkingStore, feed: AvailabilityFeed, settings: Settings, principal: Principal,
                      source: ReportSource, batch_size: int, counter: Counter) -> Worker:
    """What the service does for one operator stream, without gRPC: batches of the size the service
    formed (measured in its phase), each validated, applied in one transaction and published, as
    `ParkingServicer._process` does."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = source.batch(batch_size).reports
            now = datetime.now(UTC)
            valid: list[Report] = []
            for r in batch:
                try:
                    valid.append(convert.report(r, settings, now))
                except DomainError as exc:
                    counter.ack(pb.ACK_RESULT_REJECTED, exc.message)
            if valid:
                outcomes, changed = await store.apply_reports(principal, valid, now)
                await feed.publish(changed, now)
                for o in outcomes:
                    counter.ack(o.result, o.error.message if o.error else "")

    return run


# ----- FindAvailable ----------------------------------------------------------------------------


def find_request(rng: random.Random, radius_m: float) -> pb.FindAvailableRequest:
    lat, lon = random_point(rng)
    return pb.FindAvailableRequest(location=cpb.LatLon(lat=lat, lon=lon), radius_m=radius_m, limit=20,
                                   only_available=True)


def grpc_find_worker(channel: aio.Channel, key: str, seed: int, radius_m: float,
                     counter: Counter) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        stub = ParkingServiceStub(channel)
        rng = random.Random(seed)
        md = (("authorization", f"Bearer {key}"),)
        while not stop.is_set():
            request = find_request(rng, radius_m)
            t0 = time.perf_counter()
            response = await stub.FindAvailable(request, metadata=md)
            counter.timed(time.perf_counter() - t0, len(response.lots))

    return run


def raw_find_worker(store: ParkingStore, seed: int, radius_m: float,
                    counter: Counter) -> Worker:
    async def run(stop: asyncio.Event) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            request = find_request(rng, radius_m)
            t0 = time.perf_counter()
            views = await store.find_available(convert.find_query(request), datetime.now(UTC))
            counter.timed(time.perf_counter() - t0, len(views))

    return run


# ----- the run ----------------------------------------------------------------------------------


async def outbox_batches(conn: asyncpg.Connection, since: datetime) -> float | None:
    """Average reports per transaction since `since`: every accepted report writes one outbox row
    in the transaction of its batch (and outbox.txid is that transaction's id)."""
    rows, txs = await conn.fetchrow(
        "SELECT count(*), count(DISTINCT txid) FROM outbox WHERE kind = 'lot_dynamic' AND created_at >= $1", since)
    return round(rows / txs, 1) if txs else None


async def prepare(args: argparse.Namespace, admin: asyncpg.Connection, db_url: str,
                  operators: list[str]) -> tuple[list[BenchLot], dict[str, Any]]:
    t0 = time.perf_counter()
    await migrate(db_url)
    lots, cols = generate_city(args.lots, operators, args.seed)
    conn = await asyncpg.connect(db_url)
    try:
        chunk = 20_000
        for start in range(0, args.lots, chunk):
            await conn.execute(_LOAD_LOTS, *[c[start:start + chunk] for c in cols])
        await conn.execute("SELECT setseed($1)", (args.seed % 1000) / 1000)
        await conn.execute(_FIRST_READING)
        await conn.execute("VACUUM ANALYZE parking_lots")
        await conn.execute("VACUUM ANALYZE parking_lot_state")
        await conn.execute("CHECKPOINT")  # write the load out now, not during the first measured phase
        # Start from the cache a running service would have, not a cold one (indexes last: they stay).
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            await conn.execute(
                "SELECT pg_prewarm(r) FROM unnest(CAST(ARRAY['parking_lots', 'parking_lot_state', "
                "'parking_lots_pkey', 'parking_lot_state_pkey', 'parking_lots_location'] AS regclass[])) AS r")
        rng = random.Random(args.seed + 1)
        counts = sorted([
            await conn.fetchval(
                "SELECT count(*) FROM parking_lots WHERE ST_DWithin(location, "
                "ST_MakePoint($1, $2)::geography, $3, false)", lon, lat, args.radius)
            for lat, lon in (random_point(rng) for _ in range(300))
        ])
    finally:
        await conn.close()
    city = {"lots": args.lots, "load_s": round(time.perf_counter() - t0, 1),
            "lots_within_radius": {"mean": round(sum(counts) / len(counts), 1), "p10": percentile(counts, 0.1),
                                   "p50": percentile(counts, 0.5), "p90": percentile(counts, 0.9),
                                   "max": counts[-1]}}
    return lots, city


@dataclass
class Row:
    """One measured phase: what, how much in flight, service or raw."""

    kind: str  # "find" or "ingest"
    in_flight: str
    mode: str  # "service" or "raw"
    result: PhaseResult


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = f"v2x_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_url = with_db(args.pg_admin, db)
    operators = [f"BENCHOP{k:02d}" for k in range(args.operators)]
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{db}"')
    service: ServiceProcess | None = None
    engine: AsyncEngine | None = None
    redis: Redis | None = None
    try:
        r = Redis.from_url(args.redis_url)
        await r.flushdb()
        await r.aclose()
        print(f"setting up {args.lots:,} lots in database {db} ...", flush=True)
        lots, city = await prepare(args, admin, db_url, operators)
        within = city["lots_within_radius"]
        print(f"  loaded in {city['load_s']} s; lots within {args.radius:g} m of a random point: "
              f"mean {within['mean']}, p10 {within['p10']}, p50 {within['p50']}, p90 {within['p90']}, "
              f"max {within['max']}", flush=True)

        settings = Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": args.redis_url})
        engine = create_engine(db_url, pool_size=settings.db_pool_size, application_name="v2x-bench")
        redis = create_redis(args.redis_url)
        store = ParkingStore(engine)
        feed = AvailabilityFeed(redis, store, settings.redis_stream_maxlen)
        keys = {op: (await create_key(engine, f"operator:{op}", "bench")).key for op in operators}
        driver_key = (await create_key(engine, "driver", "bench")).key
        mine: dict[str, list[BenchLot]] = {op: [] for op in operators}
        for lot in lots:
            mine[lot.operator].append(lot)
        sequences = {lot.id: 1 for lot in lots}

        async def measure(variant: Variant, levels: list[int]) -> tuple[list[Row], float]:
            """Every phase with the service and this process running `variant`; (rows, seconds from the
            service's start until it served, its nearby index loaded)."""
            nonlocal service
            variant.apply()
            t0 = time.perf_counter()
            service = start_service("parking", {"DATABASE_URL": db_url, "REDIS_URL": args.redis_url,
                                                **variant.env()}, args.server_processes)
            await wait_healthy(service, SERVICE, args.server_processes)
            started_s = round(time.perf_counter() - t0, 2)
            pid = service.proc.pid

            async def cpu() -> CpuSnapshot:
                return CpuSnapshot.read(pid, await postgres_pids(admin, db))

            print(f"parking service ({variant.name}) pid {pid} on port {service.port}, serving after {started_s} s; "
                  f"each phase {args.warmup:g} s warm-up + {args.find_seconds:g} s (find) / {args.ingest_seconds:g} s "
                  f"(ingest); load average {load_average()}", flush=True)
            rows: list[Row] = []
            channels = [channel(service.port) for _ in range(args.find_channels)]
            try:
                # FindAvailable through gRPC, then the same queries straight against the store, per concurrency.
                for level in levels:
                    counter = Counter()
                    rows.append(Row("find", str(level), "service", await timed_phase(
                        args.find_seconds, args.warmup, cpu, counter,
                        [grpc_find_worker(channels[i % len(channels)], driver_key, args.seed + i, args.radius,
                                          counter) for i in range(level)])))
                    counter = Counter()
                    rows.append(Row("find", str(level), "raw", await timed_phase(
                        args.find_seconds, args.warmup, cpu, counter,
                        [raw_find_worker(store, args.seed + i, args.radius, counter) for i in range(level)])))
                    print(f"  FindAvailable with {level} in flight: service {rows[-2].result.rate:,.0f}/s, "
                          f"raw {rows[-1].result.rate:,.0f}/s", flush=True)

                # Occupancy ingest: one stream per operator, through gRPC, then the same straight against the store.
                for mode in ("service", "raw"):
                    await admin.execute("CHECKPOINT")  # both phases start at the same point of the checkpoint cycle
                    since = datetime.now(UTC)
                    counter = Counter(pb.AckResult.Name, pb.ACK_RESULT_ACCEPTED)  # type: ignore[arg-type]
                    workers: list[Worker] = []
                    # The raw baseline uses the batch size the service formed from its queues.
                    batch_size = (max(1, min(MAX_BATCH, round(rows[-1].result.avg_batch or MAX_BATCH)))
                                  if mode == "raw" else 0)
                    for k, op in enumerate(operators):
                        source = ReportSource(mine[op], sequences, args.seed * 100 + k + (50 if mode == "raw" else 0))
                        if mode == "service":
                            ch = channel(service.port)
                            channels.append(ch)
                            workers.append(grpc_ingest_worker(ch, keys[op], source, args.window, args.batch, counter))
                        else:
                            workers.append(raw_ingest_worker(store, feed, settings, Principal.parse(f"operator:{op}"),
                                                             source, batch_size, counter))
                    phase = await timed_phase(args.ingest_seconds, args.warmup, cpu, counter, workers)
                    conn = await asyncpg.connect(db_url)
                    try:
                        phase.avg_batch = await outbox_batches(conn, since)
                    finally:
                        await conn.close()
                    rows.append(Row("ingest", f"{args.operators}x{args.window}", mode, phase))
                    print(f"  ingest {mode}: {phase.rate:,.0f} updates/s", flush=True)
            finally:
                for ch in channels:
                    await ch.close()
            code = await stop_service(service)
            if code not in (0, -signal.SIGTERM):
                print(f"warning: the parking service exited with {code}:\n{service.log_tail()}", file=sys.stderr)
            return rows, started_s

        if not args.ab:
            rows, _ = await measure(FAST, args.concurrency)
            return report(args, city, rows)
        compared: list[tuple[Variant, list[Row], float]] = []
        for variant in variants(PARKING_FAST_PATHS):
            rows, started_s = await measure(variant, args.concurrency[:1])
            compared.append((variant, rows, started_s))
        FAST.apply()
        return ab_report(args, city, compared)
    finally:
        FAST.apply()
        if service is not None:
            await stop_service(service)
        if redis is not None:
            await redis.aclose()
        if engine is not None:
            await engine.dispose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def _ratio(rows: list[Row], kind: str, in_flight: str) -> float:
    by_mode = {r.mode: r.result.rate for r in rows if r.kind == kind and r.in_flight == in_flight}
    return round(by_mode["service"] / by_mode["raw"], 2) if by_mode.get("raw") else float("nan")


def report(args: argparse.Namespace, city: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    finds = [r for r in rows if r.kind == "find" and r.mode == "service"]
    best = max(finds, key=lambda r: r.result.rate)
    fast = [r for r in finds if r.result.p99_ms is not None and r.result.p99_ms <= GOAL_P99_MS]
    best_fast = max(fast, key=lambda r: r.result.rate) if fast else None
    ingest = next(r for r in rows if r.kind == "ingest" and r.mode == "service")
    ingest_ratio = _ratio(rows, "ingest", ingest.in_flight)
    find_ratio = _ratio(rows, "find", best.in_flight)
    goals: dict[str, dict[str, Any]] = {
        "ingest_updates_per_s": {"goal": f">= {GOAL_INGEST:g}", "value": round(ingest.result.rate),
                                 "met": ingest.result.rate >= GOAL_INGEST},
        "find_qps": {"goal": f">= {GOAL_QPS:g}", "value": round(best.result.rate), "met": best.result.rate >= GOAL_QPS,
                     "in_flight": best.in_flight},
        "find_p99_ms": {"goal": f"<= {GOAL_P99_MS:g}", "value": best.result.p99_ms, "in_flight": best.in_flight,
                        "met": best.result.p99_ms is not None and best.result.p99_ms <= GOAL_P99_MS},
        "find_qps_with_p99_within_goal": {
            "goal": f">= {GOAL_QPS:g} with p99 <= {GOAL_P99_MS:g} ms",
            "value": round(best_fast.result.rate) if best_fast else 0,
            "in_flight": best_fast.in_flight if best_fast else None,
            "met": best_fast is not None and best_fast.result.rate >= GOAL_QPS},
        "ingest_ratio": {"goal": f">= {GOAL_RATIO:g}", "value": ingest_ratio, "met": ingest_ratio >= GOAL_RATIO},
        "find_ratio": {"goal": f">= {GOAL_RATIO:g}", "value": find_ratio, "met": find_ratio >= GOAL_RATIO,
                       "in_flight": best.in_flight},
    }
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server_processes": args.server_processes,
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "pg_admin")},
        "city": city,
        "results": [{"kind": r.kind, "in_flight": r.in_flight, "mode": r.mode, **r.result.__dict__,
                     "cpu_us_per_op": r.result.cpu_us_per_op()} for r in rows],
        "ratios": {f"{r.kind}@{r.in_flight}": _ratio(rows, r.kind, r.in_flight) for r in rows if r.mode == "raw"},
        "goals": goals,
    }
    _print_table(args, city, rows, goals)
    return out


def ab_report(args: argparse.Namespace, city: dict[str, Any],
              compared: list[tuple[Variant, list[Row], float]]) -> dict[str, Any]:
    results = [(v.name, figures({f"{r.kind} {r.mode}": (r.result, r.mode == "service") for r in rows}, started))
               for v, rows, started in compared]
    print_ab(f"parking A/B: {city['lots']:,} lots, {args.concurrency[0]} FindAvailable calls in flight, "
             f"{args.operators} operator streams (CPU us/op: the service's in gRPC phases, this process' in raw ones)",
             results)
    return {"when": datetime.now(UTC).isoformat(timespec="seconds"), "load_average": load_average(),
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "pg_admin")}, "city": city,
            "ab": results}


def _print_table(args: argparse.Namespace, city: dict[str, Any], rows: list[Row],
                 goals: dict[str, dict[str, Any]]) -> None:
    def fmt(v: float | None, spec: str = ",.0f") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    within = city["lots_within_radius"]
    print()
    print(f"parking benchmark: {city['lots']:,} lots (mean {within['mean']:.0f}, p90 {within['p90']} within "
          f"{args.radius:g} m of a query point), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"service: {args.server_processes} process(es) (`serve --processes`; server = their sum)")
    head = (f"{'':<30}{'in flight':>10} {'mode':<8}{'rate/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'lots':>6}{'batch':>6}"
            f" | CPU us/op: client server   pg | cores: client server   pg redis  irq other")
    print(head)
    print("-" * len(head))
    labels = {"find": f"FindAvailable {args.radius:g} m", "ingest": "occupancy ingest (stream)"}
    last = ""
    for r in rows:
        p = r.result
        c, u = p.cpu_cores, p.cpu_us_per_op()
        label = labels[r.kind] if r.kind != last else ""
        last = r.kind
        print(f"{label:<30}{r.in_flight:>10} {r.mode:<8}{fmt(p.rate):>9}{fmt(p.p50_ms, '.1f'):>8}"
              f"{fmt(p.p99_ms, '.1f'):>8}{fmt(p.mean_items, '.0f'):>6}{fmt(p.avg_batch, '.0f'):>6}"
              f" |           {u['client']:>6.0f} {u['server']:>6.0f} {u['postgres']:>4.0f}"
              f" |        {c['client']:>6.2f} {c['server']:>6.2f} {c['postgres']:>4.2f} {c['redis']:>5.2f} "
              f"{c['irq']:>4.2f} {c['other']:>5.2f}")
        if p.not_accepted:
            print(f"{'':<41}{p.not_accepted} reports not ACCEPTED, e.g. {p.errors[:1]}")
        if r.mode == "raw":
            print(f"{'':<41}{'ratio':<8}{_ratio(rows, r.kind, r.in_flight):>9.2f}  (service / raw)")
    print("(pg: this database's backends and the cluster's shared writers; irq: interrupts and softirqs, mostly the "
          "loopback network;\n other: everything else running on the machine meanwhile)")
    print()
    for name, g in goals.items():
        where = f" at {g['in_flight']} in flight" if g.get("in_flight") else ""
        print(f"  {'met   ' if g['met'] else 'MISSED'}  {name:<31} {g['value']!s:>8}{where}  (goal {g['goal']})")


def _levels(value: str) -> list[int]:
    try:
        levels = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {value!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lots", type=int, default=100_000, help="lots in the city (default 100000)")
    p.add_argument("--operators", type=int, default=8, help="operator streams, each owning a share of the lots")
    p.add_argument("--window", type=int, default=1000, help="reports in flight per operator stream")
    p.add_argument("--batch", type=int, default=100, help="reports per StreamOccupancy message (default 100)")
    p.add_argument("--concurrency", type=_levels, default=[8, 16, 32],
                   help="FindAvailable calls in flight; a comma-separated list runs each (default 8,16,32)")
    p.add_argument("--find-channels", type=int, default=16,
                   help="gRPC connections the queries are spread over (the server processes share them)")
    p.add_argument("--server-processes", type=int, default=2,
                   help="`v2x serve parking --processes N`: one process per core of this machine (default 2)")
    p.add_argument("--radius", type=float, default=1000.0, help="FindAvailable radius, metres")
    p.add_argument("--ingest-seconds", type=float, default=12.0, help="measured seconds per ingest phase")
    p.add_argument("--find-seconds", type=float, default=8.0, help="measured seconds per FindAvailable phase")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    p.add_argument("--seed", type=int, default=20261124)
    p.add_argument("--pg-admin", default=os.environ.get("V2X_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin URL of the cluster to create the benchmark database in")
    p.add_argument("--redis-url", default=os.environ.get("V2X_BENCH_REDIS", "redis://127.0.0.1:6379/14"),
                   help="a Redis database the benchmark may flush")
    p.add_argument("--ab", action="store_true",
                   help="compare the fast paths: the phases (at the first --concurrency level) with every fast path "
                        "on, then with each off in turn (load/variants.py)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.lots < 1000 or args.operators < 1 or args.window < 1 or not 1 <= args.batch <= args.window:
        p.error("need --lots >= 1000, positive --operators and --window, and 1 <= --batch <= --window")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
