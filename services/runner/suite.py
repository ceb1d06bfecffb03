"""`v2x run`: the whole suite on one machine.

Without DATABASE_URL a throwaway PostGIS cluster is started, without REDIS_URL an embedded Redis;
then migrations, demo keys, one process per implemented service (the demo district and its charging
stations are seeded while they start), the endpoints and demo keys printed, simulated operators
pushing occupancy and charger statuses, the roadside simulator streaming the district's intersections to the
roadside service (`v2x sim`, a supervised process of its own), and on Ctrl-C (or SIGTERM) everything stopped,
children first. `v2x run --no-sim` starts none of the simulators.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.charging.settings import ChargingSettings
from services.common.apikeys import create_key
from services.common.config import Settings
from services.common.db import create_engine, migrate
from services.common.runfile import remove_if_ours, run_file, write_private
from services.console.settings import ConsoleSettings
from services.municipal.demo import demo_platform_env, emulator_ready, municipal_banner, report_municipal_lag
from services.registry import builders, check_settings
from services.runner import charging_sim
from services.runner.demo_chargers import seed_chargers
from services.runner.demo_district import OPERATORS, seed_district
from services.runner.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedRedisCluster
from services.runner.occupancy_sim import simulate
from services.runner.settings import RunSettings
from services.runner.supervisor import ChildSpec, Probe, SuiteFailed, Supervisor, python_argv

log = logging.getLogger("v2x.run")
# The roadside service reports on-street spot states to parking as the on-street operator of the district.
ROADSIDE_PARKING_VARS = ("V2X_ROADSIDE_PARKING_TARGET", "V2X_ROADSIDE_PARKING_KEY")
STREET_OPERATOR = "STREET"
# The roadside simulator in `make run`: the district's 4 intersections, one camera each at 3 fps: 12 frames/s to the
# real detector (~55 ms of one core per frame here, about 0.7 of the 2 cores, rendering ~0.2 more; measured with
# `v2x sim score`, README "Roadside simulator").
SIM_INTERSECTIONS, SIM_CAMERAS_PER, SIM_FPS = 4, 1, 3.0
# The health checks poll a server that is still starting: retry its connection quickly (gRPC's default
# backoff grows to seconds, which made start-up wait on it).
_FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", 250)]


@dataclass
class Suite:
    supervisor: Supervisor | None = None
    simulator: Supervisor | None = None  # its own: a simulator that cannot start does not stop the suite
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | EmbeddedRedisCluster | None = None

    async def stop(self, grace_s: float) -> None:
        for supervisor in (self.simulator, self.supervisor):
            if supervisor is not None:
                supervisor.hold()
        if self.simulator is not None:
            await self.simulator.stop(grace_s)
        if self.supervisor is not None:
            await self.supervisor.stop(grace_s)
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)


def grpc_ready(port: int) -> Probe:
    """A probe: the gRPC server on `port` says SERVING to the standard health check."""

    async def probe() -> bool:
        async with aio.insecure_channel(f"127.0.0.1:{port}", options=_FAST_RECONNECT) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def _say(text: str) -> None:
    print(text, flush=True)


class _StoppedWhileStarting(Exception):
    """Ctrl-C or SIGTERM came before every service served."""


@dataclass
class _Started:
    """What start-up made: the settings the services run with, keys, the demo's size, where things are."""

    settings: Settings
    env: dict[str, str]
    keys: dict[str, str]
    operator_keys: dict[str, str]
    roadside_env: dict[str, str]
    lots: int
    stations: int
    emulator: bool


