"""What the benchmarks share: CPU accounting from /proc, timed phases and their counters, and starting, waiting for
and stopping a `v2x serve NAME --processes N` service."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.processes import READY_LINE

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def proc_cpu_s(pid: int | str) -> tuple[str, float]:
    """(command name, user + system CPU seconds) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (`serve --processes N` is a supervisor of N processes)."""
    total = 0.0
    with contextlib.suppress(OSError):
        total += proc_cpu_s(pid)[1]
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                total += tree_cpu_s(int(child))
    return total


async def wait_all_processes(proc: subprocess.Popen[bytes], processes: int, log_tail: Callable[[int], str],
                             what: str, timeout_s: float = 120.0) -> None:
    """With several processes, until the supervisor said every one serves (a health check on the shared port
    reaches only one of them); at once with one."""
    deadline = time.monotonic() + timeout_s
    while processes > 1 and READY_LINE not in log_tail(200):
        if proc.poll() is not None:
            raise RuntimeError(f"the {what} service exited with {proc.returncode}:\n{log_tail(30)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {what} service's processes did not all serve within {timeout_s:g} s:\n"
                               f"{log_tail(30)}")
        await asyncio.sleep(0.2)


def free_port() -> int:
    """A TCP port free on loopback right now (for a service the benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..1) of values already sorted; NaN for none."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


@dataclass
class ServiceProcess:
    """A service the benchmark started (`v2x serve ...`), its gRPC port and the file its output goes to."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    name: str = ""
    ports: dict[str, int] = field(default_factory=dict)  # other ports it listens on (e.g. charging's OCPP)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def with_db(url: str, db: str) -> str:
    """`url` (of any database of a cluster) naming database `db` instead."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{db}"


def channel(port: int) -> aio.Channel:
    """A channel to a local service with a connection of its own (no subchannel shared with other channels), as
    separate clients have."""
    return aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def offset(center: tuple[float, float], north_m: float, east_m: float) -> tuple[float, float]:
    """The point (lat, lon) `north_m` north and `east_m` east of `center` (flat-earth: a city's extent)."""
    lat, lon = center
    return lat + north_m / 111_320, lon + east_m / (111_320 * math.cos(math.radians(lat)))


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


# ----- CPU accounting -------------------------------------------------------------------------------


async def postgres_pids(admin: asyncpg.Connection, db: str) -> list[int]:
    """The cluster's processes that work for database `db`: its backends and the shared writers."""
    return [r["pid"] for r in await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE (datname = $1 OR backend_type <> 'client backend') "
        "AND pid <> pg_backend_pid()", db)]


@dataclass
class CpuSnapshot:
    """CPU seconds so far: this process (the client), the service, the PostgreSQL processes given, Redis, and the
    whole machine."""

    wall: float
    client: float
    server: float
    postgres: dict[int, float]
    redis: float
    machine_busy: float
    irq: float

    @classmethod
    def read(cls, server_pid: int | None, postgres_pids: list[int]) -> CpuSnapshot:
        postgres: dict[int, float] = {}
        for pid in postgres_pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                postgres[pid] = proc_cpu_s(pid)[1]
        redis = 0.0
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    comm, cpu = proc_cpu_s(entry)
                    if comm.startswith("redis-server"):
                        redis += cpu
        server = tree_cpu_s(server_pid) if server_pid is not None else 0.0
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        busy = (sum(values[:8]) - values[3] - values[4]) / tick
        irq = (values[5] + values[6]) / tick  # interrupts and softirqs: mostly the loopback network here
        return cls(time.perf_counter(), time.process_time(), server, postgres, redis, busy, irq)

    def cores_since(self, start: CpuSnapshot) -> dict[str, float]:
        """Cores used in between; `other` is what the rest of the machine used (other work on it)."""
        wall = self.wall - start.wall
        used = {"client": self.client - start.client, "server": self.server - start.server,
                "postgres": sum(cpu - start.postgres.get(pid, 0.0) for pid, cpu in self.postgres.items()),
                "redis": self.redis - start.redis}
        used["irq"] = self.irq - start.irq
        machine = self.machine_busy - start.machine_busy
        out = {name: round(v / wall, 2) for name, v in used.items()}
        out["other"] = round(max(0.0, machine - sum(used.values())) / wall, 2)
        out["machine_busy"] = round(machine / wall, 2)
        return out


