"""Municipal adapter benchmark: drain rate of a 100,000-change outbox backlog to the platform emulator.

    .venv/bin/python load/bench_municipal.py [--changes 100000] [--lots 1000] [--batch 500] [--json PATH]

What it does, in one run (well under three minutes on a 2-core machine):

1. creates a fresh database `v2x_bench_municipal_<pid>` on the local PostgreSQL cluster, migrates it, and
   writes the backlog with plain SQL (not measured): `--changes` lot_dynamic rows in the parking service's
   payload shape for `--lots` lots, 10,000 rows per transaction;
2. starts the platform emulator (`v2x platform-emulator`, no failures) as its own process on loopback;
3. raw baseline: this process reads the same rows, renders them with the same profile into batches of `--batch`
   in drain order (not measured), then POSTs them signed, with the adapter's headers, with aiohttp: one request
   in flight (the baseline of the goal), and again with as many in flight as the adapter uses (MAX_IN_FLIGHT),
   timing each;
4. resets the emulator, starts the adapter (`v2x serve municipal`) as its own process with the destination
   paused, resumes it through the admin rpc and times until the emulator holds every record;
5. stops both processes and drops the database (also on error or Ctrl-C).

The adapter's figure includes everything it does per record (read in (txid, id) order with the per-lot order
check, render + validate, sign, POST up to MAX_IN_FLIGHT batches at a time, commit the cursor and counts); the
raw figures are the HTTP + receiver ceiling for the same bodies. The CPU columns say how much of a core each
process used, how much every PostgreSQL process used, and how busy the whole machine was: other work on the
machine (the load average is printed) slows the phases, and the adapter's phase, which needs the adapter, the
receiver and PostgreSQL at once, more than the raw ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from v2x.municipal.v1 import municipal_pb2 as pb
from v2x.municipal.v1.municipal_pb2_grpc import MunicipalAdminServiceStub

from services.common.apikeys import create_key
from services.common.db import create_engine, migrate
from services.municipal import fastpath as fastpath_source
from services.municipal import native, signing
from services.municipal.delivery import MAX_IN_FLIGHT
from services.municipal.model import OutboxRecord, idempotency_key, key_maker
from services.municipal.profiles import make_profile
from services.municipal.settings import MunicipalDestination
from services.municipal.store import MunicipalStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's `load`
from load.harness import free_port, proc_cpu_s, with_db

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef"
GOAL_RATE = 5000.0
GOAL_RATIO = 0.7

_BACKLOG = """
INSERT INTO outbox (kind, aggregate_id, payload)
SELECT 'lot_dynamic', 'B-' || lpad((g % $3)::text, 5, '0'),
       jsonb_build_object(
           'lot_id', 'B-' || lpad((g % $3)::text, 5, '0'), 'sequence', g / $3 + 1,
           'observed_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
           'received_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
           'capacity', jsonb_build_object('general', 300, 'ev', 40, 'disabled', 6, 'reserved', 0),
           'free', jsonb_build_object('general', g % 301, 'ev', g % 41, 'disabled', g % 7),
           'status', CASE WHEN g % 301 = 0 THEN 'SITE_STATUS_FULL' WHEN g % 301 < 15 THEN 'SITE_STATUS_ALMOST_FULL'
                          ELSE 'SITE_STATUS_SPACES_AVAILABLE' END,
           'ttl_s', 600)
FROM generate_series($1::bigint, $2::bigint) AS g ORDER BY g"""


def postgres_cpu_s() -> float:
    """User + system CPU seconds of every PostgreSQL process on the machine (Linux /proc)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.find("(") + 1:stat.rfind(")")].startswith("postgres"):
                fields = stat.rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine_busy_s() -> float:
    """CPU seconds every process on the machine spent (Linux /proc/stat: all but idle and iowait)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, of PostgreSQL, and of the whole machine."""
    own: dict[str, float] = {}
    for name, pid in pids.items():
        own[name] = 0.0
        if pid == os.getpid():
            own[name] = time.process_time()
        else:
            with contextlib.suppress(OSError, IndexError, ValueError):
                own[name] = proc_cpu_s(pid)[1]
    return {**own, "postgres": postgres_cpu_s(), "machine": machine_busy_s()}


@dataclass
class Phase:
    name: str
    records: int
    seconds: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class Emulator:
    def __init__(self, port: int, log: Any) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "platform-emulator", "--port", str(port)],
            env={**os.environ, "V2X_EMULATOR_SECRET": SECRET, "LOG_LEVEL": "WARNING"}, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, session: aiohttp.ClientSession, limit_s: float = 30.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("the emulator did not start")

    async def unique(self, session: aiohttp.ClientSession) -> int:
        async with session.get(self.url + "/_admin/state") as r:
            return int((await r.json())["unique_records"])

    async def reset(self, session: aiohttp.ClientSession) -> None:
        async with session.post(self.url + "/_admin/reset") as r:
            assert r.status == 200


