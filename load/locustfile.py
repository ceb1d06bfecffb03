"""The suite under a district's load: one locust User class per real client, all aimed at the same intersections.

    locust -f load/locustfile.py --headless ...        (`make load` runs it; load/README.md)

The plan of the run (where the suite is, keys, the frames rendered in advance, users per class) is the JSON file
named by $V2X_LOAD_PLAN. This file runs inside locust only: gevent has patched the process, so the users speak sync
gRPC after `init_gevent()` and import no `services.*` code (pytest never imports it: the smoke test runs locust as a
subprocess).
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `load.users` from the repository

from load.users.admin import PlatformAdmin  # noqa: E402
from load.users.camera import Camera  # noqa: E402
from load.users.chargepoint import ChargePoint  # noqa: E402
from load.users.common import plan  # noqa: E402
from load.users.console import PoliceConsole  # noqa: E402
from load.users.driver import Driver  # noqa: E402
from load.users.operator import Operator  # noqa: E402

__all__ = ["USERS", "Camera", "ChargePoint", "Driver", "Operator", "PlatformAdmin", "PoliceConsole"]
USERS = {c.__name__: c for c in (Camera, Operator, Driver, PoliceConsole, ChargePoint, PlatformAdmin)}

# How many of each: the plan's counts (`make load` computes them from load/mix.toml and the intersections).
for _name, _cls in USERS.items():
    _cls.fixed_count = int(plan().counts.get(_name, 0))
del _name, _cls  # locust takes every User class among this module's names: no second name for one
