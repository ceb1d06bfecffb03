"""One delivery lane per destination: drain the outbox in order, render, sign, POST, record the outcome.

- One batch in flight per destination, so a later record of a lot never overtakes an earlier one that is
  being retried; the next batch is read and rendered while the current one is in flight, and a batch's
  outcome is committed (cursor, counts, dead letters: one transaction) after the platform's 2xx.
  A crash re-sends at most the batch in flight, which the receiver dedupes by idempotency key.
- 5xx, 408/425/429, timeouts and connection errors: the same batch again after an exponential backoff
  with jitter (Retry-After honoured), for as long as it takes: an outage makes lag, never loses data.
- 401/403: the platform refuses our credentials; the destination is paused with that reason (nothing is
  dead-lettered for a configuration error). Any other 4xx for a whole batch: the batch is split until the
  refused record is alone, and that record becomes a dead letter. A per-record 4xx in a 2xx answer: that
  record becomes a dead letter. Records that fail their profile's checks never leave: dead letters too.
- A token bucket keeps each destination under its rate limit (records per second).
- Only one process drains a destination at a time (a PostgreSQL advisory lock), so replicas fail over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.config import MunicipalDestination, Settings
from services.municipal import signing
from services.municipal.model import (
    Fate,
    InvalidRecord,
    NotCarried,
    OutboxRecord,
    Outcome,
    Position,
    Rendered,
    idempotency_key,
)
from services.municipal.profiles import RenderContext, make_profile
from services.municipal.profiles.base import preview, record_key
from services.municipal.store import Commit, Control, MunicipalStore

log = logging.getLogger("v2x.municipal")

DELIVERED = Counter("v2x_municipal_delivered_total", "Records acknowledged by the platform (first time)",
                    ["destination", "kind"])
DEAD = Counter("v2x_municipal_dead_letters_total", "Records that became dead letters", ["destination", "reason"])
REQUESTS = Counter("v2x_municipal_requests_total", "Delivery requests by HTTP status (0 = no answer)",
                   ["destination", "status"])
LAG_RECORDS = Gauge("v2x_municipal_lag_records", "Outbox records waiting for a destination", ["destination"])
LAG_SECONDS = Gauge("v2x_municipal_lag_seconds", "Age of the oldest record waiting for a destination",
                    ["destination"])

LOCK_CHECK_S = 5.0
# Pause, replay and requeued dead letters are read from the database at least this often (at once when an
# rpc in this process pokes the lane), not before every batch.
CONTROL_EVERY_S = 0.5
ERROR_WRITE_S = 1.0
RETRYABLE = frozenset({408, 425, 429})


class Paused(Exception):
    """Delivery to the destination was paused while a batch was in flight."""


class AuthRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Transient(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


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


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random."""
    step = min(cap, base * 2.0 ** min(attempt - 1, 30))
    return step / 2 + rng.uniform(0, step / 2)


@dataclass(frozen=True)
class Replay:
    from_time: datetime
    kinds: tuple[str, ...]
    end: Position

    def skips(self, r: OutboxRecord) -> bool:
        inside = Position(r.txid, r.id) <= self.end
        return inside and (r.created_at < self.from_time or bool(self.kinds and r.kind not in self.kinds))


@dataclass
class Batch:
    records: list[OutboxRecord] = field(default_factory=list)  # in id order (a lot's order)
    end: Position = field(default_factory=lambda: Position(0, 0))
    extras: dict[int, Position] = field(default_factory=dict)
    sendable: list[Rendered] = field(default_factory=list)
    settled: list[Outcome] = field(default_factory=list)  # skipped or invalid, decided before sending


