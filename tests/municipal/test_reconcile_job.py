"""The daily reconciliation: at the configured local hour the adapter asks the platform for yesterday's counts of
each destination that offers them, compares them with its own, and stores the outcome with the differences."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from services.common.runtime import Resources
from services.municipal.destinations import Adapter
from services.municipal.emulator import RunningEmulator
from services.municipal.model import LOCAL_TZ, idempotency_key
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from services.municipal.store import MunicipalStore
from tests.municipal.conftest import StartAdapter, destination
from tests.municipal.helpers import Row, eventually, lot_dynamic, lot_static
from tests.municipal.test_delivery import caught_up

# Records are written as changes of a fixed day in the past, so the counts of the day are the test's alone.
DAY = date(2024, 3, 14)
NOON = datetime(2024, 3, 14, 12, 0, tzinfo=LOCAL_TZ)
HOUR = 3  # V2X_MUNICIPAL_RECONCILE_HOUR of the job below
OTHER_KINDS = ("spot_status", "passage", "charger_status")

_INSERT_AT = text("""
INSERT INTO outbox (kind, aggregate_id, payload, created_at)
SELECT k, a, p::json, :at FROM unnest(CAST(:k AS text[]), CAST(:a AS text[]), CAST(:p AS text[])) AS t(k, a, p)
RETURNING id""")


async def insert_at(resources: Resources, at: datetime, rows: Sequence[Row]) -> list[int]:
    """Outbox rows (one transaction) as changes made at `at`."""
    async with resources.engine.begin() as conn:
        res = await conn.execute(_INSERT_AT, {"at": at, "k": [r[0] for r in rows], "a": [r[1] for r in rows],
                                              "p": [json.dumps(r[2], ensure_ascii=False) for r in rows]})
        return [r[0] for r in res]


def clock_from(start: datetime) -> Callable[[], datetime]:
    """A local clock that reads `start` now and runs at the pace of the real one."""
    t0 = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - t0)


MakeJob = Callable[..., Adapter]


class Sleeper:
    """The daily job's sleep: records what it asked for and holds it until `release` (then sleeps that long for
    real, so that the real-paced clock has passed the hour when the job wakes)."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.waiting = asyncio.Event()
        self._gate = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        self.waiting.set()
        await self._gate.wait()
        await asyncio.sleep(seconds)

    def release(self) -> None:
        self._gate.set()


