"""`v2x run`: the whole suite on one machine.

Without DATABASE_URL a throwaway PostGIS cluster is started, without REDIS_URL an embedded Redis;
then migrations, the demo district, one process per implemented service, the endpoints and demo
keys printed, and on Ctrl-C (or SIGTERM) everything stopped, children first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.apikeys import create_key
from services.common.config import Settings
from services.common.db import create_engine, migrate
from services.municipal.demo import municipal_banner, start_demo_platform
from services.parking.demo import OPERATORS, seed_district
from services.registry import builders
from services.runner.embedded import EmbeddedPostgres, EmbeddedRedis
from services.runner.occupancy_sim import simulate

READY_TIMEOUT_S = 60.0
# The municipal platform emulator that the adapter delivers to in the demo (override: V2X_EMULATOR_PORT).
EMULATOR_PORT = int(os.environ.get("V2X_EMULATOR_PORT", "8700"))


@dataclass
class Suite:
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    helpers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # not gRPC services
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def stop_children(self, grace_s: float) -> None:
        procs = [*self.children.values(), *self.helpers.values()]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self, grace_s: float) -> None:
        self.stop_children(grace_s)
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def _healthy(port: int, deadline: float) -> bool:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            await asyncio.sleep(0.2)
    return False


def _say(text: str) -> None:
    print(text, flush=True)


async def run_suite(settings: Settings, *, simulate: bool = True) -> None:
    started = time.monotonic()
    suite = Suite()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim: asyncio.Task[None] | None = None
    try:
        database_url = settings.database_url
        if not database_url:
            suite.postgres = EmbeddedPostgres()
            database_url = await asyncio.to_thread(suite.postgres.start)
            _say(f"embedded PostGIS cluster: {database_url}")
        redis_url = settings.redis_url
        if not redis_url:
            suite.redis = EmbeddedRedis()
            redis_url = await asyncio.to_thread(suite.redis.start)
            _say(f"embedded Redis: {redis_url}")
        await migrate(database_url)
        engine = create_engine(database_url, pool_size=2)
        try:
            lots = await seed_district(engine)
            keys = {role: (await create_key(engine, role, "demo")).key for role in ("admin", "police", "driver")}
            operator_keys = {op: (await create_key(engine, f"operator:{op}", "demo")).key for op in OPERATORS}
        finally:
            await engine.dispose()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        if "municipal" in builders() and not os.environ.get("V2X_MUNICIPAL_DESTINATIONS"):
            # The adapter delivers to a local platform emulator (unless destinations are configured).
            suite.helpers["platform-emulator"], adapter_env = await start_demo_platform(env, EMULATOR_PORT)
            env.update(adapter_env)
        for name in builders():
            # Spawning returns at once (no waiting on the child), so it does not stall the loop.
            suite.children[name] = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "services.cli", "serve", name], env=env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name in suite.children:
            if not await _healthy(settings.ports[name], deadline):
                raise RuntimeError(f"{name} did not become healthy on port {settings.ports[name]}")
        _banner(settings, lots, keys, operator_keys, time.monotonic() - started)
        if "municipal" in suite.children:
            _say(municipal_banner(settings, keys["admin"], EMULATOR_PORT if suite.helpers else None))
        if simulate and "parking" in suite.children:
            sim = asyncio.create_task(simulate_occupancy(settings, operator_keys))
        while not stop.is_set():
            dead = [n for n, p in suite.children.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"service {', '.join(dead)} exited; stopping the suite")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        _say("stopping...")
    finally:
        if sim is not None:
            sim.cancel()
            with contextlib.suppress(BaseException):
                await sim
        await asyncio.to_thread(suite.stop, settings.grace_s)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _say("stopped; nothing left running")


async def simulate_occupancy(settings: Settings, operator_keys: dict[str, str]) -> None:
    await simulate(f"127.0.0.1:{settings.ports['parking']}", operator_keys)


def _banner(settings: Settings, lots: int, keys: dict[str, str], operator_keys: dict[str, str],
            took_s: float) -> None:
    lines = [f"v2x-suite is up in {took_s:.1f} s with a demo district of {lots} lots around Baoshan (31.40 N, "
             "121.49 E)", "", "services (gRPC, plaintext; health + reflection on each):"]
    for name in builders():
        lines.append(f"  {name:<10} 127.0.0.1:{settings.ports[name]}   metrics http://127.0.0.1:"
                     f"{settings.metrics_ports[name]}/metrics")
    lines += ["", "demo API keys (send as `authorization: Bearer <key>`):"]
    lines += [f"  {role:<16} {key}" for role, key in keys.items()]
    lines += [f"  operator:{op:<7} {key}" for op, key in operator_keys.items()]
    lines += ["", "try (a driver near Baoshan, free general spaces within 1 km):",
              f"  grpcurl -plaintext -H 'authorization: Bearer {keys['driver']}' -d "
              "'{\"location\":{\"lat\":31.40,\"lon\":121.49},\"radius_m\":1000,\"limit\":5}' "
              f"127.0.0.1:{settings.ports['parking']} v2x.parking.v1.ParkingService/FindAvailable",
              "", "Ctrl-C stops everything."]
    _say("\n".join(lines))
