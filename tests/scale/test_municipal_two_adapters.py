"""The municipal outbox drains exactly once with two adapter processes: two `v2x serve municipal` processes on the
same database and the 3-node Valkey cluster, one destination (the municipal JSON profile), the platform emulator as
the receiver. One process owns the destination (its advisory lock) while the other waits; the owner is SIGKILLed
with a batch in flight, and later the new owner's lock session is terminated under it while it drains. Every change
arrives exactly once by idempotency key, none is lost, each lot in order, and each is counted once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import text

from services.common.config import Settings
from services.common.runtime import Resources
from services.municipal.emulator import Faults, Platform, RunningEmulator, start_emulator
from services.municipal.model import idempotency_key
from services.municipal.settings import MunicipalDestination
from services.municipal.store import MunicipalStore
from services.runner.embedded import EmbeddedRedisCluster
from tests.conftest import fresh_database
from tests.municipal.helpers import SECRET, insert, lot_dynamic
from tests.ports import free_port
from tests.waiting import assert_eventually

LOTS = 40
PER_LOT = 100
CHANGES = LOTS * PER_LOT
# Slow enough that each owner is caught draining, fast enough for a short test.
RATE_RPS = 400
ROOT = Path(__file__).resolve().parents[2]

_LOCK_HOLDER = text("""
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(:key, 0)""")
_DELIVERED = text("SELECT coalesce(sum(delivered), 0) FROM municipal_delivered WHERE destination = :name")


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)



class AdapterProcess:
    """`v2x serve municipal` as its own process, on the cluster."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        self.env = {**env, "V2X_MUNICIPAL_PORT": str(free_port())}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "municipal"], env=self.env,
                                     cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(3, base_dir=tmp_path_factory.mktemp("cluster")) as c:
        yield c


# The adapters drain the whole outbox and the test counts what arrives: a database of its own.
@pytest.fixture(scope="module")
async def own_database(db_name: str) -> AsyncIterator[str]:
    async for url in fresh_database(f"{db_name}_scale_municipal"):
        yield url


@pytest.fixture(scope="module")
def cluster_env(own_database: str, cluster: EmbeddedRedisCluster) -> dict[str, str]:
    return {"DATABASE_URL": own_database, "REDIS_URL": cluster.url, "V2X_REDIS_CLUSTER": "1"}


@pytest.fixture(scope="module")
async def db(cluster_env: dict[str, str]) -> AsyncIterator[Resources]:
    res = Resources.open(Settings.from_env(cluster_env), "scale-municipal-test")
    yield res
    await res.close()


@pytest.fixture
async def receiver() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(Platform([SECRET], 300.0, Faults(latency_ms=15, latency_jitter_ms=10), seed=3))
    yield running
    await running.stop()


async def _serving(adapter: AdapterProcess, within_s: float = 60.0) -> None:
    port = int(adapter.env["V2X_MUNICIPAL_PORT"])

    async def listening() -> bool:
        assert adapter.alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await assert_eventually(listening, "the adapter serving", within_s, 0.05)


async def _until(what: str, check: Callable[[], bool], within_s: float = 90.0) -> None:
    async def ok() -> bool:
        return bool(check())

    await assert_eventually(ok, what, within_s, 0.005)