class Lane:
    def __init__(self, destination: MunicipalDestination, store: MunicipalStore, settings: Settings) -> None:
        self.destination = destination
        self.name = destination.name
        self.store = store
        self.settings = settings
        self.profile = make_profile(destination)
        self.kinds = sorted(self.profile.kinds)
        self.bucket = TokenBucket(destination.rate_limit_rps, max(destination.rate_limit_rps,
                                                                   float(destination.batch_size)))
        self.rng = random.Random()
        self.wake = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.lot_kinds: dict[str, str] = {}
        self.owner = False
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
                connector=aiohttp.TCPConnector(limit=8, ssl=ctx),
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
                        await self._sleep(LOCK_CHECK_S)
                        continue
                    try:
                        self.owner = True
                        attempt = 0
                        await self._drain(lock_conn)
                    finally:
                        self.owner = False
                        with contextlib.suppress(Exception):
                            await asyncio.shield(self._unlock(lock_conn))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                log.exception("municipal lane failed; restarting", extra={"destination": self.name})
                with contextlib.suppress(Exception):
                    await self.store.record_error(self.name, 0, f"adapter: {type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff_s(attempt, 0.5, 10.0, self.rng))

    async def _lock(self, conn: AsyncConnection) -> bool:
        got = (await conn.execute(text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))"),
                                  {"k": f"v2x-municipal:{self.name}"})).scalar_one()
        await conn.commit()
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
            prefetch: asyncio.Task[Batch] | None = None
            committing: asyncio.Task[None] | None = None
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
                        if committing is not None:
                            await committing
                            committing = None
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
                    batch = await prefetch if prefetch is not None else await self._build(pos, ahead, replay)
                    prefetch = None
                    if not batch.records:
                        if replay is not None:
                            # Nothing left to re-send: the cursor goes back to where the replay began.
                            if committing is not None:
                                await committing
                                committing = None
                            end = max(pos, replay.end)
                            await self.store.commit(self.name, Commit(end, sorted(i for i, p in ahead.items()
                                                                                  if end < p),
                                                                      [], replay.end, True))
                            break
                        await self._sleep(self.settings.municipal_poll_s)
                        continue
                    next_pos = batch.end
                    next_ahead = {i: p for i, p in {**ahead, **batch.extras}.items() if next_pos < p}
                    next_replay = replay if replay is not None and next_pos < replay.end else None
                    prefetch = asyncio.create_task(self._build(next_pos, next_ahead, next_replay))
                    outcomes = batch.settled + await self._send(batch.sendable)
                    if committing is not None:
                        await committing
                    commit = Commit(next_pos, sorted(next_ahead), outcomes,
                                    replay.end if replay is not None else None,
                                    replay is not None and next_replay is None)
                    committing = asyncio.create_task(self._commit(commit))
                    pos, ahead, replay = next_pos, next_ahead, next_replay
            except Paused:
                log.info("paused with a batch in flight; it is sent again on resume",
                         extra={"destination": self.name})
            finally:
                if prefetch is not None:
                    prefetch.cancel()
                    with contextlib.suppress(BaseException):
                        await prefetch
                if committing is not None:
                    # A stop must not tear a commit in half (it is one transaction anyway).
                    await asyncio.shield(committing)

    async def _commit(self, c: Commit) -> None:
        counted = await self.store.commit(self.name, c)
        kinds: dict[str, int] = {}
        for o in c.outcomes:
            if o.fate is Fate.DELIVERED:
                kinds[o.record.kind] = kinds.get(o.record.kind, 0) + 1
            elif o.fate is Fate.DEAD:
                DEAD.labels(self.name, o.reason).inc()
        if counted:
            for kind, n in kinds.items():
                DELIVERED.labels(self.name, kind).inc(n)

    async def _build(self, pos: Position, ahead: dict[int, Position], replay: Replay | None) -> Batch:
        rows, extra = await self.store.next_batch(pos, sorted(ahead), self.kinds, self.destination.batch_size)
        if not rows:
            return Batch()
        records = sorted(rows + extra, key=lambda r: r.id)
        batch = Batch(records, Position(rows[-1].txid, rows[-1].id), {r.id: Position(r.txid, r.id) for r in extra})
        ctx = await self._context(records)
        now = datetime.now(UTC)
        for r in records:
            key = idempotency_key(self.name, r.id)
            if replay is not None and replay.skips(r):
                batch.settled.append(Outcome(r, Fate.SKIPPED, key))
                continue
            try:
                batch.sendable.append(self.profile.render(r, key, ctx, now))
            except NotCarried:
                batch.settled.append(Outcome(r, Fate.SKIPPED, key))
            except InvalidRecord as exc:
                batch.settled.append(self._invalid(r, key, exc))
        return batch

    def _invalid(self, r: OutboxRecord, key: str, exc: InvalidRecord) -> Outcome:
        return Outcome(r, Fate.DEAD, key, record_key(r), 0, "INVALID_RECORD",
                       f"not valid for profile {self.profile.name}: {exc}", preview(r), 0)

    async def _context(self, records: Sequence[OutboxRecord]) -> RenderContext:
        if not self.profile.needs_lot_kinds:
            return RenderContext()
        for r in records:
            if r.kind == "lot_static" and isinstance(r.payload, dict) and r.payload.get("lot_kind"):
                self.lot_kinds[r.aggregate_id] = str(r.payload["lot_kind"])
        unknown = sorted({r.aggregate_id for r in records if r.kind in ("lot_dynamic", "spot_status")}
                         - set(self.lot_kinds))
        if unknown:
            if len(self.lot_kinds) > 200_000:
                self.lot_kinds.clear()
            self.lot_kinds.update(await self.store.lot_kinds(unknown))
        return RenderContext(self.lot_kinds)

    # ----- sending ---------------------------------------------------------------------------------------

    async def _send(self, items: list[Rendered]) -> list[Outcome]:
        """Delivers `items` (in order); returns one outcome each. Retries until the platform answers
        something other than a transient failure. Raises Paused when the destination gets paused."""
        if not items:
            return []
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._post(items, attempt)
            except Transient as exc:
                REQUESTS.labels(self.name, str(exc.status)).inc()
                await self._note_error(exc.status, str(exc))
                delay = backoff_s(attempt, self.settings.municipal_backoff_base_s,
                                  self.settings.municipal_backoff_max_s, self.rng)
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self.settings.municipal_backoff_max_s))
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

    async def _post(self, items: list[Rendered], attempt: int) -> list[Outcome]:
        await self.bucket.take(len(items))
        body = self.profile.body([r.doc for r in items])
        headers = {"Content-Type": self.profile.content_type, "X-V2X-Destination": self.name,
                   "X-V2X-Batch": f"{items[0].record.id}..{items[-1].record.id}/{len(items)}",
                   **signing.headers(self.destination.secret, int(time.time()), body)}
        try:
            async with self.http().post(self.destination.url, data=body, headers=headers) as resp:
                status = resp.status
                answer = await resp.read()
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(0, f"{type(exc).__name__}: {exc}".strip()) from None
        if 200 <= status < 300:
            REQUESTS.labels(self.name, str(status)).inc()
            return self._results(items, answer, attempt)
        message = answer[:500].decode(errors="replace")
        if status in (401, 403):
            raise AuthRefused(status, message)
        if status >= 500 or status in RETRYABLE:
            after: float | None = None
            with contextlib.suppress(TypeError, ValueError):
                after = float(retry_after) if retry_after else None
            raise Transient(status, f"HTTP {status}: {message}", after)
        REQUESTS.labels(self.name, str(status)).inc()
        if len(items) > 1:
            # Which record does the platform refuse? Halve until it is alone; the others go through.
            half = len(items) // 2
            return await self._send(items[:half]) + await self._send(items[half:])
        r = items[0]
        return [Outcome(r.record, Fate.DEAD, r.key, r.record_key, status, "REJECTED_BY_PLATFORM",
                        f"HTTP {status}: {message}", preview(r.record), attempt)]

    def _results(self, items: list[Rendered], answer: bytes, attempt: int) -> list[Outcome]:
        per_key: dict[str, dict[str, Any]] = {}
        if answer.strip():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                doc = orjson.loads(answer)
                for res in doc.get("results", []) if isinstance(doc, dict) else []:
                    if isinstance(res, dict) and isinstance(res.get("idempotencyKey"), str):
                        per_key[res["idempotencyKey"]] = res
        out: list[Outcome] = []
        for r in items:
            res = per_key.get(r.key)
            code = int(res.get("status", 200)) if res else 200
            if code >= 500:
                raise Transient(code, f"record {r.key}: HTTP {code}: {res.get('error', '') if res else ''}")
            if 400 <= code < 500:
                err = str(res.get("error", "")) if res else ""
                out.append(Outcome(r.record, Fate.DEAD, r.key, r.record_key, code, "REJECTED_BY_PLATFORM",
                                   f"HTTP {code}: {err}"[:2000], preview(r.record), attempt))
            else:
                out.append(Outcome(r.record, Fate.DELIVERED, r.key, r.record_key, code, attempts=attempt))
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
            ctx = await self._context([r for _, r in items])
            now = datetime.now(UTC)
            settled: list[Outcome] = []
            sendable: list[Rendered] = []
            for _, r in items:
                key = idempotency_key(self.name, r.id)
                try:
                    sendable.append(self.profile.render(r, key, ctx, now))
                except NotCarried:
                    settled.append(Outcome(r, Fate.DEAD, key, record_key(r), 0, "NOT_CARRIED",
                                           f"profile {self.profile.name} does not carry {r.kind}", preview(r)))
                except InvalidRecord as exc:
                    settled.append(self._invalid(r, key, exc))
            outcomes = settled + await self._send(sendable)
            resolved = await self.store.commit_retried(self.name, outcomes)
            log.info("dead letters retried", extra={"destination": self.name, "resolved": resolved,
                                                    "still_dead": len(outcomes) - resolved})
