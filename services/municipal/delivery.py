"""One delivery lane per destination: drain the outbox in order, render, sign, POST, record the outcome.

- The lane reads the outbox a chunk at a time (up to CHUNK_BATCHES batches of the destination's batch size,
  plus the rows that keep each lot in id order), a few chunks ahead of delivery. A chunk larger than one batch
  is split into batches that never share a lot; up to MAX_IN_FLIGHT batches are in flight at once, and the
  batches of one lot's records go one after another (a batch is sent when the one before it in its stream was
  acknowledged), so a later record of a lot never overtakes an earlier one that is being retried. The next chunk
  is rendered while one is in flight and starts going out while the last batches of the one before are still in
  flight (a stream of it that carries a lot of those batches waits for them). A chunk's outcome is committed
  (cursor, counts, dead letters: one transaction) after the platform acknowledged every batch of it, and after
  the chunk before it. A crash re-sends at most the chunks in flight, which the receiver dedupes by
  idempotency key.
- 5xx, 408/425/429, timeouts and connection errors: the same batch again after an exponential backoff
  with jitter (Retry-After honoured), for as long as it takes: an outage makes lag, never loses data.
  The other batches of the chunk carry on meanwhile; the chunk is committed when the last one got through.
- 401/403: the platform refuses our credentials; the destination is paused with that reason (nothing is
  dead-lettered for a configuration error). Any other 4xx for a whole batch: the batch is split until the
  refused record is alone, and that record becomes a dead letter. A per-record 4xx in a 2xx answer: that
  record becomes a dead letter. An NGSI-LD broker's 207 is read per entity: the records of a refused entity become
  dead letters with its reason, those of an entity that failed transiently go again alone (after backoff). Records
  that fail their profile's checks never leave: dead letters too.
- A batch is cut where the profile's publication changes (DATEX II: a body is one d2:payload of one publication).
- A token bucket keeps each destination under its rate limit (records per second).
- Only one process drains a destination at a time (a PostgreSQL advisory lock), so replicas fail over. A chunk's
  commit checks, in its transaction, that this process's lock session still holds the lock: a process whose
  lock session died unnoticed may send a chunk the new owner sends too (deduped by the receiver), but never
  moves the cursor or counts a record twice, and stops draining at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.background import raise_if_stopping
from services.common.backoff import backoff_s
from services.municipal import signing
from services.municipal.model import (
    KEY_NAMESPACE,
    Fate,
    InvalidRecord,
    OutboxRecord,
    Outcome,
    Position,
    key_maker,
)
from services.municipal.profiles import RenderContext, make_profile
from services.municipal.profiles.base import lot_location, preview, record_key
from services.municipal.settings import MunicipalDestination, MunicipalSettings
from services.municipal.store import (
    Commit,
    Control,
    MunicipalStore,
    NotOwner,
    Owner,
    Row,
    chunk_end,
    row_position,
    to_records,
)

log = logging.getLogger("v2x.municipal")

DELIVERED = Counter("v2x_municipal_delivered_total", "Records acknowledged by the platform (first time)",
                    ["destination", "kind"])
DEAD = Counter("v2x_municipal_dead_letters_total", "Records that became dead letters", ["destination", "reason"])
REQUESTS = Counter("v2x_municipal_requests_total", "Delivery requests by HTTP status (0 = no answer)",
                   ["destination", "status"])
# A read of the outbox that found nothing to send (the lane then waits poll_s): tests wait for it before they
# assert that something was not sent.
IDLE_POLLS = Counter("v2x_municipal_idle_polls_total", "Reads of the outbox that found nothing to send",
                     ["destination"])
LAG_RECORDS = Gauge("v2x_municipal_lag_records", "Outbox records waiting for a destination", ["destination"])
LAG_SECONDS = Gauge("v2x_municipal_lag_seconds", "Age of the oldest record waiting for a destination",
                    ["destination"])

# The owner looks at its lock session this often; a process that waits for the lock asks again this often (a
# failover takes about that long; the commit fence, not this, keeps a former owner from writing).
LOCK_CHECK_S = 5.0
LOCK_RETRY_S = 1.0
# Pause, replay and requeued dead letters are read from the database at least this often (at once when an
# rpc in this process pokes the lane), not before every batch.
CONTROL_EVERY_S = 0.5
ERROR_WRITE_S = 1.0
RETRYABLE = frozenset({408, 425, 429})
# Requests in flight per destination at most; the batches in flight together never share a lot.
MAX_IN_FLIGHT = 4
# One read of the outbox (and one commit of the cursor) covers up to this many batches, and up to CHUNK_ROWS rows
# (at least one batch) so that big batches do not make huge chunks.
CHUNK_BATCHES = 8
CHUNK_ROWS = 8_000
# Chunks read ahead of the one being rendered, at most.
READ_AHEAD = 2
# Records rendered between two looks at the requests in flight.
SLICE = 250
_ROW_ID = itemgetter(1)
_KIND = attrgetter("kind")
_LOT = attrgetter("aggregate_id")
_RESULT_KEY = itemgetter("idempotencyKey")
_RESULT_STATUS = itemgetter("status")


class Paused(Exception):
    """Delivery to the destination was paused while a batch was in flight."""


class AuthRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Transient(Exception):
    """A failure worth trying again. When the platform settled part of the batch (an NGSI-LD 207 with transient
    errors for some entities), `settled` is that part and `rest` the records to send again; else the whole batch
    goes again."""

    def __init__(self, status: int, message: str, retry_after: float | None = None, settled: Sent | None = None,
                 rest: Parcel | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.settled = settled
        self.rest = rest


class TokenBucket:
    """`rate` tokens (records) per second, bursts up to `burst`; rate 0 = unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.at = time.monotonic()

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        need = min(float(n), self.burst)
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= need:
                self.tokens -= need
                return
            await asyncio.sleep((need - self.tokens) / self.rate)


