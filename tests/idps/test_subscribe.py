"""Subscribe: snapshot then live NEW / UPDATE / END, filters, exact replay from a cursor, resync."""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from v2x.idps.v1 import idps_pb2 as pb

from services.common.redis_streams import Entry as RawEntry
from services.common.redis_streams import stream_id
from services.common.runtime import Resources
from services.idps.feed import STREAM, ChangeFeed, Fanout, StreamEntry, Subscriptions
from services.idps.model import Attrs, Change, Incident, IncidentFilter
from services.idps.settings import IdpsSettings
from services.idps.store import IdpsStore
from tests.conftest import Keys
from tests.idps.conftest import Stub
from tests.idps.helpers import circle, offset, report, subscribe
from tests.waiting import assert_eventually

Point = tuple[float, float]
K = pb.IncidentMessage


def summary(messages: list[pb.IncidentMessage]) -> list[tuple[int, str, int]]:
    return [(m.kind, m.incident.id, m.incident.version) for m in messages]


async def test_a_console_gets_a_snapshot_then_new_update_and_end(stub: Stub, keys: Keys, site: Point) -> None:
    existing = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    console = subscribe(stub, keys, keys.police, area=circle(site))
    snapshot = await console.until_live()
    assert summary(snapshot) == [(K.KIND_NEW, existing.incident_id, 1)]
    joined = await stub.ReportEvent(report(offset(site, 20, 0), source="officer-2"), metadata=keys.md(keys.police))
    other = await stub.ReportEvent(report(offset(site, 300, 0), type=pb.EVENT_TYPE_ROADWORKS),
                                   metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=existing.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_FALSE_ALARM),
                                  metadata=keys.md(keys.police))
    got = [await console.next() for _ in range(3)]
    assert summary(got) == [(K.KIND_UPDATE, existing.incident_id, 2), (K.KIND_NEW, other.incident_id, 1),
                            (K.KIND_END, existing.incident_id, 3)]
    assert joined.incident_version == 2 and all(m.cursor for m in got)
    assert stream_id(got[0].cursor) < stream_id(got[1].cursor) < stream_id(got[2].cursor)
    assert got[2].incident.status == pb.INCIDENT_STATUS_FALSE_ALARM
    console.cancel()


async def test_filters_by_area_type_severity_and_status(stub: Stub, keys: Keys, site: Point) -> None:
    console = subscribe(stub, keys, keys.driver, area=circle(site, 1000), types=[pb.EVENT_TYPE_ACCIDENT],
                        min_severity=pb.SEVERITY_NORMAL, statuses=[pb.INCIDENT_STATUS_REPORTED])
    assert await console.until_live() == []
    await stub.ReportEvent(report(offset(site, 0, 3000)), metadata=keys.md(keys.police))  # outside the area
    await stub.ReportEvent(report(offset(site, 500, 0), type=pb.EVENT_TYPE_ROADWORKS),
                           metadata=keys.md(keys.police))  # another type
    minor = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))  # MINOR
    # Nothing for these: the stream is in order, so what the console gets next (below) would come after them.
    # Blocking a lane makes it MAJOR: it now matches (NEW); confirming it leaves the status filter (END).
    await stub.UpdateIncident(pb.UpdateIncidentRequest(
        incident_id=minor.incident_id, lane_impacts=[pb.LaneImpact(lane_id="L1", state=pb.LANE_STATE_BLOCKED)]),
        metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=minor.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_CONFIRMED),
                                  metadata=keys.md(keys.police))
    got = [await console.next(), await console.next()]
    assert summary(got) == [(K.KIND_NEW, minor.incident_id, 2), (K.KIND_END, minor.incident_id, 3)]
    assert got[0].incident.severity == pb.SEVERITY_MAJOR
    console.cancel()


