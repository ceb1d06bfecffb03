"""Pure rules of connector status: ordering of reports, freshness, and what a report does to a state.

Freshness: an operator's reading lives `ttl_s` after it was observed. An OCPP reading lives while its
charge point is heard from: 3 heartbeat intervals after the later of the reading's arrival and the
charge point's last message. Past that, the connector reads UNKNOWN, never its last status. The SQL in
`store.py` computes the same expiry (`_EXPIRES`); `expires_at` here is for states just written.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from services.charging.model import ConnectorState, Report
from services.charging.vocab import AckResult, ConnectorErrorCode, ConnectorStatus, StatusSource

S = ConnectorStatus
DEFAULT_TTL_S = 300
HEARTBEATS_TO_OFFLINE = 3
OCPP_SOURCES = frozenset({StatusSource.OCPP16, StatusSource.OCPP201})

# Statuses in which a vehicle is plugged in and a session is open or ending.
IN_SESSION = frozenset({S.OCCUPIED, S.PREPARING, S.CHARGING,
                        S.SUSPENDED_EV, S.SUSPENDED_EVSE,
                        S.FINISHING})
# Statuses that say a vehicle is connected and drawing (or about to draw) energy right now: a parking
# spot under such a connector cannot be free.
VEHICLE_CONNECTED = frozenset({S.CHARGING, S.SUSPENDED_EV,
                               S.SUSPENDED_EVSE})
# What may be written (UNKNOWN is derived, never reported).
WRITABLE = frozenset(S) - {S.UNKNOWN}

EMPTY = ConnectorState(status=S.UNKNOWN, error_code=ConnectorErrorCode.NO_ERROR, info="",
                       source=0, observed_at=None, received_at=None, status_since=None,
                       ttl_s=0, expires_at=None)


def ocpp_ttl_s(heartbeat_s: int) -> int:
    return HEARTBEATS_TO_OFFLINE * heartbeat_s


def expires_at(source: int, observed_at: datetime | None, received_at: datetime | None, ttl_s: int,
               charge_point_last_seen: datetime | None = None) -> datetime | None:
    if observed_at is None or received_at is None:
        return None
    if source in OCPP_SOURCES:
        heard = max(received_at, charge_point_last_seen) if charge_point_last_seen else received_at
        return heard + timedelta(seconds=ttl_s)
    return observed_at + timedelta(seconds=ttl_s)


def judge(stored: ConnectorState, r: Report, status: int) -> int:
    """ACCEPTED, STALE (observed before the stored reading) or DUPLICATE (the same reading again).
    `status` is what the report stands for (see `refine`)."""
    if stored.observed_at is None:
        return AckResult.ACCEPTED
    if r.observed_at < stored.observed_at:
        return AckResult.STALE
    if (r.observed_at == stored.observed_at and status == stored.status and r.error_code == stored.error_code
            and r.info == stored.info):
        return AckResult.DUPLICATE
    return AckResult.ACCEPTED


def refine(stored: ConnectorState, r: Report, now: datetime) -> int:
    """The status a report stands for. OCPP 2.0.1 StatusNotification only knows Occupied; a live finer
    session state learnt from TransactionEvent (e.g. CHARGING) is kept rather than coarsened."""
    if (r.source == StatusSource.OCPP201 and r.status == S.OCCUPIED
            and stored.status in IN_SESSION and stored.is_fresh(now)):
        return stored.status
    return r.status


def advance(stored: ConnectorState, r: Report, status: int, ttl_s: int, now: datetime,
            charge_point_last_seen: datetime | None = None) -> ConnectorState:
    """The state after an accepted report."""
    changed = status != stored.status or not stored.is_fresh(now)
    since = r.observed_at if changed or stored.status_since is None else stored.status_since
    new = replace(stored, status=status, error_code=r.error_code, info=r.info, source=r.source,
                  observed_at=r.observed_at, received_at=now, status_since=since, ttl_s=ttl_s)
    return replace(new, expires_at=expires_at(r.source, r.observed_at, now, ttl_s, charge_point_last_seen))


def visible_status(state: ConnectorState, now: datetime) -> int:
    """What readers see: the stored status while fresh, UNKNOWN otherwise."""
    return state.status if state.is_fresh(now) else S.UNKNOWN


def clamp_ocpp_time(at: datetime | None, now: datetime) -> datetime:
    """A charger's timestamp orders its reports, but a clock running ahead must not freeze a connector:
    no later than the suite's clock, and the suite's clock when there is none."""
    return now if at is None or at > now else at