@pytest.mark.slow
@pytest.mark.chaos  # kills an adapter process
async def test_two_adapter_processes_drain_the_outbox_exactly_once_through_a_kill_and_a_lost_lock(
        db: Resources, cluster_env: dict[str, str], receiver: RunningEmulator, unique: str) -> None:
    platform = receiver.platform
    name = f"two-{unique}"
    dest_url = receiver.url + "/municipal/v1/records"
    # The destination's row (and cursor) exists before the backlog is written: "start now" takes all of it.
    config = [{"name": name, "url": dest_url, "profile": "municipal_json", "secret_env": "TWO_ADAPTERS_SECRET",
               "batch_size": 100, "timeout_s": 2.0, "rate_limit_rps": RATE_RPS, "start": "now"}]
    await MunicipalStore(db.engine).ensure([MunicipalDestination(name=name, url=dest_url, profile="municipal_json",
                                                                 secret=SECRET, start="now")])
    lots = [f"T{unique}-{i:02d}" for i in range(LOTS)]
    ids: list[int] = []
    for start in range(0, PER_LOT, 10):  # 10 changes of every lot per transaction
        ids += await insert(db.engine, [("lot_dynamic", lot, lot_dynamic(lot, seq, seq % 300))
                                        for seq in range(start + 1, start + 11) for lot in lots])
    expected = {idempotency_key(name, i) for i in ids}
    assert len(expected) == CHANGES

    env = {**os.environ, **cluster_env, "V2X_MUNICIPAL_METRICS_PORT": "0",
           "V2X_MUNICIPAL_DESTINATIONS": json.dumps(config), "TWO_ADAPTERS_SECRET": SECRET,
           "V2X_MUNICIPAL_POLL_S": "0.05", "V2X_MUNICIPAL_BACKOFF_BASE_S": "0.05", "V2X_MUNICIPAL_BACKOFF_MAX_S": "1",
           "V2X_MUNICIPAL_RECONCILE_HOUR": "-1", "LOG_LEVEL": "WARNING", "V2X_GRACE_S": "1"}
    with tempfile.NamedTemporaryFile(prefix="municipal-two-", suffix=".log", delete=False) as log:
        first, second = AdapterProcess(env, log), AdapterProcess(env, log)

        def logged() -> str:
            return Path(log.name).read_text(errors="replace")[-4000:]

        try:
            # The first process owns the destination (it drains alone for a while); the second waits for the lock.
            first.start()
            await _until("the first adapter draining", lambda: len(platform.seen) >= 300)
            second.start()
            await _until("the second adapter waiting", lambda: second.alive() and len(platform.seen) >= 900)
            # SIGKILL the owner with a batch in flight: the second takes over, the batch is sent again.
            await _until("a batch in flight", lambda: platform.stats.in_flight > 0)
            first.kill()
            at_kill = len(platform.seen)
            assert at_kill < CHANGES, "drained before the kill"
            first.start()  # restarted at once, as Kubernetes would; it waits for the lock now
            await _until("the second adapter draining", lambda: len(platform.seen) >= at_kill + 400, 60)
            # Once the restarted process serves (and so asks for the lock every second), the owner's lock session
            # dies under it (a dropped connection, a failover): it must not commit again, whoever takes over.
            await _serving(first)
            async with db.engine.connect() as conn:
                holders = [r[0] for r in await conn.execute(_LOCK_HOLDER, {"key": f"v2x-municipal:{name}"})]
                assert len(holders) == 1, holders
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holders[0]})
            at_loss = len(platform.seen)
            assert at_loss < CHANGES, "drained before the lock was lost"

            await _until("every change at the platform", lambda: len(platform.seen) >= CHANGES, 120)

            async def caught_up() -> bool:
                assert first.alive() and second.alive(), logged()
                status = await MunicipalStore(db.engine).status(name, ["lot_dynamic"], datetime.now(UTC))
                return status is not None and status.lag_records == 0

            await assert_eventually(caught_up, "the cursor at the end of the outbox", 60, 0.1)
            async with db.engine.connect() as conn:
                counted = int((await conn.execute(_DELIVERED, {"name": name})).scalar_one())
        finally:
            first.stop()
            second.stop()

    stats = platform.stats
    # Each change exactly once by idempotency key, none lost, nothing else; re-sent batches deduped.
    assert set(platform.seen) == expected
    assert stats.accepted == CHANGES and stats.rejected == 0
    # In order per lot.
    assert stats.order_violations == 0
    for lot in lots:
        order = platform.lots[(name, lot)]
        assert order == sorted(order) and len(order) == PER_LOT
    # Counted once each: no process committed after it lost the destination.
    assert counted == CHANGES
    _remove(log.name)
