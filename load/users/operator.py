"""A parking operator's system: bursts of occupancy reports over StreamOccupancy (one event per ack, timed from the
send of its batch) and gate passages with plates (RecordPassage), on lots of its own it registers at start."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator

import grpc
from locust import User, between, task
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from load.users.common import (
    StreamError,
    channel,
    code_of,
    fire,
    md,
    near,
    now_ts,
    plan,
    running,
    setup_call,
    unary,
    worker_index,
)

LOTS_PER_OPERATOR = 4
CAPACITY = 120
PROVINCES = "沪苏浙皖"
_numbers = itertools.count()


class Operator(User):
    abstract = False
    wait_time = between(1, 3)

    def on_start(self) -> None:
        p = plan()
        n = next(_numbers)
        self.rng = random.Random()
        self.stub = ParkingServiceStub(channel(p.targets["parking"]))
        self.key = p.keys["operator"]
        self.lots = [f"{p.tag}-W{worker_index(self.environment)}-OP{n:03d}-{i}" for i in range(LOTS_PER_OPERATOR)]
        for lot_id in self.lots:
            lot = ppb.Lot(
                id=lot_id,
                operator_id=p.operator_id,
                name=f"load test garage {lot_id}",
                region_code="310113",
                kind=ppb.LOT_KIND_GARAGE,
                location=near(self.rng, p),
                capacity=ppb.Capacity(general=CAPACITY),
                detection_type=ppb.DETECTION_TYPE_BALANCING,
                occupancy_ttl_s=600,
                opening_hours=ppb.OpeningHours(always_open=True),
            )
            setup_call(
                self, "parking.RegisterLot", self.stub.RegisterLot, ppb.RegisterLotRequest(lot=lot), p.keys["admin"]
            )
        self.sequence = time.time_ns() // 1000  # increasing across runs

    @task(3)
    def occupancy_burst(self) -> None:
        """A burst: 5 batches of 20 reports (each a lot's fresh counts), acks read as they come."""
        env = self.environment
        sent: dict[int, float] = {}

        def batches() -> Iterator[ppb.OccupancyReportBatch]:
            for _ in range(5):
                batch = ppb.OccupancyReportBatch()
                at = time.perf_counter()
                for _ in range(20):
                    self.sequence += 1
                    sent[self.sequence] = at
                    batch.reports.add(
                        lot_id=self.rng.choice(self.lots),
                        sequence=self.sequence,
                        observed_at=now_ts(),
                        counts=[
                            ppb.ClassCount(space_class=ppb.SPACE_CLASS_GENERAL, free=self.rng.randint(0, CAPACITY))
                        ],
                    )
                yield batch

        call = self.stub.StreamOccupancy(batches(), metadata=md(self.key), timeout=30)
        try:
            for answer in call:
                for ack in answer.acks:
                    at = sent.pop(ack.sequence, time.perf_counter())
                    ms = (time.perf_counter() - at) * 1000
                    bad = ack.result not in (ppb.ACK_RESULT_ACCEPTED, ppb.ACK_RESULT_STALE, ppb.ACK_RESULT_DUPLICATE)
                    exc = StreamError(f"{ppb.AckResult.Name(ack.result)}: {ack.error.message}") if bad else None
                    fire(env, "grpc", "parking.StreamOccupancy ack", ms, ack.ByteSize(), exc)
        except grpc.RpcError as exc:
            if running(env) and code_of(exc) != "CANCELLED":
                fire(env, "grpc", "parking.StreamOccupancy stream", 0, 0, exc)
        finally:
            call.cancel()

    @task(1)
    def passage(self) -> None:
        plate = f"{self.rng.choice(PROVINCES)}{self.rng.choice('ABCDEFG')}{self.rng.randint(10000, 99999)}"
        unary(
            self,
            "parking.RecordPassage",
            self.stub.RecordPassage,
            ppb.RecordPassageRequest(
                lot_id=self.rng.choice(self.lots),
                passage_id=f"load-{self.rng.getrandbits(64):016x}",
                direction=self.rng.choice((ppb.PASSAGE_DIRECTION_ENTRY, ppb.PASSAGE_DIRECTION_EXIT)),
                plate=plate,
                plate_colour=ppb.PLATE_COLOUR_BLUE,
                lane="E1",
                passed_at=now_ts(),
            ),
            self.key,
        )
