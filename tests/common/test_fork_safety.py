"""A process of the suite forks children (the runner's embedded PostgreSQL and Valkey, with a user switch) while
grpc.aio serves and calls: every child must run (services/__init__.py turns gRPC's fork handlers off)."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import asyncio, os, subprocess
import services
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    done = asyncio.Event()

    async def calls() -> None:
        while not done.is_set():
            await stub.Check(health_pb2.HealthCheckRequest())

    callers = [asyncio.create_task(calls()) for _ in range(2)]
    failed = 0
    for _ in range(100):
        # user= makes subprocess fork (no vfork/posix_spawn), as the runner's user switch does.
        run = await asyncio.to_thread(subprocess.run, ["/bin/true"], capture_output=True, user=os.getuid())
        failed += run.returncode != 0
    done.set()
    await asyncio.gather(*callers)
    await channel.close()
    await server.stop(None)
    print("failed", failed)

asyncio.run(main())
"""


def test_children_forked_beside_a_busy_grpc_aio_server_all_run() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}  # the child's own import sets it
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["failed", "0"], out.stdout + out.stderr[-2000:]
