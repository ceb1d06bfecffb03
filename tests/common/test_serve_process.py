"""`v2x serve`: a real process that starts healthy and stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serving(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        while time.monotonic() < deadline:
            try:
                r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_signal(settings: Settings, sig: signal.Signals) -> None:
    port, metrics = _free_port(), _free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
           "V2X_PARKING_PORT": str(port), "V2X_PARKING_METRICS_PORT": str(metrics), "V2X_BIND_HOST": "127.0.0.1",
           "LOG_LEVEL": "WARNING", "V2X_GRACE_S": "1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.cli", "serve", "parking", env=env,
                                                stderr=subprocess.PIPE)
    try:
        assert await _serving(port, 30), "parking did not become healthy"
        proc.send_signal(sig)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 0, (await proc.stderr.read()).decode() if proc.stderr else ""
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the port still accepts connections"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_without_database_url_fails_fast_with_a_clear_message() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "serve", "parking"], env=env,
                                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "DATABASE_URL is not set" in out.stderr
