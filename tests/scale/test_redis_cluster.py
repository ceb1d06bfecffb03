"""The suite on a Redis Cluster: a real 3-node cluster from the embedded Valkey binary, change feeds sharded over
its nodes (V2X_FEED_SHARDS=4), replicas following every shard, and a node that dies and comes back."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc import aio
from redis.asyncio import Redis
from v2x.idps.v1 import idps_pb2 as ipb
from v2x.idps.v1.idps_pb2_grpc import IdpsServiceStub
from v2x.parking.v1 import parking_pb2 as pb
from v2x.parking.v1.parking_pb2_grpc import ParkingServiceStub

from services.common.config import Settings
from services.common.redis_streams import Feed, Position, create_redis
from services.common.runtime import Resources, RunningService, start_service
from services.parking.app import build
from services.parking.feed import AvailabilityFeed
from services.parking.index import LotIndex
from services.parking.model import FindQuery
from services.parking.store import ParkingStore
from services.parking.vocab import SpaceClass
from services.runner.embedded import EmbeddedRedis, EmbeddedRedisCluster
from tests.conftest import Keys
from tests.idps.conftest import Stub as IdpsStub
from tests.idps.helpers import Reader, circle, offset, subscribe
from tests.idps.helpers import report as idps_report
from tests.parking.conftest import Stub
from tests.parking.helpers import lot, report
from tests.replicas import following
from tests.waiting import assert_eventually

SHARDS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(3, base_dir=tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_settings(settings: Settings, cluster: EmbeddedRedisCluster) -> Settings:
    env = {**settings.env, "REDIS_URL": cluster.url, "V2X_REDIS_CLUSTER": "1", "V2X_FEED_SHARDS": str(SHARDS)}
    return Settings.from_env(env)


@pytest.fixture(scope="module")
async def on_cluster(cluster_settings: Settings) -> AsyncIterator[Resources]:
    res = Resources.open(cluster_settings, "cluster-test")
    yield res
    await res.close()


@pytest.fixture(scope="module")
async def parking_on_cluster(on_cluster: Resources) -> AsyncIterator[tuple[RunningService, Stub]]:
    running = await start_service(build, on_cluster, port=0, host="127.0.0.1")
    channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    yield running, ParkingServiceStub(channel)
    await channel.close()
    await running.stop(0.5)


async def _replica(resources: Resources) -> AsyncIterator[tuple[AvailabilityFeed, Redis]]:
    """Another parking replica's index, with a cluster client of its own, following every shard."""
    redis = create_redis(resources.settings.require_redis_url(), cluster=True)
    store = ParkingStore(resources.engine)
    feed = AvailabilityFeed(redis, store, resources.settings.redis_stream_maxlen, LotIndex(store), shards=SHARDS)
    async with following(feed):
        yield feed, redis
    await redis.aclose()


def _free_in(feed: AvailabilityFeed, lot_id: str, lat: float, lon: float) -> int | None:
    assert feed.index is not None
    answer = feed.index.find(FindQuery(lat, lon, 200.0, 5, SpaceClass.GENERAL, 0, [], False, 0), datetime.now(UTC))
    if answer is None:
        return None
    for found in pb.FindAvailableResponse.FromString(answer).lots:
        if found.lot_id == lot_id:
            for c in found.availability.classes:
                if c.space_class == pb.SPACE_CLASS_GENERAL and c.HasField("free"):
                    return c.free
    return None


async def _lots(stub: Stub, keys: Keys, n: int) -> list[tuple[str, float, float]]:
    out = []
    for i in range(n):
        lot_id = f"CL{random.getrandbits(32):08x}{i}"
        lat, lon = random.uniform(-40, -30), random.uniform(20, 60)
        await stub.RegisterLot(pb.RegisterLotRequest(lot=lot(lot_id, lat=lat, lon=lon)), metadata=keys.md(keys.admin))
        out.append((lot_id, lat, lon))
    return out


async def test_changes_spread_over_the_clusters_nodes_and_reach_every_replicas_index(
        on_cluster: Resources, cluster: EmbeddedRedisCluster, parking_on_cluster: tuple[RunningService, Stub],
        keys: Keys) -> None:
    _, stub = parking_on_cluster
    lots = await _lots(stub, keys, 12)
    async for first, _ in _replica(on_cluster):
        async for second, _ in _replica(on_cluster):
            for seq, (lot_id, _, _) in enumerate(lots, start=1):
                await stub.PushOccupancy(report(lot_id, seq, general=seq), metadata=keys.md(keys.op_a))
            for seq, place in enumerate(lots, start=1):
                for replica in (first, second):
                    await _eventually_free(replica, place, seq)
    # The lots' entries went to several shards, and the shards live on more than one node.
    feed = Feed("parking", "changes", SHARDS)
    used = {feed.shard_of(lot_id) for lot_id, _, _ in lots}
    assert len(used) > 1
    ports = set()
    for shard in used:
        length = await on_cluster.redis.xlen(feed.key(shard))
        assert length > 0
        ports.add(on_cluster.redis.get_node_from_key(feed.key(shard)).port)  # type: ignore[attr-defined]
    assert len(ports) > 1, "every shard on one node"


