"""StreamOccupancy carries batches: one ack message per report message, acks in the batch's order,
each after commit; and the fast paths of the ingest (report validation, trend) agree with the
general ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from v2x.parking.v1 import parking_pb2 as pb

from services.common.runtime import Resources
from services.parking.availability import TREND_MIN_SPAN_S, TREND_THRESHOLD, trend
from services.parking.servicer import MAX_BATCH
from tests.conftest import Keys
from tests.parking.conftest import NewLot, Stub
from tests.parking.helpers import batch, free_of, report


async def _messages(stub: Stub, keys: Keys,
                    batches: list[pb.OccupancyReportBatch]) -> list[pb.OccupancyAckBatch]:
    async def feed() -> AsyncIterator[pb.OccupancyReportBatch]:
        for b in batches:
            yield b

    return [m async for m in stub.StreamOccupancy(feed(), metadata=keys.md(keys.op_a))]


async def test_each_report_message_gets_one_ack_message_in_order(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    a, b = await new_lot(), await new_lot()
    batches = [
        batch(report(a, 1, general=50), report(b, 1, general=40), report(a, 2, general=49)),
        batch(),  # an empty message is answered with an empty one
        batch(report(a, 2, general=48), report(b, 2, general=500), report(b, 2, general=39), report(a, 1, general=1)),
    ]
    answers = await _messages(stub, keys, batches)
    assert [len(m.acks) for m in answers] == [3, 0, 4]
    assert [(x.lot_id, x.sequence) for m in answers for x in m.acks] == \
        [(r.lot_id, r.sequence) for m in batches for r in m.reports]
    assert [x.result for x in answers[2].acks] == [
        pb.ACK_RESULT_DUPLICATE, pb.ACK_RESULT_REJECTED, pb.ACK_RESULT_ACCEPTED, pb.ACK_RESULT_STALE]
    assert answers[2].acks[1].error.code == 3 and "capacity" in answers[2].acks[1].error.message
    view = await stub.GetLot(pb.GetLotRequest(lot_id=b), metadata=keys.md(keys.driver))
    assert free_of(view.availability) == 39 and view.availability.sequence == 2


async def test_a_batch_larger_than_one_transaction_is_acked_whole(stub: Stub, keys: Keys, new_lot: NewLot) -> None:
    lot_id = await new_lot(general=5000)
    now = datetime.now(UTC)
    n = 2 * MAX_BATCH + 7
    big = batch(*[report(lot_id, seq, general=seq % 5000, at=now - timedelta(seconds=n - seq))
                  for seq in range(1, n + 1)])
    answers = await _messages(stub, keys, [big])
    assert len(answers) == 1 and len(answers[0].acks) == n
    assert all(x.result == pb.ACK_RESULT_ACCEPTED for x in answers[0].acks)
    view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.driver))
    assert view.availability.sequence == n


async def test_outbox_rows_of_a_batch_follow_the_reports_order(stub: Stub, keys: Keys, new_lot: NewLot,
                                                                resources: Resources) -> None:
    lots = [await new_lot() for _ in range(4)]
    reports = [report(lot_id, seq, general=seq) for seq in (1, 2) for lot_id in reversed(lots)]
    answers = await _messages(stub, keys, [batch(*reports)])
    assert all(x.result == pb.ACK_RESULT_ACCEPTED for x in answers[0].acks)
    async with resources.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT aggregate_id, payload->>'sequence' AS seq, txid::text AS tx FROM outbox "
            "WHERE kind = 'lot_dynamic' AND aggregate_id = ANY(:ids) ORDER BY id"), {"ids": lots})).all()
    assert [(r.aggregate_id, int(r.seq)) for r in rows] == [(r.lot_id, r.sequence) for r in reports]
    assert len({r.tx for r in rows}) == 1  # one message, one transaction


async def test_messages_queued_during_a_commit_share_the_next_transaction(stub: Stub, keys: Keys, new_lot: NewLot,
                                                                          resources: Resources) -> None:
    lot_id = await new_lot()
    now = datetime.now(UTC)
    reports = [report(lot_id, seq, general=seq, at=now - timedelta(seconds=100 - seq)) for seq in range(1, 61)]

    async def feed() -> AsyncIterator[pb.OccupancyReportBatch]:
        for i in range(0, len(reports), 3):
            yield batch(*reports[i:i + 3])
        await asyncio.sleep(0)

    answers = [m async for m in stub.StreamOccupancy(feed(), metadata=keys.md(keys.op_a))]
    assert [len(m.acks) for m in answers] == [3] * 20
    assert [x.sequence for m in answers for x in m.acks] == list(range(1, 61))
    async with resources.engine.connect() as conn:
        txs = (await conn.execute(text(
            "SELECT count(DISTINCT txid) FROM outbox WHERE kind = 'lot_dynamic' AND aggregate_id = :id"),
            {"id": lot_id})).scalar_one()
    assert txs < 20  # messages that waited were committed together, not one transaction each


# ----- the one-pass trend is the least-squares trend ------------------------------------------

def _reference_trend(samples: list[list[float]], total_capacity: int) -> int:
    """The textbook two-pass least squares."""
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < TREND_MIN_SPAN_S or total_capacity <= 0:
        return pb.OCCUPANCY_TREND_UNKNOWN
    n = len(samples)
    mt = sum(s[0] for s in samples) / n
    mo = sum(s[1] for s in samples) / n
    slope = sum((s[0] - mt) * (s[1] - mo) for s in samples) / sum((s[0] - mt) ** 2 for s in samples)
    change = slope * (samples[-1][0] - samples[0][0])
    if change > TREND_THRESHOLD * total_capacity:
        return pb.OCCUPANCY_TREND_INCREASING
    if change < -TREND_THRESHOLD * total_capacity:
        return pb.OCCUPANCY_TREND_DECREASING
    return pb.OCCUPANCY_TREND_STABLE


@settings(max_examples=300, deadline=None)
@given(st.floats(1.7e9, 1.8e9), st.lists(st.tuples(st.floats(0, 900), st.integers(0, 1500)), min_size=0, max_size=40),
       st.integers(1, 1500))
def test_the_one_pass_trend_is_the_least_squares_trend(start: float, points: list[tuple[float, int]],
                                                       capacity: int) -> None:
    samples = [[start + dt, float(min(o, capacity))] for dt, o in sorted(points)]
    assert trend(samples, capacity) == _reference_trend(samples, capacity)
