"""A slow console over gRPC: its bounded buffer overflows, it is sent a RESYNC and a fresh snapshot, and the
console next to it gets every change meanwhile. (test_subscribe.py checks the same on the component.)"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

import pytest
from grpc import aio
from v2x.idps.v1 import idps_pb2 as pb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub

from services.common.redis_streams import stream_id
from services.common.runtime import RunningService
from tests.conftest import Keys
from tests.idps.conftest import SUBSCRIBER_BUFFER, Stub
from tests.idps.helpers import circle, offset, report, subscribe

Point = tuple[float, float]
K = pb.IncidentMessage
Call = aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]

# The numbers. A change is one message of MESSAGE_BYTES or more (3.16 KB measured): its description has
# 1,000 characters (convert.MAX_TEXT) of 3 bytes each in UTF-8. The slow console's channel keeps HTTP/2's
# default stream window, WINDOW_BYTES, by turning BDP probing off; with it, gRPC grows the window to
# max(4 MiB, 2 x BDP), and 1,360 such messages (4.3 MB of reports) reach a console that reads nothing before
# its buffer even starts to fill. Once the window is full, the server holds the response it was writing (at
# most SUBSCRIBER_BUFFER messages: all the buffer held) and the buffer fills until a batch does not fit.
# So the OVERFLOWS_BY-th change overflows it at the latest (measured: 48 messages reach the console first);
# REPORTS is twice that. They go in batches of BATCH concurrent reports, the next once the fast console has
# the last: a batch then fits the fast console's buffer however the fan-out's reads fall.
MESSAGE_BYTES = 3_000
WINDOW_BYTES = 65_535
BATCH = 16
OVERFLOWS_BY = WINDOW_BYTES // MESSAGE_BYTES + SUBSCRIBER_BUFFER + SUBSCRIBER_BUFFER + BATCH  # 165
REPORTS = -(-2 * OVERFLOWS_BY // BATCH) * BATCH  # 336
LAG_S = 2.0  # a batch reaches the fast console this soon after its reports are answered (~10 ms here)
QUIET_S = 1.0  # the slow console has all that was on its way when nothing more comes for this long
# Types none of which correlates with another (taxonomy.COMPATIBLE_GROUPS).
TYPES: tuple[pb.EventType.ValueType, ...] = (
    pb.EVENT_TYPE_ROADWORKS, pb.EVENT_TYPE_ANIMAL, pb.EVENT_TYPE_THROWN_OBJECT, pb.EVENT_TYPE_PEDESTRIAN_ON_ROAD,
    pb.EVENT_TYPE_FACILITY_DAMAGED)
DESCRIPTION = ("前方施工，占用右侧车道，请减速慢行。" * 60)[:1000]


def places(site: Point) -> list[tuple[Point, pb.EventType.ValueType]]:
    """REPORTS reports that each open an incident: 150 m apart (correlation: 100 m) or of other types,
    within 750 m of the site."""
    grid = [offset(site, 150 * i, 150 * j) for i in range(-5, 6) for j in range(-5, 6) if i * i + j * j <= 25]
    out = [(p, t) for t in TYPES for p in grid][:REPORTS]
    assert len(out) == REPORTS
    return out


@pytest.fixture
async def slow_channel(idps_service: RunningService) -> AsyncIterator[aio.Channel]:
    """A connection of its own (a local subchannel pool: channels otherwise share one) whose window stays
    at WINDOW_BYTES."""
    channel = aio.insecure_channel(f"127.0.0.1:{idps_service.server.port}",
                                   options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)])
    yield channel
    await channel.close()


class Unpumped:
    """Reads a Subscribe call message by message like helpers.Reader, but only when asked: no task reads
    ahead, so between two calls the console reads nothing at all."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.pending: deque[pb.IncidentMessage] = deque()

    async def next(self, wait_s: float = 5.0) -> pb.IncidentMessage:
        """The next message, heartbeats left out."""
        while not self.pending:
            response = await asyncio.wait_for(self.call.read(), wait_s)
            assert isinstance(response, pb.SubscribeResponse), f"the stream ended: {await self.call.code()}"
            self.pending.extend(m for m in response.messages if m.kind != K.KIND_HEARTBEAT)
        return self.pending.popleft()

    async def snapshot(self) -> tuple[list[pb.IncidentMessage], pb.IncidentMessage]:
        """After a RESYNC: the snapshot's NEW messages and its SNAPSHOT_END."""
        out: list[pb.IncidentMessage] = []
        while (m := await self.next()).kind != K.KIND_SNAPSHOT_END:
            assert m.kind == K.KIND_NEW and not m.cursor, m
            out.append(m)
        return out, m


