"""Web console benchmark: incident latency to police consoles through the console's SSE bridge, against the same
number of consoles on IDPS Subscribe directly (the raw baseline, in the same run).

    flock /tmp/v2x-bench.lock .venv/bin/python load/bench_console.py [--consoles 50] [--rate 20] [--seconds 30]

1. a fresh database `v2x_bench_console_<pid>` on the local PostgreSQL/PostGIS cluster (migrated, dropped at the
   end) and a Redis server of the benchmark's own;
2. `v2x serve idps` and `v2x console` as separate processes, as `v2x run` has them;
3. `--consoles` police sessions on the console's `GET /api/v1/incidents/stream` (each signed in, each on its own
   connection) and as many Subscribe streams straight to IDPS;
4. ReportEvent at `--rate` per second (open loop) for `--seconds`, each at a place of its own (a new incident);
   the latency is from just before a ReportEvent is sent to the moment a console has the incident's NEW message;
5. the console's CPU (user + system) over the phase, per event it sent.
One client process does everything on the client side; its clock is the only clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp
from v2x.common.v1 import common_pb2 as cpb
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load.harness import (
    ServiceProcess,
    channel,
    free_port,
    load_average,
    percentile,
    proc_cpu_s,
    start_service,
    stop_service,
    wait_healthy,
    with_db,
)
from services.common.apikeys import create_key
from services.common.db import create_engine, migrate
from services.runner.embedded import EmbeddedRedis

PG_ADMIN = os.environ.get("V2X_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class Arrivals:
    """When each consumer saw each incident's NEW message (perf_counter)."""

    def __init__(self, consumers: int) -> None:
        self.by_consumer: list[dict[str, float]] = []
        self.consumers = consumers
        self.ready = 0
        self.all_ready = asyncio.Event()  # every consumer is through its snapshot

    def one_ready(self) -> None:
        self.ready += 1
        if self.ready >= self.consumers:
            self.all_ready.set()

    def consumer(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        self.by_consumer.append(seen)
        return seen


async def sse_consumer(url: str, key: str, arrivals: Arrivals, stop: asyncio.Event) -> None:
    seen = arrivals.consumer()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(url + "/api/v1/session", json={"key": key}) as r:
            r.raise_for_status()
        async with http.get(url + "/api/v1/incidents/stream", timeout=aiohttp.ClientTimeout(total=None)) as r:
            event = ""
            while not stop.is_set():
                line = await r.content.readline()
                if not line:
                    return
                text = line.decode()
                if text.startswith("event: "):
                    event = text[7:].strip()
                    if event == "snapshot_end":
                        arrivals.one_ready()
                elif text.startswith("data: ") and event == "new":
                    seen.setdefault(json.loads(text[6:]).get("id", ""), time.perf_counter())


async def grpc_consumer(port: int, key: str, arrivals: Arrivals, stop: asyncio.Event) -> None:
    seen = arrivals.consumer()
    async with channel(port) as ch:
        call = IdpsServiceStub(ch).Subscribe(pb.SubscribeRequest(), metadata=(("authorization", f"Bearer {key}"),))
        try:
            async for reply in call:
                now = time.perf_counter()
                for m in reply.messages:
                    if m.kind == pb.IncidentMessage.KIND_SNAPSHOT_END:
                        arrivals.one_ready()
                    elif m.kind == pb.IncidentMessage.KIND_NEW:
                        seen.setdefault(m.incident.id, now)
                if stop.is_set():
                    return
        finally:
            call.cancel()


def start_console(env: dict[str, str], port: int, idps_port: int) -> ServiceProcess:
    """`v2x console` on `port`, calling IDPS on `idps_port`, as `v2x run` starts it."""
    exe = Path(sys.executable).with_name("v2x")
    cmd = [str(exe), "console"] if exe.exists() else [sys.executable, "-m", "services.cli", "console"]
    full = {**os.environ, **env, "V2X_CONSOLE_PORT": str(port), "V2X_CONSOLE_IDPS_TARGET": f"127.0.0.1:{idps_port}",
            "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"}
    log_path = Path(tempfile.gettempdir()) / f"v2x_bench_{os.getpid()}_console.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return ServiceProcess(proc, port, log_path, "console")


async def wait_console(console: ServiceProcess, url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if console.proc.poll() is not None:
            raise RuntimeError(f"the console exited with {console.proc.returncode}:\n{console.log_tail()}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
                if r.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the console did not serve within {timeout_s:g} s:\n{console.log_tail()}")
        await asyncio.sleep(0.2)


def summary(sent: dict[str, float], arrivals: Arrivals) -> dict[str, Any]:
    lat: list[float] = []
    missing = 0
    for incident, t0 in sent.items():
        for seen in arrivals.by_consumer:
            if incident in seen:
                lat.append((seen[incident] - t0) * 1000)
            else:
                missing += 1
    lat.sort()
    return {"deliveries": len(lat), "missing": missing, "p50_ms": round(percentile(lat, 0.5), 1),
            "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(lat[-1], 1) if lat else None}


async def run(ns: argparse.Namespace) -> dict[str, Any]:
    db = f"v2x_bench_console_{os.getpid()}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    redis_dir = tempfile.mkdtemp(prefix="v2x-bench-console-")
    redis = EmbeddedRedis(server_binary=shutil.which("redis-server"), base_dir=redis_dir)
    services: list[Any] = []
    try:
        url = with_db(PG_ADMIN, db)
        await migrate(url)
        redis_url = await asyncio.to_thread(redis.start)
        engine = create_engine(url, pool_size=1)
        key = (await create_key(engine, "police", "bench")).key
        await engine.dispose()
        env = {"DATABASE_URL": url, "REDIS_URL": redis_url}
        idps = start_service("idps", env, 1)
        services.append(idps)
        await wait_healthy(idps, "v2x.idps.v1.IdpsService", 1)
        console_port = free_port()
        console = start_console(env, console_port, idps.port)
        services.append(console)
        console_url = f"http://127.0.0.1:{console_port}"
        await wait_console(console, console_url)
        stop = asyncio.Event()
        via_console, direct = Arrivals(ns.consoles), Arrivals(ns.consoles)
        tasks = [asyncio.create_task(sse_consumer(console_url, key, via_console, stop)) for _ in range(ns.consoles)]
        tasks += [asyncio.create_task(grpc_consumer(idps.port, key, direct, stop)) for _ in range(ns.consoles)]
        async def all_ready() -> None:
            await via_console.all_ready.wait()
            await direct.all_ready.wait()

        ready: asyncio.Task[None] = asyncio.create_task(all_ready())
        done, _ = await asyncio.wait([ready, *tasks], timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            failed = [t.exception() for t in done if t.exception() is not None]
            raise RuntimeError(f"the consoles did not all start: {failed[0] if failed else 'timeout'}")
        sent: dict[str, float] = {}
        run_id = uuid.uuid4().hex[:8]
        cpu0 = proc_cpu_s(console.proc.pid)[1]
        load0 = load_average()
        async with channel(idps.port) as ch:
            stub = IdpsServiceStub(ch)
            md = (("authorization", f"Bearer {key}"),)
            n = int(ns.rate * ns.seconds)
            start = time.perf_counter()
            pending: set[asyncio.Task[None]] = set()

            async def one(i: int) -> None:
                observed = Timestamp()
                observed.GetCurrentTime()
                # A place of its own for every report (about 1 km apart on a grid): each opens an incident.
                lat, lon = 30.0 + (i // 100) * 0.01, 120.0 + (i % 100) * 0.01
                t0 = time.perf_counter()
                reply = await stub.ReportEvent(pb.ReportEventRequest(
                    idempotency_key=f"{run_id}-{i}", source_id="bench", source_kind=pb.SOURCE_KIND_POLICE_OFFICER,
                    type=pb.EVENT_TYPE_ACCIDENT, position=cpb.LatLon(lat=lat, lon=lon), confidence=0.9,
                    observed_at=observed), metadata=md)
                sent[reply.incident_id] = t0

            for i in range(n):
                await asyncio.sleep(max(0.0, start + i / ns.rate - time.perf_counter()))
                task = asyncio.create_task(one(i))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)
            elapsed = time.perf_counter() - start
        await asyncio.sleep(2.0)  # the last messages on their way
        cpu = proc_cpu_s(console.proc.pid)[1] - cpu0
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        events = len(sent) * ns.consoles
        return {"consoles": ns.consoles, "rate": ns.rate, "seconds": round(elapsed, 1), "reports": len(sent),
                "load_average_before": [round(x, 2) for x in load0],
                "load_average_after": [round(x, 2) for x in load_average()],
                "via_console": summary(sent, via_console), "direct_subscribe": summary(sent, direct),
                "console_cpu_s": round(cpu, 2), "console_cpu_ms_per_event": round(1000 * cpu / max(events, 1), 3),
                "console_cpu_share_of_a_core": round(cpu / (elapsed + 2.0), 3)}
    finally:
        for service in reversed(services):
            await stop_service(service)
        await asyncio.to_thread(redis.stop)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(redis_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--consoles", type=int, default=50, help="police consoles on each path (default 50)")
    p.add_argument("--rate", type=float, default=20.0, help="new incidents per second (default 20)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the paced phase (default 30)")
    p.add_argument("--json", type=Path, help="write the results here too")
    ns = p.parse_args()
    result = asyncio.run(run(ns))
    print(json.dumps(result, indent=2))
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
