"""Scaling benchmark: the busiest rpc of each service at 1 and 2 replicas against a 3-node Valkey cluster, one run.

    flock /tmp/v2x-bench.lock .venv/bin/python load/bench_scaling.py [--json PATH] [--seconds 8] [--only parking,...]

What a run does (about four minutes on a 2-core machine):

1. starts an embedded 3-node Valkey cluster (the `v2x run --redis-cluster 3` one) and creates a fresh database
   `v2x_bench_scale_<pid>_<hex>` on the local PostgreSQL, migrated, with admin, police and operator keys;
2. for each workload, at 1 and then 2 replicas (`v2x serve NAME --processes R`: R processes sharing the port with
   SO_REUSEPORT, as `v2x run --replicas R` runs them), every process on the cluster (`V2X_REDIS_CLUSTER=1`,
   `V2X_FEED_SHARDS=6`, two shards a node):
   - parking `FindAvailable`: 300 lots seeded over 10 km x 10 km; random points, 1 km, only available, limit 20;
   - parking `StreamOccupancy`: 8 operator streams, batches of 50 reports of the stream's own lots, 4 in flight;
   - charging `FindChargers`: 200 stations of 2 connectors seeded; random points, 3 km;
   - idps `ReportEvent`: police reports at random points of the district, new incidents and correlated ones;
   - roadside `StreamFrames`: 4 cameras, 640x480 JPEG frames through the real YOLOv3-tiny detector, 2 in flight
     per camera (saturated, as `load/bench_roadside.py`);
   - municipal drain: a 20,000-record outbox backlog to the platform emulator, from resume to the last record.
   The rpc workloads are closed loops (`--concurrency` calls in flight, default 16, over as many connections: the
   kernel spreads connections, not calls, over the processes). Each phase has a warm-up (not counted) and a measured
   stretch; the CPU of the service's processes, the client (this process), PostgreSQL, the cluster's nodes and the
   whole machine is read from /proc over the measured stretch.
3. prints a table: rate at 1 and 2 replicas, the ratio, and the cores each party used; stops everything and drops
   the database (also after an error or Ctrl-C).

What bounds the ratio on a 2-core machine: one replica is one event loop on one core; a second replica can only use
the second core, which the client, PostgreSQL, the cluster's nodes and (for the drain) the receiver share. The
`machine` column says how busy both cores were: at ~2.0 the box, not the service, set the figure. The municipal
drain does not scale with replicas by design (one process owns a destination; the second is a standby).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from v2x.charging.v1 import charging_pb2 as cpb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2 as compb
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.municipal.v1 import municipal_pb2 as mpb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub
from v2x.roadside.v1.roadside_pb2_grpc import RoadsideServiceStub

from services.common.apikeys import create_key
from services.common.db import create_engine, migrate
from services.municipal.settings import MunicipalDestination
from services.municipal.store import MunicipalStore
from services.runner.embedded import EmbeddedRedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's `load`
from load.harness import free_port, percentile, tree_cpu_s, wait_all_processes

ROOT = Path(__file__).resolve().parents[1]
CENTRE = (31.40, 121.49)
SHARDS = 6
MUNICIPAL_SECRET = "bench-scaling-secret-0123456789"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _point(rng: random.Random, half_km: float = 5.0) -> tuple[float, float]:
    return (CENTRE[0] + rng.uniform(-half_km, half_km) / 111.0,
            CENTRE[1] + rng.uniform(-half_km, half_km) / 95.0)


def _latlon(p: tuple[float, float]) -> compb.LatLon:
    return compb.LatLon(lat=p[0], lon=p[1])


# ----- CPU accounting ---------------------------------------------------------------------------------------


def _stat_cpu_s(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_s() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            if raw[raw.find("(") + 1:raw.rfind(")")].startswith("postgres"):
                total += _stat_cpu_s(int(entry.name))
    return total


def _machine_busy_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cpu:
    """CPU seconds so far of each party."""

    service: float
    client: float
    postgres: float
    redis: float
    others: float  # processes of the workload outside the service (the municipal receiver)
    machine: float

    @classmethod
    def take(cls, service_pid: int, redis_pids: list[int], other_pids: list[int]) -> Cpu:
        return cls(tree_cpu_s(service_pid), time.process_time(), _postgres_cpu_s(),
                   sum(_stat_cpu_s(p) for p in redis_pids), sum(tree_cpu_s(p) for p in other_pids),
                   _machine_busy_s())

    def cores_since(self, start: Cpu, seconds: float) -> dict[str, float]:
        # max(0, ...): a PostgreSQL backend that exits in between takes its CPU time with it.
        return {k: round(max(0.0, getattr(self, k) - getattr(start, k)) / seconds, 2)
                for k in ("service", "client", "postgres", "redis", "others", "machine")}


# ----- the services --------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    processes: int
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, processes: int, env: dict[str, str], extra: dict[str, str]) -> Service:
    port = free_port()
    upper = name.upper()
    env = {**env, f"V2X_{upper}_PORT": str(port), f"V2X_{upper}_METRICS_PORT": str(free_port()), **extra}
    log_path = Path(tempfile.gettempdir()) / f"v2x_bench_scale_{os.getpid()}_{name}_{processes}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", name, "--processes", str(processes)],
                                env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Service(name, processes, proc, port, log_path)


async def wait_healthy(s: Service, timeout_s: float = 180.0) -> None:
    await wait_all_processes(s.proc, s.processes, s.log_tail, s.name, timeout_s)
    deadline = time.monotonic() + timeout_s
    async with aio.insecure_channel(f"127.0.0.1:{s.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode}:\n{s.log_tail()}")
            with contextlib.suppress(aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{s.name} was not healthy within {timeout_s:g} s:\n{s.log_tail()}")
            await asyncio.sleep(0.2)


async def stop_service(s: Service, grace_s: float = 20.0) -> None:
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(s.proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            await asyncio.to_thread(s.proc.wait)


def channels(port: int, n: int) -> list[aio.Channel]:
    # Each its own connection (no shared subchannel), like separate clients: the kernel spreads connections
    # over the processes sharing the port.
    return [aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(n)]


# ----- workloads ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    db_url: str
    keys: dict[str, str]
    rng: random.Random
    lots: list[str] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    cameras: list[str] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)

    def md(self, role: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.keys[role]}"),)


@dataclass
class Recorder:
    recording: bool = False
    done: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, n: int, latency: float) -> None:
        if self.recording:
            self.done += n
            self.latencies.append(latency)


Loop = Callable[[aio.Channel, int, asyncio.Event, Recorder], Coroutine[Any, Any, None]]


@dataclass
class Workload:
    key: str  # --only name
    service: str
    rpc: str
    unit: str
    seed: Callable[[aio.Channel, Context], Awaitable[None]]
    loop: Callable[[Context], Loop]
    extra_env: dict[str, str] = field(default_factory=dict)
    concurrency: int | None = None  # calls in flight (default --concurrency)


async def _seed_lots(channel: aio.Channel, ctx: Context) -> None:
    if ctx.lots:
        return
    stub = ParkingServiceStub(channel)
    for i in range(300):
        lot_id = f"SC{uuid.uuid4().hex[:6]}{i}"
        p = _point(ctx.rng)
        await stub.RegisterLot(ppb.RegisterLotRequest(lot=ppb.Lot(
            id=lot_id, operator_id="OPA", name=f"Lot {i}", address="宝山区", region_code="310113",
            kind=ppb.LOT_KIND_GARAGE, location=_latlon(p), capacity=ppb.Capacity(general=200, ev=10),
            price=ppb.PriceRule(free_minutes=15, first_hour_fen=800, per_hour_fen=600),
            opening_hours=ppb.OpeningHours(always_open=True), detection_type=ppb.DETECTION_TYPE_BALANCING)),
            metadata=ctx.md("admin"))
        ctx.lots.append(lot_id)
        ctx.sequences[lot_id] = 0


def _find_lots(ctx: Context) -> Loop:
    async def run(channel: aio.Channel, seed: int, stop: asyncio.Event, rec: Recorder) -> None:
        stub, rng, md = ParkingServiceStub(channel), random.Random(seed), ctx.md("driver")
        while not stop.is_set():
            request = ppb.FindAvailableRequest(location=_latlon(_point(rng)), radius_m=1000, limit=20,
                                               only_available=True)
            t0 = time.perf_counter()
            await stub.FindAvailable(request, metadata=md)
            rec.add(1, time.perf_counter() - t0)

    return run


def _occupancy(ctx: Context) -> Loop:
    """One operator stream per channel, over its own slice of the lots (sequences stay increasing per lot)."""
    async def run(channel: aio.Channel, seed: int, stop: asyncio.Event, rec: Recorder) -> None:
        stub, rng = ParkingServiceStub(channel), random.Random(seed)
        mine = ctx.lots[seed % 8::8]
        credit = asyncio.Semaphore(4)
        sent: list[float] = []

        async def source() -> AsyncIterator[ppb.OccupancyReportBatch]:
            while not stop.is_set():
                await credit.acquire()
                if stop.is_set():
                    return
                batch = ppb.OccupancyReportBatch()
                for lot_id in rng.sample(mine, min(50, len(mine))):
                    ctx.sequences[lot_id] += 1
                    r = batch.reports.add(lot_id=lot_id, sequence=ctx.sequences[lot_id])
                    r.observed_at.GetCurrentTime()
                    r.counts.add(space_class=ppb.SPACE_CLASS_GENERAL, free=rng.randint(0, 200))
                sent.append(time.perf_counter())
                yield batch

        call = stub.StreamOccupancy(source(), metadata=ctx.md("operator"))
        async for acks in call:
            accepted = sum(1 for a in acks.acks if a.result == ppb.ACK_RESULT_ACCEPTED)
            rec.add(accepted, time.perf_counter() - sent.pop(0))
            credit.release()

    return run


async def _seed_stations(channel: aio.Channel, ctx: Context) -> None:
    stub = ChargingServiceStub(channel)
    for i in range(200):
        sid = f"SS{uuid.uuid4().hex[:6]}{i}"
        p = _point(ctx.rng)
        evses = [cpb.Evse(id=f"E{k}", connectors=[cpb.Connector(
            id=f"{sid}-C{k}", standard=cpb.CONNECTOR_STANDARD_GBT_DC if k == 1 else cpb.CONNECTOR_STANDARD_GBT_AC,
            max_power_kw=120.0 if k == 1 else 7.0, price_per_kwh_fen=120, service_fee_per_kwh_fen=60)])
            for k in (1, 2)]
        await stub.RegisterStation(cpb.RegisterStationRequest(station=cpb.Station(
            id=sid, operator_id="OPA", name=f"Station {i}", location=_latlon(p), address="宝山区", evses=evses)),
            metadata=ctx.md("admin"))


def _find_chargers(ctx: Context) -> Loop:
    async def run(channel: aio.Channel, seed: int, stop: asyncio.Event, rec: Recorder) -> None:
        stub, rng, md = ChargingServiceStub(channel), random.Random(seed), ctx.md("driver")
        while not stop.is_set():
            request = cpb.FindChargersRequest(location=_latlon(_point(rng)), radius_m=3000, limit=20)
            t0 = time.perf_counter()
            await stub.FindChargers(request, metadata=md)
            rec.add(1, time.perf_counter() - t0)

    return run


async def _no_seed(channel: aio.Channel, ctx: Context) -> None:
    return None


def _report_events(ctx: Context) -> Loop:
    types = [ipb.EVENT_TYPE_ACCIDENT, ipb.EVENT_TYPE_STOPPED_VEHICLE, ipb.EVENT_TYPE_ILLEGAL_PARKING]

    async def run(channel: aio.Channel, seed: int, stop: asyncio.Event, rec: Recorder) -> None:
        stub, rng, md = IdpsServiceStub(channel), random.Random(seed), ctx.md("police")
        while not stop.is_set():
            request = ipb.ReportEventRequest(
                idempotency_key=uuid.uuid4().hex, source_id=f"officer-{seed}",
                source_kind=ipb.SOURCE_KIND_POLICE_OFFICER, type=rng.choice(types),
                position=_latlon(_point(rng)), confidence=0.7)
            request.observed_at.GetCurrentTime()
            t0 = time.perf_counter()
            await stub.ReportEvent(request, metadata=md)
            rec.add(1, time.perf_counter() - t0)

    return run


async def _seed_cameras(channel: aio.Channel, ctx: Context) -> None:
    from load.bench_roadside import bench_frames, configure_cameras

    if not ctx.frames:
        ctx.frames = bench_frames()[0]
    ctx.cameras = await configure_cameras(RoadsideServiceStub(channel), ctx.keys["admin"], 4,
                                          uuid.uuid4().hex[:6])


def _stream_frames(ctx: Context) -> Loop:
    from v2x.roadside.v1 import roadside_pb2 as rpb

    async def run(channel: aio.Channel, seed: int, stop: asyncio.Event, rec: Recorder) -> None:
        stub = RoadsideServiceStub(channel)
        camera = ctx.cameras[seed % len(ctx.cameras)]
        credit = asyncio.Semaphore(2)
        sent: dict[int, float] = {}

        async def source() -> AsyncIterator[rpb.Frame]:
            i = 0
            while not stop.is_set():
                await credit.acquire()
                if stop.is_set():
                    return
                i += 1
                frame = rpb.Frame(camera_id=camera, frame_id=i, encoded=ctx.frames[(seed * 5 + i) % len(ctx.frames)])
                frame.captured_at.FromNanoseconds(time.time_ns())
                sent[i] = time.perf_counter()
                yield frame

        seen_dropped = 0
        async for r in stub.StreamFrames(source(), metadata=ctx.md("admin")):
            t0 = sent.pop(r.frame_id, None)
            if not r.HasField("error") and t0 is not None:
                rec.add(1, time.perf_counter() - t0)
            for _ in range(1 + max(0, r.dropped_frames - seen_dropped)):
                credit.release()
            seen_dropped = r.dropped_frames

    return run


WORKLOADS = [
    Workload("find-lots", "parking", "FindAvailable", "queries/s", _seed_lots, _find_lots),
    Workload("occupancy", "parking", "StreamOccupancy", "reports/s", _seed_lots, _occupancy, concurrency=8),
    Workload("find-chargers", "charging", "FindChargers", "queries/s", _seed_stations, _find_chargers),
    Workload("report-event", "idps", "ReportEvent", "reports/s", _no_seed, _report_events),
    Workload("stream-frames", "roadside", "StreamFrames", "frames/s", _seed_cameras, _stream_frames, concurrency=4),
]


@dataclass
class Result:
    workload: str
    service: str
    rpc: str
    unit: str
    replicas: int
    rate: float
    p50_ms: float
    p99_ms: float
    cores: dict[str, float]


async def rpc_phase(w: Workload, ctx: Context, replicas: int, env: dict[str, str], redis_pids: list[int],
                    args: argparse.Namespace) -> Result:
    extra = {**w.extra_env}
    if w.service == "charging":
        extra["V2X_CHARGING_OCPP_PORT"] = str(free_port())
    s = start_service(w.service, replicas, env, extra)
    chans: list[aio.Channel] = []
    try:
        await wait_healthy(s)
        chans = channels(s.port, w.concurrency or args.concurrency)
        if replicas == 1:
            await w.seed(chans[0], ctx)
        loop = w.loop(ctx)
        rec, stop = Recorder(), asyncio.Event()
        tasks = [asyncio.create_task(loop(c, i, stop, rec)) for i, c in enumerate(chans)]
        try:
            await asyncio.sleep(args.warmup)
            cpu0 = Cpu.take(s.proc.pid, redis_pids, [])
            rec.recording, t0 = True, time.perf_counter()
            await asyncio.sleep(args.seconds)
            rec.recording = False
            elapsed = time.perf_counter() - t0
            cores = Cpu.take(s.proc.pid, redis_pids, []).cores_since(cpu0, elapsed)
        finally:
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise RuntimeError(f"{w.rpc}: {t.exception()!r}\n{s.log_tail()}")
    finally:
        for c in chans:
            await c.close()
        await stop_service(s)
    lat = sorted(rec.latencies)
    return Result(w.key, w.service, w.rpc, w.unit, replicas, rec.done / elapsed, percentile(lat, 0.5) * 1000,
                  percentile(lat, 0.99) * 1000, cores)


_BACKLOG = """
INSERT INTO outbox (kind, aggregate_id, payload)
SELECT 'lot_dynamic', 'SCM' || (g % $2), json_build_object(
    'lot_id', 'SCM' || (g % $2), 'sequence', g, 'observed_at', now(), 'received_at', now(),
    'capacity', json_build_object('general', 300, 'ev', 40, 'disabled', 6, 'reserved', 0),
    'free', json_build_object('general', g % 300, 'ev', 10, 'disabled', 2),
    'status', 'SITE_STATUS_SPACES_AVAILABLE', 'ttl_s', 600)
