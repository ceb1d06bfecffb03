"""The adapter: its lanes (one per destination), the control operations the admin rpcs call, the daily
reconciliation and the lag gauges. No grpc here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
from prometheus_client import Counter

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.municipal import signing
from services.municipal.delivery import LAG_RECORDS, LAG_SECONDS, Lane
from services.municipal.model import (
    LOCAL_TZ,
    STANDING_KINDS,
    DeadLetter,
    DestinationStatus,
    KindReconciliation,
    Reconciliation,
    idempotency_key,
)
from services.municipal.settings import MunicipalSettings
from services.municipal.store import MunicipalStore

log = logging.getLogger("v2x.municipal")
LAG_INTERVAL_S = 5.0
PRUNE_BATCH = 10_000
PRUNED = Counter("v2x_municipal_outbox_pruned_total", "Outbox rows deleted past the retention (delivered everywhere)")
MAX_MISSING_KEYS = 100


def _local_now() -> datetime:
    return datetime.now(LOCAL_TZ)


class Adapter:
    def __init__(self, store: MunicipalStore, settings: MunicipalSettings,
                 clock: Callable[[], datetime] = _local_now,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock  # the local time the daily reconciliation is scheduled by (tests set it)
        self.sleep = sleep  # how the daily job waits for its hour (tests see what it asked for)
        self.lanes = {d.name: Lane(d, store, settings) for d in settings.destinations}
        self._ensured = False
        self._ensure_lock = asyncio.Lock()

    def lane(self, name: str) -> Lane:
        if not name:
            raise InvalidArgument("destination is required")
        lane = self.lanes.get(name)
        if lane is None:
            raise NotFound(f"no destination {name!r} (configured: {', '.join(sorted(self.lanes)) or 'none'})")
        return lane

    async def ensure(self) -> None:
        if self._ensured:
            return
        async with self._ensure_lock:
            if not self._ensured:
                await self.store.ensure(lane.destination for lane in self.lanes.values())
                self._ensured = True

    async def close(self) -> None:
        for lane in self.lanes.values():
            await lane.close()

    # ----- status and control ------------------------------------------------------------------------------

    async def status(self, name: str = "") -> list[tuple[Lane, DestinationStatus]]:
        await self.ensure()
        lanes = [self.lane(name)] if name else [self.lanes[n] for n in sorted(self.lanes)]
        now = datetime.now(UTC)
        out = []
        for lane in lanes:
            st = await self.store.status(lane.name, lane.kinds, now)
            assert st is not None
            LAG_RECORDS.labels(lane.name).set(st.lag_records)
            LAG_SECONDS.labels(lane.name).set(st.lag_s)
            out.append((lane, st))
        return out

    async def pause(self, name: str, reason: str) -> None:
        lane = self.lane(name)
        await self.ensure()
        await self.store.set_paused(lane.name, True, reason or "paused by an administrator")
        lane.poke()

    async def resume(self, name: str) -> None:
        lane = self.lane(name)
        await self.ensure()
        await self.store.set_paused(lane.name, False, "")
        lane.poke()

    async def replay(self, name: str, from_time: datetime, kinds: Sequence[str]) -> int:
        lane = self.lane(name)
        await self.ensure()
        bad = [k for k in kinds if k not in lane.kinds]
        if bad:
            raise InvalidArgument(f"destination {name} does not receive {', '.join(bad)}")
        queued = await self.store.request_replay(lane.name, from_time, list(kinds) or lane.kinds)
        lane.poke()
        return queued

    async def dead_letters(self, name: str, kind: str | None, include_resolved: bool, before_id: int,
                           limit: int) -> list[DeadLetter]:
        if name:
            self.lane(name)
        return await self.store.dead_letters(name or None, kind, include_resolved, before_id, limit)

    async def retry(self, name: str, ids: Sequence[int] | None) -> int:
        lane = self.lane(name)
        n = await self.store.requeue(lane.name, ids)
        lane.poke()
        return n

    # ----- reconciliation --------------------------------------------------------------------------------

    async def reconcile(self, name: str, day: date) -> tuple[Reconciliation, bool]:
        """Our per-kind counts of the day beside the platform's; the bool says whether the platform was
        asked (its profile offers counts)."""
        lane = self.lane(name)
        await self.ensure()
        ours = await self.store.ours(lane.name, day)
        url = lane.profile.counts_url() if lane.profile.offers_counts else None
        theirs: dict[str, int] = {}
        if url is not None:
            theirs = (await self._get(lane, url, {"day": day.isoformat()})).get("counts", {})
        kinds: list[KindReconciliation] = []
        for kind in lane.kinds:
            mine = ours.get(kind, 0)
            their = int(theirs[kind]) if url is not None and kind in theirs else (0 if url is not None else None)
            missing: list[str] = []
            if url is not None and their is not None and mine > their:
                missing = await self._missing(lane, url, day, kind)
            kinds.append(KindReconciliation(kind, mine, their, missing))
        result = Reconciliation(lane.name, day.isoformat(), kinds)
        await self.store.save_reconciliation(result)
        return result, url is not None

    async def _missing(self, lane: Lane, url: str, day: date, kind: str) -> list[str]:
        listed = await self._get(lane, url, {"day": day.isoformat(), "kind": kind, "keys": "1"})
        if not isinstance(listed.get("keys"), list):
            return []
        have = set(listed["keys"])
        ids = await self.store.delivered_ids(lane.name, day, kind)
        missing = [k for k in (idempotency_key(lane.name, i) for i in ids) if k not in have]
        return missing[:MAX_MISSING_KEYS]

    async def _get(self, lane: Lane, url: str, params: dict[str, str]) -> dict[str, Any]:
        headers = {**signing.headers(lane.destination.secret, int(time.time()), b""),
                   "X-V2X-Destination": lane.name}
        try:
            async with lane.http().get(url, params=params, headers=headers) as resp:
                if resp.status != 200:
                    body = (await resp.read())[:300].decode(errors="replace")
                    raise Unavailable(f"the platform answered HTTP {resp.status} for its counts: {body}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"the platform's counts are unreachable: {type(exc).__name__}: {exc}") from None
        if not isinstance(doc, dict):
            raise FailedPrecondition("the platform's counts answer is not a JSON object")
        return doc

    async def reconcile_daily(self) -> None:
        """Background task: every day at the configured local hour, reconcile yesterday (`reconcile_yesterday`)."""
        hour = self.settings.reconcile_hour
        if hour < 0:
            return
        while True:
            now = self.clock()
            at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
            if at <= now:
                at += timedelta(days=1)
            await self.sleep((at - now).total_seconds())
            await self.reconcile_yesterday()

    async def reconcile_yesterday(self) -> list[Reconciliation]:
        """One run of the daily job: reconcile the local day before `clock()` for each destination whose profile
        offers counts; differences are logged and stored. Returns the reconciliations that could be made."""
        day = (self.clock() - timedelta(days=1)).date()
        done: list[Reconciliation] = []
        for name, lane in sorted(self.lanes.items()):
            if not lane.profile.offers_counts:
                continue
            try:
                result, _ = await self.reconcile(name, day)
            except Exception:
                log.exception("daily reconciliation failed", extra={"destination": name, "day": str(day)})
                continue
            done.append(result)
            level = logging.INFO if result.matched else logging.WARNING
            log.log(level, "daily reconciliation", extra={
                "destination": name, "day": result.day, "matched": result.matched,
                "differences": {k.kind: k.difference for k in result.kinds if k.difference}})
        return done

    async def prune_outbox(self) -> None:
        """Background task: every `prune_interval_s`, delete the outbox rows past the retention that no destination
        needs any more (`prune_once`). A failed round is logged and the next one tries again."""
        if self.settings.outbox_retention_h <= 0:
            return
        while True:
            try:
                await self.prune_once()
            except Exception:
                log.exception("pruning the outbox failed")
            await self.sleep(self.settings.prune_interval_s)

    async def prune_once(self) -> int:
        """Deletes the prunable rows in batches (short transactions beside the lanes' reads); returns how many."""
        await self.ensure()  # every configured destination has its cursor row, so none is taken for delivered
        names = sorted(self.lanes)
        total = 0
        while True:
            n = await self.store.prune(names, self.settings.outbox_retention_h, STANDING_KINDS, PRUNE_BATCH)
            total += n
            PRUNED.inc(n)
            if n < PRUNE_BATCH:
                return total
            await asyncio.sleep(0)

    async def publish_lag(self) -> None:
        """Background task: keep the lag gauges fresh for Prometheus."""
        while True:
            with contextlib.suppress(Exception):
                if self.lanes:
                    await self.status()
            await asyncio.sleep(LAG_INTERVAL_S)