def spawn(args: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "services.cli", *args], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def write_backlog(conn: asyncpg.Connection, changes: int, lots: int) -> None:
    step = 10_000
    for start in range(0, changes, step):
        await conn.execute(_BACKLOG, start, min(start + step, changes) - 1, lots)


async def render_bodies(db_url: str, dest: MunicipalDestination,
                        records: list[OutboxRecord]) -> list[tuple[bytes, int, str]]:
    """The backlog as request bodies of `batch_size` records in drain order, rendered by the adapter's profile (not
    measured): (body, records, X-V2X-Batch). The records read go in `records`."""
    engine = create_engine(db_url, pool_size=1)
    store = MunicipalStore(engine)
    profile = make_profile(dest)
    bodies: list[tuple[bytes, int, str]] = []
    try:
        from services.municipal.model import Position

        pos, now = Position(0, 0), datetime.now(UTC)
        while True:
            rows, _extra = await store.next_batch(pos, [], sorted(profile.kinds), dest.batch_size)
            if not rows:
                break
            records += rows
            docs = [profile.render(r, idempotency_key(dest.name, r.id), None, now).doc for r in rows]
            bodies.append((profile.body(docs), len(rows), f"{rows[0].id}..{rows[-1].id}/{len(rows)}"))
            pos = Position(rows[-1].txid, rows[-1].id)
    finally:
        await engine.dispose()
    return bodies


def render_costs(records: list[OutboxRecord], dest: MunicipalDestination, rounds: int = 3) -> dict[str, float]:
    """CPU microseconds per record of the lane's render step (idempotency key, checks, mapping, wire form) over the
    whole backlog, in this process, as the lane runs it (`fastpath.render`): with the profile's fast path as the
    adapter loads it (compiled when built), with the fast path's Python source, and with the general path alone
    (checks.py + the profile's mapping). Each variant runs `rounds` times, interleaved; the least CPU counts (the
    machine's other work only adds)."""
    profile = make_profile(dest)
    make_key = key_maker(dest.name)
    now = datetime.now(UTC)

    def general(r: OutboxRecord, key: str) -> bytes | None:
        return profile.wire(profile.render(r, key, None, now).doc)

    source = {"lot_dynamic": fastpath_source.wire_lot_dynamic, "spot_status": fastpath_source.wire_spot_status}
    variants = {f"fast path ({'compiled' if native.COMPILED else 'interpreted'})": (native.fastpath.render,
                                                                                   profile.fast_wire),
                "fast path (interpreted)": (fastpath_source.render, source),
                "general path": (fastpath_source.render, {})}
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, (render, fast_wire) in variants.items():
            sendable: list[OutboxRecord] = []
            keys: list[str] = []
            wires: list[bytes] = []
            t = time.process_time()
            render(records, make_key, now, fast_wire, None, general, sendable, keys, wires)
            best[name] = min(best[name], time.process_time() - t)
            assert len(wires) == len(records), f"{name}: {len(records) - len(wires)} records not rendered"
    return {name: 1e6 * cpu_s / len(records) for name, cpu_s in best.items()}


async def raw_phase(bodies: list[tuple[bytes, int, str]], dest: MunicipalDestination, emulator: Emulator,
                    session: aiohttp.ClientSession, emulator_pid: int, in_flight: int = 1) -> Phase:
    """The same batches, rendered beforehand, POSTed by a plain aiohttp client: one after another (`in_flight` 1),
    or `in_flight` at a time."""
    content_type = make_profile(dest).content_type
    total = sum(n for _, n, _ in bodies)

    async def post(body: bytes, span: str) -> None:
        # The adapter's request: same body, same headers (the receiver keeps its counts per X-V2X-Destination).
        headers = {"Content-Type": content_type, "X-V2X-Destination": dest.name, "X-V2X-Batch": span,
                   **signing.headers(SECRET, int(time.time()), body)}
        async with session.post(dest.url, data=body, headers=headers) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"raw POST answered {r.status}")

    pids = {"client": os.getpid(), "emulator": emulator_pid}
    cpu0 = cpu_now(pids)
    t0 = time.perf_counter()
    if in_flight <= 1:
        for body, _, span in bodies:
            await post(body, span)
    else:
        queue = iter(bodies)

        async def worker() -> None:
            for body, _, span in queue:
                await post(body, span)

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - t0
    cpu = {k: v - cpu0[k] for k, v in cpu_now(pids).items()}
    got = await emulator.unique(session)
    if got != total:
        raise RuntimeError(f"raw phase: the emulator holds {got} records, expected {total}")
    name = "raw aiohttp client" if in_flight <= 1 else f"raw, {in_flight} in flight"
    return Phase(name, total, elapsed, {k: v / elapsed for k, v in cpu.items()})