@pytest.mark.chaos  # SIGKILLs a cluster node
async def test_a_node_that_dies_and_comes_back_loses_nothing_acknowledged_and_replicas_recover(
        on_cluster: Resources, cluster: EmbeddedRedisCluster,
        parking_on_cluster: tuple[RunningService, Stub], keys: Keys) -> None:
    _, stub = parking_on_cluster
    lots = await _lots(stub, keys, 8)
    async for replica, _ in _replica(on_cluster):
        victim = cluster.nodes[1]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        # While the node is down, every report is still acknowledged: the database holds it.
        for lot_id, _, _ in lots:
            ack = await stub.PushOccupancy(report(lot_id, 1, general=7), metadata=keys.md(keys.op_a))
            assert ack.result == pb.ACK_RESULT_ACCEPTED
        for lot_id, _, _ in lots:
            view = await stub.GetLot(pb.GetLotRequest(lot_id=lot_id), metadata=keys.md(keys.admin))
            assert [c.free for c in view.availability.classes if c.space_class == pb.SPACE_CLASS_GENERAL] == [7]
        await _restart(victim)
        # Back: later changes flow to the replica again, and what it missed it gets by reloading.
        for lot_id, _, _ in lots:
            await stub.PushOccupancy(report(lot_id, 2, general=9), metadata=keys.md(keys.op_a))
        for place in lots:
            await _eventually_free(replica, place, 9, within_s=60)


async def _eventually_free(replica: AvailabilityFeed, place: tuple[str, float, float], free: int,
                           within_s: float = 20.0) -> None:
    lot_id, lat, lon = place
    await assert_eventually(lambda: _free_in(replica, lot_id, lat, lon) == free,
                            f"{lot_id} with {free} free in a replica's index", within_s=within_s)


async def _restart(node: EmbeddedRedis) -> None:
    await asyncio.to_thread(node.restart)


# ----- IDPS: a console's cursor spans the shards ------------------------------------------------------------


@pytest.fixture(scope="module")
async def idps_on_cluster(on_cluster: Resources) -> AsyncIterator[IdpsStub]:
    from services.idps.app import build as build_idps

    running = await start_service(build_idps, on_cluster, port=0, host="127.0.0.1")
    channel = aio.insecure_channel(f"127.0.0.1:{running.server.port}")
    yield IdpsServiceStub(channel)
    await channel.close()
    await running.stop(0.5)


async def _report_apart(stub: IdpsStub, keys: Keys, site: tuple[float, float], first: int, n: int) -> list[str]:
    """`n` incidents of their own (400 m apart: none joins another)."""
    ids = []
    for i in range(first, first + n):
        r = await stub.ReportEvent(idps_report(offset(site, 400 * i, 0), source=f"officer-{i}"),
                                   metadata=keys.md(keys.police))
        assert r.opened
        ids.append(r.incident_id)
    return ids


async def _until_caught_up(console: Reader) -> list[ipb.IncidentMessage]:
    """Messages up to the heartbeat that says a replay caught up."""
    out = []
    while (m := await console.next(10, heartbeats=True)).kind != ipb.IncidentMessage.KIND_HEARTBEAT:
        out.append(m)
    return out


async def test_a_console_resumes_across_shards_with_no_gap_and_no_duplicate(
        idps_on_cluster: IdpsStub, keys: Keys, unique: str) -> None:
    stub = idps_on_cluster
    site = (-20.0 - int(unique, 16) % 1000 / 100, 30.0)
    console = subscribe(stub, keys, keys.police, area=circle(site, 20_000))
    assert await console.until_live() == []
    before = await _report_apart(stub, keys, site, 0, 6)
    seen = [await console.next(10) for _ in before]
    assert [m.incident.id for m in seen] == before and all(m.kind == ipb.IncidentMessage.KIND_NEW for m in seen)
    cursor = seen[2].cursor
    assert len(cursor.split(",")) == SHARDS
    console.cancel()
    # While the console is away: more incidents, over several shards.
    missed = await _report_apart(stub, keys, site, 6, 8)
    feed = Feed("idps", "incidents", SHARDS)
    assert len({feed.shard_of(i) for i in [*before[3:], *missed]}) > 1
    resumed = subscribe(stub, keys, keys.police, area=circle(site, 20_000), cursor=cursor)
    replayed = await _until_caught_up(resumed)
    got = sorted(m.incident.id for m in replayed)
    assert got == sorted([*before[3:], *missed]), "a gap or a duplicate"
    # Live again: the next change comes once, with a cursor at or past everything it was sent.
    live = await _report_apart(stub, keys, site, 14, 1)
    m = await resumed.next(10)
    assert m.incident.id == live[0]
    last = Position.decode(replayed[-1].cursor, SHARDS)
    assert Position.decode(m.cursor, SHARDS).after(last)
    resumed.cancel()


async def test_a_cursor_from_before_the_feed_was_sharded_is_refused_with_a_clear_status(
        idps_on_cluster: IdpsStub, keys: Keys) -> None:
    console = subscribe(idps_on_cluster, keys, keys.police, cursor="1718000000000-0")
    with pytest.raises(aio.AioRpcError) as err:
        await console.next(10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "subscribe again without a cursor" in (err.value.details() or "")