# ----- timed phases ---------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    rate: float
    count: int
    seconds: float
    cpu_cores: dict[str, float]
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_items: float | None = None  # per timed operation (lots or stations per answer)
    avg_batch: float | None = None
    not_accepted: int = 0
    errors: list[str] = field(default_factory=list)

    def cpu_us_per_op(self) -> dict[str, float]:
        """CPU microseconds per operation (query or update) of each party."""
        return {k: round(v * 1e6 / self.rate) if self.rate else 0.0 for k, v in self.cpu_cores.items()
                if k in ("client", "server", "postgres", "redis")}


@dataclass
class Counter:
    """What a phase's workers did: acknowledged results (`ack`) or timed operations (`timed`)."""

    result_name: Callable[[int], str] = str  # an ack result's name, for the first error
    accepted_result: int = 1  # ACK_RESULT_ACCEPTED of the service's proto
    accepted: int = 0
    other: int = 0
    first_error: str = ""
    recording: bool = False
    latencies: list[float] = field(default_factory=list)
    items: int = 0

    def ack(self, result: int, error: str) -> None:
        if result == self.accepted_result:
            self.accepted += 1
        else:
            self.other += 1
            if not self.first_error:
                self.first_error = f"{self.result_name(result)}: {error}"

    def timed(self, dt: float, items: int = 0) -> None:
        if self.recording:
            self.accepted += 1
            self.latencies.append(dt)
            self.items += items


async def timed_phase(duration: float, warmup: float, cpu: Callable[[], Awaitable[CpuSnapshot]], counter: Counter,
                      workers: list[Worker]) -> PhaseResult:
    """Runs the workers until told to stop; counts what `counter.accepted` gains after the warm-up."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w(stop)) for w in workers]
    try:
        await asyncio.sleep(warmup)
        counter.recording = True
        cpu0 = await cpu()
        begin = counter.accepted
        await asyncio.sleep(duration)
        cpu1 = await cpu()
        end = counter.accepted
        counter.recording = False
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=60)
        for t in done:
            t.result()
        if pending:
            raise RuntimeError(f"{len(pending)} workers did not finish within 60 s of the stop")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seconds = cpu1.wall - cpu0.wall
    result = PhaseResult(rate=(end - begin) / seconds, count=end - begin, seconds=seconds,
                         cpu_cores=cpu1.cores_since(cpu0), not_accepted=counter.other)
    if counter.first_error:
        result.errors.append(counter.first_error)
    if counter.latencies:
        lat = sorted(counter.latencies)
        result.p50_ms = round(percentile(lat, 0.50) * 1000, 2)
        result.p99_ms = round(percentile(lat, 0.99) * 1000, 2)
        result.mean_items = round(counter.items / len(lat), 1)
    return result


# ----- the service process --------------------------------------------------------------------------


def start_service(name: str, env: Mapping[str, str], processes: int | None, **ports: int) -> ServiceProcess:
    """Starts `v2x serve NAME --processes N` (with None: `v2x serve NAME`, the service as this process' child) on a
    free port with `env` added to this process' environment; more ports (e.g. `ocpp=...`) are only recorded."""
    port, metrics_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("v2x")
    cmd = [str(exe), "serve", name] if exe.exists() else [sys.executable, "-m", "services.cli", "serve", name]
    if processes is not None:
        cmd += ["--processes", str(processes)]
    full = {**os.environ, f"V2X_{name.upper()}_PORT": str(port), f"V2X_{name.upper()}_METRICS_PORT": str(metrics_port),
            "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING", **env}
    log_path = Path(tempfile.gettempdir()) / f"v2x_bench_{os.getpid()}_{name}_{port}.log"  # one per service started
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return ServiceProcess(proc, port, log_path, name, dict(ports))


async def wait_healthy(service: ServiceProcess, grpc_service: str, processes: int | None,
                       timeout_s: float = 120.0) -> None:
    """Until every process of the service serves and its health check says `grpc_service` is SERVING."""
    await wait_all_processes(service.proc, processes or 1, service.log_tail, service.name, timeout_s)
    deadline = time.monotonic() + timeout_s
    async with aio.insecure_channel(f"127.0.0.1:{service.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        while True:
            if service.proc.poll() is not None:
                raise RuntimeError(f"the {service.name} service exited with {service.proc.returncode}:\n"
                                   f"{service.log_tail()}")
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=grpc_service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {service.name} service was not healthy within {timeout_s:g} s:\n"
                                   f"{service.log_tail()}")
            await asyncio.sleep(0.2)


async def stop_service(service: ServiceProcess, grace_s: float = 15.0) -> int | None:
    """SIGTERM, and a kill after `grace_s`; the exit code."""
    if service.proc.poll() is None:
        service.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(service.proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            service.proc.kill()
            await asyncio.to_thread(service.proc.wait)
    return service.proc.returncode