async def test_a_slow_console_gets_a_resync_and_never_slows_the_others_over_grpc(
        stub: Stub, keys: Keys, site: Point, slow_channel: aio.Channel) -> None:
    area = circle(site, 800)
    slow_stub: Stub = IdpsServiceStub(slow_channel)
    slow = Unpumped(slow_stub.Subscribe(pb.SubscribeRequest(filter=pb.IncidentFilter(area=area)),
                                        metadata=keys.md(keys.police)))
    assert (await slow.next()).kind == K.KIND_RESYNC
    await slow.snapshot()
    fast = subscribe(stub, keys, keys.police, area=area)
    await fast.until_live()
    # From here on the slow console reads nothing until every report is in.
    received: list[pb.IncidentMessage] = []
    opened: list[str] = []
    todo = places(site)
    for start in range(0, REPORTS, BATCH):
        answers = await asyncio.gather(*(
            stub.ReportEvent(report(p, type=t, description=DESCRIPTION), metadata=keys.md(keys.police))
            for p, t in todo[start:start + BATCH]))
        assert all(a.opened for a in answers), answers
        opened += [a.incident_id for a in answers]
        try:
            async with asyncio.timeout(LAG_S):
                while len(received) < len(opened):
                    received.append(await fast.next(LAG_S))
        except TimeoutError:
            raise AssertionError(f"the fast console had {len(received)} of {len(opened)} changes "
                                 f"{LAG_S} s after their reports were answered") from None
    assert received[0].ByteSize() >= MESSAGE_BYTES, "the numbers above assume messages of ~3 KB"
    assert [m.kind for m in received] == [K.KIND_NEW] * REPORTS
    assert sorted(m.incident.id for m in received) == sorted(opened)
    cursors = [m.cursor for m in received]
    assert [stream_id(c) for c in cursors] == sorted({stream_id(c) for c in cursors}), "not in cursor order"

    # The slow console reads again: what was on its way, then a RESYNC, and no message missing before it.
    before: list[pb.IncidentMessage] = []
    try:
        while (m := await slow.next(QUIET_S)).kind != K.KIND_RESYNC:
            before.append(m)
    except TimeoutError:
        raise AssertionError(f"no RESYNC after {len(before)} of the {REPORTS} changes") from None
    assert before, "nothing reached the slow console before its RESYNC"
    assert [(x.kind, x.cursor) for x in before] == [(K.KIND_NEW, c) for c in cursors[:len(before)]], \
        "a gap before the RESYNC"
    # Then a fresh snapshot: every incident opened (those it lost among them), and SNAPSHOT_END with the
    # cursor to follow from, at or after the last change.
    snapshot, end = await slow.snapshot()
    assert set(opened) <= {x.incident.id for x in snapshot}
    assert stream_id(end.cursor) >= stream_id(cursors[-1])
    # And it follows live changes again, like the fast console.
    last = await stub.ReportEvent(report(site, type=pb.EVENT_TYPE_TRAFFIC_JAM), metadata=keys.md(keys.police))
    for console in (slow, fast):
        m = await console.next()
        assert (m.kind, m.incident.id) == (K.KIND_NEW, last.incident_id)
    slow.call.cancel()
    fast.cancel()
