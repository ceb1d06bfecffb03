"""EV bay checks: a connector linked to a parking spot is checked against the spot.

- NON_CHARGING_VEHICLE: the spot reads OCCUPIED while every connector of the bay reads AVAILABLE, both
  for longer than the idle grace (15 min): a vehicle that does not charge blocks the EV bay.
- CHARGING_WHILE_SPOT_FREE: a connector reads CHARGING (or suspended mid-session) while its spot reads
  FREE, both for longer than the fault grace (the two feeds are not simultaneous): one of them is wrong.

Only fresh readings count (a stale spot or connector proves nothing). "Since" is taken from the data
(the connector's status_since, the spot's last change), so a restart of the checker loses nothing.
One flag per bay and kind stays open while the condition holds and is cleared when it ends. The check
runs periodically; `check(now)` is the whole of one run, with the clock injected (tests drive it).

The spot's state is read from the parking service's tables (same database, read-only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import groupby

from prometheus_client import Counter, Gauge
from v2x.parking.v1 import parking_pb2 as ppb

from services.charging.status import VEHICLE_CONNECTED
from services.charging.store import BayCondition, BayLink, ChargingStore
from services.charging.vocab import BayFlagKind, ConnectorStatus
from services.common.background import every

log = logging.getLogger("v2x.charging.bays")
S = ConnectorStatus
RAISED = Counter("v2x_charging_bay_flags_raised_total", "EV bay flags raised", ["kind"])
CLEARED = Counter("v2x_charging_bay_flags_cleared_total", "EV bay flags cleared")
OPEN = Gauge("v2x_charging_bay_flags_open", "EV bay flags open after the last check", ["kind"])


def _fresh(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and expires > now


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def failing_checks(links: Sequence[BayLink], now: datetime, idle_grace: timedelta,
                   fault_grace: timedelta) -> list[BayCondition]:
    """The bay checks that fail at `now`. `links` are ordered by (lot, spot, connector)."""
    out: list[BayCondition] = []
    for (lot_id, spot_id), group in groupby(links, key=lambda link: (link.lot_id, link.spot_id)):
        bay = list(group)
        spot = bay[0]
        if not _fresh(spot.spot_expires, now) or spot.spot_since is None:
            continue
        fresh = [c for c in bay if _fresh(c.expires_at, now)]
        if spot.spot_status == ppb.SPOT_STATUS_OCCUPIED and len(fresh) == len(bay) and all(
                c.status == S.AVAILABLE for c in bay):
            since = _latest(spot.spot_since, *(c.status_since for c in bay))
            if since is not None and now - since >= idle_grace:
                out.append(BayCondition(BayFlagKind.NON_CHARGING_VEHICLE, spot.operator_id, spot.station_id,
                                        spot.connector_id, lot_id, spot_id, S.AVAILABLE, since))
        if spot.spot_status == ppb.SPOT_STATUS_FREE:
            for c in fresh:
                since = _latest(spot.spot_since, c.status_since)
                if c.status in VEHICLE_CONNECTED and since is not None and now - since >= fault_grace:
                    out.append(BayCondition(BayFlagKind.CHARGING_WHILE_SPOT_FREE, c.operator_id, c.station_id,
                                            c.connector_id, lot_id, spot_id, c.status, since))
                    break
    return out


class BayChecker:
    def __init__(self, store: ChargingStore, clock: Callable[[], datetime], *, idle_grace_s: float,
                 fault_grace_s: float, interval_s: float) -> None:
        self.store = store
        self.clock = clock
        self.idle_grace = timedelta(seconds=idle_grace_s)
        self.fault_grace = timedelta(seconds=fault_grace_s)
        self.interval_s = interval_s

    async def check(self, now: datetime | None = None) -> tuple[list[BayCondition], int] | None:
        """One run: (flags raised, flags cleared), or None when another process ran it."""
        now = now or self.clock()
        conditions = failing_checks(await self.store.bay_links(), now, self.idle_grace, self.fault_grace)
        synced = await self.store.sync_bay_flags(conditions, now)
        if synced is None:
            return None
        raised, cleared = synced
        for c in raised:
            RAISED.labels(_label(c.kind)).inc()
        CLEARED.inc(cleared)
        for kind in BayFlagKind:
            OPEN.labels(_label(kind)).set(sum(1 for c in conditions if c.kind == kind))
        if raised:
            log.info("bay flags raised", extra={"raised": len(raised), "cleared": cleared})
        return synced

    async def run(self) -> None:
        await every(self.interval_s, self.check, "bay check", log)


def _label(kind: int) -> str:
    """A flag kind as the metrics name it (the proto's name, e.g. BAY_FLAG_KIND_NON_CHARGING_VEHICLE)."""
    return f"BAY_FLAG_KIND_{BayFlagKind(kind).name}"
