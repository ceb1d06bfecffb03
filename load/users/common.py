"""What every locust user shares: the plan of the run (where the suite is, its keys, the frames), sync gRPC channels
and one `events.request.fire` per call, streamed message or ack.

Runs inside the locust process only, which gevent has monkey-patched: sync gRPC after
`grpc.experimental.gevent.init_gevent()` (locustfile.py calls it before any channel exists), never grpc.aio, never
the services' code; only the generated contracts (`v2x.*`) and the standard library.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from locust import User, events
from locust.env import Environment
from v2x.common.v1 import common_pb2

PLAN_ENV = "V2X_LOAD_PLAN"
# Request types in the report besides "grpc" and the OCPP versions: values that are not round trips.
E2E = "e2e"  # event occurrence (frame capture or report) -> police console message
DROP = "drop"  # a camera frame that got no result (dropped by the camera agent or the service, or late)
LAG = "lag"  # the municipal adapter's lag (its "response time" is the lag in ms)
SETUP = "setup"  # a user's registration calls (cameras, lots, charge points)
# Prefix of the request type of everything fired in the run's first `Plan.settle_s` seconds: a fresh locust process
# starts all its users at once (registrations, first frames, OCPP boots in one gevent loop), and a capacity step
# measures the node in service, not the load generator's start. Failures while settling still count.
WARM_UP = "warm-up"
_started = [time.monotonic()]  # when the test started in this process (test_start), which the run's time counts from


def _test_started(**_: Any) -> None:
    _started[0] = time.monotonic()


events.test_start.add_listener(_test_started)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Plan:
    """What `make load` (load/run.py) or the smoke test prepared: written to a JSON file named by $V2X_LOAD_PLAN."""

    targets: dict[str, str]  # roadside, idps, parking, charging, municipal -> host:port
    ocpp_url: str  # ws://host:port/ocpp
    keys: dict[str, str]  # admin, police, driver, operator
    operator_id: str  # the operator the operator key belongs to
    frames: str  # the zip file load/frames.py rendered
    fps: float = 5.0  # per camera
    center: tuple[float, float] = (31.40, 121.49)  # the district (lat, lon)
    radius_m: float = 1500.0  # where the intersections, lots and chargers of the run are
    tag: str = "LOAD"  # prefix of what users register (cameras, lots, stations), stable across runs
    counts: dict[str, int] = field(default_factory=dict)  # users per class (fixed counts)
    settle_s: float = 0.0  # the first seconds of the process, reported under WARM_UP types

    @staticmethod
    def load(path: str | None = None) -> Plan:
        p = path or os.environ.get(PLAN_ENV, "")
        if not p:
            raise SystemExit(f"{PLAN_ENV} names no plan file: run `make load`, or write one (see load/README.md)")
        raw = json.loads(Path(p).read_text())
        raw["center"] = tuple(raw.get("center", (31.40, 121.49)))
        return Plan(**raw)


@cache
def plan() -> Plan:
    return Plan.load()


@cache
def channel(target: str) -> grpc.Channel:
    """One sync channel per target and locust process (gRPC multiplexes every user's calls over it), connected
    before it is handed out: an app holds its connection, so no call is timed with the TCP and HTTP/2 set-up."""
    ch = grpc.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
    )
    with contextlib.suppress(grpc.FutureTimeoutError):  # not reachable yet: the calls will say so (as failures)
        grpc.channel_ready_future(ch).result(timeout=30)
    return ch


def md(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def now_ts() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def near(rng: random.Random, p: Plan, radius_m: float | None = None) -> common_pb2.LatLon:
    """A random point within `radius_m` of the district's centre."""
    r = (radius_m or p.radius_m) * rng.random() ** 0.5
    a = rng.uniform(0, 2 * math.pi)
    lat = p.center[0] + r * math.cos(a) / 111_320
    lon = p.center[1] + r * math.sin(a) / (111_320 * math.cos(math.radians(p.center[0])))
    return common_pb2.LatLon(lat=lat, lon=lon)


def fire(
    env: Environment, request_type: str, name: str, ms: float, length: int = 0, exc: BaseException | None = None
) -> None:
    if time.monotonic() - _started[0] < plan().settle_s:
        request_type = f"{WARM_UP} {request_type}"
    env.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=ms,  # type: ignore[no-untyped-call]
        response_length=length,
        exception=exc,
        context={},
    )


def worker_index(env: Environment) -> int:
    """Which locust process this is (0 alone; the master numbers its workers), so that ids users register are
    unique across workers and stable across runs."""
    return int(getattr(env.runner, "worker_index", 0) or 0)


def running(env: Environment) -> bool:
    runner = env.runner
    return runner is None or runner.state not in ("stopping", "stopped", "cleanup")


class StreamError(Exception):
    """A stream message that is a failure (e.g. an ack REJECTED, a frame answered with an error)."""


R = TypeVar("R", bound=Message)


def unary(
    user: User,
    name: str,
    call: Callable[..., R],
    request: Any,
    key: str,
    timeout: float = 10.0,
    request_type: str = "grpc",
) -> R | None:
    """One unary call, timed and fired; None when it failed (the failure is in the report)."""
    started = time.perf_counter()
    try:
        reply = call(request, metadata=md(key), timeout=timeout)
    except grpc.RpcError as exc:
        fire(user.environment, request_type, name, (time.perf_counter() - started) * 1000, 0, exc)
        return None
    fire(user.environment, request_type, name, (time.perf_counter() - started) * 1000, reply.ByteSize())
    return reply


def setup_call(
    user: User, name: str, call: Callable[..., R], request: Any, key: str, exists_ok: bool = True
) -> R | None:
    """A registration call (fired as type "setup"); ALREADY_EXISTS from an earlier run is fine."""
    started = time.perf_counter()
    try:
        reply = call(request, metadata=md(key), timeout=30, wait_for_ready=True)
    except grpc.RpcError as exc:
        ok = exists_ok and code_of(exc) == "ALREADY_EXISTS"
        fire(user.environment, SETUP, name, (time.perf_counter() - started) * 1000, 0, None if ok else exc)
        return None
    fire(user.environment, SETUP, name, (time.perf_counter() - started) * 1000, reply.ByteSize())
    return reply


@contextmanager
def cancelling(call: Any) -> Iterator[Any]:
    """A streaming call that is cancelled when the block ends (the user stopped, or stops reading)."""
    try:
        yield call
    finally:
        call.cancel()


def code_of(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return str(exc.code().name)
    return type(exc).__name__