@dataclass(frozen=True)
class Replay:
    from_time: datetime
    kinds: tuple[str, ...]
    end: Position

    def skips(self, r: OutboxRecord) -> bool:
        inside = Position(r.txid, r.id) <= self.end
        return inside and (r.created_at < self.from_time or bool(self.kinds and r.kind not in self.kinds))


@dataclass(slots=True)
class Parcel:
    """Records that go in one request (in id order), their idempotency keys and their documents in wire form."""

    records: list[OutboxRecord]
    keys: list[str]
    wires: list[bytes]
    body: bytes | None = None  # the request body, once built

    def __len__(self) -> int:
        return len(self.records)

    def halves(self) -> tuple[Parcel, Parcel]:
        h = len(self.records) // 2
        return (Parcel(self.records[:h], self.keys[:h], self.wires[:h]),
                Parcel(self.records[h:], self.keys[h:], self.wires[h:]))


def _problem(error: Any) -> tuple[int, str]:
    """An NGSI-LD ProblemDetails ({"type", "title", "status"?, "detail"?}) as (HTTP status, reason): its status, else
    one from its type (InternalError and LdContextNotAvailable are the broker's trouble, the rest the entity's)."""
    if not isinstance(error, dict):
        return 400, str(error)
    kind = str(error.get("type", ""))
    reason = "; ".join(str(error[k]) for k in ("type", "title", "detail") if error.get(k))
    status = error.get("status")
    if type(status) is int and 400 <= status < 600:
        return status, reason
    if kind.endswith(("/InternalError", "/LdContextNotAvailable")):
        return 503, reason
    return (404 if kind.endswith("/ResourceNotFound") else 400), reason


@dataclass(slots=True)
class Sent:
    """What the platform made of some records: acknowledged ones, and dead letters (refused or invalid)."""

    delivered: list[OutboxRecord] = field(default_factory=list)
    dead: list[Outcome] = field(default_factory=list)

    def add(self, other: Sent) -> None:
        self.delivered += other.delivered
        self.dead += other.dead


@dataclass
class Chunk:
    """One read of the outbox, rendered and split for sending, with the drain state after it."""

    size: int = 0  # rows read; 0: nothing to deliver yet
    end: Position = field(default_factory=lambda: Position(0, 0))  # the cursor once the chunk is through
    ahead: dict[int, Position] = field(default_factory=dict)  # rows beyond `end` delivered early, after it
    replay_in: Replay | None = None  # the replay in progress while the chunk is sent
    replay: Replay | None = None  # the replay still in progress after it
    # Streams of parcels: a lot's records are all in one stream; streams go concurrently, the parcels of a
    # stream one after another.
    streams: list[list[Parcel]] = field(default_factory=list)
    dead: list[Outcome] = field(default_factory=list)  # invalid records, decided before sending