async def adapter_phase(db_url: str, redis_url: str, dest: MunicipalDestination, emulator: Emulator,
                        session: aiohttp.ClientSession, emulator_pid: int, changes: int, log: Any,
                        timeout_s: float) -> tuple[Phase, dict[str, Any]]:
    engine = create_engine(db_url, pool_size=2)
    store = MunicipalStore(engine)
    await store.ensure([dest])
    await store.set_paused(dest.name, True, "benchmark: waiting for the start signal")
    admin = (await create_key(engine, "admin", "bench")).key
    await engine.dispose()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "V2X_MUNICIPAL_PORT": str(port),
           "V2X_MUNICIPAL_METRICS_PORT": "0", "LOG_LEVEL": "WARNING", "V2X_MUNICIPAL_RECONCILE_HOUR": "-1",
           "BENCH_SECRET": SECRET,
           "V2X_MUNICIPAL_DESTINATIONS": json.dumps([{"name": dest.name, "url": dest.url, "profile": dest.profile,
                                                      "secret_env": "BENCH_SECRET", "batch_size": dest.batch_size,
                                                      "timeout_s": dest.timeout_s}])}
    proc = spawn(["serve", "municipal"], env, log)
    md = (("authorization", f"Bearer {admin}"),)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(aio.AioRpcError):
                    if (await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status == 1:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the adapter did not become healthy")
                await asyncio.sleep(0.1)
            stub = MunicipalAdminServiceStub(channel)
            before = (await stub.GetStatus(pb.GetStatusRequest(destination=dest.name), metadata=md)).destinations[0]
            pids = {"adapter": proc.pid, "emulator": emulator_pid}
            cpu0 = cpu_now(pids)
            t0 = time.perf_counter()
            await stub.Resume(pb.ResumeRequest(destination=dest.name), metadata=md)
            while await emulator.unique(session) < changes:
                if time.perf_counter() - t0 > timeout_s:
                    raise RuntimeError(f"the adapter did not drain {changes} records in {timeout_s:.0f} s")
                if proc.poll() is not None:
                    raise RuntimeError("the adapter exited")
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - t0
            cpu = {k: v - cpu0[k] for k, v in cpu_now(pids).items()}
            await asyncio.sleep(0.3)
            after = (await stub.GetStatus(pb.GetStatusRequest(destination=dest.name), metadata=md)).destinations[0]
    finally:
        stop(proc)
    lag = {"lag_records_before": before.lag_records, "lag_s_before": round(before.lag_s, 1),
           "lag_records_after": after.lag_records, "dead_letters": after.dead_letters}
    return Phase("v2x municipal adapter", changes, elapsed, {k: v / elapsed for k, v in cpu.items()}), lag


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = f"v2x_bench_municipal_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    admin = await asyncpg.connect(args.pg_admin)
    await admin.execute(f'CREATE DATABASE "{db}"')
    db_url = with_db(args.pg_admin, db)
    emulator: Emulator | None = None
    log = tempfile.NamedTemporaryFile(prefix="bench-municipal-", suffix=".log", delete=False)  # noqa: SIM115
    started = time.monotonic()
    try:
        await migrate(db_url)
        conn = await asyncpg.connect(db_url)
        try:
            t = time.perf_counter()
            await write_backlog(conn, args.changes, args.lots)
            await conn.execute("VACUUM ANALYZE outbox")
            backlog_s = time.perf_counter() - t
        finally:
            await conn.close()
        emulator = Emulator(free_port(), log)
        dest = MunicipalDestination(name="bench", url=f"{emulator.url}/municipal/v1/records",
                                    profile="municipal_json", secret=SECRET, batch_size=args.batch, timeout_s=30.0)
        records: list[OutboxRecord] = []
        bodies = await render_bodies(db_url, dest, records)
        render_us = render_costs(records, dest)
        del records
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT + 2)) as session:
            await emulator.wait_ready(session)
            raw = await raw_phase(bodies, dest, emulator, session, emulator.proc.pid)
            await emulator.reset(session)
            raw_concurrent = await raw_phase(bodies, dest, emulator, session, emulator.proc.pid, MAX_IN_FLIGHT)
            await emulator.reset(session)
            del bodies
            adapter, lag = await adapter_phase(db_url, args.redis, dest, emulator, session, emulator.proc.pid,
                                               args.changes, log, args.timeout)
        return {"raw": raw, "raw_concurrent": raw_concurrent, "adapter": adapter, "lag": lag, "render_us": render_us,
                "backlog_s": backlog_s, "took_s": time.monotonic() - started, "log": log.name}
    finally:
        stop(emulator.proc if emulator else None)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        log.close()


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    raw: Phase = r["raw"]
    raw_concurrent: Phase = r["raw_concurrent"]
    adapter: Phase = r["adapter"]
    ratio = adapter.rate / raw.rate if raw.rate else 0.0
    ratio_concurrent = adapter.rate / raw_concurrent.rate if raw_concurrent.rate else 0.0
    load = os.getloadavg()
    print(f"\nmunicipal adapter: drain a backlog of {args.changes:,} lot_dynamic changes ({args.lots:,} lots), "
          f"municipal JSON profile, batches of {args.batch}, loopback emulator")
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end "
          "(other work on the machine slows both phases; 'machine' is every process's CPU, 'postgres' every "
          "PostgreSQL process's)\n")
    print(f"{'phase':<24}{'records':>10}{'seconds':>10}{'records/s':>12}   CPU (cores)")
    for p in (raw, raw_concurrent, adapter):
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in p.cpu.items())
        print(f"{p.name:<24}{p.records:>10,}{p.seconds:>10.2f}{p.rate:>12,.0f}   {cpu}")
    rate_ok, ratio_ok = adapter.rate >= GOAL_RATE, ratio >= GOAL_RATIO
    print(f"\nadapter / raw = {ratio:.2f}   goals: >= {GOAL_RATE:,.0f} records/s {'met' if rate_ok else 'NOT met'}, "
          f">= {GOAL_RATIO} x raw {'met' if ratio_ok else 'NOT met'}   "
          f"(adapter / raw with {MAX_IN_FLIGHT} in flight = {ratio_concurrent:.2f})")
    per_record = {"adapter": 1e6 * adapter.cpu["adapter"] * adapter.seconds / adapter.records,
                  "postgres": 1e6 * adapter.cpu["postgres"] * adapter.seconds / adapter.records,
                  "emulator": 1e6 * raw.cpu["emulator"] * raw.seconds / raw.records}
    print(f"CPU per record: adapter {per_record['adapter']:.0f} us (read, order, check, map, sign, POST, commit), "
          f"postgres {per_record['postgres']:.0f} us while it ran, "
          f"receiver {per_record['emulator']:.0f} us (parse, verify, dedupe)")
    print(f"lag before resume: {r['lag']['lag_records_before']:,} records, {r['lag']['lag_s_before']} s; "
          f"after: {r['lag']['lag_records_after']} records, {r['lag']['dead_letters']} dead letters")
    print(f"adapter's per-record fast path: {native.reason} (services/municipal/native.py)")
    print("render step, CPU per record in this process (key, checks, mapping, wire form; least of 3 runs): "
          + ", ".join(f"{name} {us:.2f} us" for name, us in r["render_us"].items()))
    print(f"(backlog written in {r['backlog_s']:.1f} s; whole run {r['took_s']:.0f} s; process logs {r['log']})")

    def phase(p: Phase) -> dict[str, Any]:
        return {"records": p.records, "seconds": p.seconds, "records_per_s": p.rate, "cpu_cores": p.cpu}

    return {
        "benchmark": "municipal", "at": datetime.now(UTC).isoformat(),
        "config": {"changes": args.changes, "lots": args.lots, "batch": args.batch, "profile": "municipal_json",
                   "adapter_in_flight": MAX_IN_FLIGHT, "fast_path_compiled": native.COMPILED},
        "machine": {"cores": os.cpu_count(), "load_average_end": load},
        "raw": phase(raw), "raw_concurrent": phase(raw_concurrent), "adapter": phase(adapter),
        "ratio": ratio, "ratio_to_raw_concurrent": ratio_concurrent,
        "goals": {"records_per_s": GOAL_RATE, "ratio": GOAL_RATIO, "records_per_s_met": rate_ok, "ratio_met": ratio_ok},
        "cpu_us_per_record": per_record,
        "render_cpu_us_per_record": r["render_us"],
        "lag": r["lag"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=100_000, help="backlog size (default 100,000)")
    p.add_argument("--lots", type=int, default=1000, help="lots the changes are spread over (default 1,000)")
    p.add_argument("--batch", type=int, default=500, help="records per request (default 500)")
    p.add_argument("--timeout", type=float, default=120.0, help="give up on the adapter phase after this long")
    p.add_argument("--pg-admin", default=os.environ.get("V2X_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="admin URL of the PostgreSQL cluster")
    p.add_argument("--redis", default=os.environ.get("V2X_TEST_REDIS", "redis://127.0.0.1:6379/13"))
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = report(args, asyncio.run(run(args)))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
