"""Transient failures are retried after an exponential backoff with equal jitter, a Retry-After answer is waited
for, and 408/425/429 are transient: the records get through once, nothing becomes a dead letter."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from services.common.backoff import backoff_s
from services.common.runtime import Resources
from services.municipal.delivery import Lane
from services.municipal.model import DestinationStatus, idempotency_key
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from services.municipal.store import MunicipalStore
from tests.municipal.helpers import SECRET, eventually, insert, lot_dynamic, polled_idle

BASE_S = 0.02  # the backoff's first step in the lanes below: far below any Retry-After the tests send


# ----- the backoff ---------------------------------------------------------------------------------------------


def step_of(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2.0 ** (attempt - 1))


@given(attempt=st.integers(1, 80), base=st.floats(0.001, 10.0), cap=st.floats(0.001, 600.0),
       seed=st.integers(0, 2**64))
def test_a_backoff_lies_between_half_its_step_and_its_step(attempt: int, base: float, cap: float, seed: int) -> None:
    step = step_of(attempt, base, cap)
    assert step / 2 <= backoff_s(attempt, base, cap, random.Random(seed)) <= step


def test_the_step_doubles_with_each_attempt_until_the_cap() -> None:
    rng = random.Random(11)
    bounds = []
    for attempt in range(1, 11):
        samples = [backoff_s(attempt, 0.1, 5.0, rng) for _ in range(200)]
        bounds.append((min(samples), max(samples)))
    # Steps 0.1, 0.2, 0.4, ... 3.2, then the cap (5.0): each attempt's waits lie in [step/2, step].
    for (lo, hi), step in zip(bounds, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0], strict=True):
        assert step / 2 <= lo < 0.55 * step and 0.95 * step < hi <= step
    # While the step doubles, the shortest wait of an attempt is at least the longest of the one before.
    assert all(bounds[i][1] <= bounds[i + 1][0] for i in range(5))


def test_a_huge_attempt_number_waits_the_cap_without_overflowing() -> None:
    assert 30.0 <= backoff_s(10**6, 0.2, 60.0, random.Random(3)) <= 60.0


def test_the_jitter_spreads_the_waits_over_the_upper_half_of_the_step() -> None:
    rng = random.Random(5)
    waits = [backoff_s(3, 1.0, 30.0, rng) for _ in range(4000)]  # step 4 s
    assert 2.0 <= min(waits) < 2.05 and 3.95 < max(waits) <= 4.0
    assert 2.9 < statistics.fmean(waits) < 3.1
    assert len({round(w, 6) for w in waits}) > 3900  # not a handful of fixed values


def test_different_random_states_give_different_waits_and_the_same_state_the_same() -> None:
    firsts = {backoff_s(4, 0.5, 30.0, random.Random(seed)) for seed in range(50)}
    assert len(firsts) == 50  # two lanes retrying together do not retry in lockstep
    rng = random.Random(9)
    assert backoff_s(4, 0.5, 30.0, rng) != backoff_s(4, 0.5, 30.0, rng)
    assert backoff_s(4, 0.5, 30.0, random.Random(9)) == backoff_s(4, 0.5, 30.0, random.Random(9))


# ----- a platform that answers what the test says --------------------------------------------------------------


@dataclasses.dataclass
class Request:
    at: float  # monotonic, when it arrived
    status: int  # what it was answered
    keys: list[str]  # the idempotency keys it carried


class ScriptedPlatform:
    """Answers its first requests from `script` (status, headers) without keeping their records, then 200 with a
    201 per record. Notes every request; `accepted` lists the keys it kept, in arrival order."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.requests: list[Request] = []
        self.accepted: list[str] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        keys = [r["idempotencyKey"] for r in (await request.json())["records"]]
        if self.script:
            status, headers = self.script.pop(0)
            self.requests.append(Request(at, status, keys))
            return web.json_response({"error": "not now"}, status=status, headers=headers)
        self.requests.append(Request(at, 200, keys))
        self.accepted += keys
        return web.json_response({"results": [{"idempotencyKey": k, "status": 201} for k in keys]})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/municipal/v1/records", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/municipal/v1/records"


@pytest.fixture
async def platform() -> AsyncIterator[ScriptedPlatform]:
    p = ScriptedPlatform()
    await p.start()
    yield p
    assert p.runner is not None
    await p.runner.cleanup()