def split_streams(records: list[OutboxRecord], keys: list[str], wires: list[bytes],
                  batch_size: int) -> list[list[Parcel]]:
    """Splits records (in id order) into streams of parcels of at most `batch_size` records such that each lot's
    records are in one stream, in id order. Lots are packed whole into one-parcel streams (first fit, in order of
    their first record); a lot with more than a batch of records gets a stream of its own."""
    n = len(records)
    if n <= batch_size:
        return [[Parcel(records, keys, wires)]] if n else []
    sizes = collections.Counter(map(_LOT, records))  # in order of first appearance
    room: list[int] = []  # free places per stream; -1: a stream of one big lot
    stream_of: dict[str, int] = {}
    first_open = 0
    for lot, size in sizes.items():
        if size > batch_size:
            stream_of[lot] = len(room)
            room.append(-1)
            continue
        i = first_open
        while i < len(room) and room[i] < size:
            i += 1
        if i == len(room):
            room.append(batch_size)
        room[i] -= size
        stream_of[lot] = i
        while first_open < len(room) and room[first_open] <= 0:
            first_open += 1
    if len(room) == 1:
        return [[Parcel(records[i:i + batch_size], keys[i:i + batch_size], wires[i:i + batch_size])
                 for i in range(0, n, batch_size)]]
    by_stream: list[tuple[list[OutboxRecord], list[str], list[bytes]]] = [([], [], []) for _ in room]
    for r, k, d in zip(records, keys, wires, strict=True):
        rs, ks, ds = by_stream[stream_of[r.aggregate_id]]
        rs.append(r)
        ks.append(k)
        ds.append(d)
    return [[Parcel(rs[i:i + batch_size], ks[i:i + batch_size], ds[i:i + batch_size])
             for i in range(0, len(rs), batch_size)] for rs, ks, ds in by_stream]


def split_publications(streams: list[list[Parcel]], publication: Callable[[str], str]) -> list[list[Parcel]]:
    """Cuts each parcel where the publication of its records changes (a profile whose body holds one publication),
    keeping the records' order within each stream."""
    out = []
    for stream in streams:
        parcels = []
        for parcel in stream:
            start = 0
            pubs = [publication(r.kind) for r in parcel.records]
            for i in range(1, len(pubs) + 1):
                if i == len(pubs) or pubs[i] != pubs[start]:
                    parcels.append(Parcel(parcel.records[start:i], parcel.keys[start:i], parcel.wires[start:i]))
                    start = i
        out.append(parcels)
    return out


def request_key(keys: Sequence[str]) -> str:
    """The idempotency key of a request: its record's key, or for several records a UUIDv5 of their keys (the same
    for the same records on every retry)."""
    return keys[0] if len(keys) == 1 else str(uuid.uuid5(KEY_NAMESPACE, ",".join(keys)))


@dataclass
class Progress:
    """Where a drain round stands: the chunks being sent (oldest first; at most two, as the next one starts while
    the last batches of the one before are in flight), the commit of the last one through, and the drain state
    after it (cursor, early rows, replay)."""

    pos: Position
    ahead: dict[int, Position]
    replay: Replay | None
    pending: list[Delivery] = field(default_factory=list)
    committing: asyncio.Task[None] | None = None


@dataclass
class Delivery:
    """A chunk being sent: the task that gathers its streams, and the stream carrying each of its lots."""

    chunk: Chunk
    task: asyncio.Task[Sent]
    lots: dict[str, asyncio.Task[Sent]]


class EarlierBatchFailed(Exception):
    """A batch of the chunk before, carrying some of the same lots, did not get through."""


