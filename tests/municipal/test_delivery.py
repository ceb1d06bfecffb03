"""The adapter delivers outbox records to the platform: in order, once, signed; failures retried."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import grpc
import pytest
from aiohttp import web
from google.type import date_pb2
from grpc import aio
from sqlalchemy import text
from v2x.municipal.v1 import municipal_pb2 as pb
from v2x.parking.v1 import parking_pb2 as ppb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.runtime import Resources
from services.municipal.emulator import RunningEmulator
from services.municipal.model import LOCAL_TZ, idempotency_key
from services.municipal.settings import MunicipalDestination
from services.municipal.store import MunicipalStore
from tests.conftest import Keys
from tests.municipal.conftest import Adapter, StartAdapter, admin_get, destination, set_faults
from tests.municipal.helpers import (
    SECRET,
    answered,
    charger_status,
    eventually,
    insert,
    insert_on,
    lot_dynamic,
    lot_static,
    passage,
    polled_idle,
    spot_status,
)
from tests.parking.helpers import ts


async def test_outbox_records_reach_the_platform_once_each_in_order_per_lot(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator))
    lots = [f"L{unique}-{i}" for i in range(5)]
    ids: list[int] = []
    for seq in range(1, 41):
        ids += await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for lot in lots])

    async def all_there() -> bool:
        return bool((await admin_get(emulator, "/_admin/state"))["unique_records"] == len(ids))

    await eventually(all_there, what="all records at the platform")
    order = (await admin_get(emulator, "/_admin/lots"))[a.name]
    for lot in lots:
        assert order[lot] == sorted(order[lot]) and len(order[lot]) == 40
    assert set(emulator.platform.seen) == {idempotency_key(a.name, i) for i in ids}
    status = await caught_up(a)
    assert status.cursor == max(ids) and status.lag_s == 0
    assert {k.kind: k.delivered for k in status.delivered}[pb.RECORD_KIND_LOT_DYNAMIC] == len(ids)


async def test_server_errors_are_retried_until_every_record_arrives(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    await set_faults(emulator, fail_rate=0.6, fail_after_store=0.5)
    a = await start_adapter(destination(emulator, batch_size=20))
    ids = await insert(resources.engine, [("lot_static", f"S{unique}-{i}", lot_static(f"S{unique}-{i}"))
                                          for i in range(100)])

    async def done() -> bool:
        s = (await a.stub.GetStatus(pb.GetStatusRequest(destination=a.name), metadata=a.md)).destinations[0]
        return s.lag_records == 0

    await eventually(done, what="lag 0")
    state = await admin_get(emulator, "/_admin/state")
    assert state["unique_records"] == len(ids)
    assert state["stats"]["injected_500"] > 0 and state["stats"]["duplicates"] > 0


# ----- helpers ------------------------------------------------------------------------------------------------


async def status_of(a: Adapter, name: str | None = None) -> pb.DestinationStatus:
    reply = await a.stub.GetStatus(pb.GetStatusRequest(destination=name or a.name), metadata=a.md)
    return reply.destinations[0]


async def caught_up(a: Adapter, name: str | None = None, within_s: float = 20.0) -> pb.DestinationStatus:
    async def done() -> bool:
        return (await status_of(a, name)).lag_records == 0

    await eventually(done, within_s=within_s, what="lag 0")
    return await status_of(a, name)


async def dead_letters(a: Adapter) -> list[pb.DeadLetter]:
    reply = await a.stub.ListDeadLetters(pb.ListDeadLettersRequest(destination=a.name), metadata=a.md)
    return list(reply.dead_letters)


def delivered(s: pb.DestinationStatus, kind: int = pb.RECORD_KIND_LOT_DYNAMIC) -> int:
    return next((int(k.delivered) for k in s.delivered if k.kind == kind), 0)


# ----- dead letters -------------------------------------------------------------------------------------------


async def test_invalid_records_become_dead_letters_with_reasons_and_the_rest_is_delivered(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator))
    lot = f"I{unique}"
    good = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1))])
    bad = await insert(resources.engine, [("lot_dynamic", lot, {**lot_dynamic(lot, 2), "free": {"general": 999}}),
                                          ("passage", lot, passage(lot, "P1", "沪A12345", "PLATE_COLOUR_UNSPECIFIED"))])
    later = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 3))])
    s = await caught_up(a)
    assert s.dead_letters == 2 and delivered(s) == 2
    assert [r.sequence for r in emulator.platform.seen.values()] == good + later
    letters = {d.outbox_id: d for d in await dead_letters(a)}
    assert set(letters) == set(bad)
    assert letters[bad[0]].reason == "INVALID_RECORD" and "free.general" in letters[bad[0]].last_error.message
    assert "plate_colour" in letters[bad[1]].last_error.message
    assert letters[bad[1]].kind == pb.RECORD_KIND_PASSAGE and letters[bad[1]].record_key == f"{lot}/P1"
    assert "沪A***45" in letters[bad[1]].payload_preview and "12345" not in letters[bad[1]].payload_preview
    assert letters[bad[1]].idempotency_key == idempotency_key(a.name, bad[1])


async def test_a_record_the_platform_refuses_becomes_a_dead_letter_and_can_be_retried(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    refused, fine = f"R{unique}", f"F{unique}"
    await set_faults(emulator, reject_aggregates=[refused])
    a = await start_adapter(destination(emulator))
    ids = await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1)) for lot in (refused, fine)])
    s = await caught_up(a)
    assert s.dead_letters == 1 and delivered(s) == 1
    (letter,) = await dead_letters(a)
    assert letter.outbox_id == ids[0] and letter.reason == "REJECTED_BY_PLATFORM" and letter.http_status == 422
    assert letter.state == pb.DEAD_LETTER_STATE_OPEN

    await set_faults(emulator, reject_aggregates=[])
    reply = await a.stub.RetryDeadLetters(pb.RetryDeadLettersRequest(destination=a.name, ids=[letter.id]),
                                          metadata=a.md)
    assert reply.requeued == 1

    async def resolved() -> bool:
        return (await status_of(a)).dead_letters == 0

    await eventually(resolved, what="the dead letter resolved")
    assert idempotency_key(a.name, ids[0]) in emulator.platform.seen and delivered(await status_of(a)) == 2
    listed = await a.stub.ListDeadLetters(pb.ListDeadLettersRequest(destination=a.name, include_resolved=True),
                                          metadata=a.md)
    assert [d.state for d in listed.dead_letters] == [pb.DEAD_LETTER_STATE_RESOLVED]


async def test_a_batch_refused_as_a_whole_is_split_until_the_refused_record_is_alone(
        resources: Resources, start_adapter: StartAdapter, unique: str) -> None:
    poison = f"X{unique}"
    received: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        records = (await request.json())["records"]
        if any(r["aggregateId"] == poison for r in records):
            return web.Response(status=400, text="a record in this batch is malformed")
        received.extend(r["aggregateId"] for r in records)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/municipal/v1/records", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/municipal/v1/records"
        a = await start_adapter(MunicipalDestination(name=f"b{unique}", url=url, profile="municipal_json",
                                                     secret=SECRET, start="now", batch_size=50))
        lots = [f"B{unique}-{i}" for i in range(7)]
        await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, 1))
                                        for lot in [*lots[:3], poison, *lots[3:]]])
        s = await caught_up(a)
        assert received == lots and s.dead_letters == 1
        (letter,) = await dead_letters(a)
        assert letter.http_status == 400 and "malformed" in letter.last_error.message
    finally:
        await runner.cleanup()


# ----- transient failures ---------------------------------------------------------------------------------------


async def test_timeouts_are_retried_and_the_receiver_keeps_one_copy(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    await set_faults(emulator, latency_ms=800)
    a = await start_adapter(destination(emulator, timeout_s=0.3))
    ids = await insert(resources.engine, [("lot_dynamic", f"T{unique}", lot_dynamic(f"T{unique}", i))
                                          for i in range(1, 6)])

    async def errored() -> bool:
        return (await status_of(a)).HasField("last_error")

    await eventually(errored, what="a timeout recorded")
    assert "Timeout" in (await status_of(a)).last_error.message
    await set_faults(emulator, latency_ms=0)
    s = await caught_up(a)
    assert delivered(s) == 5 and not s.HasField("last_error")
    assert emulator.platform.stats.accepted == 5 and emulator.platform.stats.duplicates >= 5
    assert emulator.platform.lots[(a.name, f"T{unique}")] == ids


async def test_refused_credentials_pause_the_destination_without_dead_letters(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator, secret="not-the-platform-secret-0000"))
    await insert(resources.engine, [("lot_dynamic", f"A{unique}", lot_dynamic(f"A{unique}", 1))])

    async def paused() -> bool:
        return (await status_of(a)).paused

    await eventually(paused, what="the destination paused")
    s = await status_of(a)
    assert "credentials" in s.pause_reason and "401" in s.pause_reason
    assert s.dead_letters == 0 and s.lag_records == 1 and s.last_error.code == 16  # UNAUTHENTICATED
    assert not emulator.platform.seen


# ----- control: pause, resume, lag, replay -----------------------------------------------------------------------


async def test_lag_counts_waiting_records_and_their_age_per_destination(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    paused, running = destination(emulator), destination(emulator, "datex2_xml")
    a = await start_adapter(paused, running)
    await a.stub.Pause(pb.PauseRequest(destination=paused.name, reason="maintenance window"), metadata=a.md)
    t0 = time.time()
    ids = await insert(resources.engine, [("lot_dynamic", f"G{unique}", lot_dynamic(f"G{unique}", i))
                                          for i in range(1, 31)])

    async def a_second_old() -> bool:
        return (await status_of(a, paused.name)).lag_s >= 1.0

    await eventually(a_second_old, what="the oldest waiting record a second old")
    s = await status_of(a, paused.name)
    assert s.paused and s.pause_reason == "maintenance window"
    assert s.lag_records == 30 and 1.0 <= s.lag_s <= time.time() - t0 + 0.5
    other = await caught_up(a, running.name)
    assert other.lag_records == 0 and other.lag_s == 0 and other.cursor == max(ids)
    assert not any(r.key == idempotency_key(paused.name, ids[0]) for r in emulator.platform.seen.values())

    resumed = await a.stub.Resume(pb.ResumeRequest(destination=paused.name), metadata=a.md)
    assert not resumed.paused
    s = await caught_up(a, paused.name)
    assert s.lag_s == 0 and delivered(s) == 30 and s.cursor == max(ids)


async def test_replay_sends_again_every_record_since_a_time_without_counting_it_twice(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator))
    lot = f"P{unique}"
    await insert(resources.engine, [("lot_static", lot, lot_static(lot))])
    since = datetime.now(UTC)  # after the static row's commit, before the dynamic rows' transaction
    await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, i)) for i in range(1, 11)])
    s = await caught_up(a)
    assert emulator.platform.stats.duplicates == 0

    req = pb.ReplayRequest(destination=a.name, kinds=[pb.RECORD_KIND_LOT_DYNAMIC])
    req.from_time.FromDatetime(since)
    assert (await a.stub.Replay(req, metadata=a.md)).queued == 10

    async def replayed() -> bool:
        st = await status_of(a)
        return emulator.platform.stats.duplicates == 10 and not st.replaying and st.lag_records == 0

    await eventually(replayed, what="the replay done")
    after = await status_of(a)
    assert delivered(after) == delivered(s) == 10 and delivered(after, pb.RECORD_KIND_LOT_STATIC) == 1
    assert emulator.platform.stats.order_violations == 0 and after.cursor == s.cursor


async def test_reconciliation_compares_a_days_counts_and_names_missing_records(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator), destination(emulator, "ngsi_ld"))
    ids = await insert(resources.engine, [("lot_dynamic", f"Q{unique}", lot_dynamic(f"Q{unique}", i))
                                          for i in range(1, 6)])
    await caught_up(a)
    await caught_up(a, a.destinations[1].name)
    today = datetime.now(LOCAL_TZ).date()
    day = date_pb2.Date(year=today.year, month=today.month, day=today.day)
    match = await a.stub.Reconcile(pb.ReconcileRequest(destination=a.name, day=day), metadata=a.md)
    dyn = {k.kind: k for k in match.kinds}[pb.RECORD_KIND_LOT_DYNAMIC]
    assert match.compared and match.matched and dyn.ours == dyn.theirs == 5 and dyn.difference == 0

    # The platform loses what it had: the report names the missing records.
    lost = [idempotency_key(a.name, i) for i in ids[:2]]
    for k in lost:
        del emulator.platform.seen[k]
    emulator.platform.counts = {key: n - 2 if key[0] == a.name and key[2] == "lot_dynamic" else n
                                for key, n in emulator.platform.counts.items()}
    emulator.platform.keys = {key: [k for k in v if k not in lost] for key, v in emulator.platform.keys.items()}
    diff = await a.stub.Reconcile(pb.ReconcileRequest(destination=a.name, day=day), metadata=a.md)
    dyn = {k.kind: k for k in diff.kinds}[pb.RECORD_KIND_LOT_DYNAMIC]
    assert not diff.matched and dyn.difference == 2 and sorted(dyn.missing_keys) == sorted(lost)

    ngsi = await a.stub.Reconcile(pb.ReconcileRequest(destination=a.destinations[1].name, day=day), metadata=a.md)
    assert not ngsi.compared and {k.kind: k.ours for k in ngsi.kinds}[pb.RECORD_KIND_LOT_DYNAMIC] == 5
    assert not any(k.HasField("theirs") for k in ngsi.kinds)


# ----- order and safety of the drain ------------------------------------------------------------------------------


async def test_a_row_of_a_transaction_that_commits_late_is_not_skipped(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator))
    lot_a, lot_b = f"E{unique}-a", f"E{unique}-b"
    async with resources.engine.connect() as slow:
        await slow.begin()
        (early,) = await insert_on(slow, [("lot_dynamic", lot_a, lot_dynamic(lot_a, 1))])  # lower id, still open
        (late,) = await insert(resources.engine, [("lot_dynamic", lot_b, lot_dynamic(lot_b, 1))])  # committed
        assert early < late
        await polled_idle(a.name)
        # A drain by id would have sent `late` and moved past `early`; this one waits for the open transaction.
        assert not emulator.platform.seen and (await status_of(a)).lag_records == 1
        await slow.commit()
    await caught_up(a)
    assert sorted(r.sequence for r in emulator.platform.seen.values()) == [early, late]


async def test_a_lot_stays_in_id_order_when_transaction_ids_disagree(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    dest = destination(emulator, batch_size=1)
    a = await start_adapter(dest)
    await a.stub.Pause(pb.PauseRequest(destination=dest.name), metadata=a.md)
    lot, other = f"O{unique}", f"O{unique}-x"
    async with resources.engine.connect() as first, resources.engine.connect() as second:
        await first.begin()
        await first.execute(text("SELECT pg_current_xact_id()"))  # takes the lower transaction id
        await second.begin()
        (one,) = await insert_on(second, [("lot_dynamic", lot, lot_dynamic(lot, 1))])
        await second.commit()  # commits first, with the higher transaction id
        _, three = await insert_on(first, [("lot_dynamic", other, lot_dynamic(other, 1)),
                                             ("lot_dynamic", lot, lot_dynamic(lot, 2))])
        await first.commit()
    assert one < three
    await a.stub.Resume(pb.ResumeRequest(destination=dest.name), metadata=a.md)
    s = await caught_up(a)
    assert emulator.platform.lots[(a.name, lot)] == [one, three] and emulator.platform.stats.duplicates == 0
    assert delivered(s) == 3 and emulator.platform.stats.order_violations == 0


async def test_each_destination_gets_every_change_in_its_own_profile(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    dests = [destination(emulator, p) for p in ("municipal_json", "datex2_xml", "ngsi_ld")]
    a = await start_adapter(*dests)
    lot = f"M{unique}"
    ids = await insert(resources.engine, [("lot_static", lot, lot_static(lot)),
                                          ("lot_dynamic", lot, lot_dynamic(lot, 1)),
                                          ("spot_status", lot, spot_status(lot, "S1")),
                                          ("passage", lot, passage(lot, "P1")),
                                          ("charger_status", f"CS{unique}", charger_status(f"CS{unique}", "C1"))])
    for d in dests:
        await caught_up(a, d.name)
    for d, carried in zip(dests, (ids, [*ids[:3], ids[4]], [*ids[:3], ids[4]]), strict=True):
        assert set(emulator.platform.seen) >= {idempotency_key(d.name, i) for i in carried}
        assert not {idempotency_key(d.name, i) for i in set(ids) - set(carried)} & set(emulator.platform.seen)
    assert emulator.platform.stats.rejected == 0


async def test_a_destination_is_held_to_its_rate_limit(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str) -> None:
    a = await start_adapter(destination(emulator, rate_limit_rps=100, batch_size=50))
    await insert(resources.engine, [("lot_dynamic", f"RL{unique}", lot_dynamic(f"RL{unique}", i))
                                    for i in range(1, 301)])
    t = time.monotonic()
    await caught_up(a)
    # A burst of 100, then 200 more at 100 records/s.
    assert time.monotonic() - t >= 1.6
    assert (await status_of(a)).rate_limit_rps == 100


async def test_only_administrators_may_call_the_admin_service_and_the_police_read_its_status(
        emulator: RunningEmulator, start_adapter: StartAdapter, keys: Keys) -> None:
    a = await start_adapter(destination(emulator))
    for key in (keys.driver, keys.op_a, keys.platform):
        with pytest.raises(aio.AioRpcError) as err:
            await a.stub.GetStatus(pb.GetStatusRequest(), metadata=keys.md(key))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The police console shows the delivery lag; the police change nothing.
    assert a.name in [d.destination for d in (await a.stub.GetStatus(pb.GetStatusRequest(),
                                                                      metadata=keys.md(keys.police))).destinations]
    with pytest.raises(aio.AioRpcError) as err:
        await a.stub.Pause(pb.PauseRequest(destination=a.name), metadata=keys.md(keys.police))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(aio.AioRpcError) as err:
        await a.stub.Pause(pb.PauseRequest(destination="nowhere"), metadata=a.md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_parking_change_reaches_the_platform_through_the_outbox(
        resources: Resources, emulator: RunningEmulator, start_adapter: StartAdapter, unique: str,
        parking_channel: aio.Channel, keys: Keys) -> None:
    from tests.parking.helpers import lot as lot_proto

    a = await start_adapter(destination(emulator))
    parking = ParkingServiceStub(parking_channel)
    lot_id = f"PK{unique}"
    await parking.RegisterLot(ppb.RegisterLotRequest(lot=lot_proto(lot_id)), metadata=keys.md(keys.admin))
    await parking.RecordPassage(ppb.RecordPassageRequest(
        lot_id=lot_id, passage_id="p1", direction=ppb.PASSAGE_DIRECTION_ENTRY, plate="沪B67890",
        plate_colour=ppb.PLATE_COLOUR_BLUE, passed_at=ts()), metadata=keys.md(keys.op_a))
    await caught_up(a)
    kinds = [r.kind for r in emulator.platform.seen.values() if r.aggregate == lot_id]
    assert kinds[0] == "lot_static" and "passage" in kinds and (await status_of(a)).dead_letters == 0


# ----- concurrency ------------------------------------------------------------------------------------------------


class RecordingPlatform:
    """A platform that answers after a delay, remembers every request (its lots, when it came and went), and refuses
    requests carrying some lots with 503 while told to."""

    def __init__(self, latency_s: float = 0.03) -> None:
        self.latency_s = latency_s
        self.refuse: set[str] = set()
        self.requests: list[tuple[float, float, list[tuple[str, int]]]] = []  # start, end, (lot, sequence)
        self.arrived: dict[str, list[int]] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        start = time.monotonic()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            records = (await request.json())["records"]
            await asyncio.sleep(self.latency_s)
            items = [(r["aggregateId"], r["sequence"]) for r in records]
            if any(lot in self.refuse for lot, _ in items):
                return web.Response(status=503, text="not now")
            for lot, seq in items:
                got = self.arrived.setdefault(lot, [])
                if seq not in got:
                    got.append(seq)
            self.requests.append((start, time.monotonic(), items))
            return web.json_response({})
        finally:
            self.in_flight -= 1

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/municipal/v1/records", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/municipal/v1/records"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def start_paused(resources: Resources, start_adapter: StartAdapter, dest: MunicipalDestination) -> Adapter:
    """The adapter with `dest` paused from the start (its lane reads nothing until it is resumed)."""
    store = MunicipalStore(resources.engine)
    await store.ensure([dest])
    await store.set_paused(dest.name, True, "test: the backlog is being written")
    return await start_adapter(dest)


async def test_a_backlog_goes_out_in_concurrent_batches_that_never_share_a_lot(
        resources: Resources, start_adapter: StartAdapter, unique: str) -> None:
    from services.municipal.delivery import MAX_IN_FLIGHT

    platform = RecordingPlatform()
    url = await platform.start()
    try:
        dest = MunicipalDestination(name=f"c{unique}", url=url, profile="municipal_json", secret=SECRET,
                                    start="now", batch_size=50)
        a = await start_paused(resources, start_adapter, dest)
        lots = [f"K{unique}-{i}" for i in range(40)]
        ids: list[int] = []
        for seq in range(1, 21):  # 800 changes, 20 per lot
            ids += await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for lot in lots])
        await a.stub.Resume(pb.ResumeRequest(destination=dest.name), metadata=a.md)
        s = await caught_up(a)
        assert s.cursor == max(ids) and delivered(s) == len(ids)
        by_lot: dict[str, list[int]] = {}
        for lot, seq in (item for _, _, items in platform.requests for item in items):
            by_lot.setdefault(lot, []).append(seq)
        assert sorted(by_lot) == sorted(lots)
        for lot in lots:  # each lot in order, once
            assert platform.arrived[lot] == sorted(platform.arrived[lot]) and len(platform.arrived[lot]) == 20
            assert by_lot[lot] == platform.arrived[lot]
        assert all(len(items) <= 50 for _, _, items in platform.requests)
        # Requests overlapped, never more than MAX_IN_FLIGHT, and overlapping requests never shared a lot.
        assert 1 < platform.most_in_flight <= MAX_IN_FLIGHT
        for i, (s1, e1, one) in enumerate(platform.requests):
            for s2, e2, other in platform.requests[i + 1:]:
                if s1 < e2 and s2 < e1:
                    assert not {lot for lot, _ in one} & {lot for lot, _ in other}
    finally:
        await platform.stop()


async def test_a_batch_that_keeps_failing_holds_the_cursor_while_the_rest_of_its_chunk_goes_through(
        resources: Resources, start_adapter: StartAdapter, unique: str) -> None:
    platform = RecordingPlatform(latency_s=0.0)
    url = await platform.start()
    try:
        dest = MunicipalDestination(name=f"h{unique}", url=url, profile="municipal_json", secret=SECRET,
                                    start="now", batch_size=20)
        a = await start_paused(resources, start_adapter, dest)
        lots = [f"H{unique}-{i}" for i in range(8)]
        stuck = lots[3]
        platform.refuse.add(stuck)
        ids: list[int] = []
        for seq in range(1, 11):  # 80 changes: one chunk of 4 batches
            ids += await insert(resources.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq)) for lot in lots])
        await a.stub.Resume(pb.ResumeRequest(destination=dest.name), metadata=a.md)

        async def others_arrived() -> bool:
            # Lots are packed two to a batch here: all but the stuck lot's batch get through.
            return sum(len(platform.arrived.get(lot, [])) == 10 for lot in lots) == len(lots) - 2

        await eventually(others_arrived, what="the other batches of the chunk")
        await answered(a.name, 503)  # the stuck batch was refused again since
        s = await status_of(a)
        assert stuck not in platform.arrived and s.cursor < min(ids) and s.lag_records == len(ids)
        assert s.HasField("last_error") and "503" in s.last_error.message

        platform.refuse.clear()
        s = await caught_up(a)
        assert s.cursor == max(ids) and delivered(s) == len(ids)
        for lot in lots:
            assert platform.arrived[lot] == sorted(platform.arrived[lot]) and len(platform.arrived[lot]) == 10
    finally:
        await platform.stop()
