"""IDPS benchmark: sustained ReportEvent rate with correlation on, and report -> console latency.

    .venv/bin/python load/bench_idps.py [--rate 1000] [--subscribers 50] [--json results.json]

What it does, all in one run (about a minute and a half; bounded by --deadline, 180 s by default):

1. creates a fresh database `v2x_bench_idps_<pid>` on the local PostgreSQL/PostGIS cluster and migrates
   it; clears the IDPS keys of the benchmark's Redis database (db 15 unless --redis-url says otherwise);
2. starts the IDPS service as a separate process (`v2x serve idps`, with `--processes N` when
   `--server-processes N` > 1), as in production;
3. starts `--subscriber-processes` processes with `--subscribers` Subscribe streams in all, each on its own
   connection (like separate police consoles), unfiltered, and measures in the same run:
   - raw: Redis XADD -> XREAD latency to the same number of readers at the same rate, no service (each
     reader reads every entry, in batches: one XREAD per fan-out linger period, as the service reads);
   - paced: ReportEvent at `--rate` per second (open loop) for `--seconds`; the event mix is a city
     district of 10 km x 10 km with `--sites` places where something happens again and again (two cameras
     and officers reporting one crash, 30 m apart, mixed types of one family) plus one report in five at
     a place of its own, so most reports join an incident (correlation on, default windows 100 m / 120 s);
   - max: ReportEvent with `--concurrency` calls in flight for `--max-seconds`: the sustained rate;
   end-to-end latency is from just before a ReportEvent is sent to the moment each subscriber has the
   message with that incident version; "all" is, per report, the latency to the last of the subscribers;
4. stops the service with SIGTERM and drops the database (also on error or Ctrl-C).

Latencies are sampled (one report version in four, the same in both processes). Clocks: one machine,
`time.time()` in both client processes. The CPU columns say how much of a core each party used; the
machine column is the whole machine, other engineers' work included.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing as mp
import os
import pickle
import random
import signal
import sys
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import asyncpg
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc import aio
from redis.asyncio import Redis
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

from services.common.apikeys import create_key
from services.common.db import create_engine, migrate
from services.idps.feed import LINGER_S

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's `load`
from load.harness import (
    ServiceProcess,
    channel,
    offset,
    percentile,
    proc_cpu_s,
    start_service,
    stop_service,
    wait_healthy,
    with_db,
)

SERVICE = "v2x.idps.v1.IdpsService"
CENTER = (31.30, 121.50)
HALF_SIDE_M = 5_000.0
GOAL_RATE = 1000.0
GOAL_P99_MS = 100.0
RAW_STREAM = "v2x:{idpsbench}:raw"
SAMPLE = 4
# Paced phase: reports in flight at most; beyond it a due report is counted as skipped, not sent.
MAX_IN_FLIGHT = 256
FAMILIES = [
    (pb.EVENT_TYPE_ACCIDENT, pb.EVENT_TYPE_STOPPED_VEHICLE),
    (pb.EVENT_TYPE_STOPPED_VEHICLE,),
    (pb.EVENT_TYPE_THROWN_OBJECT,),
    (pb.EVENT_TYPE_TRAFFIC_JAM,),
    (pb.EVENT_TYPE_ROADWORKS,),
    (pb.EVENT_TYPE_SLIPPERY, pb.EVENT_TYPE_ICY),
]


def _slim_response() -> Any:
    """SubscribeResponse as a console of the benchmark reads it: the same bytes, but of each message only
    its kind and its incident's id and version are decoded (the other fields are skipped as unknown).
    Decoding all ~20 fields of every incident 50 times over cost the consoles a third of a core, taken
    from the service on this 2-core machine; what is timed (the arrival of each message) is the same."""
    f = descriptor_pb2.FileDescriptorProto(name="bench_idps_slim.proto", package="v2x.bench.idps", syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    inc = f.message_type.add(name="Incident")
    inc.field.add(name="id", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    inc.field.add(name="version", number=14, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    msg = f.message_type.add(name="IncidentMessage")
    msg.field.add(name="kind", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    msg.field.add(name="incident", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                  type_name=".v2x.bench.idps.Incident")
    out = f.message_type.add(name="SubscribeResponse")
    out.field.add(name="messages", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                  type_name=".v2x.bench.idps.IncidentMessage")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("v2x.bench.idps.SubscribeResponse"))


SLIM_RESPONSE = _slim_response()


def sampled(incident_id: str, version: int) -> bool:
    return zlib.crc32(f"{incident_id}:{version}".encode()) % SAMPLE == 0


# ----- CPU accounting ---------------------------------------------------------------------------


@dataclass
class Cpu:
    wall: float
    parties: dict[str, float]

    @classmethod
    def take(cls, pids: dict[str, list[int]]) -> Cpu:
        parties = {"postgres": 0.0, "redis": 0.0}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    comm, cpu = proc_cpu_s(entry)
                    if comm.startswith("postgres"):
                        parties["postgres"] += cpu
                    elif comm.startswith("redis-server"):
                        parties["redis"] += cpu
        for name, group in pids.items():
            parties[name] = 0.0
            for pid in group:
                with contextlib.suppress(OSError):
                    parties[name] += proc_cpu_s(pid)[1]
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        parties["machine"] = (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
        return cls(time.perf_counter(), parties)

    def since(self, start: Cpu) -> dict[str, float]:
        wall = self.wall - start.wall
        return {k: round((v - start.parties.get(k, 0.0)) / wall, 2) for k, v in self.parties.items()}


# ----- the subscriber process -------------------------------------------------------------------


def subscriber_process(port: int, redis_url: str, key: str, n: int, conn: Connection, out_path: str) -> None:
    """Runs in its own process: n Subscribe streams (or n raw XREAD readers), recording arrival times."""
    asyncio.run(_subscribers(port, redis_url, key, n, conn, out_path))


async def _subscribers(port: int, redis_url: str, key: str, n: int, conn: Connection, out_path: str) -> None:
    loop = asyncio.get_running_loop()
    results: dict[str, Any] = {}

    async def command() -> str:
        return cast(str, await loop.run_in_executor(None, conn.recv))

    # Raw baseline: n readers of a plain stream, entries carry their XADD time.
    raw_lat: list[float] = []
    # RESP2: redis-py's pure-Python parser costs ~25 us per entry per reader with it, ~30 with RESP3; at
    # 50 readers x 1,000 entries/s that parsing is the whole cost of the baseline.
    readers = [Redis.from_url(redis_url, protocol=2) for _ in range(n)]
    stop_raw = asyncio.Event()

    async def raw_reader(r: Redis) -> None:
        cursor: Any = b"$"
        while not stop_raw.is_set():
            reply = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                         await r.xread({RAW_STREAM: cursor}, count=1000, block=200))
            now = time.time()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    raw_lat.append(now - float(fields[b"t"]))
            if reply:
                # Read in batches as the service's fan-out does (one XREAD per linger period, not per entry).
                await asyncio.sleep(LINGER_S)

    tasks = [asyncio.create_task(raw_reader(r)) for r in readers]
    await asyncio.sleep(0.3)
    conn.send("raw-ready")
    assert await command() == "raw-stop"
    stop_raw.set()
    await asyncio.gather(*tasks)
    for r in readers:
        await r.aclose()
    results["raw"] = raw_lat

    # The consoles.
    arrivals: list[dict[str, float]] = [{} for _ in range(n)]
    counts = [0] * n
    resyncs = [0] * n
    live = [asyncio.Event() for _ in range(n)]
    channels = [aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(n)]

    async def console(i: int) -> None:
        subscribe = channels[i].unary_stream(f"/{SERVICE}/Subscribe",
                                             request_serializer=pb.SubscribeRequest.SerializeToString,
                                             response_deserializer=SLIM_RESPONSE.FromString)
        call = subscribe(pb.SubscribeRequest(), metadata=(("authorization", f"Bearer {key}"),))
        mine = arrivals[i]
        new, update = pb.IncidentMessage.KIND_NEW, pb.IncidentMessage.KIND_UPDATE
        async for response in call:
            now = time.time()
            for m in response.messages:
                kind = m.kind
                if kind in (new, update):
                    counts[i] += 1
                    inc = m.incident
                    if sampled(inc.id, inc.version):
                        mine[f"{inc.id}:{inc.version}"] = now
                elif kind == pb.IncidentMessage.KIND_SNAPSHOT_END:
                    live[i].set()
                elif kind == pb.IncidentMessage.KIND_RESYNC and live[i].is_set():
                    resyncs[i] += 1

    consoles = [asyncio.create_task(console(i)) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in live)), 30)
    conn.send("live")
    assert await command() == "stop"
    await asyncio.sleep(1.0)  # the last messages in flight
    for t in consoles:
        t.cancel()
    await asyncio.gather(*consoles, return_exceptions=True)
    for ch in channels:
        await ch.close()
    results.update(arrivals=arrivals, counts=counts, resyncs=resyncs)
    await asyncio.to_thread(Path(out_path).write_bytes, pickle.dumps(results))
    conn.send("done")


# ----- the reports ------------------------------------------------------------------------------


class EventMix:
    """Reports of a district: repeated happenings at `sites` places, and one in five somewhere new."""

    def __init__(self, sites: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sites = [(offset(CENTER, self.rng.uniform(-HALF_SIDE_M, HALF_SIDE_M), self.rng.uniform(-HALF_SIDE_M,
                                                                                           HALF_SIDE_M)),
                       FAMILIES[self.rng.randrange(len(FAMILIES))]) for _ in range(sites)]
        self.sources = [(pb.SOURCE_KIND_ROADSIDE_DETECTION, f"cam-{i}") for i in range(40)] + \
                       [(pb.SOURCE_KIND_POLICE_OFFICER, f"officer-{i}") for i in range(20)] + \
                       [(pb.SOURCE_KIND_EMERGENCY_CALL, f"call-{i}") for i in range(20)]

    def next(self) -> pb.ReportEventRequest:
        rng = self.rng
        if rng.random() < 0.2:
            (lat, lon), family = offset(CENTER, rng.uniform(-HALF_SIDE_M, HALF_SIDE_M),
                                         rng.uniform(-HALF_SIDE_M, HALF_SIDE_M)), FAMILIES[rng.randrange(6)]
        else:
            (lat, lon), family = self.sites[rng.randrange(len(self.sites))]
            lat += rng.uniform(-15, 15) / 111_320
            lon += rng.uniform(-15, 15) / 95_000
        kind, source = self.sources[rng.randrange(len(self.sources))]
        r = pb.ReportEventRequest(
            idempotency_key=uuid.uuid4().hex, source_id=source, source_kind=kind,
            type=family[rng.randrange(len(family))], position=cpb.LatLon(lat=lat, lon=lon),
            confidence=round(rng.uniform(0.4, 0.9), 2), lane_id=f"L{rng.randint(1, 3)}")
        r.observed_at.FromNanoseconds(time.time_ns())
        return r


@dataclass
class ReportLog:
    recording: bool = False
    sent: dict[str, float] = field(default_factory=dict)  # sampled "incident:version" -> send time
    rpc: list[float] = field(default_factory=list)
    done: int = 0
    opened: int = 0
    errors: int = 0
    first_error: str = ""
    skipped: int = 0


async def report_once(stub: Any, md: Any, mix: EventMix, log: ReportLog) -> None:
    request = mix.next()
    t0 = time.time()
    try:
        answer = await stub.ReportEvent(request, metadata=md)
    except aio.AioRpcError as exc:
        log.errors += 1
        log.first_error = log.first_error or f"{exc.code().name}: {exc.details()}"
        return
    if log.recording:
        log.done += 1
        log.opened += answer.opened
        log.rpc.append(time.time() - t0)
        if sampled(answer.incident_id, answer.incident_version):
            log.sent[f"{answer.incident_id}:{answer.incident_version}"] = t0


async def paced(stubs: list[Any], md: Any, mix: EventMix, log: ReportLog, rate: float, warmup: float,
                seconds: float) -> float:
    """Open loop at `rate` per second; returns the measured seconds."""
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    sent = 0
    measured_from = measured_to = 0.0
    while True:
        now = time.perf_counter() - start
        if now >= warmup and not log.recording and measured_from == 0.0:
            log.recording, measured_from = True, now
        if now >= warmup + seconds:
            log.recording, measured_to = False, now
            break
        due = int(now * rate) - sent
        for _ in range(max(0, due)):
            sent += 1
            if len(pending) >= MAX_IN_FLIGHT:  # the service is behind: the report is not sent
                log.skipped += log.recording
                continue
            task = asyncio.create_task(report_once(stubs[sent % len(stubs)], md, mix, log))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.sleep(0.002)
    await asyncio.gather(*pending)
    return measured_to - measured_from


async def closed_loop(stubs: list[Any], md: Any, mix: EventMix, log: ReportLog, concurrency: int, warmup: float,
                      seconds: float) -> float:
    stop = False

    async def worker(i: int) -> None:
        while not stop:
            await report_once(stubs[i % len(stubs)], md, mix, log)

    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    log.recording = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    log.recording = False
    elapsed = time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks)
    return elapsed


# ----- the service process ----------------------------------------------------------------------


def service_pids(pid: int) -> list[int]:
    """The service's process, and with `--processes N` its N children (the supervisor itself idles)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid, *(int(c) for c in f.read().split())]