async def test_reconnecting_with_the_last_cursor_replays_exactly_what_was_missed(stub: Stub, keys: Keys,
                                                                               site: Point) -> None:
    watcher = subscribe(stub, keys, keys.police, area=circle(site, 2000))  # stays connected throughout
    console = subscribe(stub, keys, keys.police, area=circle(site, 2000))
    await watcher.until_live()
    await console.until_live()
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    seen = await console.next()
    assert summary([seen]) == [(K.KIND_NEW, a.incident_id, 1)]
    console.cancel()  # the console goes away; five things happen, two of them elsewhere
    await stub.ReportEvent(report(offset(site, 30, 0), source="officer-2"), metadata=keys.md(keys.police))
    b = await stub.ReportEvent(report(offset(site, 500, 0), type=pb.EVENT_TYPE_FOG), metadata=keys.md(keys.police))
    await stub.ReportEvent(report(offset(site, 0, 9000)), metadata=keys.md(keys.police))  # outside the area
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=a.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_CONFIRMED),
                                  metadata=keys.md(keys.police))
    await stub.TransitionIncident(pb.TransitionIncidentRequest(incident_id=b.incident_id,
                                                               target_status=pb.INCIDENT_STATUS_FALSE_ALARM),
                                  metadata=keys.md(keys.police))
    live = [await watcher.next() for _ in range(5)]
    assert summary(live)[0] == (K.KIND_NEW, a.incident_id, 1)
    missed = live[1:]
    back = subscribe(stub, keys, keys.police, area=circle(site, 2000), cursor=seen.cursor)
    replayed = [await back.next() for _ in range(len(missed))]
    assert [m.SerializeToString() for m in replayed] != []  # (sent_at differs; compare what matters)
    assert [(m.kind, m.cursor, m.incident.SerializeToString()) for m in replayed] == \
        [(m.kind, m.cursor, m.incident.SerializeToString()) for m in missed]
    assert summary(replayed) == [(K.KIND_UPDATE, a.incident_id, 2), (K.KIND_NEW, b.incident_id, 1),
                                 (K.KIND_UPDATE, a.incident_id, 3), (K.KIND_END, b.incident_id, 2)]
    caught_up = await back.next(heartbeats=True)
    assert caught_up.kind == K.KIND_HEARTBEAT and caught_up.cursor >= replayed[-1].cursor
    # No duplicate: one would come before the next change's message (the stream is in order).
    c = await stub.ReportEvent(report(offset(site, -600, 0), type=pb.EVENT_TYPE_ICY), metadata=keys.md(keys.police))
    assert summary([await back.next()]) == [(K.KIND_NEW, c.incident_id, 1)]
    assert summary([await watcher.next()]) == [(K.KIND_NEW, c.incident_id, 1)]
    back.cancel()
    watcher.cancel()


async def test_a_cursor_whose_entries_were_trimmed_gets_a_resync_and_a_snapshot(
        stub: Stub, keys: Keys, site: Point, idps_resources: Resources) -> None:
    console = subscribe(stub, keys, keys.police, area=circle(site))
    await console.until_live()
    a = await stub.ReportEvent(report(site), metadata=keys.md(keys.police))
    old_cursor = (await console.next()).cursor
    console.cancel()
    await stub.ReportEvent(report(site, source="officer-2"), metadata=keys.md(keys.police))  # missed...
    await stub.ReportEvent(report(site, source="officer-3"), metadata=keys.md(keys.police))
    newest = cast(list[RawEntry], await idps_resources.redis.xrevrange(STREAM, count=1))[0][0]
    # ... and trimmed away (as MAXLEN does, eventually): the console can no longer catch up exactly.
    await idps_resources.redis.xtrim(STREAM, minid=newest, approximate=False)
    back = subscribe(stub, keys, keys.police, area=circle(site), cursor=old_cursor)
    snapshot = await back.until_live()
    assert summary(snapshot) == [(K.KIND_NEW, a.incident_id, 3)]
    back.cancel()


async def test_a_cursor_from_the_future_gets_a_resync(stub: Stub, keys: Keys, site: Point) -> None:
    back = subscribe(stub, keys, keys.police, area=circle(site), cursor="99999999999999-0")
    assert await back.until_live() == []
    back.cancel()


async def test_idle_streams_get_heartbeats_with_the_latest_cursor(stub: Stub, keys: Keys, site: Point) -> None:
    console = subscribe(stub, keys, keys.police, area=circle(site), heartbeat_s=1)
    await console.until_live()
    beat = await console.next(3.0, heartbeats=True)
    assert beat.kind == K.KIND_HEARTBEAT and beat.cursor and beat.HasField("sent_at")
    console.cancel()


async def _collect(gen: Any, out: list[pb.IncidentMessage], stop: asyncio.Event) -> None:
    async for chunk in gen:
        out.extend(pb.SubscribeResponse.FromString(chunk).messages)
        if stop.is_set():
            return


