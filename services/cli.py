"""`v2x`: the suite's one command line.

  v2x run                      the whole suite on embedded defaults (or DATABASE_URL / REDIS_URL)
  v2x serve parking            one service (needs DATABASE_URL and REDIS_URL, migrated schema)
  v2x serve parking --processes 2   the same as two processes sharing its port (one core each)
  v2x migrate                  bring the database schema to the newest revision
  v2x keys create --role R     issue an API key (printed once; stored hashed)
  v2x keys revoke KEY_ID       revoke a key
  v2x seed                     load the demo district into DATABASE_URL
  v2x platform-emulator        a municipal platform emulator (receives the adapter's deliveries)
  v2x municipal-status         the municipal adapter's delivery per destination: lag, delivered, errors
  v2x camera --camera-id ID --source rtsp://...|file.mp4|/dev/video0   stream a camera to roadside
  v2x sim [--intersections N --cameras-per K --fps F --seconds S]   the simulated district's cameras
  v2x sim score --seconds S --json PATH   a scenario scored against the ground truth
  v2x console                  the web console (police, operators, the public) on V2X_CONSOLE_PORT (8080)
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import os
import sys

from services.common import eventloop
from services.common.config import ConfigError, Settings
from services.common.errors import DomainError
from services.common.jsonlog import configure_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="v2x", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole suite")
    run.add_argument("--no-sim", action="store_true",
                     help="start none of the simulators (occupancy, chargers, the roadside simulator's intersections)")
    run.add_argument("--replicas", type=int, default=1, metavar="N",
                     help="run every service as N processes sharing its port (default 1)")
    run.add_argument("--redis-cluster", type=int, default=0, metavar="M",
                     help="without REDIS_URL: an embedded Redis Cluster of M nodes (feeds sharded over it)")
    serve = sub.add_parser("serve", help="run one service")
    serve.add_argument("service", help="service name, e.g. parking")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help="run N processes sharing the service's port (one core each; default 1)")
    sub.add_parser("migrate", help="migrate the database to the newest schema")
    keys = sub.add_parser("keys", help="manage API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="issue a key")
    create.add_argument("--role", required=True, help="operator:<id>, camera:<id>, police, driver, admin, platform")
    create.add_argument("--label", default="", help="what the key is for")
    revoke = ksub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    sub.add_parser("seed", help="load the demo district")
    emulator = sub.add_parser("platform-emulator", help="run a municipal platform emulator (tests, demo)")
    from services.municipal.emulator_args import add_arguments as emulator_arguments

    emulator_arguments(emulator)
    status = sub.add_parser("municipal-status",
                            help="the municipal adapter's delivery status per destination (lag, errors)")
    status.add_argument("--target", help="the adapter's admin host:port (default: that of the running `v2x run`, "
                        "else 127.0.0.1:V2X_MUNICIPAL_PORT)")
    status.add_argument("--key", help="an admin API key (default: V2X_ADMIN_KEY, else the running `v2x run`'s "
                        "demo admin key)")
    status.add_argument("--destination", default="", help="only this destination")
    camera = sub.add_parser("camera", help="stream a camera's frames to the roadside service")
    from services.roadside.agent_args import add_arguments as camera_arguments

    camera_arguments(camera)
    sub.add_parser("console", help="the web console for the police, operators and the public (HTTP, "
                   "V2X_CONSOLE_PORT)")
    sub.add_parser("sim", help="the roadside simulator (python -m roadside_sim; `v2x sim --help`)", add_help=False)
    return p


async def _keys(ns: argparse.Namespace, settings: Settings) -> None:
    from services.common.apikeys import create_key, revoke_key
    from services.common.db import create_engine

    engine = create_engine(settings.require_database_url(), pool_size=1)
    try:
        if ns.keys_command == "create":
            issued = await create_key(engine, ns.role, ns.label)
            print(f"{issued.key}\t{issued.principal}\t(shown once; only its hash is stored)")
        elif not await revoke_key(engine, ns.key_id):
            raise SystemExit(f"no active key {ns.key_id}")
    finally:
        await engine.dispose()


async def _migrate(settings: Settings) -> None:
    from services.common.db import migrate

    await migrate(settings.require_database_url())


async def _seed(settings: Settings) -> None:
    from services.common.db import create_engine
    from services.runner.demo_chargers import seed_chargers
    from services.runner.demo_district import seed_district

    engine = create_engine(settings.require_database_url(), pool_size=2)
    try:
        lots = await seed_district(engine)
        stations = await seed_chargers(engine)
        print(f"seeded {lots} lots and {stations} charging stations")
    finally:
        await engine.dispose()


def _sim(argv: list[str]) -> None:
    """`v2x sim ...` is the roadside simulator, a client from outside the suite: it runs as `python -m roadside_sim`
    in this process' place, so that nothing in services/ imports it (tests/sim/test_boundary.py)."""
    os.execv(sys.executable, [sys.executable, "-m", "roadside_sim", *argv])


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["sim"]:
        _sim(args[1:])
    # A native crash (a segfault in an extension module) prints the Python stack of every thread before the
    # process dies, so that the log says where it happened.
    faulthandler.enable(all_threads=True)
    ns = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(f"v2x-{ns.command}" if ns.command != "serve" else ns.service, settings.log_level)
        if ns.command == "run":
            from services.runner.suite import run_suite

            if not 1 <= ns.replicas <= 16:
                raise SystemExit("--replicas must be between 1 and 16")
            if ns.redis_cluster and not 1 <= ns.redis_cluster <= 9:
                raise SystemExit("--redis-cluster must be between 1 and 9 nodes")
            eventloop.run(run_suite(settings, simulate=not ns.no_sim, replicas=ns.replicas,
                                    redis_cluster=ns.redis_cluster), settings.event_loop)
        elif ns.command == "serve":
            from services.registry import NAMES

            if ns.service not in NAMES:
                raise SystemExit(f"unknown service {ns.service!r}; this build serves: {', '.join(sorted(NAMES))}")
            if not 1 <= ns.processes <= 64:
                raise SystemExit("--processes must be between 1 and 64")
            if ns.processes > 1:
                # The parent only starts and watches its processes: it imports none of the service's code.
                from services.common.processes import supervise

                raise SystemExit(supervise(ns.service, ns.processes, settings.ports[ns.service],
                                           settings.metrics_ports[ns.service], settings.grace_s))
            from services.common.runtime import serve
            from services.registry import builders

            eventloop.run(serve(ns.service, builders()[ns.service], settings), settings.event_loop)
        elif ns.command == "console":
            from services.console.app import run_console

            eventloop.run(run_console(settings), settings.event_loop)
        elif ns.command == "migrate":
            asyncio.run(_migrate(settings))
        elif ns.command == "keys":
            asyncio.run(_keys(ns, settings))
        elif ns.command == "seed":
            asyncio.run(_seed(settings))
        elif ns.command == "platform-emulator":
            from services.municipal.emulator import run as run_emulator

            asyncio.run(run_emulator(ns, dict(os.environ)))
        elif ns.command == "municipal-status":
            from services.municipal.status_report import status_command

            raise SystemExit(status_command(ns.target, ns.key, ns.destination,
                                            f"127.0.0.1:{settings.ports['municipal']}"))
        elif ns.command == "camera":
            from grpc import aio

            from services.roadside.agent import SourceError, config_from_args, run_agent

            try:
                eventloop.run(run_agent(config_from_args(ns)), settings.event_loop)
            except SourceError as exc:
                raise ConfigError(str(exc)) from None
            except aio.AioRpcError as exc:
                raise ConfigError(f"the roadside service refused the stream: {exc.code().name}: {exc.details()}") \
                    from None
    except (ConfigError, DomainError) as exc:
        print(f"v2x: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
