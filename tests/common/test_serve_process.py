"""`v2x serve`: a real process that starts healthy and stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Settings
from services.common.processes import METRICS_STRIDE
from tests.ports import free_port
from tests.waiting import assert_eventually


async def _serving(port: int, within_s: float) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)

        async def serving() -> bool:
            try:
                r = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except aio.AioRpcError:
                return False
            return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

        await assert_eventually(serving, f"the service on port {port} SERVING", within_s, every_s=0.2)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """A process a failed test left running is killed (and waited for), so nothing outlives the test."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.mark.slow  # a real `v2x serve parking` process, started and stopped
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_signal(settings: Settings, sig: signal.Signals) -> None:
    port, metrics = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "V2X_PARKING_PORT": str(port), "V2X_PARKING_METRICS_PORT": str(metrics), "V2X_BIND_HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "V2X_GRACE_S": "1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", "serve", "parking", env=env,
                                                stderr=subprocess.PIPE)
    try:
        await _serving(port, 30)
        proc.send_signal(sig)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0, (await proc.stderr.read()).decode() if proc.stderr else ""
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts connections"
    finally:
        await _reap(proc)


async def test_serve_without_database_url_fails_fast_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "serve", "parking"], env=env,
                                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "DATABASE_URL is not set" in out.stderr


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def _start_processes(settings: Settings, n: int) -> tuple[asyncio.subprocess.Process, int, list[int]]:
    """`v2x serve parking --processes n`, once its supervisor says every process serves; its port and the
    processes' metrics ports."""
    port, metrics = free_port(), free_port(*(i * METRICS_STRIDE for i in range(1, n)))
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "V2X_PARKING_PORT": str(port), "V2X_PARKING_METRICS_PORT": str(metrics), "V2X_BIND_HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "V2X_GRACE_S": "1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", "serve", "parking",
                                                "--processes", str(n), env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    assert f"{n} processes serving on port {port}".encode() in line, line
    return proc, port, [metrics + i * METRICS_STRIDE for i in range(n)]


@pytest.mark.slow  # two real service processes
async def test_serve_processes_share_the_port_and_stop_together(settings: Settings) -> None:
    proc, port, metrics_ports = await _start_processes(settings, 2)
    try:
        children = _children(proc.pid)
        assert len(children) == 2
        await _serving(port, 10)
        # Each process answers on its own metrics port (each keeps its own counters).
        for mport in metrics_ports:
            reader, writer = await asyncio.open_connection("127.0.0.1", mport)
            writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.0 200")
            writer.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert not any(_alive(c) for c in children)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts connections"
    finally:
        await _reap(proc)


@pytest.mark.slow
@pytest.mark.chaos  # SIGKILLs one of the service's processes
async def test_serve_processes_stop_all_when_one_dies(settings: Settings) -> None:
    proc, _, _ = await _start_processes(settings, 2)
    try:
        first, second = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 20) != 0
        assert not _alive(second)
        assert proc.stderr is not None
        assert b"exited" in await proc.stderr.read()
    finally:
        await _reap(proc)


async def test_serve_processes_need_a_fixed_port() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://x@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1:6379/13",
           "V2X_PARKING_PORT": "0"}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "serve", "parking",
                                                   "--processes", "2"], env=env, capture_output=True, text=True,
                                  timeout=30)
    assert out.returncode != 0 and "needs a fixed port" in out.stderr