async def clear_keys(redis: Redis) -> None:
    for pattern in ("v2x:{idps}:*", "v2x:{idpsbench}:*"):
        keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start:start + 1000])


# ----- the run ----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    cpu: dict[str, float]
    rpc_p50_ms: float | None = None
    rpc_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    e2e_all_p50_ms: float | None = None
    e2e_all_p99_ms: float | None = None
    deliveries: int = 0
    missing: int = 0
    joined_pct: float | None = None
    errors: int = 0
    first_error: str = ""
    skipped: int = 0
    # all-consoles p99 (ms) per second of the phase, by when the report was sent: shows whether a p99 comes from
    # the whole phase or from an episode (a pause somewhere and the queue behind it)
    all_p99_by_second: list[float] = field(default_factory=list)


def e2e(phase: Phase, log: ReportLog, arrivals: list[dict[str, float]]) -> None:
    per: list[float] = []
    worst: list[float] = []
    missing = 0
    first = min(log.sent.values(), default=0.0)
    by_second: collections.defaultdict[int, list[float]] = collections.defaultdict(list)
    for key, t0 in log.sent.items():
        times = [a[key] for a in arrivals if key in a]
        missing += len(arrivals) - len(times)
        per += [t - t0 for t in times]
        if len(times) == len(arrivals):
            worst.append(max(times) - t0)
            by_second[int(t0 - first)].append(max(times) - t0)
    ms = 1000.0
    per.sort()
    phase.e2e_p50_ms, phase.e2e_p99_ms = round(percentile(per, 0.5) * ms, 2), round(percentile(per, 0.99) * ms, 2)
    phase.e2e_all_p50_ms = round(percentile(sorted(worst), 0.5) * ms, 2)
    phase.e2e_all_p99_ms = round(percentile(sorted(worst), 0.99) * ms, 2)
    phase.deliveries, phase.missing = len(per), missing
    phase.all_p99_by_second = [round(percentile(sorted(by_second[k]), 0.99) * ms, 1) for k in sorted(by_second)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = f"v2x_bench_idps_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_url = with_db(args.pg_admin, db)
    load_before = os.getloadavg()
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{db}"')
    service: ServiceProcess | None = None
    subs_procs: list[Any] = []
    redis = Redis.from_url(args.redis_url)
    out_paths: list[Path] = []
    channels: list[aio.Channel] = []
    try:
        await clear_keys(redis)
        await migrate(db_url)
        engine = create_engine(db_url, pool_size=2)
        police = (await create_key(engine, "police", "bench")).key
        await engine.dispose()
        service = start_service("idps", {"DATABASE_URL": db_url, "REDIS_URL": args.redis_url},
                                args.server_processes)
        await wait_healthy(service, SERVICE, args.server_processes, timeout_s=60)
        port, proc = service.port, service.proc
        # The consoles are spread over a few processes (as they are over many machines in the field), so
        # that decoding 50 copies of every message is not capped at one core of the measuring side.
        parents: list[Connection] = []
        for i in range(args.subscriber_processes):
            share = args.subscribers // args.subscriber_processes + (i < args.subscribers % args.subscriber_processes)
            parent, child = mp.Pipe()
            out_paths.append(Path(tempfile.gettempdir()) / f"v2x_bench_{os.getpid()}_idps_subs_{i}.pickle")
            sub = mp.get_context("spawn").Process(target=subscriber_process, args=(
                port, args.redis_url, police, share, child, str(out_paths[-1])), daemon=True)
            sub.start()
            subs_procs.append(sub)
            parents.append(parent)
        pids = {"client": [os.getpid()], "subscribers": [cast(int, p.pid) for p in subs_procs],
                "server": service_pids(proc.pid)}
        loop = asyncio.get_running_loop()

        async def expect(word: str) -> None:
            for parent in parents:
                got = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 60)
                assert got == word, got

        def tell(word: str) -> None:
            for parent in parents:
                parent.send(word)

        print(f"idps service pid {proc.pid} on port {port}; subscriber process pids {pids['subscribers']}; "
              f"load average before: {load_before[0]:.2f}", flush=True)

        # Raw baseline: XADD at the same rate to the same number of readers.
        await expect("raw-ready")
        cpu0 = Cpu.take(pids)
        sent = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < args.raw_seconds:
            due = int(elapsed * args.rate) - sent
            if due > 0:
                async with redis.pipeline(transaction=False) as pipe:
                    for _ in range(due):
                        pipe.xadd(RAW_STREAM, {"t": repr(time.time())}, maxlen=100_000, approximate=True)
                    await pipe.execute()
                sent += due
            await asyncio.sleep(0.001)
        raw_phase = Phase("raw XADD->XREAD", sent / args.raw_seconds, args.raw_seconds, Cpu.take(pids).since(cpu0))
        tell("raw-stop")
        await expect("live")
        print("  raw baseline done; consoles live", flush=True)

        channels = [channel(port) for _ in range(args.channels)]
        stubs: list[Any] = [IdpsServiceStub(ch) for ch in channels]
        md = (("authorization", f"Bearer {police}"),)
        mix = EventMix(args.sites, args.seed)
        paced_log, max_log = ReportLog(), ReportLog()
        cpu0 = Cpu.take(pids)
        secs = await paced(stubs, md, mix, paced_log, args.rate, args.warmup, args.seconds)
        paced_phase = Phase(f"ReportEvent paced {args.rate:g}/s", paced_log.done / secs, secs,
                            Cpu.take(pids).since(cpu0))
        print("  paced phase done", flush=True)
        cpu0 = Cpu.take(pids)
        secs = await closed_loop(stubs, md, mix, max_log, args.concurrency, 2.0, args.max_seconds)
        max_phase = Phase(f"ReportEvent max ({args.concurrency} in flight)", max_log.done / secs, secs,
                          Cpu.take(pids).since(cpu0))
        print("  max phase done", flush=True)
        tell("stop")
        await expect("done")
        subs: dict[str, Any] = {"raw": [], "arrivals": [], "counts": [], "resyncs": []}
        for path in out_paths:
            part = pickle.loads(await asyncio.to_thread(path.read_bytes))
            for k, v in part.items():
                subs[k] += v
        raw = cast(list[float], subs["raw"])
        raw_phase.e2e_p50_ms = round(percentile(sorted(raw), 0.5) * 1000, 2)
        raw_phase.e2e_p99_ms = round(percentile(sorted(raw), 0.99) * 1000, 2)
        raw_phase.deliveries = len(raw)
        for phase, log in ((paced_phase, paced_log), (max_phase, max_log)):
            phase.rpc_p50_ms = round(percentile(sorted(log.rpc), 0.5) * 1000, 2)
            phase.rpc_p99_ms = round(percentile(sorted(log.rpc), 0.99) * 1000, 2)
            phase.joined_pct = round(100 * (1 - log.opened / log.done), 1) if log.done else None
            phase.errors, phase.first_error, phase.skipped = log.errors, log.first_error, log.skipped
            e2e(phase, log, subs["arrivals"])
        for ch in channels:
            await ch.close()
        channels = []
        code = await stop_service(service)
        if code not in (0, -signal.SIGTERM):
            print(f"warning: the idps service exited with {code}", file=sys.stderr)
        return report(args, [raw_phase, paced_phase, max_phase], subs, load_before)
    finally:
        for ch in channels:
            await ch.close()
        for sub in subs_procs:
            if sub.is_alive():
                sub.terminate()
        if service is not None:
            await stop_service(service)
        with contextlib.suppress(Exception):
            await clear_keys(redis)
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        for path in out_paths:
            with contextlib.suppress(OSError):
                path.unlink()