@pytest.fixture
async def make_job(resources: Resources) -> AsyncIterator[MakeJob]:
    """An adapter for the given destinations whose reconciliation runs by `clock` (its lanes are not started: the
    adapter of `start_adapter` delivers)."""
    made: list[Adapter] = []

    def make(*destinations: MunicipalDestination, clock: Callable[[], datetime], hour: int = HOUR,
             sleep: Sleeper | None = None) -> Adapter:
        settings = MunicipalSettings(destinations=destinations, reconcile_hour=hour)
        job = Adapter(MunicipalStore(resources.engine), settings, clock=clock, sleep=sleep or asyncio.sleep)
        made.append(job)
        return job

    yield make
    for job in made:
        await job.close()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port that refuses connections (bound, never listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


async def stored(resources: Resources, name: str) -> list[dict[str, Any]]:
    async with resources.engine.connect() as conn:
        rows = await conn.execute(text("SELECT day, matched, report FROM municipal_reconciliations "
                                       "WHERE destination = :name ORDER BY day"), {"name": name})
        return [dict(r._mapping) for r in rows]


def by_kind(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k["kind"]: k for k in report["kinds"]}


async def reset_platform(emu: RunningEmulator) -> None:
    """The platform forgets everything it received (as after a loss on its side)."""
    async with aiohttp.ClientSession() as s, s.post(emu.url + "/_admin/reset") as r:
        assert r.status == 200


async def deliver_with_a_loss(resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter,
                              *destinations: MunicipalDestination) -> tuple[list[int], list[int]]:
    """Delivers 2 lot_dynamic changes of DAY, then the platform loses them, then 3 lot_static and 2 lot_dynamic
    changes of DAY and 1 of the day after are delivered. Returns the lost ids and the kept lot_dynamic ids of DAY."""
    a = await start_adapter(*destinations)
    lot = "RJ" + destinations[0].name
    lost = await insert_at(resources, NOON, [("lot_dynamic", lot, lot_dynamic(lot, i)) for i in (1, 2)])
    for d in destinations:
        await caught_up(a, d.name)
    await reset_platform(emulator)
    lots = [f"{lot}-{i}" for i in range(3)]
    await insert_at(resources, NOON + timedelta(hours=1), [("lot_static", x, lot_static(x)) for x in lots])
    kept = await insert_at(resources, NOON + timedelta(hours=2),
                           [("lot_dynamic", lot, lot_dynamic(lot, i)) for i in (3, 4)])
    await insert_at(resources, NOON + timedelta(hours=13), [("lot_dynamic", lot, lot_dynamic(lot, 5))])  # next day
    for d in destinations:
        await caught_up(a, d.name)
    return lost, kept


async def test_the_job_runs_at_the_configured_hour_and_stores_yesterdays_differences(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, make_job: MakeJob) -> None:
    dest, no_counts = destination(emulator), destination(emulator, "datex2_xml")
    lost, _ = await deliver_with_a_loss(resources, emulator, start_adapter, dest, no_counts)
    # 0.3 s before 03:00 on the day after DAY: the job wakes at 03:00 and reconciles DAY.
    sleeper = Sleeper()
    job = make_job(dest, no_counts, clock=clock_from(datetime(2024, 3, 15, HOUR, tzinfo=LOCAL_TZ)
                                                      - timedelta(seconds=0.3)), sleep=sleeper)
    task = asyncio.create_task(job.reconcile_daily())
    try:
        await asyncio.wait_for(sleeper.waiting.wait(), 10.0)
        (asked,) = sleeper.asked
        assert 0 < asked <= 0.3  # until the hour, and no more
        assert await stored(resources, dest.name) == []  # not before the hour
        sleeper.release()

        async def ran() -> bool:
            return bool(await stored(resources, dest.name))

        await eventually(ran, within_s=10.0, what="the daily reconciliation stored")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (row,) = await stored(resources, dest.name)
    assert row["day"] == DAY and row["matched"] is False
    kinds = by_kind(row["report"])
    assert kinds["lot_dynamic"] == {"kind": "lot_dynamic", "ours": 4, "theirs": 2, "difference": 2,
                                    "missing_keys": [idempotency_key(dest.name, i) for i in lost]}
    assert kinds["lot_static"] == {"kind": "lot_static", "ours": 3, "theirs": 3, "difference": 0, "missing_keys": []}
    for kind in OTHER_KINDS:
        assert kinds[kind] == {"kind": kind, "ours": 0, "theirs": 0, "difference": 0, "missing_keys": []}
    # DATEX II offers no counts: the job leaves that destination alone.
    assert await stored(resources, no_counts.name) == []


async def test_the_job_waits_for_tomorrow_when_the_hour_has_passed_today(
        resources: Resources, emulator: RunningEmulator, make_job: MakeJob) -> None:
    dest = destination(emulator)
    sleeper = Sleeper()
    job = make_job(dest, clock=clock_from(datetime(2024, 3, 15, HOUR, 0, 0, 200_000, tzinfo=LOCAL_TZ)),
                   sleep=sleeper)
    task = asyncio.create_task(job.reconcile_daily())
    try:
        await asyncio.wait_for(sleeper.waiting.wait(), 10.0)
        (asked,) = sleeper.asked
        assert 86_399 < asked <= 86_400 - 0.2  # until the hour tomorrow
        assert not task.done() and await stored(resources, dest.name) == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_job_is_off_with_a_negative_hour(
        resources: Resources, emulator: RunningEmulator, make_job: MakeJob) -> None:
    job = make_job(destination(emulator), clock=clock_from(datetime(2024, 3, 15, 2, 59, 59, tzinfo=LOCAL_TZ)),
                   hour=-1)
    await asyncio.wait_for(job.reconcile_daily(), 1.0)  # returns at once instead of scheduling


async def test_a_run_reconciles_the_day_before_the_clock_and_a_later_run_replaces_the_stored_outcome(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, make_job: MakeJob) -> None:
    dest = destination(emulator)
    lost, kept = await deliver_with_a_loss(resources, emulator, start_adapter, dest)
    job = make_job(dest, clock=lambda: datetime(2024, 3, 15, 0, 0, 1, tzinfo=LOCAL_TZ))  # just after midnight
    (result,) = await job.reconcile_yesterday()
    assert result.destination == dest.name and result.day == DAY.isoformat() and not result.matched
    assert {k.kind: k.difference for k in result.kinds if k.difference} == {"lot_dynamic": 2}

    # The platform loses the rest of the day too: the next run's outcome replaces the stored one.
    await reset_platform(emulator)
    (again,) = await job.reconcile_yesterday()
    (row,) = await stored(resources, dest.name)
    assert row["day"] == DAY and row["matched"] is False
    kinds = by_kind(row["report"])
    assert (kinds["lot_dynamic"]["ours"], kinds["lot_dynamic"]["theirs"], kinds["lot_dynamic"]["difference"]) == (
        4, 0, 4)
    assert kinds["lot_static"]["difference"] == 3
    assert kinds["lot_dynamic"]["missing_keys"] == [idempotency_key(dest.name, i) for i in lost + kept]
    assert {k.kind: k.difference for k in again.kinds if k.difference} == {"lot_dynamic": 4, "lot_static": 3}

    # The day after DAY holds the one later change, which the platform lost as well.
    job.clock = lambda: datetime(2024, 3, 16, HOUR, tzinfo=LOCAL_TZ)
    (next_day,) = await job.reconcile_yesterday()
    assert next_day.day == "2024-03-15"
    assert {k.kind: (k.ours, k.theirs) for k in next_day.kinds}["lot_dynamic"] == (1, 0)


async def test_a_platform_that_cannot_be_reached_does_not_stop_the_other_destinations(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, make_job: MakeJob,
        refusing_port: int) -> None:
    dest = destination(emulator)
    # Sorted before `dest` by name, so the job meets it first.
    down = dataclasses.replace(destination(emulator), name="a" + dest.name,
                               url=f"http://127.0.0.1:{refusing_port}/municipal/v1/records")
    a = await start_adapter(dest)
    lot = "RU" + dest.name
    await insert_at(resources, NOON, [("lot_dynamic", lot, lot_dynamic(lot, i)) for i in (1, 2, 3)])
    await caught_up(a)
    job = make_job(down, dest, clock=lambda: datetime(2024, 3, 15, HOUR, tzinfo=LOCAL_TZ))
    (result,) = await job.reconcile_yesterday()
    assert result.destination == dest.name and result.matched
    assert await stored(resources, down.name) == []
    (row,) = await stored(resources, dest.name)
    assert row["matched"] is True and by_kind(row["report"])["lot_dynamic"]["ours"] == 3
