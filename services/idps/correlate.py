"""Which incident a report joins: the correlation rule, as a pure function of the report and the
incidents that might match it.

The store fetches (and locks) every incident near any report of a batch once, then decides report by
report, in arrival order, against that pool as it changes: an incident a report joined or opened is
seen by the next report of the batch exactly as a following transaction would have seen it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.geo import EARTH_RADIUS_M, haversine_m
from services.idps import lifecycle, taxonomy
from services.idps.geo import heading_difference
from services.idps.model import Incident, ReportInput

# Reports of one direction: headings within this many degrees count as the same direction.
HEADING_TOLERANCE_DEG = 60.0
# Metres per degree of latitude on the sphere `haversine_m` uses: a latitude difference times this is
# never more than the distance, so it rejects far incidents without ever rejecting a near one.
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True)
class Windows:
    """How close in space and time a report must be to an incident to join it."""

    distance_m: float
    window: timedelta
    reopen: timedelta


def matches(inc: Incident, r: ReportInput, types: frozenset[int], now: datetime, w: Windows) -> float | None:
    """The distance from the incident to the report when the report may join it, else None. `types`
    are `taxonomy.compatible_types(r.type)`.

    An open incident joins reports observed within the time window of its observations; a cleared one
    (status CLEARED) any report within the reopen window of its clearing. Types must be compatible,
    headings (when both are known) of one direction, and per-vehicle events of the same plate."""
    status = inc.status
    if status < lifecycle.REPORTED or status > lifecycle.CLEARED:
        return None
    if abs(inc.lat - r.lat) * _M_PER_DEG > w.distance_m + 1.0:  # cheap reject before the haversine
        return None
    if inc.type not in types:
        return None
    if status < lifecycle.CLEARED:
        if inc.first_observed_at > r.observed_at + w.window or inc.last_observed_at < r.observed_at - w.window:
            return None
    elif inc.cleared_at is None or inc.cleared_at < now - w.reopen:
        return None
    if (r.heading_deg is not None and inc.heading_deg is not None
            and heading_difference(inc.heading_deg, r.heading_deg) > HEADING_TOLERANCE_DEG):
        return None
    if r.type in taxonomy.PER_VEHICLE and r.plate and inc.plates and r.plate not in inc.plates:
        return None
    d = haversine_m(inc.lat, inc.lon, r.lat, r.lon)
    return d if d <= w.distance_m else None


def best(pool: Iterable[Incident], r: ReportInput, now: datetime, w: Windows) -> Incident | None:
    """The nearest incident the report may join; of equally near ones the newest."""
    found: Incident | None = None
    found_d = 0.0
    types = taxonomy.compatible_types(r.type)
    lat, slack = r.lat, (w.distance_m + 1.0) / _M_PER_DEG
    for inc in pool:
        if abs(inc.lat - lat) > slack:  # most of a batch's pool is elsewhere: skip it before the call
            continue
        d = matches(inc, r, types, now, w)
        if d is not None and (found is None or d < found_d
                              or (d == found_d and inc.created_at > found.created_at)):
            found, found_d = inc, d
    return found