RunLane = Callable[..., Awaitable[Lane]]


@pytest.fixture
async def run_lane(resources: Resources, platform: ScriptedPlatform, unique: str) -> AsyncIterator[RunLane]:
    """Runs one delivery lane to the scripted platform (fast polling, backoff from BASE_S up to `backoff_max_s`)."""
    running: list[tuple[Lane, asyncio.Task[None]]] = []

    async def run(backoff_max_s: float) -> Lane:
        assert platform.runner is not None
        dest = MunicipalDestination(
            name=f"rp{unique}", url=f"http://127.0.0.1:{platform.runner.addresses[0][1]}/municipal/v1/records",
            profile="municipal_json", secret=SECRET, start="now", batch_size=50, timeout_s=2.0)
        settings = MunicipalSettings(destinations=(dest,), poll_s=0.02, backoff_base_s=BASE_S,
                                     backoff_max_s=backoff_max_s)
        store = MunicipalStore(resources.engine)
        await store.ensure([dest])  # with start "now", rows written from here on are the lane's
        lane = Lane(dest, store, settings)
        running.append((lane, asyncio.create_task(lane.run())))
        return lane

    yield run
    for lane, task in running:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await lane.close()


async def status_of(lane: Lane) -> DestinationStatus:
    st = await lane.store.status(lane.name, lane.kinds, datetime.now(UTC))
    assert st is not None
    return st


async def caught_up(lane: Lane) -> DestinationStatus:
    async def done() -> bool:
        return (await status_of(lane)).lag_records == 0

    await eventually(done, within_s=15.0, what="lag 0")
    return await status_of(lane)


async def write(resources: Resources, lot: str, n: int) -> list[int]:
    return await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, i)) for i in range(1, n + 1)])


# ----- Retry-After -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
async def test_a_retry_after_answer_is_waited_for_before_the_next_attempt(
        resources: Resources, platform: ScriptedPlatform, run_lane: RunLane, unique: str, status: int) -> None:
    platform.script = [(status, {"Retry-After": "1"})]
    lane = await run_lane(backoff_max_s=5.0)
    ids = await write(resources, f"RA{unique}", 3)
    await caught_up(lane)
    first, second = platform.requests
    assert (first.status, second.status) == (status, 200) and first.keys == second.keys
    assert second.at - first.at >= 1.0  # the backoff alone would have waited about BASE_S
    assert platform.accepted == [idempotency_key(lane.name, i) for i in ids]


async def test_without_retry_after_the_next_attempt_comes_after_the_backoff_only(
        resources: Resources, platform: ScriptedPlatform, run_lane: RunLane, unique: str) -> None:
    platform.script = [(503, {})]
    lane = await run_lane(backoff_max_s=5.0)
    await write(resources, f"NR{unique}", 3)
    await caught_up(lane)
    first, second = platform.requests
    assert first.status == 503 and second.at - first.at < 0.5


async def test_a_retry_after_beyond_the_backoff_cap_waits_the_cap(
        resources: Resources, platform: ScriptedPlatform, run_lane: RunLane, unique: str) -> None:
    platform.script = [(503, {"Retry-After": "60"})]
    lane = await run_lane(backoff_max_s=0.3)
    await write(resources, f"RC{unique}", 3)
    await caught_up(lane)
    first, second = platform.requests
    assert 0.3 <= second.at - first.at < 5.0


# ----- statuses that are transient ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 425, 429])
async def test_a_transient_client_status_is_retried_and_the_records_arrive_once(
        resources: Resources, platform: ScriptedPlatform, run_lane: RunLane, unique: str, status: int) -> None:
    platform.script = [(status, {}), (status, {})]
    lane = await run_lane(backoff_max_s=0.3)
    ids = await write(resources, f"TC{unique}", 5)
    st = await caught_up(lane)
    await polled_idle(lane.name)  # nothing more goes out once the platform took them: the lane looked again
    assert [r.status for r in platform.requests] == [status, status, 200]
    assert platform.accepted == [idempotency_key(lane.name, i) for i in ids]
    assert st.dead_letters == 0 and st.delivered == {"lot_dynamic": 5} and st.state.cursor.id == max(ids)
    assert await lane.store.dead_letters(lane.name, None, True, 0, 100) == []