async def test_a_slow_console_gets_a_resync_and_never_slows_the_others(idps_resources: Resources,
                                                                       site: Point) -> None:
    store = IdpsStore(idps_resources.engine, IdpsSettings.from_env(idps_resources.settings.env))
    fanout = Fanout(idps_resources.redis)
    subs = Subscriptions(idps_resources.redis, store, fanout, buffer=25)
    feed = ChangeFeed(idps_resources.redis, 100_000)
    f = IncidentFilter()
    slow = subs.stream(f, "", 60)
    fast = subs.stream(f, "", 60)
    opening: list[int] = []
    while K.KIND_SNAPSHOT_END not in opening:  # the slow console gets live, then stops reading
        opening += [m.kind for m in pb.SubscribeResponse.FromString(await slow.__anext__()).messages]
    assert opening[0] == K.KIND_RESYNC
    fast_messages: list[pb.IncidentMessage] = []
    stop = asyncio.Event()
    fast_task = asyncio.create_task(_collect(fast, fast_messages, stop))

    def fast_got(n: int) -> bool:
        return sum(1 for m in fast_messages if m.incident.id.startswith("ISLOW")) >= n

    try:
        await assert_eventually(lambda: K.KIND_SNAPSHOT_END in [m.kind for m in fast_messages], "the fast console live")
        now = datetime.now(UTC)
        fake = [Incident(f"ISLOW{site[0]:.6f}-{i}", pb.EVENT_TYPE_FOG, pb.INCIDENT_STATUS_REPORTED, pb.SEVERITY_MINOR,
                         site[0], site[1], 0.5, now, now, now, now) for i in range(40)]
        for k, inc in enumerate(fake):  # bursts of 5: the fast console keeps up, the slow one has 40 waiting
            await feed.publish([Change(inc, None)])
            if k % 5 == 4:
                await assert_eventually(functools.partial(fast_got, k + 1), "the fast console to keep up")
        ours = [m for m in fast_messages if m.incident.id.startswith("ISLOW")]
        assert [m.incident.id for m in ours] == [i.id for i in fake] and {m.kind for m in ours} == {K.KIND_NEW}
        kinds = []
        async for chunk in slow:  # the slow console reads again: it lost its place
            kinds += [m.kind for m in pb.SubscribeResponse.FromString(chunk).messages]
            if K.KIND_SNAPSHOT_END in kinds:
                break
        assert kinds[0] == K.KIND_RESYNC and kinds[-1] == K.KIND_SNAPSHOT_END
    finally:
        stop.set()
        fast_task.cancel()
        await slow.aclose()
        await fanout.stop()


async def test_an_older_version_is_never_published_after_a_newer_one(idps_resources: Resources,
                                                                     unique: str) -> None:
    feed = ChangeFeed(idps_resources.redis, 100_000)
    now = datetime.now(UTC)

    def version(v: int, status: int) -> Incident:
        return Incident(f"IORDER{unique}", pb.EVENT_TYPE_FOG, status, pb.SEVERITY_MINOR, 31.0, 121.0, 0.5, now,
                        now, now, now, version=v)

    first = await feed.publish([Change(version(1, pb.INCIDENT_STATUS_REPORTED), None)])
    v3 = version(3, pb.INCIDENT_STATUS_DISPATCHED)
    late = version(2, pb.INCIDENT_STATUS_CONFIRMED)
    assert (await feed.publish([Change(v3, late.attrs())]))[0]
    assert await feed.publish([Change(late, version(1, 1).attrs())]) == [""]
    entries = cast(list[RawEntry], await idps_resources.redis.xrange(STREAM, min=first[0]))
    ours = [e for e in map(StreamEntry.parse, entries) if e.incident_id == f"IORDER{unique}"]
    assert [e.version for e in ours] == [1, 3]
    # The entry of v3 carries the attributes of v1 (what subscribers saw last), not those of v2.
    assert ours[1].before == version(1, pb.INCIDENT_STATUS_REPORTED).attrs()


@pytest.mark.parametrize("status", [pb.INCIDENT_STATUS_CLOSED, pb.INCIDENT_STATUS_FALSE_ALARM])
def test_terminal_incidents_never_match_a_live_filter(status: int) -> None:
    assert not IncidentFilter().matches_live(Attrs(status, pb.EVENT_TYPE_FOG, 1, 0.0, 0.0))


def test_an_entry_written_by_an_earlier_release_still_parses() -> None:
    before = Attrs(pb.INCIDENT_STATUS_REPORTED, pb.EVENT_TYPE_FOG, 1, 31.0, 121.0)
    after = Attrs(pb.INCIDENT_STATUS_CONFIRMED, pb.EVENT_TYPE_FOG, 1, 31.0, 121.0)
    old = StreamEntry.parse((b"5-1", {b"i": b"IOLD", b"v": b"2", b"a": after.encode().encode(),
                                      b"p": before.encode().encode(), b"d": b"x"}))
    new = StreamEntry.parse((b"5-1", {b"h": f"IOLD|2|{after.encode()}|{before.encode()}".encode(), b"d": b"x"}))
    assert old == new and (new.incident_id, new.version, new.attrs, new.before) == ("IOLD", 2, after, before)