def report(args: argparse.Namespace, phases: list[Phase], subs: dict[str, Any],
           load_before: tuple[float, float, float]) -> dict[str, Any]:
    paced_phase, max_phase = phases[1], phases[2]
    sustained = max(paced_phase.rate, max_phase.rate)
    p99 = paced_phase.e2e_all_p99_ms
    goals: dict[str, dict[str, Any]] = {
        "report_rate_per_s": {"goal": f">= {GOAL_RATE:g}", "value": round(sustained), "met": sustained >= GOAL_RATE},
        "e2e_p99_ms_all_subscribers": {"goal": f"<= {GOAL_P99_MS:g}", "value": p99,
                                       "met": p99 is not None and p99 <= GOAL_P99_MS},
    }
    print()
    print(f"idps benchmark: {os.cpu_count()} CPUs (load average {load_before[0]:.2f} before the run), "
          f"{args.subscribers} subscribers, correlation 100 m / 120 s, {args.sites} repeat sites")
    head = (f"{'phase':<32}{'rate/s':>8}{'rpc p50':>9}{'rpc p99':>9}{'e2e p50':>9}{'e2e p99':>9}"
            f"{'all p50':>9}{'all p99':>9}{'joined':>8}   cpu: client subs server postgres redis (machine)")
    print(head)
    print("-" * len(head))

    def f(v: float | None, spec: str = ".2f") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    for p in phases:
        c = p.cpu
        joined = "-" if p.joined_pct is None else f"{p.joined_pct:.0f}%"
        print(f"{p.name:<32}{f(p.rate, ',.0f'):>8}{f(p.rpc_p50_ms):>9}{f(p.rpc_p99_ms):>9}{f(p.e2e_p50_ms):>9}"
              f"{f(p.e2e_p99_ms):>9}{f(p.e2e_all_p50_ms):>9}{f(p.e2e_all_p99_ms):>9}{joined:>8}"
              f"   {c.get('client', 0):>6.2f} {c.get('subscribers', 0):>4.2f} {c.get('server', 0):>6.2f}"
              f" {c.get('postgres', 0):>8.2f} {c.get('redis', 0):>5.2f} ({c.get('machine', 0):.2f})")
        if p.errors:
            print(f"{'':<32}{p.errors} errors, e.g. {p.first_error}")
        if p.skipped:
            print(f"{'':<32}{p.skipped} due reports not sent ({MAX_IN_FLIGHT} already in flight)")
        if p.missing:
            print(f"{'':<32}{p.missing} sampled deliveries missing (version superseded or stream ended)")
        if p.all_p99_by_second:
            print(f"{'':<32}all p99 per second: {' '.join(f'{v:.0f}' for v in p.all_p99_by_second)}")
    print(f"messages per subscriber: min {min(subs['counts'])}, max {max(subs['counts'])}; "
          f"resyncs after going live: {sum(subs['resyncs'])}")
    print("latencies in ms; e2e = report sent -> message at one subscriber; all = to the last of the subscribers")
    print()
    for name, g in goals.items():
        print(f"  {'met ' if g['met'] else 'MISSED'}  {name:<28} {g['value']!s:>8}  (goal {g['goal']})")
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_average_before": load_before},
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "pg_admin")},
        "phases": [p.__dict__ for p in phases],
        "subscribers": {"messages_min": min(subs["counts"]), "messages_max": max(subs["counts"]),
                        "resyncs": sum(subs["resyncs"])},
        "goals": goals,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=1000.0, help="paced ReportEvent rate, per second")
    p.add_argument("--subscribers", type=int, default=50, help="Subscribe streams (consoles)")
    p.add_argument("--subscriber-processes", type=int, default=2,
                   help="processes the consoles (and the raw readers) are spread over")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds of the paced phase")
    p.add_argument("--max-seconds", type=float, default=10.0, help="measured seconds of the max-rate phase")
    p.add_argument("--raw-seconds", type=float, default=6.0, help="seconds of the raw XADD->XREAD baseline")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before the paced phase")
    p.add_argument("--server-processes", type=int, default=1,
                   help="`v2x serve idps --processes N`: service processes sharing the port")
    p.add_argument("--concurrency", type=int, default=64, help="ReportEvent calls in flight in the max phase")
    p.add_argument("--channels", type=int, default=4, help="gRPC connections the reports are spread over")
    p.add_argument("--sites", type=int, default=2000, help="places where reports repeat")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--deadline", type=float, default=180.0, help="abort the whole run after this many seconds")
    p.add_argument("--pg-admin", default=os.environ.get("V2X_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an admin URL of the cluster to create the benchmark database in")
    p.add_argument("--redis-url", default=os.environ.get("V2X_BENCH_IDPS_REDIS", "redis://127.0.0.1:6379/15"),
                   help="a Redis database for the benchmark (its IDPS keys are deleted)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.subscribers < 1 or args.concurrency < 1:
        p.error("need a positive --rate, --subscribers and --concurrency")
    if not 1 <= args.subscriber_processes <= args.subscribers:
        p.error("--subscriber-processes must be between 1 and --subscribers")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(run(args), args.deadline)

    out = asyncio.run(bounded())
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")



if __name__ == "__main__":
    main()