class Reader:
    """Reads the outbox ahead of delivery, a chunk at a time, in a task of its own: each read needs only the end of
    the one before (and its early rows), so PostgreSQL works up to READ_AHEAD chunks ahead while the lane renders
    and sends. A read that finds nothing ends the task; the next `next()` reads again from there."""

    def __init__(self, lane: Lane, pos: Position, ahead: dict[int, Position], replay: Replay | None) -> None:
        self.lane = lane
        self.pos, self.ahead, self.replay = pos, ahead, replay  # where the next read starts
        self.queue: asyncio.Queue[_Read | BaseException | None] = asyncio.Queue(READ_AHEAD)
        self.task: asyncio.Task[None] | None = None

    async def _read_ahead(self) -> None:
        lane = self.lane
        size = lane.destination.batch_size
        limit = size * max(1, min(CHUNK_BATCHES, CHUNK_ROWS // size))
        try:
            while True:
                batch, extra = await lane.store.read_chunk(self.pos, sorted(self.ahead), lane.kinds, limit)
                if not batch:
                    await self.queue.put(None)
                    return
                end = chunk_end(batch)
                ahead = {i: p for i, p in {**self.ahead, **{r[1]: row_position(r) for r in extra}}.items()
                         if end < p}
                replay_in = self.replay
                replay = replay_in if replay_in is not None and end < replay_in.end else None
                self.pos, self.ahead, self.replay = end, ahead, replay
                await self.queue.put(_Read(batch + extra, end, ahead, replay_in, replay))
        except Exception as exc:  # handed to the lane, which restarts from the durable state
            await self.queue.put(exc)

    async def next(self) -> Chunk:
        """The next chunk (size 0 when nothing is waiting: the next call reads again)."""
        if self.task is None:
            self.task = asyncio.create_task(self._read_ahead())
        read = await self.queue.get()
        if read is None or isinstance(read, BaseException):
            self.task = None
            if read is not None:
                raise read
            return Chunk(0, self.pos, self.ahead, self.replay, self.replay)
        chunk = await self.lane._prepare(read.rows, read.replay_in)
        chunk.end, chunk.ahead, chunk.replay_in, chunk.replay = read.end, read.ahead, read.replay_in, read.replay
        return chunk

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


@dataclass
class _Read:
    rows: list[Row]  # the chunk's rows and its early rows, from read_chunk
    end: Position
    ahead: dict[int, Position]
    replay_in: Replay | None
    replay: Replay | None


# Requests are big (a batch of 500 records is ~240 kB): with a send buffer that holds a whole one, the kernel takes
# the body in one write and feeds it to the platform as fast as it reads, also while this process is busy rendering
# (with a small buffer each further piece waits for the event loop to come round).
SEND_BUFFER = 1 << 20


def _socket(addr_info: Any) -> socket.socket:
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family=family, type=kind, proto=proto)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    return sock


class Lane:
    def __init__(self, destination: MunicipalDestination, store: MunicipalStore, settings: MunicipalSettings) -> None:
        self.destination = destination
        self.name = destination.name
        self.store = store
        self.settings = settings
        self.profile = make_profile(destination)
        self.url = self.profile.request_url(destination.url)
        self.kinds = sorted(self.profile.kinds)
        self.bucket = TokenBucket(destination.rate_limit_rps, max(destination.rate_limit_rps,
                                                                   float(destination.batch_size)))
        self.rng = random.Random()
        self.wake = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.lot_kinds: dict[str, str] = {}
        self.lot_locations: dict[str, dict[str, Any]] = {}
        # The profile has more than one publication (a request body holds one).
        self.mixed_publications = len({self.profile.publication(k) for k in self.profile.kinds}) > 1
        self.key = key_maker(self.name)
        self.in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.owner = False
        self._lock_owner: Owner | None = None
        self._error_written = 0.0
        self._lock_checked = 0.0
        self._control_due = True

    # ----- lifecycle ------------------------------------------------------------------------------------

    def poke(self) -> None:
        """Wake the lane now (a control rpc changed something)."""
        self._control_due = True
        self.wake.set()

    def http(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            ctx: ssl.SSLContext | bool = True
            if self.destination.ca_file:
                ctx = ssl.create_default_context(cafile=self.destination.ca_file)
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max(8, MAX_IN_FLIGHT), ssl=ctx, socket_factory=_socket),
                timeout=aiohttp.ClientTimeout(total=self.destination.timeout_s))
        return self.session

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def run(self) -> None:
        """The lane's background task: own the destination (advisory lock), then drain it, forever."""
        attempt = 0
        while True:
            try:
                async with self.store.engine.connect() as lock_conn:
                    if not await self._lock(lock_conn):
                        self.owner = False
                        await self._sleep(LOCK_RETRY_S)
                        continue
                    try:
                        self.owner = True
                        attempt = 0
                        await self._drain(lock_conn)
                    except NotOwner as exc:
                        # Back to asking for the lock: the process that holds it now keeps it.
                        log.warning("lost the destination's lock; another process drains it now",
                                    extra={"destination": self.name, "reason": str(exc)})
                    finally:
                        self.owner = False
                        with contextlib.suppress(Exception):
                            await asyncio.shield(self._unlock(lock_conn))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_stopping()
                attempt += 1
                log.exception("municipal lane failed; restarting", extra={"destination": self.name})
                with contextlib.suppress(Exception):
                    await self.store.record_error(self.name, 0, f"adapter: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff_s(attempt, 0.5, 10.0, self.rng))

    async def _lock(self, conn: AsyncConnection) -> bool:
        key = f"v2x-municipal:{self.name}"
        got, pid = (await conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0)), pg_backend_pid()"),
                                       {"k": key})).one()
        await conn.commit()
        self._lock_owner = Owner(int(pid), key) if got else None
        return bool(got)

    async def _unlock(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"),
                           {"k": f"v2x-municipal:{self.name}"})
        await conn.commit()

    async def _check_lock(self, conn: AsyncConnection) -> None:
        if time.monotonic() - self._lock_checked > LOCK_CHECK_S:
            await conn.execute(text("SELECT 1"))
            await conn.commit()
            self._lock_checked = time.monotonic()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    # ----- the drain loop ----------------------------------------------------------------------------------

    async def _drain(self, lock_conn: AsyncConnection) -> None:
        await self.store.ensure([self.destination])
        while True:  # each round starts from the durable state
            state = await self.store.state(self.name)
            assert state is not None
            pos = state.cursor
            ahead = await self.store.positions(state.ahead)
            replay = (Replay(state.replay_from, state.replay_kinds, state.replay_end)
                      if state.replay_from is not None and state.replay_end is not None else None)
            reader = Reader(self, pos, ahead, replay)
            prefetch: asyncio.Task[Chunk] | None = None
            done = Progress(pos, ahead, replay)
            controlled_at = 0.0
            try:
                while True:
                    await self._check_lock(lock_conn)
                    if self._control_due or time.monotonic() - controlled_at >= CONTROL_EVERY_S:
                        self._control_due = False
                        controlled_at = time.monotonic()
                        ctl = await self.store.control(self.name)
                    else:
                        ctl = Control(False, "", False, False)
                    if ctl.paused or ctl.replay_pending or ctl.requeued:
                        await self._settle_all(done)
                        if ctl.paused:
                            await self._sleep(1.0)
                            self._control_due = True
                            continue
                        if ctl.replay_pending:
                            await self.store.apply_replay(self.name)
                            log.info("replay started", extra={"destination": self.name})
                            break
                        await self._retry_dead_letters()
                        self._control_due = True
                        continue
                    chunk = await prefetch if prefetch is not None else await reader.next()
                    prefetch = None
                    if not chunk.size:
                        await self._settle_all(done)
                        if done.replay is not None:
                            # Nothing left to re-send: the cursor goes back to where the replay began.
                            end = max(done.pos, done.replay.end)
                            await self.store.commit(self.name, Commit(end, sorted(i for i, p in done.ahead.items()
                                                                                  if end < p),
                                                                      [], [], done.replay.end, True),
                                                    self._lock_owner)
                            break
                        IDLE_POLLS.labels(self.name).inc()
                        await self._sleep(self.settings.poll_s)
                        continue
                    done.pending.append(self._start_delivery(chunk, done.pending[-1] if done.pending else None))
                    prefetch = asyncio.create_task(reader.next())
                    if len(done.pending) > 1:
                        await self._settle(done)
            except Paused:
                log.info("paused with a chunk in flight; it is sent again on resume",
                         extra={"destination": self.name})
            finally:
                for task in [prefetch, *(d.task for d in done.pending)]:
                    if task is not None and not task.done():
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
                reader.close()
                if done.committing is not None:
                    # A stop must not tear a commit in half (it is one transaction anyway).
                    await asyncio.shield(done.committing)

    async def _settle(self, done: Progress) -> None:
        """Waits for the oldest chunk in flight, then commits it (after the chunk before it)."""
        d = done.pending[0]
        sent = await d.task
        if done.committing is not None:
            await done.committing
        c, replay_in = d.chunk, d.chunk.replay_in
        done.committing = asyncio.create_task(self._commit(Commit(
            c.end, sorted(c.ahead), sent.delivered, c.dead + sent.dead,
            replay_in.end if replay_in is not None else None, replay_in is not None and c.replay is None)))
        done.pos, done.ahead, done.replay = c.end, c.ahead, c.replay
        done.pending.pop(0)

    async def _settle_all(self, done: Progress) -> None:
        while done.pending:
            await self._settle(done)
        if done.committing is not None:
            await done.committing
            done.committing = None

    async def _commit(self, c: Commit) -> None:
        counted = await self.store.commit(self.name, c, self._lock_owner)
        for o in c.dead:
            DEAD.labels(self.name, o.reason).inc()
        if counted:
            for kind, n in collections.Counter(map(_KIND, c.delivered)).items():
                DELIVERED.labels(self.name, kind).inc(n)

    async def _prepare(self, rows: list[Row], replay: Replay | None) -> Chunk:
        """A chunk's rows (from `read_chunk`) checked, rendered and split into streams of parcels. The work is done
        a slice at a time, letting the requests in flight be answered in between."""
        rows.sort(key=_ROW_ID)  # id order: each lot's order
        chunk = Chunk(len(rows))
        sendable: list[OutboxRecord] = []
        keys: list[str] = []
        wires: list[bytes] = []
        if self.profile.needs_lot_kinds:
            records: list[OutboxRecord] = []
            for i in range(0, len(rows), SLICE):
                records += to_records(rows[i:i + SLICE])
                await asyncio.sleep(0)
            ctx = await self._context(records)
            for i in range(0, len(records), SLICE):
                self._render(records[i:i + SLICE], ctx, replay, chunk.dead, sendable, keys, wires)
                await asyncio.sleep(0)
        else:
            ctx = RenderContext()
            for i in range(0, len(rows), SLICE):
                self._render(to_records(rows[i:i + SLICE]), ctx, replay, chunk.dead, sendable, keys, wires)
                await asyncio.sleep(0)
        chunk.streams = split_streams(sendable, keys, wires, self.destination.batch_size)
        if self.mixed_publications:
            chunk.streams = split_publications(chunk.streams, self.profile.publication)
        for stream in chunk.streams:
            for parcel in stream:
                parcel.body = self.profile.body_of(parcel.wires)
        return chunk

    def _render(self, records: list[OutboxRecord], ctx: RenderContext, replay: Replay | None, dead: list[Outcome],
                sendable: list[OutboxRecord], keys: list[str], wires: list[bytes]) -> None:
        """Appends the records to send, their keys and documents in wire form (`Profile.wires`); invalid records go
        to `dead`, skipped ones nowhere."""

        def invalid(r: OutboxRecord, key: str, exc: InvalidRecord) -> None:
            dead.append(self._invalid(r, key, exc))

        self.profile.wires(records, self.key, datetime.now(UTC), ctx, replay.skips if replay is not None else None,
                           invalid, sendable, keys, wires)

    def _invalid(self, r: OutboxRecord, key: str, exc: InvalidRecord) -> Outcome:
        return Outcome(r, Fate.DEAD, key, record_key(r), 0, "INVALID_RECORD",
                       f"not valid for profile {self.profile.name}: {exc}", preview(r), 0)

    async def _context(self, records: Sequence[OutboxRecord]) -> RenderContext:
        if not self.profile.needs_lot_kinds:
            return RenderContext()
        for r in records:
            if r.kind == "lot_static" and isinstance(r.payload, dict) and r.payload.get("lot_kind"):
                self._know_lot(r.aggregate_id, r.payload)
        unknown = sorted({r.aggregate_id for r in records if r.kind in ("lot_dynamic", "spot_status")}
                         - set(self.lot_kinds))
        if unknown:
            if len(self.lot_kinds) > 200_000:
                self.lot_kinds.clear()
                self.lot_locations.clear()
            for lot, facts in (await self.store.lot_facts(unknown)).items():
                self._know_lot(lot, facts)
        return RenderContext(self.lot_kinds, self.lot_locations)

    def _know_lot(self, lot: str, facts: dict[str, Any]) -> None:
        self.lot_kinds[lot] = str(facts["lot_kind"])
        if facts.get("line") or (facts.get("lat") is not None and facts.get("lon") is not None):
            self.lot_locations[lot] = lot_location(facts)

    # ----- sending ---------------------------------------------------------------------------------------

    def _start_delivery(self, chunk: Chunk, before: Delivery | None) -> Delivery:
        """Starts sending a chunk's streams (each its batches in order, up to MAX_IN_FLIGHT batches in flight in all).
        A stream that carries a lot of a stream of the chunk before, still in flight, waits for that one first."""
        lots: dict[str, asyncio.Task[Sent]] = {}
        streams = []
        for parcels in chunk.streams:
            carried = {r.aggregate_id for parcel in parcels for r in parcel.records}
            after = set()
            if before is not None:
                for lot in carried:
                    t = before.lots.get(lot)
                    if t is not None and not t.done():
                        after.add(t)
            task = asyncio.create_task(self._stream(parcels, after))
            streams.append(task)
            for lot in carried:
                lots[lot] = task
        return Delivery(chunk, asyncio.create_task(self._deliver(streams)), lots)

    @staticmethod
    async def _deliver(streams: list[asyncio.Task[Sent]]) -> Sent:
        """What the platform made of a chunk once every stream is through. If one stream stops (pause), the others
        are cancelled and the chunk is sent again later (the receiver dedupes what got through)."""
        try:
            results = await asyncio.gather(*streams)
        except BaseException:
            for t in streams:
                t.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
            raise
        out = Sent()
        for r in results:
            out.add(r)
        return out

    async def _stream(self, parcels: list[Parcel], after: set[asyncio.Task[Sent]] | None = None) -> Sent:
        if after:
            # The same lots' batches of the chunk before go first (waited for, not cancelled with this one).
            await asyncio.wait(after)
            if any(t.cancelled() or t.exception() is not None for t in after):
                raise EarlierBatchFailed()
        out = Sent()
        for parcel in parcels:
            out.add(await self._send(parcel))
        return out

    async def _send(self, items: Parcel) -> Sent:
        """Delivers `items` (in order). Retries until the platform answers something other than a transient
        failure. Raises Paused when the destination gets paused."""
        done = Sent()
        if not items.records:
            return done
        attempt = 0
        while True:
            attempt += 1
            try:
                done.add(await self._post(items, attempt))
                return done
            except Transient as exc:
                if exc.settled is not None and exc.rest is not None:
                    done.add(exc.settled)
                    items = exc.rest
                REQUESTS.labels(self.name, str(exc.status)).inc()
                await self._note_error(exc.status, str(exc))
                delay = backoff_s(attempt, self.settings.backoff_base_s,
                                  self.settings.backoff_max_s, self.rng)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.settings.backoff_max_s))
                await asyncio.sleep(delay)
                if (await self.store.control(self.name)).paused:
                    raise Paused() from None
            except AuthRefused as exc:
                REQUESTS.labels(self.name, str(exc.status)).inc()
                reason = f"the platform refused our credentials ({exc})"[:500]
                await self.store.record_error(self.name, exc.status, str(exc))
                await self.store.set_paused(self.name, True, reason)
                log.error("destination paused: credentials refused", extra={"destination": self.name,
                                                                           "status": exc.status})
                raise Paused() from None

    async def _post(self, items: Parcel, attempt: int) -> Sent:
        await self.bucket.take(len(items))
        if items.body is None:
            items.body = self.profile.body_of(items.wires)
        body = items.body
        records = items.records
        headers = {"Content-Type": self.profile.content_type, "X-V2X-Destination": self.name,
                   "Idempotency-Key": request_key(items.keys),
                   "X-V2X-Batch": f"{records[0].id}..{records[-1].id}/{len(records)}",
                   **signing.headers(self.destination.secret, int(time.time()), body)}
        try:
            async with self.in_flight, self.http().post(self.url, data=body, headers=headers) as resp:
                status = resp.status
                answer = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(0, f"{type(exc).__name__}: {exc}".strip()) from None
        if 200 <= status < 300:
            REQUESTS.labels(self.name, str(status)).inc()
            return self._results(items, answer, attempt, status)
        message = answer[:500].decode(errors="replace")
        if status in (401, 403):
            raise AuthRefused(status, message)
        if status >= 500 or status in RETRYABLE:
            after: float | None = None
            with contextlib.suppress(TypeError, ValueError):
                after = float(retry_after) if retry_after else None
            raise Transient(status, f"HTTP {status}: {message}", after)
        REQUESTS.labels(self.name, str(status)).inc()
        if len(records) > 1:
            # Which record does the platform refuse? Halve until it is alone; the others go through.
            first, second = items.halves()
            out = await self._send(first)
            out.add(await self._send(second))
            return out
        r = records[0]
        return Sent([], [Outcome(r, Fate.DEAD, items.keys[0], record_key(r), status, "REJECTED_BY_PLATFORM",
                                 f"HTTP {status}: {message}", preview(r), attempt)])

    def _results(self, items: Parcel, answer: bytes, attempt: int, status: int = 200) -> Sent:
        doc: Any = None
        with contextlib.suppress(ValueError):
            doc = orjson.loads(answer)  # an empty answer is a ValueError too: every record delivered
        if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and status == 207:
            return self._entity_results(items, doc["errors"], attempt)
        results = doc.get("results", []) if isinstance(doc, dict) else []
        keys = items.keys
        if type(results) is list and len(results) == len(keys):
            # The usual answer: one result per record, in order, each with an integer status below 400 (checked
            # with C-level maps; anything else, a missing field included, is read one by one below).
            with contextlib.suppress(KeyError, TypeError):
                if list(map(_RESULT_KEY, results)) == keys and all(
                        type(status) is int and status < 400 for status in set(map(_RESULT_STATUS, results))):
                    return Sent(list(items.records), [])
        per_key: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(TypeError, AttributeError):
            for res in results:
                if isinstance(res, dict) and isinstance(res.get("idempotencyKey"), str):
                    per_key[res["idempotencyKey"]] = res
        out = Sent()
        for r, key in zip(items.records, keys, strict=True):
            res = per_key.get(key)
            code = int(res.get("status", 200)) if res else 200
            if code >= 500:
                raise Transient(code, f"record {key}: HTTP {code}: {res.get('error', '') if res else ''}")
            if 400 <= code < 500:
                err = str(res.get("error", "")) if res else ""
                out.dead.append(Outcome(r, Fate.DEAD, key, record_key(r), code, "REJECTED_BY_PLATFORM",
                                        f"HTTP {code}: {err}"[:2000], preview(r), attempt))
            else:
                out.delivered.append(r)
        return out

    def _entity_results(self, items: Parcel, errors: list[Any], attempt: int) -> Sent:
        """An NGSI-LD batch answer (207 `{"success": [ids], "errors": [{"entityId", "error"}]}`), entity by entity:
        the records of a rejected entity become dead letters with the broker's reason, those of an entity that failed
        transiently (5xx, 408/425/429) go again (raises Transient with the rest), the others are delivered."""
        failed: dict[str, tuple[int, str]] = {}
        for e in errors:
            if isinstance(e, dict) and isinstance(e.get("entityId"), str):
                failed[e["entityId"]] = _problem(e.get("error"))
        out, again = Sent(), Parcel([], [], [])
        for r, key, wire in zip(items.records, items.keys, items.wires, strict=True):
            # A record is refused (or failed) when one of its entities is.
            problem = next((failed[s] for s in self.profile.subjects(wire) if s in failed), None)
            if problem is None:
                out.delivered.append(r)
                continue
            code, reason = problem
            if code >= 500 or code in RETRYABLE:
                again.records.append(r)
                again.keys.append(key)
                again.wires.append(wire)
            else:
                out.dead.append(Outcome(r, Fate.DEAD, key, record_key(r), code, "REJECTED_BY_PLATFORM",
                                        f"HTTP {code}: {reason}"[:2000], preview(r), attempt))
        if again.records:
            raise Transient(503, f"{len(again.records)} records: entities failed transiently", settled=out,
                            rest=again)
        return out

    async def _note_error(self, status: int, message: str) -> None:
        # During an outage every retry fails: write the last error at most once a second.
        if time.monotonic() - self._error_written >= ERROR_WRITE_S:
            self._error_written = time.monotonic()
            with contextlib.suppress(Exception):
                await self.store.record_error(self.name, status, message)

    # ----- dead letters put back in the queue -------------------------------------------------------------

    async def _retry_dead_letters(self) -> None:
        while True:
            items, _gone = await self.store.requeued(self.name, self.destination.batch_size)
            if not items:
                return
            records = [r for _, r in items]
            ctx = await self._context(records)
            dead = [Outcome(r, Fate.DEAD, self.key(r.id), record_key(r), 0, "NOT_CARRIED",
                            f"profile {self.profile.name} does not carry {r.kind}", preview(r))
                    for r in records if r.kind not in self.profile.kinds]
            sendable: list[OutboxRecord] = []
            keys: list[str] = []
            wires: list[bytes] = []

            def invalid(r: OutboxRecord, key: str, exc: InvalidRecord, dead: list[Outcome] = dead) -> None:
                dead.append(self._invalid(r, key, exc))

            self.profile.wires([r for r in records if r.kind in self.profile.kinds], self.key, datetime.now(UTC),
                               ctx, None, invalid, sendable, keys, wires)
            sent = Sent()
            parcels = [Parcel(sendable, keys, wires)]
            if self.mixed_publications:
                parcels = split_publications([parcels], self.profile.publication)[0]
            for parcel in parcels:
                sent.add(await self._send(parcel))
            resolved = await self.store.commit_retried(self.name, sent.delivered, dead + sent.dead)
            log.info("dead letters retried", extra={"destination": self.name, "resolved": resolved,
                                                    "still_dead": len(records) - resolved})