FROM generate_series($1::bigint, $1::bigint + $3 - 1) AS g"""


async def municipal_phase(ctx: Context, replicas: int, env: dict[str, str], redis_pids: list[int],
                          args: argparse.Namespace, receiver_port: int, receiver_pid: int) -> Result:
    """Drain of a backlog to the emulator by `v2x serve municipal --processes R`, from resume to the last record."""
    name = f"scale-{replicas}-{uuid.uuid4().hex[:6]}"
    url = f"http://127.0.0.1:{receiver_port}/municipal/v1/records"
    dest = MunicipalDestination(name=name, url=url, profile="municipal_json", secret=MUNICIPAL_SECRET,
                                batch_size=500, timeout_s=10.0, start="now")
    engine = create_engine(ctx.db_url, pool_size=2)
    store = MunicipalStore(engine)
    await store.ensure([dest])  # its cursor starts here: the backlog below is all it drains
    await store.set_paused(name, True, "benchmark: waiting for the start signal")
    conn = await asyncpg.connect(ctx.db_url)
    try:
        for start in range(0, args.changes, 10_000):
            await conn.execute(_BACKLOG, start, 1000, min(10_000, args.changes - start))
    finally:
        await conn.close()
    await engine.dispose()
    config = [{"name": name, "url": url, "profile": "municipal_json", "secret_env": "BENCH_SCALE_SECRET",
               "batch_size": 500, "timeout_s": 10.0, "start": "now"}]
    s = start_service("municipal", replicas, env, {"V2X_MUNICIPAL_DESTINATIONS": json.dumps(config),
                                                   "BENCH_SCALE_SECRET": MUNICIPAL_SECRET,
                                                   "V2X_MUNICIPAL_RECONCILE_HOUR": "-1"})
    try:
        await wait_healthy(s)
        async with aiohttp.ClientSession() as http, aio.insecure_channel(f"127.0.0.1:{s.port}") as channel:
            async with http.post(f"http://127.0.0.1:{receiver_port}/_admin/reset") as r:
                assert r.status == 200

            async def unique() -> int:
                async with http.get(f"http://127.0.0.1:{receiver_port}/_admin/state") as r:
                    return int((await r.json())["unique_records"])

            stub = MunicipalAdminServiceStub(channel)
            cpu0 = Cpu.take(s.proc.pid, redis_pids, [receiver_pid])
            t0 = time.perf_counter()
            await stub.Resume(mpb.ResumeRequest(destination=name), metadata=ctx.md("admin"))
            while await unique() < args.changes:
                if time.perf_counter() - t0 > 300 or s.proc.poll() is not None:
                    raise RuntimeError(f"the adapter did not drain {args.changes} records:\n{s.log_tail()}")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cores = Cpu.take(s.proc.pid, redis_pids, [receiver_pid]).cores_since(cpu0, elapsed)
    finally:
        await stop_service(s)
    nan = float("nan")
    return Result("drain", "municipal", "outbox drain", "records/s", replicas, args.changes / elapsed, nan, nan,
                  cores)


# ----- the run -----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = f"v2x_bench_scale_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{db}"')
    base = args.pg_admin.rpartition("/")[0]
    db_url = f"{base}/{db}"
    results: list[Result] = []
    receiver: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        await migrate(db_url)
        engine = create_engine(db_url, pool_size=2)
        keys = {role.split(":")[0]: (await create_key(engine, role, "bench-scaling")).key
                for role in ("admin", "police", "driver", "operator:OPA")}
        await engine.dispose()
        ctx = Context(db_url, keys, random.Random(args.seed))
        with EmbeddedRedisCluster(3, base_dir=tempfile.mkdtemp(prefix="v2x-bench-cluster-")) as cluster:
            redis_pids = [n.pid for n in cluster.nodes if n.pid is not None]
            env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": cluster.url, "V2X_REDIS_CLUSTER": "1",
                   "V2X_FEED_SHARDS": str(SHARDS), "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING",
                   "V2X_GRACE_S": "2"}
            for w in WORKLOADS:
                if args.only and w.key not in args.only:
                    continue
                for replicas in (1, 2):
                    r = await rpc_phase(w, ctx, replicas, env, redis_pids, args)
                    results.append(r)
                    print(f"  {w.service:9} {w.rpc:16} x{replicas}: {r.rate:9,.0f} {w.unit:10} "
                          f"machine {r.cores['machine']:.2f} cores", flush=True)
            if not args.only or "drain" in args.only:
                port = free_port()
                receiver = start_receiver(port)
                await _wait_http(f"http://127.0.0.1:{port}/healthz")
                for replicas in (1, 2):
                    r = await municipal_phase(ctx, replicas, env, redis_pids, args, port, receiver.pid)
                    results.append(r)
                    print(f"  municipal outbox drain      x{replicas}: {r.rate:9,.0f} records/s  "
                          f"machine {r.cores['machine']:.2f} cores", flush=True)
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                receiver.wait(10)
            if receiver.poll() is None:
                receiver.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    return report(args, results, time.monotonic() - started)


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    """The platform emulator (`v2x platform-emulator`), as the municipal destination."""
    with open(Path(tempfile.gettempdir()) / f"v2x_bench_scale_{os.getpid()}_emulator.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "platform-emulator", "--port", str(port)],
                                env={**os.environ, "V2X_EMULATOR_SECRET": MUNICIPAL_SECRET, "LOG_LEVEL": "WARNING"},
                                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


async def _wait_http(url: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def report(args: argparse.Namespace, results: list[Result], seconds: float) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    by = {(r.workload, r.replicas): r for r in results}
    for (key, replicas), r in by.items():
        if replicas != 1 or (key, 2) not in by:
            continue
        two = by[(key, 2)]
        rows.append({"service": r.service, "rpc": r.rpc, "unit": r.unit, "rate_1": round(r.rate, 1),
                     "rate_2": round(two.rate, 1), "ratio": round(two.rate / r.rate, 2) if r.rate else None,
                     "p50_ms": [round(r.p50_ms, 2), round(two.p50_ms, 2)],
                     "p99_ms": [round(r.p99_ms, 2), round(two.p99_ms, 2)],
                     "cores_1": r.cores, "cores_2": two.cores})
    print()
    print(f"{'service':9} {'rpc':16} {'1 replica':>11} {'2 replicas':>11} {'ratio':>6}   "
          f"{'cores x1: service client pg redis other machine':48} cores x2: same")
    for row in rows:
        def cores(c: dict[str, float]) -> str:
            return (f"{c['service']:.2f} {c['client']:.2f} {c['postgres']:.2f} {c['redis']:.2f} {c['others']:.2f} "
                    f"{c['machine']:.2f}")

        print(f"{row['service']:9} {row['rpc']:16} {row['rate_1']:11,.0f} {row['rate_2']:11,.0f} "
              f"{row['ratio'] or 0:6.2f}   {cores(row['cores_1']):48} {cores(row['cores_2'])}")
    print(f"\n{len(rows)} workloads in {seconds:.0f} s; load average at the end {load_average()}; "
          f"{os.cpu_count()} cores")
    out = {"rows": rows, "seconds": round(seconds), "load_average_end": load_average(), "cores": os.cpu_count(),
           "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items() if k != "pg_admin"}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="measured stretch of each phase (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up of each phase, not counted (default 2)")
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight, one connection each (default 16)")
    p.add_argument("--changes", type=int, default=20_000, help="municipal backlog per phase (default 20,000)")
    p.add_argument("--only", type=lambda v: set(v.split(",")), default=set(),
                   help="workloads: find-lots, occupancy, find-chargers, report-event, stream-frames, drain")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--pg-admin", default=os.environ.get("V2X_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--json", help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)", flush=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
