"""Group commit: reports stored in batches behave as if each had come alone, one after the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from grpc import aio
from sqlalchemy import text
from v2x.idps.v1 import idps_pb2 as pb

from services.common.runtime import Resources
from services.idps.batching import ReportBatcher
from services.idps.feed import ChangeFeed
from services.idps.model import ReportInput, ReportOutcome
from services.idps.settings import IdpsSettings
from services.idps.store import IdpsStore
from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import offset, report

Point = tuple[float, float]


def observation(point: Point, source: str = "officer-7", *, key: str | None = None, description: str = "",
                seconds_ago: float = 0.0, event_type: int = pb.EVENT_TYPE_ACCIDENT) -> ReportInput:
    return ReportInput(key or uuid.uuid4().hex, source, pb.SOURCE_KIND_POLICE_OFFICER, event_type, point[0],
                       point[1], 0.6, datetime.now(UTC) - timedelta(seconds=seconds_ago), "police:test",
                       description=description)


def outcomes(got: list[ReportOutcome | Exception]) -> list[ReportOutcome]:
    assert all(isinstance(o, ReportOutcome) for o in got), got
    return [o for o in got if isinstance(o, ReportOutcome)]


@pytest.fixture
def store(idps_resources: Resources) -> IdpsStore:
    return IdpsStore(idps_resources.engine, IdpsSettings.from_env(idps_resources.settings.env))


@pytest.fixture
async def poison(idps_resources: Resources, unique: str) -> AsyncIterator[str]:
    """A description that PostgreSQL refuses to store (a trigger raises), so that one report of a batch
    fails in the database while the others are fine."""
    marker = f"poison-{unique}"
    name = f"idps_poison_{unique}"
    async with idps_resources.engine.begin() as conn:
        await conn.execute(text(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION 'refused: %', NEW.description; END $$"))
        await conn.execute(text(
            f"CREATE TRIGGER {name} BEFORE INSERT ON idps_reports FOR EACH ROW "
            f"WHEN (NEW.description = '{marker}') EXECUTE FUNCTION {name}()"))
    yield marker
    async with idps_resources.engine.begin() as conn:
        await conn.execute(text(f"DROP TRIGGER {name} ON idps_reports"))
        await conn.execute(text(f"DROP FUNCTION {name}()"))


async def test_reports_of_one_crash_in_one_batch_make_one_incident(store: IdpsStore, site: Point) -> None:
    now = datetime.now(UTC)
    got = outcomes(await store.report_many(
        [(observation(offset(site, 6 * i, -4 * i), f"officer-{i}"), now) for i in range(12)]))
    assert sum(o.opened for o in got) == 1 and got[0].opened
    assert len({o.incident.id for o in got}) == 1
    assert [o.incident.version for o in got] == list(range(1, 13))
    detail = await store.get(got[0].incident.id)
    assert detail.incident.source_count == 12 and detail.incident.version == 12
    assert [a.version for a in detail.audit] == list(range(1, 13))
    assert {s.report_id for s in detail.sources} == {o.report_id for o in got}
    assert detail.incident.confidence == pytest.approx(1 - 0.4 ** 12, abs=1e-4)


async def test_each_report_of_a_batch_answers_the_incident_as_it_made_it(store: IdpsStore, site: Point) -> None:
    now = datetime.now(UTC)
    got = outcomes(await store.report_many([(observation(site, f"officer-{i}"), now) for i in range(3)]))
    assert [o.incident.source_count for o in got] == [1, 2, 3]
    assert [len(o.changes) for o in got] == [1, 1, 1]
    assert got[0].changes[0].before is None and got[1].changes[0].before is not None


async def test_reports_far_apart_in_one_batch_open_their_own_incidents(store: IdpsStore, site: Point) -> None:
    now = datetime.now(UTC)
    got = outcomes(await store.report_many([
        (observation(site), now), (observation(offset(site, 150, 0)), now),
        (observation(site, event_type=pb.EVENT_TYPE_ROADWORKS), now),
        (observation(offset(site, 0, 30), seconds_ago=400), now)]))
    assert all(o.opened for o in got) and len({o.incident.id for o in got}) == 4


async def test_a_key_repeated_within_one_batch_is_stored_once(store: IdpsStore, site: Point) -> None:
    now = datetime.now(UTC)
    first = observation(site, key="evt-batch-twice")
    got = outcomes(await store.report_many([(first, now), (observation(offset(site, 10, 0)), now), (first, now)]))
    assert got[2].duplicate and got[2].report_id == got[0].report_id and not got[2].changes
    assert got[2].incident.version == 2  # the incident as it is after the report between the two copies
    assert (await store.get(got[0].incident.id)).incident.source_count == 2


async def test_a_failing_report_in_a_batch_fails_alone_and_leaves_nothing(store: IdpsStore, site: Point,
                                                                          poison: str,
                                                                          idps_resources: Resources) -> None:
    now = datetime.now(UTC)
    bad = observation(offset(site, 400, 0), description=poison)
    got = await store.report_many([(observation(site, "officer-1"), now), (bad, now),
                                   (observation(offset(site, 10, 0), "officer-2"), now)])
    assert isinstance(got[1], asyncpg.RaiseError)
    assert isinstance(got[0], ReportOutcome) and isinstance(got[2], ReportOutcome)
    assert got[0].incident.id == got[2].incident.id and got[2].incident.version == 2
    async with idps_resources.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM idps_reports WHERE idempotency_key = :k"),
                                     {"k": bad.idempotency_key})).scalar_one()
        near_bad = (await conn.execute(text(
            "SELECT count(*) FROM idps_incidents WHERE ST_DWithin(position, "
            "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, 50, false)"),
            {"lat": bad.lat, "lon": bad.lon})).scalar_one()
    assert stored == 0 and near_bad == 0


async def test_a_failing_report_fails_its_own_call_with_internal_and_the_others_succeed(
        stub: Stub, keys: Keys, site: Point, poison: str) -> None:
    requests = [report(offset(site, 5 * i, 0), source=f"officer-{i}") for i in range(6)]
    requests.insert(3, report(offset(site, 400, 0), description=poison))
    answers = await asyncio.gather(*(stub.ReportEvent(r, metadata=keys.md(keys.police)) for r in requests),
                                   return_exceptions=True)
    failed = answers.pop(3)
    assert isinstance(failed, aio.AioRpcError) and failed.code() is grpc.StatusCode.INTERNAL
    assert "refused" not in (failed.details() or "")  # internal errors are not leaked
    assert all(isinstance(a, pb.ReportEventResponse) for a in answers)
    assert len({a.incident_id for a in answers if isinstance(a, pb.ReportEventResponse)}) == 1


async def test_two_replicas_storing_batches_of_one_crash_at_once_make_one_incident(
        idps_resources: Resources, site: Point) -> None:
    replicas = [IdpsStore(idps_resources.engine, IdpsSettings.from_env(idps_resources.settings.env)) for _ in range(2)]
    now = datetime.now(UTC)
    batches = [[(observation(offset(site, 7 * i + 3 * r, -5 * i), f"officer-{r}-{i}"), now) for i in range(5)]
               for r in range(2)]
    got = [o for answer in await asyncio.gather(*(s.report_many(b) for s, b in zip(replicas, batches, strict=True)))
           for o in outcomes(answer)]
    assert sum(o.opened for o in got) == 1 and len({o.incident.id for o in got}) == 1
    assert sorted(o.incident.version for o in got) == list(range(1, 11))


async def test_concurrent_callers_share_batches_and_each_gets_its_own_answer(idps_resources: Resources,
                                                                            store: IdpsStore, site: Point) -> None:
    batcher = ReportBatcher(store, ChangeFeed(idps_resources.redis, 100_000))
    try:
        now = datetime.now(UTC)
        reports = [observation(offset(site, 3 * i, 0), f"officer-{i}") for i in range(20)]
        got = await asyncio.gather(*(batcher.report(r, now) for r in reports))
    finally:
        await batcher.stop()
    assert sum(o.opened for o in got) == 1
    assert sorted(o.incident.version for o in got) == list(range(1, 21))
    assert len({o.report_id for o in got}) == 20


async def test_a_report_whose_caller_went_away_before_its_batch_is_not_stored(idps_resources: Resources,
                                                                              store: IdpsStore, site: Point) -> None:
    batcher = ReportBatcher(store, ChangeFeed(idps_resources.redis, 100_000))
    try:
        now = datetime.now(UTC)
        kept, dropped = observation(site, "officer-1"), observation(offset(site, 500, 0), "officer-2")
        kept_call = asyncio.create_task(batcher.report(kept, now))
        dropped_call = asyncio.create_task(batcher.report(dropped, now))
        await asyncio.sleep(0)  # both queued; the worker has not taken them yet
        dropped_call.cancel()
        assert (await kept_call).opened
        with pytest.raises(asyncio.CancelledError):
            await dropped_call
    finally:
        await batcher.stop()
    async with idps_resources.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT count(*) FROM idps_reports WHERE idempotency_key = :k"),
                                     {"k": dropped.idempotency_key})).scalar_one()
    assert stored == 0
