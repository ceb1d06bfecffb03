"""Durability: an acknowledged change survives the service being killed (SIGKILL) right after the ack.

The service runs as a real `v2x serve parking` process against the test database; the checks read
the database directly, and a second process serves what the first one acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.config import Settings
from services.common.runtime import Resources
from tests.conftest import Keys
from tests.parking.conftest import NewLot
from tests.parking.helpers import batch, free_of, report, ts
from tests.ports import free_port
from tests.waiting import assert_eventually

if TYPE_CHECKING:
    # The async flavour of the stub exists only in the generated .pyi.
    from v2x.parking.v1.parking_pb2_grpc import ParkingServiceAsyncStub as Stub

# Each test SIGKILLs a real `v2x serve` process and takes 7-19 s on the 2-core machine.
pytestmark = [pytest.mark.chaos, pytest.mark.slow]

V2X = Path(sys.executable).parent / "v2x"
SERVICE = "v2x.parking.v1.ParkingService"
START_TIMEOUT_S = 30.0



@dataclass
class Served:
    """One `v2x serve parking` process and a channel to it."""

    proc: asyncio.subprocess.Process
    channel: aio.Channel
    stub: Stub
    log_path: Path

    async def kill(self) -> None:
        """SIGKILL: no graceful stop, no flushing, nothing after the last ack."""
        os.kill(self.proc.pid, signal.SIGKILL)
        assert await self.proc.wait() == -signal.SIGKILL

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


Start = Callable[[], Awaitable[Served]]


@pytest.fixture
async def serve(settings: Settings, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts parking processes on free ports and waits until each reports SERVING; kills
    whatever is still running after the test."""
    started: list[Served] = []

    async def start() -> Served:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or "",
               "V2X_PARKING_PORT": str(port), "V2X_PARKING_METRICS_PORT": str(free_port()),
               "V2X_BIND_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"}
        log_path = tmp_path / f"serve-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(str(V2X), "serve", "parking", env=env,
                                                        stdout=asyncio.subprocess.DEVNULL, stderr=log)
        # Retry connecting quickly while the process starts (the default backoff waits 1 s and more).
        channel = aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 200)])
        served = Served(proc, channel, ParkingServiceStub(channel), log_path)
        started.append(served)
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            if proc.returncode is not None:
                pytest.fail(f"v2x serve parking exited with {proc.returncode}:\n{served.log()}")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=1)
            except aio.AioRpcError:
                return False
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

        try:
            await assert_eventually(serving, "v2x serve parking SERVING", START_TIMEOUT_S, every_s=0.1)
        except AssertionError as exc:
            pytest.fail(f"{exc}:\n{served.log()}")
        return served

    yield start
    for s in started:
        await s.channel.close()
        if s.proc.returncode is None:
            s.proc.kill()
            await s.proc.wait()


async def _lots(new_lot: NewLot, n: int, **kw: object) -> list[str]:
    return list(await asyncio.gather(*(new_lot(general=100, ev=0, disabled=0, **kw) for _ in range(n))))


async def _states(resources: Resources, lot_ids: list[str]) -> dict[str, tuple[int, int | None]]:
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT lot_id, seq, free_general FROM parking_lot_state WHERE lot_id = ANY(:ids)"),
            {"ids": lot_ids})).all()
    return {r.lot_id: (r.seq, r.free_general) for r in rows}


async def _outbox(resources: Resources, lot_ids: list[str], kind: str, key: str) -> list[tuple[str, str]]:
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT aggregate_id, payload->>:key AS k FROM outbox WHERE kind = :kind AND aggregate_id = ANY(:ids)"),
            {"ids": lot_ids, "kind": kind, "key": key})).all()
    return [(r.aggregate_id, r.k) for r in rows]


def _burst(lot_ids: list[str], per_lot: int) -> list[pb.OccupancyReport]:
    """per_lot reports for each lot, interleaved, with increasing sequences and observation times."""
    base = datetime.now(UTC) - timedelta(seconds=per_lot)
    return [report(lot_id, seq, general=(seq * 7 + i) % 101, at=base + timedelta(seconds=seq))
            for seq in range(1, per_lot + 1) for i, lot_id in enumerate(lot_ids)]


async def _stream_then_kill(served: Served, keys: Keys, reports: list[pb.OccupancyReport]) -> list[pb.OccupancyAck]:
    async def feed() -> AsyncIterator[pb.OccupancyReportBatch]:
        for i in range(0, len(reports), 7):  # small messages: the service groups several per transaction
            yield batch(*reports[i:i + 7])

    call = served.stub.StreamOccupancy(feed(), metadata=keys.md(keys.op_a))
    acks: list[pb.OccupancyAck] = []
    async with asyncio.timeout(30):
        async for message in call:
            acks.extend(message.acks)
            if len(acks) == len(reports):
                await served.kill()
                break
    call.cancel()
    return acks