async def run_suite(settings: Settings, *, simulate: bool = True, replicas: int = 1, redis_cluster: int = 0) -> None:
    started = time.monotonic()
    suite = Suite()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sims: list[asyncio.Task[None]] = []
    path = run_file()
    failed: str | None = None
    run = RunSettings.from_env(settings.env)
    check_settings(settings.env)  # every service's own settings, before anything starts
    ConsoleSettings.from_env(settings.env)  # and the console's
    try:
        # Ctrl-C (or SIGTERM) at any moment of start-up stops the suite: start-up is cancelled at its next step,
        # and whatever it started is stopped below.
        starting = asyncio.ensure_future(_start(suite, settings, run, path, replicas, redis_cluster, started))
        interrupted = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            raise _StoppedWhileStarting
        interrupted.cancel()
        up = starting.result()  # SuiteFailed when a process gave up
        settings = up.settings
        _banner(settings, up.lots, up.stations, up.keys, up.operator_keys, up.roadside_env,
                time.monotonic() - started, simulate)
        if "municipal" in builders():
            _say(municipal_banner(settings, run.emulator_port if up.emulator else None))
            # The adapter's lag on the console every 30 s; cancelled with the simulators on stop.
            sims.append(asyncio.create_task(report_municipal_lag(settings, up.keys["admin"], _say)))
        spots: charging_sim.SpotBoard = {}  # what the occupancy simulator said; the charging one follows
        if simulate and "parking" in builders():
            sims.append(asyncio.create_task(simulate_occupancy(settings, up.operator_keys, spots)))
        if simulate and "charging" in builders():
            sims.append(asyncio.create_task(simulate_charging(settings, up.operator_keys, spots)))
        if simulate and {"roadside", "parking", "idps"} <= set(builders()):
            suite.simulator = Supervisor([roadside_simulator(settings, up.keys["admin"], up.env)], say=_say,
                                         on_change=lambda: _write_run_file(path, settings, suite, up.keys,
                                                                           up.operator_keys))
            suite.simulator.start()
        assert suite.supervisor is not None
        gave_up = asyncio.ensure_future(suite.supervisor.wait_failed())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([gave_up, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if gave_up.done():
            failed = gave_up.result()
        else:
            gave_up.cancel()
            _say("stopping...")
    except _StoppedWhileStarting:
        _say("stopping...")
    except SuiteFailed as exc:
        failed = str(exc)
    finally:
        for sim in sims:
            sim.cancel()
            with contextlib.suppress(BaseException):
                await sim
        await suite.stop(settings.grace_s)
        remove_if_ours(path, os.getpid())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if failed is not None:
        raise RuntimeError(failed)
    _say("stopped; nothing left running")


async def _start(suite: Suite, settings: Settings, run: RunSettings, path: Path, replicas: int, redis_cluster: int,
                 started: float) -> _Started:
    """Datastores, schema, demo keys and data, every service's processes, until all of them serve."""
    database_url = settings.database_url
    if not database_url:
        suite.postgres = EmbeddedPostgres()
        database_url = await asyncio.to_thread(suite.postgres.start)
        _say(f"embedded PostGIS cluster: {database_url}")
    redis_url = settings.redis_url
    if not redis_url:
        suite.redis = EmbeddedRedisCluster(redis_cluster) if redis_cluster else EmbeddedRedis()
        redis_url = await asyncio.to_thread(suite.redis.start)
        if redis_cluster:
            _say(f"embedded Redis Cluster of {redis_cluster} nodes")
            # Each feed spread over the nodes: two shards a node.
            cluster_env = {"V2X_REDIS_CLUSTER": "1", "V2X_FEED_SHARDS": str(2 * redis_cluster)}
            settings = dataclasses.replace(settings, redis_cluster=True, feed_shards=2 * redis_cluster,
                                           env={**settings.env, **cluster_env})
        _say(f"embedded Redis: {redis_url}")
    await migrate(database_url)
    migrated_at = time.monotonic() - started
    engine = create_engine(database_url, pool_size=2)
    try:
        keys = {role: (await create_key(engine, role, "demo")).key for role in ("admin", "police", "driver")}
        operator_keys = {op: (await create_key(engine, f"operator:{op}", "demo")).key for op in OPERATORS}
        roadside_env = await _roadside_parking_env(engine, settings)
        env = {**settings.env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        specs: list[ChildSpec] = []
        emulator = "municipal" in builders() and not settings.env.get("V2X_MUNICIPAL_DESTINATIONS")
        if emulator:
            # The adapter delivers to a local platform emulator (unless destinations are configured).
            emulator_env, adapter_env = demo_platform_env(run.emulator_port)
            specs.append(ChildSpec("platform-emulator",
                                   python_argv("platform-emulator", "--port", str(run.emulator_port)),
                                   {**env, **emulator_env}, lambda: emulator_ready(run.emulator_port)))
            env.update(adapter_env)
        for name in builders():
            child_env = {**env, **roadside_env} if name == "roadside" else env
            serve = ["serve", name, *(["--processes", str(replicas)] if replicas > 1 else [])]
            specs.append(ChildSpec(name, python_argv(*serve), child_env, grpc_ready(settings.ports[name])))
        specs.append(await _console_spec(engine, settings, env))
        final = settings
        suite.supervisor = Supervisor(specs, say=_say, ready_timeout_s=run.ready_timeout_s,
                                      on_change=lambda: _write_run_file(path, final, suite, keys, operator_keys))
        # The demo data goes in while the services start (they do not need it to start).
        seeding = asyncio.create_task(_seed(engine))
        try:
            suite.supervisor.start()
            lots, stations = await seeding
        finally:
            if not seeding.done():
                seeding.cancel()
                with contextlib.suppress(BaseException):
                    await seeding
    finally:
        await engine.dispose()
    log.info("start-up: database ready at %.1f s, demo seeded at %.1f s", migrated_at, time.monotonic() - started)
    await suite.supervisor.wait_ready()
    return _Started(settings, env, keys, operator_keys, roadside_env, lots, stations, emulator)


async def _console_spec(engine: AsyncEngine, settings: Settings, env: dict[str, str]) -> ChildSpec:
    """`v2x console` beside the services; its public page asks with a driver key of its own (unless configured)."""
    console_env = dict(env)
    if not settings.env.get("V2X_CONSOLE_PUBLIC_KEY"):
        console_env["V2X_CONSOLE_PUBLIC_KEY"] = (await create_key(engine, "driver", "console public page")).key
    port = ConsoleSettings.from_env(settings.env).port

    async def ready() -> bool:
        return await http_ready(f"http://127.0.0.1:{port}/healthz")

    return ChildSpec("console", python_argv("console"), console_env, ready)


async def http_ready(url: str) -> bool:
    """A probe: `url` answers 200."""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with aiohttp.ClientSession() as http, http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status == 200
    return False


def _write_run_file(path: Path, settings: Settings, suite: Suite, keys: dict[str, str],
                    operator_keys: dict[str, str]) -> None:
    """Where everything listens, the demo keys and the state of every process, for other commands of this user
    (`v2x municipal-status`, load/soak.py); rewritten on every start and exit of a process."""
    assert suite.supervisor is not None
    data = {"pid": os.getpid(),
            "targets": {name: f"127.0.0.1:{settings.ports[name]}" for name in builders()},
            "ocpp_url": _ocpp_url(settings),
            "console_url": f"http://127.0.0.1:{ConsoleSettings.from_env(settings.env).port}/",
            "keys": {**keys, **{f"operator:{op}": key for op, key in operator_keys.items()}},
            "processes": {**suite.supervisor.state(), **(suite.simulator.state() if suite.simulator else {})}}
    try:
        write_private(path, data)
    except OSError as exc:
        log.warning("could not write the run file %s (%s): `v2x municipal-status` needs --key", path, exc)


async def _seed(engine: AsyncEngine) -> tuple[int, int]:
    """The demo district, then its charging stations (they link to its lots and EV bays)."""
    lots = await seed_district(engine)
    stations = await seed_chargers(engine) if "charging" in builders() else 0
    return lots, stations


async def _roadside_parking_env(engine: AsyncEngine, settings: Settings) -> dict[str, str]:
    """Where the roadside service sends on-street spot states: the parking service, with a key of the
    on-street operator. Nothing when the user configured it (or one of the two services is absent)."""
    if any(settings.env.get(v) for v in ROADSIDE_PARKING_VARS) or not {"roadside", "parking"} <= set(builders()):
        return {}
    key = (await create_key(engine, f"operator:{STREET_OPERATOR}", "roadside spot states")).key
    return {"V2X_ROADSIDE_PARKING_TARGET": f"127.0.0.1:{settings.ports['parking']}",
            "V2X_ROADSIDE_PARKING_KEY": key}


def roadside_simulator(settings: Settings, admin_key: str, env: dict[str, str]) -> ChildSpec:
    """`v2x sim` against this suite: the district's cameras (ConfigureCamera), their frames (StreamFrames), the
    on-street segments they watch (parking), scenarios that make incidents. Ready once it runs: it waits for the
    services itself."""

    async def running() -> bool:
        return True

    argv = python_argv("sim", "run", "--intersections", str(SIM_INTERSECTIONS), "--cameras-per",
                       str(SIM_CAMERAS_PER), "--fps", f"{SIM_FPS:g}",
                       "--target", f"127.0.0.1:{settings.ports['roadside']}",
                       "--parking", f"127.0.0.1:{settings.ports['parking']}", "--key", admin_key)
    if "charging" in builders():
        argv += ["--charging", f"127.0.0.1:{settings.ports['charging']}"]
    return ChildSpec("roadside-sim", argv, env, running)


async def simulate_occupancy(settings: Settings, operator_keys: dict[str, str],
                             spots: charging_sim.SpotBoard | None = None) -> None:
    await simulate(f"127.0.0.1:{settings.ports['parking']}", operator_keys, spots=spots)


async def simulate_charging(settings: Settings, operator_keys: dict[str, str],
                            spots: charging_sim.SpotBoard | None = None) -> None:
    await charging_sim.simulate(f"127.0.0.1:{settings.ports['charging']}", operator_keys, spots=spots)


def _ocpp_url(settings: Settings) -> str:
    return ChargingSettings.from_env(settings.env).ocpp_url("127.0.0.1")


def _banner(settings: Settings, lots: int, stations: int, keys: dict[str, str], operator_keys: dict[str, str],
            roadside_env: dict[str, str], took_s: float, simulate: bool) -> None:
    services = builders()
    here = "{\"lat\":31.40,\"lon\":121.49}"
    lines = [f"v2x-suite is up in {took_s:.1f} s with a demo district of {lots} lots and {stations} charging "
             "stations around Baoshan (31.40 N, 121.49 E)", "",
             "services (gRPC, plaintext; health + reflection on each):"]
    for name in services:
        lines.append(f"  {name:<10} 127.0.0.1:{settings.ports[name]}   metrics http://127.0.0.1:"
                     f"{settings.metrics_ports[name]}/metrics")
    if "charging" in services:
        lines.append(f"  OCPP 1.6J / 2.0.1 gateway: {_ocpp_url(settings)}/<charge point id>  (HTTP Basic: the "
                     "password RegisterChargePoint returns)")
    if roadside_env:
        lines.append(f"  roadside -> parking: on-street spot states to {roadside_env['V2X_ROADSIDE_PARKING_TARGET']} "
                     f"as operator:{STREET_OPERATOR}")
    if simulate and {"roadside", "parking", "idps"} <= set(services):
        chargers = (f", and a kerbside charging station at each driven by an OCPP charge point ({_ocpp_url(settings)})"
                    if "charging" in services else "")
        lines.append(f"  roadside simulator (v2x sim): {SIM_INTERSECTIONS} intersections, "
                     f"{SIM_INTERSECTIONS * SIM_CAMERAS_PER} cameras at up to {SIM_FPS:g} fps each "
                     f"({SIM_INTERSECTIONS * SIM_CAMERAS_PER * SIM_FPS:g} frames/s to the real detector; a camera "
                     "sends its next frame once the detector has answered all but one, and the simulator prints the "
                     f"frames/s answered per camera after 20 s and every minute){chargers}; camera incidents reach "
                     "the police stream below within two minutes")
    console = ConsoleSettings.from_env(settings.env).port
    lines += ["", f"web console: http://127.0.0.1:{console}/  (police and operators sign in with their key below; "
              f"the public page http://127.0.0.1:{console}/public needs none)"]
    lines += ["", "demo API keys (send as `authorization: Bearer <key>`):"]
    lines += [f"  {role:<16} {key}" for role, key in keys.items()]
    lines += [f"  operator:{op:<7} {key}" for op, key in operator_keys.items()]
    lines += ["", "try (a driver near Baoshan, free general spaces within 1 km):",
              f"  grpcurl -plaintext -H 'authorization: Bearer {keys['driver']}' -d "
              f"'{{\"location\":{here},\"radius_m\":1000,\"limit\":5}}' "
              f"127.0.0.1:{settings.ports['parking']} v2x.parking.v1.ParkingService/FindAvailable"]
    if "charging" in services:
        lines += ["  chargers with a free connector within 2 km, nearest first:",
                  f"  grpcurl -plaintext -H 'authorization: Bearer {keys['driver']}' -d "
                  f"'{{\"location\":{here},\"radius_m\":2000,\"available_only\":true,\"limit\":5}}' "
                  f"127.0.0.1:{settings.ports['charging']} v2x.charging.v1.ChargingService/FindChargers"]
    if "idps" in services:
        lines += ["  incidents within 3 km as they open and change (police; a snapshot first):",
                  f"  grpcurl -plaintext -H 'authorization: Bearer {keys['police']}' -d "
                  f"'{{\"filter\":{{\"area\":{{\"circle\":{{\"center\":{here},\"radius_m\":3000}}}}}}}}' "
                  f"127.0.0.1:{settings.ports['idps']} v2x.idps.v1.IdpsService/Subscribe"]
    lines += ["", "Ctrl-C stops everything."]
    _say("\n".join(lines))
