"""A driver's app: where can I park (FindAvailable), where can I charge (FindChargers), and a short
WatchAvailability around here (a snapshot, then a few seconds of changes; one event per message)."""

from __future__ import annotations

import random
import time

import grpc
from locust import User, between, task
from v2x.charging.v1 import charging_pb2 as cpb
from v2x.charging.v1.charging_pb2_grpc import ChargingServiceStub
from v2x.common.v1 import common_pb2
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from load.users.common import channel, code_of, fire, md, near, plan, running, unary

WATCH_S = 5.0
WATCH_SNAPSHOT = "parking.WatchAvailability snapshot message"
WATCH_CHANGE = "parking.WatchAvailability change message"
U = ppb.AvailabilityUpdate


class Driver(User):
    abstract = False
    wait_time = between(1, 4)

    def on_start(self) -> None:
        p = plan()
        self.rng = random.Random()
        self.parking = ParkingServiceStub(channel(p.targets["parking"]))
        self.charging = ChargingServiceStub(channel(p.targets["charging"]))
        self.key = p.keys["driver"]

    @task(5)
    def find_parking(self) -> None:
        unary(
            self,
            "parking.FindAvailable",
            self.parking.FindAvailable,
            ppb.FindAvailableRequest(location=near(self.rng, plan()), radius_m=1000, limit=20, only_available=True),
            self.key,
        )

    @task(3)
    def find_chargers(self) -> None:
        unary(
            self,
            "charging.FindChargers",
            self.charging.FindChargers,
            cpb.FindChargersRequest(
                location=near(self.rng, plan()), radius_m=2000, available_only=self.rng.random() < 0.5, limit=10
            ),
            self.key,
        )

    @task(1)
    def watch(self) -> None:
        env = self.environment
        area = common_pb2.Area(circle=common_pb2.Circle(center=near(self.rng, plan()), radius_m=500))
        opened = time.perf_counter()
        call = self.parking.WatchAvailability(
            ppb.WatchAvailabilityRequest(area=area, snapshot=True), metadata=md(self.key), timeout=WATCH_S
        )
        try:
            for update in call:
                if update.reason in (U.REASON_SNAPSHOT, U.REASON_SNAPSHOT_END):
                    # The snapshot: each message timed from the call's start.
                    fire(env, "grpc", WATCH_SNAPSHOT, (time.perf_counter() - opened) * 1000, update.ByteSize())
                else:
                    # A change: from the suite's receipt of the reading to this driver.
                    received = update.lot.availability.freshness.received_at.ToMicroseconds() / 1e6
                    fire(env, "grpc", WATCH_CHANGE, max(0.0, (time.time() - received) * 1000), update.ByteSize())
        except grpc.RpcError as exc:
            # The watch ends by its deadline: that is the short watch a driver makes, not a failure.
            if running(env) and code_of(exc) not in ("DEADLINE_EXCEEDED", "CANCELLED"):
                fire(env, "grpc", "parking.WatchAvailability stream", 0, 0, exc)
        finally:
            call.cancel()