def _last_counts(reports: list[pb.OccupancyReport]) -> dict[str, tuple[int, int]]:
    return {r.lot_id: (r.sequence, r.counts[0].free) for r in reports}


async def test_streamed_reports_acked_before_sigkill_are_committed(serve: Start, keys: Keys, new_lot: NewLot,
                                                                   resources: Resources) -> None:
    lot_ids = await _lots(new_lot, 50)
    reports = _burst(lot_ids, 10)
    served = await serve()
    acks = await _stream_then_kill(served, keys, reports)
    assert len(acks) == 500
    assert all(a.result == pb.ACK_RESULT_ACCEPTED for a in acks), [a for a in acks if a.result != 1][:3]
    assert [(a.lot_id, a.sequence) for a in acks] == [(r.lot_id, r.sequence) for r in reports]
    assert await _states(resources, lot_ids) == _last_counts(reports)
    outbox = await _outbox(resources, lot_ids, "lot_dynamic", "sequence")
    assert sorted(outbox) == sorted((a.lot_id, str(a.sequence)) for a in acks)


async def test_unary_reports_acked_before_sigkill_are_committed(serve: Start, keys: Keys, new_lot: NewLot,
                                                                resources: Resources) -> None:
    lot_ids = await _lots(new_lot, 40)
    reports = _burst(lot_ids, 3)
    served = await serve()
    md = keys.md(keys.op_a)
    acks: list[pb.OccupancyAck] = []
    async with asyncio.timeout(30):
        for seq in (1, 2, 3):  # each lot's reports in order; the lots concurrently
            wave = [r for r in reports if r.sequence == seq]
            acks += await asyncio.gather(*(served.stub.PushOccupancy(r, metadata=md) for r in wave))
    await served.kill()
    assert all(a.result == pb.ACK_RESULT_ACCEPTED for a in acks) and len(acks) == 120
    assert await _states(resources, lot_ids) == _last_counts(reports)
    outbox = await _outbox(resources, lot_ids, "lot_dynamic", "sequence")
    assert sorted(outbox) == sorted((a.lot_id, str(a.sequence)) for a in acks)


async def test_passages_acked_before_sigkill_are_committed(serve: Start, stub: Stub, keys: Keys, new_lot: NewLot,
                                                           resources: Resources) -> None:
    lot_ids = await _lots(new_lot, 10)
    md = keys.md(keys.op_a)
    for lot_id in lot_ids:  # a count first, so that no passage is clamped whatever the order
        await stub.PushOccupancy(report(lot_id, 1, general=50), metadata=md)
    served = await serve()
    directions = [pb.PASSAGE_DIRECTION_ENTRY] * 7 + [pb.PASSAGE_DIRECTION_EXIT] * 3
    requests = [pb.RecordPassageRequest(lot_id=lot_id, passage_id=f"p{i}", direction=d, plate=f"沪A{i:05d}",
                                        passed_at=ts(seconds_ago=1))
                for lot_id in lot_ids for i, d in enumerate(directions)]
    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(served.stub.RecordPassage(r, metadata=md) for r in requests))
    await served.kill()
    assert all(a.created for a in answers)
    assert await _states(resources, lot_ids) == dict.fromkeys(lot_ids, (1, 50 - 7 + 3))
    async with resources.engine.connect() as conn:
        stored = (await conn.execute(text(
            "SELECT lot_id, passage_id FROM parking_passages WHERE lot_id = ANY(:ids)"), {"ids": lot_ids})).all()
    expected = sorted((r.lot_id, r.passage_id) for r in requests)
    assert sorted((r.lot_id, r.passage_id) for r in stored) == expected
    assert sorted(await _outbox(resources, lot_ids, "passage", "passage_id")) == expected
    dynamic = await _outbox(resources, lot_ids, "lot_dynamic", "lot_id")
    assert len(dynamic) == len(requests) + len(lot_ids)  # one per passage, one per initial count


async def test_a_second_process_serves_what_the_killed_one_acknowledged(serve: Start, keys: Keys,
                                                                        new_lot: NewLot) -> None:
    lot_ids = await _lots(new_lot, 20)
    reports = _burst(lot_ids, 5)
    first = await serve()
    acks = await _stream_then_kill(first, keys, reports)
    assert len(acks) == len(reports) and all(a.result == pb.ACK_RESULT_ACCEPTED for a in acks)
    second = await serve()
    for lot_id, (seq, free) in _last_counts(reports).items():
        view = await second.stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
        assert view.availability.sequence == seq and free_of(view.availability) == free
        assert not view.availability.freshness.stale
    # And it takes the feed up where the first one stopped.
    ack = await second.stub.PushOccupancy(report(lot_ids[0], 6, general=1), metadata=keys.md(keys.op_a))
    assert ack.result == pb.ACK_RESULT_ACCEPTED and ack.stored_sequence == 6
    again = await second.stub.PushOccupancy(report(lot_ids[1], 5, general=1), metadata=keys.md(keys.op_a))
    assert again.result == pb.ACK_RESULT_DUPLICATE
